use super::{readers, remove_nodes, sole_reader, ConstantTable, PassReport};
use crate::{Model, Node};
use std::collections::HashSet;

/// The single value of a constant, as f64.
fn scalar(table: &ConstantTable, name: &str) -> Option<f64> {
    let t = table.get(name)?;
    let v = t.to_f32_vec().ok()?;
    match v.as_slice() {
        [x] => Some(*x as f64),
        _ => None,
    }
}

/// The bounds of a Clip node (attributes before opset 11, constant inputs after).
fn clip_bounds(table: &ConstantTable, clip: &Node) -> Option<(f64, f64)> {
    let from_input = |i: usize| clip.inputs.get(i).filter(|n| !n.is_empty());
    let lo = match from_input(1) {
        Some(n) => scalar(table, n)?,
        None => clip.attr_float("min").ok()??.into(),
    };
    let hi = match from_input(2) {
        Some(n) => scalar(table, n)?,
        None => clip.attr_float("max").ok()??.into(),
    };
    Some((lo, hi))
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

/// The input of `node` other than `known`, when `node` is binary and reads `known` once.
fn other_input<'a>(node: &'a Node, known: &str) -> Option<&'a str> {
    match node.inputs.as_slice() {
        [a, b] if a == known && b != known => Some(b),
        [a, b] if b == known && a != known => Some(a),
        _ => None,
    }
}

