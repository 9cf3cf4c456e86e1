//! Attention kernels: `Attention` (opset 23+) and `RotaryEmbedding` (opset 23).
//!
//! Both compute in f32; f16 / bf16 inputs are widened to f32 and the results rounded back to
//! the input type.

use super::Registry;

mod rotary;
mod sdpa;

/// Registers this module's operators.
pub fn register(r: &mut Registry) {
    r.add("Attention", sdpa::build);
    r.add("RotaryEmbedding", rotary::build);
}
