use crate::{AttrValue, Graph, Node};
use kvant_tensor::Tensor;
use std::collections::HashMap;

/// The values of a graph that are known without running it: initializers and the outputs of
/// `Constant` nodes (exporters such as Paddle2ONNX keep every weight in `Constant` nodes).
pub struct ConstantTable<'g> {
    values: HashMap<&'g str, &'g Tensor>,
}

/// The tensor a `Constant` node holds, when it is stored as a tensor attribute.
pub fn constant_node_value(node: &Node) -> Option<&Tensor> {
    if node.op_type != "Constant" || !node.domain.is_empty() {
        return None;
    }
    match node.attr("value") {
        Some(AttrValue::Tensor(t)) => Some(&t.tensor),
        _ => None,
    }
}

impl<'g> ConstantTable<'g> {
    /// Collects the constants of one graph (not of its subgraphs).
    pub fn new(graph: &'g Graph) -> ConstantTable<'g> {
        let mut values = HashMap::new();
        for init in &graph.initializers {
            values.insert(init.name.as_str(), &init.tensor);
        }
        for node in &graph.nodes {
            if let (Some(t), Some(out)) = (constant_node_value(node), node.outputs.first()) {
                values.insert(out.as_str(), t);
            }
        }
        // A graph input of the same name as an initializer can be overridden at run time.
        for input in &graph.inputs {
            values.remove(input.name.as_str());
        }
        ConstantTable { values }
    }

    /// The value of a constant.
    pub fn get(&self, name: &str) -> Option<&'g Tensor> {
        self.values.get(name).copied()
    }
}