/// Replaces the decomposed hard-swish that exporters emit, `x * Clip(x + 3, 0, 6) / 6` (also
/// with `* (1/6)`) and `x * HardSigmoid(x, alpha = 1/6, beta = 0.5)`, by one `HardSwish` node,
/// in the main graph. Intermediate values must have no other reader. The result is meant for
/// kvant's executor: `HardSwish` may be newer than the model's opset.
pub fn fuse_hard_swish(model: &mut Model) -> PassReport {
    let graph = &mut model.graph;
    let readers = readers(graph);
    let table = ConstantTable::new(graph);
    let sole_reader = |value: &str| sole_reader(&readers, graph, value);
    let nodes = &graph.nodes;
    let is = |i: usize, op: &str| nodes[i].op_type == op && nodes[i].domain.is_empty();
    // (nodes to remove, the node that becomes HardSwish, x, y)
    let mut fusions: Vec<(Vec<usize>, usize, String, String)> = Vec::new();
    let mut used = HashSet::new();
    for (first, node) in nodes.iter().enumerate() {
        let Some(out) = node.outputs.first() else {
            continue;
        };
        if node.outputs.len() != 1 {
            continue;
        }
        let found = if is(first, "Add") {
            // x + 3 -> Clip(0, 6) -> x * . -> / 6 (or * 1/6)
            (|| {
                let x = node
                    .inputs
                    .iter()
                    .find(|n| scalar(&table, n).is_none())?
                    .clone();
                let three = other_input(node, &x)?;
                if !close(scalar(&table, three)?, 3.0) {
                    return None;
                }
                let clip = sole_reader(out)?;
                if !is(clip, "Clip") || nodes[clip].inputs.first() != Some(out) {
                    return None;
                }
                let (lo, hi) = clip_bounds(&table, &nodes[clip])?;
                if !close(lo, 0.0) || !close(hi, 6.0) {
                    return None;
                }
                let clip_out = nodes[clip].outputs.first()?;
                let mul = sole_reader(clip_out)?;
                if !is(mul, "Mul") || other_input(&nodes[mul], clip_out)? != x {
                    return None;
                }
                let mul_out = nodes[mul].outputs.first()?;
                let scale = sole_reader(mul_out)?;
                let six = if is(scale, "Div") && nodes[scale].inputs.first() == Some(mul_out) {
                    scalar(&table, nodes[scale].inputs.get(1)?)?
                } else if is(scale, "Mul") {
                    1.0 / scalar(&table, other_input(&nodes[scale], mul_out)?)?
                } else {
                    return None;
                };
                if !close(six, 6.0) {
                    return None;
                }
                let y = nodes[scale].outputs.first()?.clone();
                Some((vec![first, clip, mul], scale, x, y))
            })()
        } else if is(first, "HardSigmoid") {
            (|| {
                let alpha = node.attr_float("alpha").ok().flatten().unwrap_or(0.2) as f64;
                let beta = node.attr_float("beta").ok().flatten().unwrap_or(0.5) as f64;
                if !close(alpha, 1.0 / 6.0) || !close(beta, 0.5) {
                    return None;
                }
                let x = node.inputs.first()?.clone();
                let mul = sole_reader(out)?;
                if !is(mul, "Mul") || other_input(&nodes[mul], out)? != x {
                    return None;
                }
                let y = nodes[mul].outputs.first()?.clone();
                Some((vec![first], mul, x, y))
            })()
        } else {
            None
        };
        if let Some((removed, last, x, y)) = found {
            // A node may take part in one fusion only.
            if removed.iter().chain([&last]).all(|i| !used.contains(i)) {
                used.extend(removed.iter().copied());
                used.insert(last);
                fusions.push((removed, last, x, y));
            }
        }
    }
    let mut report = Vec::new();
    let mut removed_all = HashSet::new();
    for (removed, last, x, y) in fusions {
        let node = &mut graph.nodes[last];
        report.push(format!(
            "fused a decomposed hard-swish ending at {} into HardSwish",
            node.describe()
        ));
        node.op_type = "HardSwish".into();
        node.inputs = vec![x];
        node.outputs = vec![y];
        node.attributes.clear();
        removed_all.extend(removed);
    }
    remove_nodes(graph, &removed_all);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttrValue, Attribute, Graph, Initializer, ValueInfo};
    use kvant_tensor::{DType, Tensor};

    fn model(nodes: Vec<Node>, consts: &[(&str, f32)]) -> Model {
        Model {
            graph: Graph {
                inputs: vec![ValueInfo::tensor("x", DType::F32, &[])],
                outputs: vec![ValueInfo::tensor("y", DType::F32, &[])],
                initializers: consts
                    .iter()
                    .map(|(n, v)| Initializer::new(*n, Tensor::scalar(*v)))
                    .collect(),
                nodes,
                ..Graph::default()
            },
            ..Model::default()
        }
    }

    fn n(op: &str, inputs: &[&str], output: &str) -> Node {
        Node::new(
            op,
            output,
            inputs.iter().map(|s| s.to_string()).collect(),
            vec![output.to_string()],
        )
    }

    #[test]
    fn fuses_paddle_style_hard_swish() {
        let mut m = model(
            vec![
                n("Add", &["x", "three"], "a"),
                n("Clip", &["a", "zero", "six"], "b"),
                n("Mul", &["x", "b"], "c"),
                n("Div", &["c", "six"], "y"),
            ],
            &[("three", 3.0), ("zero", 0.0), ("six", 6.0)],
        );
        assert_eq!(fuse_hard_swish(&mut m).len(), 1);
        assert_eq!(m.graph.nodes.len(), 1);
        let node = &m.graph.nodes[0];
        assert_eq!(
            (node.op_type.as_str(), node.inputs.as_slice()),
            ("HardSwish", &["x".to_string()][..])
        );
        assert_eq!(node.outputs, vec!["y".to_string()]);
    }

    #[test]
    fn fuses_hard_sigmoid_times_x_only_with_hard_swish_constants() {
        let mut hs = n("HardSigmoid", &["x"], "h");
        hs.attributes
            .push(Attribute::new("alpha", AttrValue::Float(1.0 / 6.0)));
        let mut m = model(vec![hs, n("Mul", &["h", "x"], "y")], &[]);
        assert_eq!(fuse_hard_swish(&mut m).len(), 1);
        assert_eq!(m.graph.nodes[0].op_type, "HardSwish");

        // alpha 0.2 (Paddle's hardsigmoid in squeeze-excite blocks) is not a hard-swish.
        let mut m = model(
            vec![n("HardSigmoid", &["x"], "h"), n("Mul", &["h", "x"], "y")],
            &[],
        );
        assert!(fuse_hard_swish(&mut m).is_empty());
    }

    #[test]
    fn leaves_patterns_with_other_readers_or_constants() {
        let mut m = model(
            vec![
                n("Add", &["x", "three"], "a"),
                n("Clip", &["a", "zero", "six"], "b"),
                n("Mul", &["x", "b"], "c"),
                n("Div", &["c", "five"], "y"),
            ],
            &[("three", 3.0), ("zero", 0.0), ("six", 6.0), ("five", 5.0)],
        );
        assert!(fuse_hard_swish(&mut m).is_empty());
        let mut m = model(
            vec![
                n("Add", &["x", "three"], "a"),
                n("Clip", &["a", "zero", "six"], "b"),
                n("Mul", &["x", "b"], "c"),
                n("Div", &["c", "six"], "y"),
            ],
            &[("three", 3.0), ("zero", 0.0), ("six", 6.0)],
        );
        m.graph
            .outputs
            .push(ValueInfo::tensor("b", DType::F32, &[]));
        assert!(fuse_hard_swish(&mut m).is_empty());
    }
}
