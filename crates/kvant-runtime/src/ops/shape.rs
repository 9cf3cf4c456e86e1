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

#[cfg(test)]
mod tests {
    use super::super::{registry, BuildContext};
    use crate::RuntimeError;
    use kvant_graph::{AttrValue, Attribute, Node};
    use kvant_tensor::Tensor;
    use std::collections::HashMap;

    /// Builds and runs one node of `op` on `inputs`.
    fn run(
        op: &str,
        attrs: Vec<(&str, AttrValue)>,
        opset: i64,
        inputs: &[&Tensor],
        n_out: usize,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let mut node = Node::new(
            op,
            "t",
            (0..inputs.len()).map(|i| format!("i{i}")).collect(),
            (0..n_out).map(|i| format!("o{i}")).collect(),
        );
        node.attributes = attrs
            .into_iter()
            .map(|(n, v)| Attribute::new(n, v))
            .collect();
        let constants = HashMap::new();
        let ctx = BuildContext {
            opset,
            implicit_inputs: &[],
            constants: &constants,
            opsets: &[],
        };
        let builder = registry().get("", op).expect("registered");
        let k = builder(&node, &ctx)?;
        let args: Vec<Option<&Tensor>> = inputs.iter().map(|t| Some(*t)).collect();
        k.run(&args)
    }

    fn t_i64(shape: Vec<usize>, v: Vec<i64>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    #[test]
    fn tile_repeats_each_axis() {
        let x = t_i64(vec![2, 2], vec![1, 2, 3, 4]);
        let reps = t_i64(vec![2], vec![2, 3]);
        let y = run("Tile", vec![], 13, &[&x, &reps], 1).unwrap();
        assert_eq!(y[0].shape(), &[4, 6]);
        assert_eq!(
            y[0].as_slice::<i64>().unwrap()[..12],
            [1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]
        );
    }

    #[test]
    fn gather_nd_with_batch_dims() {
        // data [2, 2, 2], indices [2, 1] with batch_dims 1: one row per batch entry.
        let x = t_i64(vec![2, 2, 2], (0..8).collect());
        let ind = t_i64(vec![2, 1], vec![1, 0]);
        let y = run(
            "GatherND",
            vec![("batch_dims", AttrValue::Int(1))],
            13,
            &[&x, &ind],
            1,
        )
        .unwrap();
        assert_eq!(y[0].shape(), &[2, 2]);
        assert_eq!(y[0].as_slice::<i64>().unwrap(), &[2, 3, 4, 5]);
    }

    #[test]
    fn out_of_range_indices_are_errors_not_panics() {
        let x = t_i64(vec![3], vec![1, 2, 3]);
        let bad = t_i64(vec![1], vec![3]);
        assert!(run("Gather", vec![], 13, &[&x, &bad], 1).is_err());
        assert!(run("GatherElements", vec![], 13, &[&x, &bad], 1).is_err());
        let scalar = Tensor::scalar(1i64);
        assert!(run(
            "Concat",
            vec![("axis", AttrValue::Int(0))],
            13,
            &[&scalar],
            1
        )
        .is_err());
        assert!(run("Split", vec![], 13, &[&scalar], 1).is_err());
    }

    #[test]
    fn large_concat_and_strings() {
        // Big enough for the parallel path.
        let a = Tensor::from_vec(vec![300, 200], vec![1f32; 60_000]).unwrap();
        let b = Tensor::from_vec(vec![300, 100], vec![2f32; 30_000]).unwrap();
        let y = run(
            "Concat",
            vec![("axis", AttrValue::Int(1))],
            13,
            &[&a, &b],
            1,
        )
        .unwrap();
        let v = y[0].as_slice::<f32>().unwrap();
        assert_eq!(y[0].shape(), &[300, 300]);
        assert_eq!((v[199], v[200], v[300]), (1.0, 2.0, 1.0));
        let s = Tensor::new(
            vec![2],
            kvant_tensor::TensorData::String(vec![b"a".to_vec(), b"b".to_vec()]),
        )
        .unwrap();
        let y = run(
            "Concat",
            vec![("axis", AttrValue::Int(0))],
            13,
            &[&s, &s],
            1,
        )
        .unwrap();
        assert_eq!(y[0].shape(), &[4]);
    }

    #[test]
    fn split_uneven_num_outputs() {
        let x = t_i64(vec![5], (0..5).collect());
        let y = run(
            "Split",
            vec![("num_outputs", AttrValue::Int(2))],
            18,
            &[&x],
            2,
        )
        .unwrap();
        assert_eq!(y[0].as_slice::<i64>().unwrap(), &[0, 1, 2]);
        assert_eq!(y[1].as_slice::<i64>().unwrap(), &[3, 4]);
    }
}
