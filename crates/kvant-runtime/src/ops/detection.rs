//! Detection and image-sampling kernels: `NonMaxSuppression`, `LRN` and `GridSample`.
//!
//! These operators share little code; each lives in its own submodule. Floating-point
//! operators (`LRN`, `GridSample`) compute in f64 and cast back to the input type, so one code
//! path serves f16, f32 and f64. `NonMaxSuppression` computes in f32 on purpose: its IoU
//! comparison against the threshold is a strict `>`, and boundary cases must agree bit for bit
//! with ONNX Runtime, which does the arithmetic in f32.

use super::Registry;

pub mod grid_sample;
pub mod lrn;
pub mod nms;

/// Registers this module's operators.
pub fn register(r: &mut Registry) {
    r.add("NonMaxSuppression", nms::build);
    r.add("LRN", lrn::build);
    r.add("GridSample", grid_sample::build);
}
