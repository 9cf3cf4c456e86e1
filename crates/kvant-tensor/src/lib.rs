//! Tensors for kvant: element types ([`DType`]), dense n-dimensional arrays ([`Tensor`]) and
//! reading/writing NumPy's `.npy` / `.npz` files.
//!
//! A [`Tensor`] owns its data in a typed vector ([`TensorData`]) so kernels get `&[f32]`,
//! `&[i8]` ... without unsafe casts. Types that have no native Rust representation here
//! (int4/uint4, float8, float4, complex) are kept as packed bytes so that they survive ONNX
//! round trips; kernels reject them with a clear error.

mod dtype;
mod element;
mod error;
pub mod npy;
mod tensor;

pub use dtype::DType;
pub use element::{Element, Scalar};
pub use error::TensorError;
pub use half::{bf16, f16};
pub use npy::write_atomic;
pub use tensor::{Tensor, TensorData};

/// Number of elements of a shape (1 for a scalar).
pub fn shape_size(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Row-major strides (in elements) of a shape.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}
