//! `kvant inspect`.

use crate::error::CliError;
use kvant_graph::{load_model, AttrValue, Graph, Model, ValueInfo};
use kvant_runtime::format_dims;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Parameters: initializers plus the tensors of `Constant` nodes (Paddle exports keep weights
/// there), in every subgraph.
fn parameters(graph: &Graph, count: &mut usize, bytes: &mut usize) {
    for init in &graph.initializers {
        *count += init.tensor.len();
        *bytes += init.tensor.byte_size();
    }
    for node in &graph.nodes {
        for attr in &node.attributes {
            match &attr.value {
                AttrValue::Tensor(t) if node.op_type == "Constant" => {
                    *count += t.tensor.len();
                    *bytes += t.tensor.byte_size();
                }
                AttrValue::Graph(g) => parameters(g, count, bytes),
                AttrValue::Graphs(gs) => gs.iter().for_each(|g| parameters(g, count, bytes)),
                _ => {}
            }
        }
    }
}

fn describe_value(v: &ValueInfo) -> (String, String) {
    let dtype = v.dtype().map(|d| d.to_string()).unwrap_or_else(|| {
        if v.is_tensor() {
            "?".into()
        } else {
            "non-tensor".into()
        }
    });
    let shape = v
        .shape()
        .map(|s| format_dims(&s))
        .unwrap_or_else(|| "?".into());
    (dtype, shape)
}

fn op_histogram(model: &Model) -> BTreeMap<String, usize> {
    let mut ops = BTreeMap::new();
    model.graph.visit_nodes(&mut |n| {
        let key = if n.domain.is_empty() {
            n.op_type.clone()
        } else {
            format!("{}.{}", n.domain, n.op_type)
        };
        *ops.entry(key).or_insert(0) += 1;
    });
    ops
}

/// Prints a model summary.
pub fn inspect(path: &Path, nodes: bool, as_json: bool) -> Result<(), CliError> {
    let model = load_model(path)?;
    let graph = &model.graph;
    let (mut params, mut bytes) = (0, 0);
    parameters(graph, &mut params, &mut bytes);
    let ops = op_histogram(&model);
    let node_count: usize = ops.values().sum();
    let inputs: Vec<(String, String, String)> = graph
        .runtime_inputs()
        .into_iter()
        .map(|v| {
            let (d, s) = describe_value(v);
            (v.name.clone(), d, s)
        })
        .collect();
    let outputs: Vec<(String, String, String)> = graph
        .outputs
        .iter()
        .map(|v| {
            let (d, s) = describe_value(v);
            (v.name.clone(), d, s)
        })
        .collect();
    if as_json {
        let io = |list: &[(String, String, String)]| -> Value {
            list.iter()
                .map(|(n, d, s)| json!({"name": n, "dtype": d, "shape": s}))
                .collect()
        };
        let mut out = json!({
            "file": path.display().to_string(),
            "ir_version": model.ir_version,
            "producer": model.producer_name,
            "opsets": model.opset_import.iter().map(|o| json!({"domain": o.domain, "version": o.version})).collect::<Vec<_>>(),
            "inputs": io(&inputs),
            "outputs": io(&outputs),
            "nodes": node_count,
            "ops": ops,
            "parameters": params,
            "parameter_bytes": bytes,
        });
        if nodes {
            out["node_list"] = graph
                .nodes
                .iter()
                .map(|n| json!({"name": n.name, "op": n.op_type, "inputs": n.inputs, "outputs": n.outputs}))
                .collect();
        }
        println!("{out}");
        return Ok(());
    }
    println!("model      {}", path.display());
    println!(
        "producer   {} {}",
        model.producer_name.as_deref().unwrap_or("?"),
        model.producer_version.as_deref().unwrap_or("")
    );
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            let d = if o.domain.is_empty() {
                "ai.onnx"
            } else {
                &o.domain
            };
            format!("{d} {}", o.version)
        })
        .collect();
    println!(
        "ir version {}; opsets {}",
        model.ir_version,
        opsets.join(", ")
    );
    println!("inputs");
    for (n, d, s) in &inputs {
        println!("  {n:<30} {d:<6} {s}");
    }
    println!("outputs");
    for (n, d, s) in &outputs {
        println!("  {n:<30} {d:<6} {s}");
    }
    println!(
        "parameters {params} ({:.2} MB)",
        bytes as f64 / (1024.0 * 1024.0)
    );
    println!("nodes      {node_count}");
    let mut by_count: Vec<_> = ops.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (op, count) in by_count {
        println!("  {op:<28} {count}");
    }
    if nodes {
        println!("node list (name, op, inputs -> outputs)");
        for n in &graph.nodes {
            println!(
                "  {:<40} {:<20} {} -> {}",
                n.name,
                n.op_type,
                n.inputs.join(", "),
                n.outputs.join(", ")
            );
        }
    }
    Ok(())
}
