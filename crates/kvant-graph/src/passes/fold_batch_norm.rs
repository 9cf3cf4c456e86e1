use super::{
    readers, remove_nodes, replace_conv_parameters, sole_reader, ConstantTable, NameAllocator,
    PassReport,
};
use crate::{Model, Node};
use kvant_tensor::Tensor;
use std::collections::{HashMap, HashSet};

/// A Conv -> BatchNormalization pair that can be folded, with the new weight and bias.
struct Fold {
    conv: usize,
    bn: usize,
    weight: Tensor,
    bias: Tensor,
}

fn f32_values(table: &ConstantTable, name: &str) -> Option<Vec<f32>> {
    let t = table.get(name)?;
    t.as_slice::<f32>().ok().map(<[f32]>::to_vec)
}

/// Computes the folded parameters of `conv` followed by `bn`, if both are inference-mode f32
/// nodes with constant parameters.
fn plan_fold(table: &ConstantTable, conv: &Node, bn: &Node) -> Option<(Tensor, Tensor)> {
    if bn.attr_int("training_mode").ok().flatten().unwrap_or(0) != 0 {
        return None;
    }
    // Only the first BN output (Y) may be used; running mean/var outputs mean training.
    if bn.outputs.iter().skip(1).any(|o| !o.is_empty()) || bn.inputs.len() < 5 {
        return None;
    }
    let epsilon = bn.attr_float("epsilon").ok().flatten().unwrap_or(1e-5);
    let weight = table.get(conv.inputs.get(1)?)?;
    let w = weight.as_slice::<f32>().ok()?;
    let shape = weight.shape().to_vec();
    let out_channels = *shape.first()?;
    let gamma = f32_values(table, &bn.inputs[1])?;
    let beta = f32_values(table, &bn.inputs[2])?;
    let mean = f32_values(table, &bn.inputs[3])?;
    let var = f32_values(table, &bn.inputs[4])?;
    if [gamma.len(), beta.len(), mean.len(), var.len()]
        .iter()
        .any(|&l| l != out_channels)
    {
        return None;
    }
    let bias = match conv.inputs.get(2).filter(|n| !n.is_empty()) {
        Some(name) => {
            let b = f32_values(table, name)?;
            (b.len() == out_channels).then_some(b)?
        }
        None => vec![0.0; out_channels],
    };
    let per_channel = w.len() / out_channels.max(1);
    let mut new_w = Vec::with_capacity(w.len());
    let mut new_b = Vec::with_capacity(out_channels);
    for c in 0..out_channels {
        // Computed in f64 so that folding adds no rounding beyond the final f32 store.
        let scale = gamma[c] as f64 / (var[c] as f64 + epsilon as f64).sqrt();
        new_w.extend(
            w[c * per_channel..(c + 1) * per_channel]
                .iter()
                .map(|&v| (v as f64 * scale) as f32),
        );
        new_b.push(((bias[c] as f64 - mean[c] as f64) * scale + beta[c] as f64) as f32);
    }
    Some((
        Tensor::from_vec(shape, new_w).ok()?,
        Tensor::from_vec(vec![out_channels], new_b).ok()?,
    ))
}

