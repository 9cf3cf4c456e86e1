//! Graph rewrites: functions `&mut Model -> report` that each do one thing and can be tested
//! alone. Passes never change what a model computes beyond float rounding.

mod constants;
mod dead_code;
mod fold_batch_norm;
mod fold_conv_affine;
mod fuse_hard_swish;

pub use constants::ConstantTable;
pub use dead_code::remove_dead_code;
pub use fold_batch_norm::fold_batch_norm;
pub use fold_conv_affine::fold_conv_affine;
pub use fuse_hard_swish::fuse_hard_swish;

use crate::{Graph, Initializer, Model};
use kvant_tensor::Tensor;
use std::collections::{HashMap, HashSet};

/// What a pass changed, in words a user can read (one entry per rewrite).
pub type PassReport = Vec<String>;

/// The rewrites that speed up inference without changing results beyond float rounding:
/// BatchNormalization and constant per-channel Mul / Add folded into the preceding Conv,
/// decomposed hard-swish fused into one
/// `HardSwish`, then unused nodes and initializers dropped. The result is for kvant's
/// executor (it may use operators newer than the model's opset), not for export.
pub fn optimize_for_inference(model: &mut Model) -> PassReport {
    let mut report = fold_batch_norm(model);
    report.extend(fold_conv_affine(model));
    report.extend(fuse_hard_swish(model));
    report.extend(remove_dead_code(model));
    report
}

/// The nodes (by index) that read each value of a graph. A read from inside a subgraph is
/// listed twice, so that such a value never looks like it has a single reader and is never
/// rewritten away.
pub(crate) fn readers(graph: &Graph) -> HashMap<String, Vec<usize>> {
    let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        for input in node.present_inputs() {
            readers.entry(input.to_string()).or_default().push(i);
        }
        for sub in node.subgraphs() {
            for name in sub.free_variables() {
                readers.entry(name).or_default().extend([i, i]);
            }
        }
    }
    readers
}

/// The one node that reads `value`, when exactly one does and `value` is not a graph output.
pub(crate) fn sole_reader(
    readers: &HashMap<String, Vec<usize>>,
    graph: &Graph,
    value: &str,
) -> Option<usize> {
    match readers.get(value).map(Vec::as_slice) {
        Some([r]) if !graph.outputs.iter().any(|o| o.name == value) => Some(*r),
        _ => None,
    }
}

/// Hands out value names that the graph does not use yet.
pub(crate) struct NameAllocator {
    taken: HashSet<String>,
}

impl NameAllocator {
    /// Reserves every initializer, input and node output name of `graph`.
    pub(crate) fn new(graph: &Graph) -> NameAllocator {
        let taken = graph
            .initializers
            .iter()
            .map(|i| i.name.clone())
            .chain(graph.inputs.iter().map(|i| i.name.clone()))
            .chain(graph.nodes.iter().flat_map(|n| n.outputs.iter().cloned()))
            .collect();
        NameAllocator { taken }
    }

    /// `base`, or `base_1`, `base_2` ... whichever is free first.
    pub(crate) fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while !self.taken.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }
}

/// Gives node `conv` (a Conv) a new weight and bias, stored as new initializers, and makes it
/// produce `output` (the name of the node whose work it absorbed).
pub(crate) fn replace_conv_parameters(
    graph: &mut Graph,
    conv: usize,
    weight: Tensor,
    bias: Tensor,
    output: String,
    names: &mut NameAllocator,
) {
    let node = &mut graph.nodes[conv];
    let w_name = names.fresh(&format!(
        "{}_folded",
        node.inputs.get(1).map_or("w", String::as_str)
    ));
    let b_name = names.fresh(&format!("{w_name}_bias"));
    node.inputs.truncate(1);
    node.inputs.push(w_name.clone());
    node.inputs.push(b_name.clone());
    node.outputs = vec![output];
    graph.initializers.push(Initializer::new(w_name, weight));
    graph.initializers.push(Initializer::new(b_name, bias));
}

/// Removes the nodes at the given indices, keeping the order of the others.
pub(crate) fn remove_nodes(graph: &mut Graph, indices: &HashSet<usize>) {
    let mut index = 0;
    graph.nodes.retain(|_| {
        let keep = !indices.contains(&index);
        index += 1;
        keep
    });
}
