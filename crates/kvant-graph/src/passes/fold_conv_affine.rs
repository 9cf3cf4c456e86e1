use super::{
    readers, remove_nodes, replace_conv_parameters, sole_reader, ConstantTable, NameAllocator,
    PassReport,
};
use crate::{Model, Node};
use kvant_tensor::Tensor;
use std::collections::HashSet;

/// A per-output-channel factor from a constant: one value for all channels, or one per
/// channel laid out along axis 1 of an NC... activation (`[C,1,..]` after broadcasting).
fn channel_values(t: &Tensor, channels: usize, conv_rank: usize) -> Option<Vec<f32>> {
    let v = t.as_slice::<f32>().ok()?;
    let shape = t.shape();
    // A constant of higher rank would change the output's shape by broadcasting.
    if shape.len() > conv_rank {
        return None;
    }
    if v.len() == 1 {
        return Some(vec![v[0]; channels]);
    }
    // Shape must broadcast as [.., C, 1, .., 1] with C at axis 1 of the conv output.
    if v.len() != channels {
        return None;
    }
    let axis_from_end = conv_rank - 1 - 1;
    let pos = shape.len().checked_sub(1 + axis_from_end)?;
    let only_channel = shape
        .iter()
        .enumerate()
        .all(|(i, &d)| if i == pos { d == channels } else { d == 1 });
    only_channel.then(|| v.to_vec())
}

/// Folds constant per-channel scales and shifts that follow a Conv (`Conv -> Mul(c)`,
/// `Conv -> Add(c)`, in any number and order) into the Conv's weight and bias, in the main
/// graph, as exporters of "learnable affine" layers (PP-OCRv4's LCNet) and unfused biases
/// produce them. The Conv output may have no other reader.
pub fn fold_conv_affine(model: &mut Model) -> PassReport {
    let mut report = Vec::new();
    // Each round folds one Mul/Add per Conv; repeat until nothing changes.
    loop {
        let folded = fold_round(model);
        if folded.is_empty() {
            return report;
        }
        report.extend(folded);
    }
}

fn fold_round(model: &mut Model) -> PassReport {
    let graph = &mut model.graph;
    let readers = readers(graph);
    let table = ConstantTable::new(graph);
    // (conv index, follower index, new weight, new bias)
    let mut folds: Vec<(usize, usize, Tensor, Tensor)> = Vec::new();
    let mut touched = HashSet::new();
    for (ci, conv) in graph.nodes.iter().enumerate() {
        if conv.op_type != "Conv" || !conv.domain.is_empty() || conv.outputs.len() != 1 {
            continue;
        }
        let out = conv.outputs[0].as_str();
        let Some(fi) = sole_reader(&readers, graph, out) else {
            continue;
        };
        let follower: &Node = &graph.nodes[fi];
        let is_mul = follower.op_type == "Mul";
        if !(is_mul || follower.op_type == "Add") || !follower.domain.is_empty() {
            continue;
        }
        let Some(other) = (match follower.inputs.as_slice() {
            [a, b] if a == out && b != out => Some(b),
            [a, b] if b == out && a != out => Some(a),
            _ => None,
        }) else {
            continue;
        };
        let (Some(c), Some(w)) = (
            table.get(other),
            conv.inputs.get(1).and_then(|n| table.get(n)),
        ) else {
            continue;
        };
        let Some(&channels) = w.shape().first() else {
            continue;
        };
        let Some(factor) = channel_values(c, channels, w.rank()) else {
            continue;
        };
        let Ok(wv) = w.as_slice::<f32>() else {
            continue;
        };
        let bias = match conv.inputs.get(2).filter(|n| !n.is_empty()) {
            Some(name) => match table.get(name).and_then(|b| b.as_slice::<f32>().ok()) {
                Some(b) if b.len() == channels => b.to_vec(),
                _ => continue,
            },
            None => vec![0.0; channels],
        };
        let per_channel = wv.len() / channels.max(1);
        let (new_w, new_b): (Vec<f32>, Vec<f32>) = if is_mul {
            (
                wv.iter()
                    .enumerate()
                    .map(|(i, &x)| x * factor[i / per_channel.max(1)])
                    .collect(),
                bias.iter().zip(&factor).map(|(b, f)| b * f).collect(),
            )
        } else {
            (
                wv.to_vec(),
                bias.iter().zip(&factor).map(|(b, f)| b + f).collect(),
            )
        };
        if touched.contains(&fi) {
            continue;
        }
        touched.insert(fi);
        let (Ok(new_w), Ok(new_b)) = (
            Tensor::from_vec(w.shape().to_vec(), new_w),
            Tensor::from_vec(vec![channels], new_b),
        ) else {
            continue;
        };
        folds.push((ci, fi, new_w, new_b));
    }
    let mut names = NameAllocator::new(graph);
    let mut report = Vec::new();
    let mut removed = HashSet::new();
    for (ci, fi, w, b) in folds {
        let y = graph.nodes[fi].outputs[0].clone();
        report.push(format!(
            "folded {} into {}",
            graph.nodes[fi].describe(),
            graph.nodes[ci].describe()
        ));
        replace_conv_parameters(graph, ci, w, b, y, &mut names);
        removed.insert(fi);
    }
    remove_nodes(graph, &removed);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Graph, Initializer, ValueInfo};
    use kvant_tensor::DType;

    #[test]
    fn folds_scalar_scale_then_per_channel_shift() {
        let t = |shape: Vec<usize>, v: Vec<f32>| Tensor::from_vec(shape, v).unwrap();
        let mut model = Model {
            graph: Graph {
                inputs: vec![ValueInfo::tensor("x", DType::F32, &[])],
                outputs: vec![ValueInfo::tensor("y", DType::F32, &[])],
                initializers: vec![
                    Initializer::new("w", t(vec![2, 1, 1, 1], vec![1.0, 2.0])),
                    Initializer::new("b", t(vec![2], vec![0.5, 1.0])),
                    Initializer::new("s", t(vec![1], vec![3.0])),
                    Initializer::new("shift", t(vec![1, 2, 1, 1], vec![10.0, 20.0])),
                ],
                nodes: vec![
                    Node::new(
                        "Conv",
                        "c",
                        ["x", "w", "b"].map(String::from).to_vec(),
                        vec!["c".into()],
                    ),
                    Node::new("Mul", "m", vec!["s".into(), "c".into()], vec!["m".into()]),
                    Node::new(
                        "Add",
                        "a",
                        vec!["m".into(), "shift".into()],
                        vec!["y".into()],
                    ),
                ],
                ..Graph::default()
            },
            ..Model::default()
        };
        let report = fold_conv_affine(&mut model);
        assert_eq!(report.len(), 2, "{report:?}");
        let g = &model.graph;
        assert_eq!(g.nodes.len(), 1);
        let conv = &g.nodes[0];
        assert_eq!(conv.outputs, vec!["y".to_string()]);
        let get = |n: &str| {
            g.initializer(n)
                .unwrap()
                .tensor
                .as_slice::<f32>()
                .unwrap()
                .to_vec()
        };
        assert_eq!(get(&conv.inputs[1]), vec![3.0, 6.0]);
        assert_eq!(get(&conv.inputs[2]), vec![11.5, 23.0]);
    }
}