/// Folds every inference-mode BatchNormalization that directly follows a Conv (whose output
/// nothing else reads) into the Conv's weight and bias, in the main graph. The Conv then
/// produces the BatchNormalization's output name, so downstream names are unchanged.
pub fn fold_batch_norm(model: &mut Model) -> PassReport {
    let graph = &mut model.graph;
    let readers = readers(graph);
    let producer: HashMap<&str, usize> = graph
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let table = ConstantTable::new(graph);
    let mut folds = Vec::new();
    for (bn_index, bn) in graph.nodes.iter().enumerate() {
        if bn.op_type != "BatchNormalization" || !bn.domain.is_empty() {
            continue;
        }
        let Some(x) = bn.inputs.first() else { continue };
        let Some(&conv_index) = producer.get(x.as_str()) else {
            continue;
        };
        let conv = &graph.nodes[conv_index];
        if conv.op_type != "Conv" || !conv.domain.is_empty() || conv.outputs.len() != 1 {
            continue;
        }
        if sole_reader(&readers, graph, x) != Some(bn_index) {
            continue;
        }
        if let Some((weight, bias)) = plan_fold(&table, conv, bn) {
            folds.push(Fold {
                conv: conv_index,
                bn: bn_index,
                weight,
                bias,
            });
        }
    }
    let mut report = Vec::new();
    let mut names = NameAllocator::new(graph);
    let mut removed = HashSet::new();
    for fold in folds {
        let bn_output = graph.nodes[fold.bn].outputs[0].clone();
        report.push(format!(
            "folded {} into {}",
            graph.nodes[fold.bn].describe(),
            graph.nodes[fold.conv].describe()
        ));
        replace_conv_parameters(
            graph,
            fold.conv,
            fold.weight,
            fold.bias,
            bn_output,
            &mut names,
        );
        removed.insert(fold.bn);
    }
    remove_nodes(graph, &removed);
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttrValue, Attribute, Graph, Initializer, ValueInfo};
    use kvant_tensor::DType;

    fn t(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    fn conv_bn_model(conv_output_also_read: bool) -> Model {
        let mut graph = Graph {
            name: "g".into(),
            inputs: vec![ValueInfo::tensor("x", DType::F32, &[])],
            outputs: vec![ValueInfo::tensor("y", DType::F32, &[])],
            ..Graph::default()
        };
        graph.initializers = vec![
            Initializer::new("w", t(vec![2, 1, 1, 1], vec![2.0, 3.0])),
            Initializer::new("gamma", t(vec![2], vec![1.0, 2.0])),
            Initializer::new("beta", t(vec![2], vec![0.5, -0.5])),
            Initializer::new("mean", t(vec![2], vec![1.0, 0.0])),
            Initializer::new("var", t(vec![2], vec![3.0, 0.0])),
        ];
        graph.nodes.push(Node::new(
            "Conv",
            "conv",
            vec!["x".into(), "w".into()],
            vec!["c".into()],
        ));
        let mut bn = Node::new(
            "BatchNormalization",
            "bn",
            ["c", "gamma", "beta", "mean", "var"]
                .map(String::from)
                .to_vec(),
            vec!["y".into()],
        );
        bn.attributes
            .push(Attribute::new("epsilon", AttrValue::Float(1.0)));
        graph.nodes.push(bn);
        if conv_output_also_read {
            graph.outputs.push(ValueInfo::tensor("c", DType::F32, &[]));
        }
        Model {
            graph,
            ..Model::default()
        }
    }

    #[test]
    fn folds_scale_and_shift_into_conv() {
        let mut model = conv_bn_model(false);
        let report = fold_batch_norm(&mut model);
        assert_eq!(report.len(), 1, "{report:?}");
        let g = &model.graph;
        assert_eq!(g.nodes.len(), 1);
        let conv = &g.nodes[0];
        assert_eq!(conv.outputs, vec!["y".to_string()]);
        let w = g
            .initializer(&conv.inputs[1])
            .unwrap()
            .tensor
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        let b = g
            .initializer(&conv.inputs[2])
            .unwrap()
            .tensor
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        // scale = gamma / sqrt(var + eps) = [0.5, 2.0]
        assert_eq!(w, vec![1.0, 6.0]);
        assert_eq!(b, vec![(0.0 - 1.0) * 0.5 + 0.5, -0.5]);
    }

    #[test]
    fn leaves_pairs_whose_conv_output_is_read_elsewhere() {
        let mut model = conv_bn_model(true);
        assert!(fold_batch_norm(&mut model).is_empty());
        assert_eq!(model.graph.nodes.len(), 2);
    }
}
