//! Data-movement and shape operators: reshaping, transposing, slicing, concatenating, gathering
//! and scattering, padding, and small tensor generators.
//!
//! The kernels are generic over the element type (see [`data::Item`]): they work on every
//! numeric type, bool, strings and byte-sized packed types (float8, complex) alike. Hot paths
//! (Transpose, Concat, Gather, Slice, Expand) copy contiguous runs rather than single elements.

mod basic;
mod data;
mod gather;
mod layout;
mod scatter;
mod window;

use super::{Kernel, Registry};
use crate::RuntimeError;
use kvant_tensor::Tensor;

/// A kernel made from a closure that captures the node's parsed attributes.
struct FnKernel<F>(F);

impl<F> Kernel for FnKernel<F>
where
    F: Fn(&[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> + Send + Sync,
{
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        (self.0)(inputs)
    }
}

/// Boxes a closure as a [`Kernel`].
fn kernel<F>(f: F) -> Box<dyn Kernel>
where
    F: Fn(&[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> + Send + Sync + 'static,
{
    Box::new(FnKernel(f))
}

/// Registers this module's operators.
pub fn register(r: &mut Registry) {
    r.add("Identity", basic::build_identity);
    r.add("Constant", basic::build_constant);
    r.add("Shape", basic::build_shape);
    r.add("Size", basic::build_size);
    r.add("Reshape", basic::build_reshape);
    r.add("Flatten", basic::build_flatten);
    r.add("Squeeze", basic::build_squeeze);
    r.add("Unsqueeze", basic::build_unsqueeze);
    r.add("Dropout", basic::build_dropout);
    r.add("ConstantOfShape", basic::build_constant_of_shape);
    r.add("Range", basic::build_range);
    r.add("EyeLike", basic::build_eye_like);
    r.add("Transpose", layout::build_transpose);
    r.add("DepthToSpace", layout::build_depth_to_space);
    r.add("SpaceToDepth", layout::build_space_to_depth);
    r.add("Concat", layout::build_concat);
    r.add("Split", layout::build_split);
    r.add("Tile", layout::build_tile);
    r.add("Expand", layout::build_expand);
    r.add("Slice", window::build_slice);
    r.add("Pad", window::build_pad);
    r.add("CenterCropPad", window::build_center_crop_pad);
    r.add("ReverseSequence", window::build_reverse_sequence);
    r.add("Trilu", window::build_trilu);
    r.add("Gather", gather::build_gather);
    r.add("GatherElements", gather::build_gather_elements);
    r.add("GatherND", gather::build_gather_nd);
    r.add("Compress", gather::build_compress);
    r.add("NonZero", gather::build_non_zero);
    r.add("OneHot", gather::build_one_hot);
    r.add("ScatterElements", scatter::build_scatter_elements);
    r.add("Scatter", scatter::build_scatter);
    r.add("ScatterND", scatter::build_scatter_nd);
}
