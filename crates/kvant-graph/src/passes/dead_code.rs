use super::PassReport;
use crate::{Graph, Model};
use std::collections::HashSet;

/// Names a graph and its subgraphs read (node inputs and graph outputs).
fn used_names(graph: &Graph, used: &mut HashSet<String>) {
    for node in &graph.nodes {
        used.extend(node.present_inputs().map(str::to_string));
        for sub in node.subgraphs() {
            used_names(sub, used);
        }
    }
    used.extend(graph.outputs.iter().map(|o| o.name.clone()));
}

/// Removes nodes none of whose outputs is read (ONNX operators have no side effects) and
/// initializers nothing reads, in the main graph. Repeats until nothing changes, so chains of
/// dead nodes go too.
pub fn remove_dead_code(model: &mut Model) -> PassReport {
    let graph = &mut model.graph;
    let (mut nodes_removed, mut inits_removed) = (0usize, 0usize);
    loop {
        let mut used = HashSet::new();
        used_names(graph, &mut used);
        let before = graph.nodes.len();
        graph
            .nodes
            .retain(|n| n.outputs.iter().any(|o| !o.is_empty() && used.contains(o)));
        nodes_removed += before - graph.nodes.len();
        if graph.nodes.len() == before {
            break;
        }
    }
    let mut used = HashSet::new();
    used_names(graph, &mut used);
    let declared_inputs: HashSet<String> = graph.inputs.iter().map(|i| i.name.clone()).collect();
    let before = graph.initializers.len();
    graph
        .initializers
        .retain(|i| used.contains(&i.name) || declared_inputs.contains(&i.name));
    inits_removed += before - graph.initializers.len();
    let mut report = Vec::new();
    if nodes_removed + inits_removed > 0 {
        report.push(format!(
            "removed {nodes_removed} unused nodes and {inits_removed} unused initializers"
        ));
    }
    report
}
