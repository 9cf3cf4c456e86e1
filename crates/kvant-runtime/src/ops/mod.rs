//! Operator kernels and the registry that maps `(domain, op_type)` to a kernel builder.
//!
//! A builder runs once per node when a [`crate::Plan`] is made: it reads and checks the node's
//! attributes (and constant inputs, e.g. to pre-pack weights) and returns a [`Kernel`] that the
//! executor calls on every run. Kernels get their inputs as `&[Option<&Tensor>]` (an omitted
//! optional input is `None`; for nodes with subgraphs, the outer-scope values the subgraphs use
//! follow the declared inputs, see [`BuildContext::implicit_inputs`]) and return one tensor per
//! declared output, in order (trailing optional outputs may be left out).
//!
//! Errors raised inside kernels need not name the node: the executor adds it.

use crate::{kernel_err, Plan, RuntimeError};
use kvant_graph::{Graph, Node, OpsetImport};
use kvant_tensor::Tensor;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

pub mod attention;
pub mod control;
pub mod conv;
pub mod detection;
pub mod elementwise;
pub mod reduce;
pub mod rnn;
pub mod shape;

/// A configured operator, ready to run.
pub trait Kernel: Send + Sync {
    /// Computes the outputs from the inputs.
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError>;
}

/// Everything a kernel builder may look at besides the node itself.
pub struct BuildContext<'a> {
    /// Version of the opset the node's domain is imported at.
    pub opset: i64,
    /// Names of the outer-scope values that the node's subgraphs read; the kernel receives
    /// them, in this order, after the node's declared inputs.
    pub implicit_inputs: &'a [String],
    /// Values known before any run (initializers and constants), by name.
    pub constants: &'a HashMap<String, Arc<Tensor>>,
    /// All opsets of the model (subgraphs are planned with the same ones).
    pub opsets: &'a [OpsetImport],
}

impl BuildContext<'_> {
    /// The value of input `index` if it is known before running (an initializer or constant).
    pub fn constant_input(&self, node: &Node, index: usize) -> Option<&Tensor> {
        let name = node.inputs.get(index)?;
        self.constants.get(name).map(Arc::as_ref)
    }

    /// Plans a subgraph of this node (If branches, Loop / Scan bodies). Names the subgraph uses
    /// but does not define are taken from the enclosing scope at run time.
    pub fn build_subgraph(&self, graph: &Graph) -> Result<Plan, RuntimeError> {
        Plan::for_subgraph(graph, self.opsets, self.constants)
    }
}

/// Builds a kernel for one node.
pub type KernelBuilder = fn(&Node, &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError>;

/// The table of supported operators.
#[derive(Default)]
pub struct Registry {
    builders: HashMap<(String, String), KernelBuilder>,
}

impl Registry {
    /// Registers an operator of the default ONNX domain.
    pub fn add(&mut self, op_type: &str, builder: KernelBuilder) {
        self.add_in_domain("", op_type, builder);
    }

    /// Registers an operator of another domain (e.g. `com.microsoft`).
    pub fn add_in_domain(&mut self, domain: &str, op_type: &str, builder: KernelBuilder) {
        self.builders
            .insert((domain.to_string(), op_type.to_string()), builder);
    }

    /// The builder of an operator.
    pub fn get(&self, domain: &str, op_type: &str) -> Option<KernelBuilder> {
        let domain = if domain == "ai.onnx" { "" } else { domain };
        self.builders
            .get(&(domain.to_string(), op_type.to_string()))
            .copied()
    }

    /// Supported operators as `(domain, op_type)`, sorted.
    pub fn operators(&self) -> Vec<(String, String)> {
        let mut ops: Vec<_> = self.builders.keys().cloned().collect();
        ops.sort();
        ops
    }
}

/// The registry with every kernel kvant has.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::default();
        elementwise::register(&mut r);
        reduce::register(&mut r);
        shape::register(&mut r);
        conv::register(&mut r);
        rnn::register(&mut r);
        control::register(&mut r);
        detection::register(&mut r);
        attention::register(&mut r);
        r
    })
}

/// A required input, or an error naming its position.
pub fn input<'a>(inputs: &[Option<&'a Tensor>], index: usize) -> Result<&'a Tensor, RuntimeError> {
    inputs
        .get(index)
        .copied()
        .flatten()
        .ok_or_else(|| kernel_err(format!("input {index} is required but missing")))
}

/// An optional input (`None` when omitted or absent).
pub fn optional_input<'a>(inputs: &[Option<&'a Tensor>], index: usize) -> Option<&'a Tensor> {
    inputs.get(index).copied().flatten()
}

/// Resolves a possibly negative axis against a rank.
pub fn normalize_axis(axis: i64, rank: usize) -> Result<usize, RuntimeError> {
    let r = rank as i64;
    // Rank 0 has no axis at all: callers index `shape[axis]`, so refuse it here.
    if axis < -r || axis >= r {
        return Err(kernel_err(format!(
            "axis {axis} is out of range for rank {rank}"
        )));
    }
    Ok(if axis < 0 { axis + r } else { axis } as usize)
}

/// The numpy-style broadcast of several shapes.
pub fn broadcast_shape(shapes: &[&[usize]]) -> Result<Vec<usize>, RuntimeError> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for shape in shapes {
        let offset = rank - shape.len();
        for (i, &d) in shape.iter().enumerate() {
            let o = &mut out[offset + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(kernel_err(format!(
                    "shapes {:?} cannot be broadcast together",
                    shapes
                )));
            }
        }
    }
    Ok(out)
}

/// Strides (in elements) to read a tensor of `shape` as if it had the broadcast shape `out`:
/// broadcast dimensions get stride 0.
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = kvant_tensor::strides_of(shape);
    let offset = out.len() - shape.len();
    (0..out.len())
        .map(|i| {
            if i < offset || shape[i - offset] == 1 {
                0
            } else {
                own[i - offset]
            }
        })
        .collect()
}

/// Turns a graph error about a node attribute into a kernel error (used with `?` in builders).
pub fn attr_err(e: kvant_graph::GraphError) -> RuntimeError {
    RuntimeError::Graph(e)
}
