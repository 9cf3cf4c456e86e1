//! Compute-heavy kernels: matrix products (MatMul, Gemm, MatMulInteger, Einsum), convolutions
//! (Conv, ConvTranspose, ConvInteger) and pooling (MaxPool, AveragePool, LpPool and their
//! global forms, MaxUnpool, RoiAlign, MaxRoiPool).
//!
//! The f32 paths go through the `gemm` crate (see [`blas`]); everything else is written as
//! plain loops that the compiler can vectorize.

use super::Registry;

mod blas;
mod convolution;
mod einsum;
mod geometry;
mod matmul;
mod pool;

/// Registers this module's operators.
pub fn register(r: &mut Registry) {
    matmul::register(r);
    einsum::register(r);
    convolution::register(r);
    pool::register(r);
}
