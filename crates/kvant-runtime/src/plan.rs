use crate::ops::{registry, BuildContext, Kernel};
use crate::{RuntimeError, ValueHook};
use kvant_graph::{Graph, Model, Node, OpsetImport, ValueInfo};
use kvant_tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Operators whose outputs differ between runs; they are never folded at plan time.
const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

/// One node, ready to run.
struct Step {
    /// How the node is named in messages.
    node: String,
    /// Operator type, for profiles.
    op_type: String,
    kernel: Box<dyn Kernel>,
    /// Value ids of the declared inputs, then the implicit (outer-scope) ones.
    inputs: Vec<Option<usize>>,
    outputs: Vec<Option<usize>>,
    /// Values no later step needs: dropped right after this step.
    free_after: Vec<usize>,
}

/// How long one step of a profiled run took.
#[derive(Debug, Clone)]
pub struct StepTime {
    /// The node, as messages name it.
    pub node: String,
    /// Its operator type.
    pub op_type: String,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Where a value comes from before any step runs.
#[derive(Clone)]
enum Source {
    Input(usize),
    Outer(usize),
    Constant(Arc<Tensor>),
    Node,
}

/// A graph compiled for execution: kernels built once, values numbered, and for every step
/// the list of buffers that can be freed after it, so that a run holds only live tensors.
pub struct Plan {
    graph_name: String,
    names: Vec<String>,
    sources: Vec<Source>,
    inputs: Vec<(ValueInfo, usize)>,
    outer: Vec<(String, usize)>,
    outputs: Vec<(String, usize)>,
    steps: Vec<Step>,
}

/// A value during a run: borrowed from the caller, or produced (and shared) by the run.
enum Slot<'a> {
    Borrowed(&'a Tensor),
    Shared(Arc<Tensor>),
}

impl Slot<'_> {
    fn get(&self) -> &Tensor {
        match self {
            Slot::Borrowed(t) => t,
            Slot::Shared(t) => t,
        }
    }
}

/// Value numbering while a plan is built.
#[derive(Default)]
struct ValueTable {
    ids: HashMap<String, usize>,
    names: Vec<String>,
    sources: Vec<Source>,
}

impl ValueTable {
    fn add(&mut self, name: &str, source: Source) -> usize {
        let id = self.names.len();
        self.names.push(name.to_string());
        self.sources.push(source);
        self.ids.insert(name.to_string(), id);
        id
    }
}

/// Names a graph reads but does not define (its outer-scope references), in first-use order.
pub fn free_variables(graph: &Graph) -> Vec<String> {
    graph.free_variables()
}

/// Outer-scope names that a node's subgraphs read.
fn implicit_inputs(node: &Node) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for sub in node.subgraphs() {
        for name in free_variables(sub) {
            if seen.insert(name.clone()) {
                out.push(name);
            }
        }
    }
    out
}

impl Plan {
    /// Plans a model's main graph.
    pub fn new(model: &Model) -> Result<Plan, RuntimeError> {
        Plan::build(&model.graph, &model.opset_import, &HashMap::new(), false)
    }

    /// Plans a subgraph; names it does not define come from `outer_constants` when they are
    /// known constants, otherwise from the values passed to [`Plan::run_subgraph`].
    pub fn for_subgraph(
        graph: &Graph,
        opsets: &[OpsetImport],
        outer_constants: &HashMap<String, Arc<Tensor>>,
    ) -> Result<Plan, RuntimeError> {
        Plan::build(graph, opsets, outer_constants, true)
    }

    fn build(
        graph: &Graph,
        opsets: &[OpsetImport],
        outer_constants: &HashMap<String, Arc<Tensor>>,
        is_subgraph: bool,
    ) -> Result<Plan, RuntimeError> {
        let plan_err = |reason: String| RuntimeError::Plan {
            graph: graph.name.clone(),
            reason,
        };
        let mut table = ValueTable::default();
        // Constants visible here: the enclosing scope's, then this graph's own.
        let mut constants: HashMap<String, Arc<Tensor>> = outer_constants.clone();
        for init in &graph.initializers {
            constants.insert(init.name.clone(), Arc::new(init.tensor.clone()));
        }
        let mut inputs = Vec::new();
        for info in &graph.inputs {
            // An input with an initializer of the same name is a constant (ONNX allows
            // overriding it; kvant treats it as fixed).
            if graph.initializer(&info.name).is_some() {
                continue;
            }
            constants.remove(&info.name);
            let id = table.add(&info.name, Source::Input(inputs.len()));
            inputs.push((info.clone(), id));
        }
        for init in &graph.initializers {
            table.add(&init.name, Source::Constant(constants[&init.name].clone()));
        }
        let mut outer = Vec::new();
        for name in free_variables(graph) {
            if table.ids.contains_key(&name) {
                continue;
            }
            if let Some(c) = constants.get(&name) {
                table.add(&name, Source::Constant(c.clone()));
            } else if is_subgraph {
                let id = table.add(&name, Source::Outer(outer.len()));
                outer.push((name, id));
            } else {
                return Err(plan_err(format!(
                    "value '{name}' is used but no node, input or initializer defines it"
                )));
            }
        }

        let reg = registry();
        let mut steps = Vec::new();
        for node in &graph.nodes {
            let described = node.describe();
            let opset = opsets
                .iter()
                .find(|o| {
                    let d = if o.domain == "ai.onnx" { "" } else { &o.domain };
                    d == node.domain
                })
                .map(|o| o.version)
                .unwrap_or(0);
            let builder = reg.get(&node.domain, &node.op_type).ok_or_else(|| {
                RuntimeError::UnsupportedOp {
                    node: described.clone(),
                    domain: if node.domain.is_empty() {
                        String::new()
                    } else {
                        format!("{}.", node.domain)
                    },
                    op: node.op_type.clone(),
                    opset,
                }
            })?;
            let implicit = implicit_inputs(node);
            let mut input_ids = Vec::with_capacity(node.inputs.len() + implicit.len());
            for name in node.inputs.iter().chain(implicit.iter()) {
                if name.is_empty() {
                    input_ids.push(None);
                    continue;
                }
                let id = *table.ids.get(name).ok_or_else(|| RuntimeError::Node {
                    node: described.clone(),
                    reason: format!(
                        "input '{name}' is not produced by any earlier node, input or initializer \
                         (the graph is not in topological order, or the name is wrong)"
                    ),
                })?;
                input_ids.push(Some(id));
            }
            let ctx = BuildContext {
                opset,
                implicit_inputs: &implicit,
                constants: &constants,
                opsets,
            };
            let kernel = builder(node, &ctx).map_err(|e| e.at_node(&described))?;

            // Fold nodes whose inputs are all constants: run them once, now.
            let all_constant = input_ids
                .iter()
                .flatten()
                .all(|&id| matches!(table.sources[id], Source::Constant(_)));
            let foldable = all_constant
                && node.subgraphs().is_empty()
                && !NONDETERMINISTIC.contains(&node.op_type.as_str());
            if foldable {
                let args: Vec<Option<&Tensor>> = input_ids
                    .iter()
                    .map(|id| {
                        id.map(|id| match &table.sources[id] {
                            Source::Constant(t) => t.as_ref(),
                            _ => unreachable!("checked above that every input is constant"),
                        })
                    })
                    .collect();
                let results = kernel.run(&args).map_err(|e| e.at_node(&described))?;
                check_output_count(node, &results).map_err(|e| e.at_node(&described))?;
                for (name, value) in node.outputs.iter().zip(results) {
                    if name.is_empty() {
                        continue;
                    }
                    let value = Arc::new(value);
                    constants.insert(name.clone(), value.clone());
                    table.add(name, Source::Constant(value));
                }
                continue;
            }

            let mut output_ids = Vec::with_capacity(node.outputs.len());
            for name in &node.outputs {
                if name.is_empty() {
                    output_ids.push(None);
                } else {
                    output_ids.push(Some(table.add(name, Source::Node)));
                }
            }
            steps.push(Step {
                node: described,
                op_type: node.op_type.clone(),
                kernel,
                inputs: input_ids,
                outputs: output_ids,
                free_after: Vec::new(),
            });
        }

        let mut outputs = Vec::new();
        for out in &graph.outputs {
            let id = *table.ids.get(&out.name).ok_or_else(|| {
                plan_err(format!("graph output '{}' is never produced", out.name))
            })?;
            outputs.push((out.name.clone(), id));
        }

        // Liveness: the last step that reads each value; graph outputs live to the end.
        let mut last_use: Vec<Option<usize>> = vec![None; table.names.len()];
        for (i, step) in steps.iter().enumerate() {
            for &id in step.inputs.iter().flatten() {
                last_use[id] = Some(i);
            }
            for &id in step.outputs.iter().flatten() {
                // A value nobody reads is freed right after it is made.
                if last_use[id].is_none() {
                    last_use[id] = Some(i);
                }
            }
        }
        let kept: HashSet<usize> = outputs.iter().map(|(_, id)| *id).collect();
        for (id, last) in last_use.iter().enumerate() {
            if let (Some(step), false) = (last, kept.contains(&id)) {
                steps[*step].free_after.push(id);
            }
        }

        Ok(Plan {
            graph_name: graph.name.clone(),
            names: table.names,
            sources: table.sources,
            inputs,
            outer,
            outputs,
            steps,
        })
    }

    /// The inputs a caller must feed, in order.
    pub fn inputs(&self) -> impl Iterator<Item = &ValueInfo> {
        self.inputs.iter().map(|(info, _)| info)
    }

    /// The output names, in order.
    pub fn output_names(&self) -> impl Iterator<Item = &str> {
        self.outputs.iter().map(|(n, _)| n.as_str())
    }

    /// Names of outer-scope values a subgraph plan needs, in the order
    /// [`Plan::run_subgraph`] takes them.
    pub fn outer_names(&self) -> impl Iterator<Item = &str> {
        self.outer.iter().map(|(n, _)| n.as_str())
    }

    /// Number of steps (nodes left after constant folding).
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    /// Runs the plan. `inputs` are in [`Plan::inputs`] order.
    pub fn run(
        &self,
        inputs: &[&Tensor],
        hook: Option<&mut dyn ValueHook>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        self.execute(inputs, &[], hook)
    }

    /// Runs a subgraph plan with its inputs and the outer-scope values it reads (in
    /// [`Plan::outer_names`] order).
    pub fn run_subgraph(
        &self,
        inputs: &[&Tensor],
        outer: &[&Tensor],
    ) -> Result<Vec<Tensor>, RuntimeError> {
        self.execute(inputs, outer, None)
    }

    /// Runs the plan and records how long each step took.
    pub fn run_profiled(
        &self,
        inputs: &[&Tensor],
        profile: &mut Vec<StepTime>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        self.execute_with(inputs, &[], None, Some(profile))
    }

    fn execute(
        &self,
        inputs: &[&Tensor],
        outer: &[&Tensor],
        hook: Option<&mut dyn ValueHook>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        self.execute_with(inputs, outer, hook, None)
    }

    fn execute_with(
        &self,
        inputs: &[&Tensor],
        outer: &[&Tensor],
        mut hook: Option<&mut dyn ValueHook>,
        mut profile: Option<&mut Vec<StepTime>>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        if inputs.len() != self.inputs.len() {
            return Err(RuntimeError::Plan {
                graph: self.graph_name.clone(),
                reason: format!(
                    "expected {} inputs, got {}",
                    self.inputs.len(),
                    inputs.len()
                ),
            });
        }
        if outer.len() != self.outer.len() {
            return Err(RuntimeError::Plan {
                graph: self.graph_name.clone(),
                reason: format!(
                    "expected {} outer-scope values, got {}",
                    self.outer.len(),
                    outer.len()
                ),
            });
        }
        let mut slots: Vec<Option<Slot>> = self
            .sources
            .iter()
            .map(|s| match s {
                Source::Input(i) => Some(Slot::Borrowed(inputs[*i])),
                Source::Outer(i) => Some(Slot::Borrowed(outer[*i])),
                Source::Constant(t) => Some(Slot::Shared(t.clone())),
                Source::Node => None,
            })
            .collect();
        if let Some(hook) = hook.as_deref_mut() {
            for (_, id) in &self.inputs {
                let replaced = slots[*id]
                    .as_ref()
                    .and_then(|s| hook.on_value(&self.names[*id], s.get()));
                if let Some(t) = replaced {
                    slots[*id] = Some(Slot::Shared(Arc::new(t)));
                }
            }
        }
        for step in &self.steps {
            let results = {
                let args: Vec<Option<&Tensor>> = step
                    .inputs
                    .iter()
                    .map(|id| id.and_then(|id| slots[id].as_ref().map(Slot::get)))
                    .collect();
                let started = profile.as_ref().map(|_| std::time::Instant::now());
                let results = step.kernel.run(&args).map_err(|e| e.at_node(&step.node))?;
                if let (Some(profile), Some(started)) = (profile.as_deref_mut(), started) {
                    profile.push(StepTime {
                        node: step.node.clone(),
                        op_type: step.op_type.clone(),
                        seconds: started.elapsed().as_secs_f64(),
                    });
                }
                results
            };
            let required = step
                .outputs
                .iter()
                .rposition(Option::is_some)
                .map_or(0, |p| p + 1);
            if results.len() < required {
                return Err(RuntimeError::Node {
                    node: step.node.clone(),
                    reason: format!(
                        "the kernel produced {} outputs, the node declares {required}",
                        results.len()
                    ),
                });
            }
            for (id, value) in step.outputs.iter().zip(results) {
                let Some(id) = *id else { continue };
                let value = match hook.as_deref_mut() {
                    Some(h) => h.on_value(&self.names[id], &value).unwrap_or(value),
                    None => value,
                };
                slots[id] = Some(Slot::Shared(Arc::new(value)));
            }
            for &id in &step.free_after {
                slots[id] = None;
            }
        }
        let mut results = Vec::with_capacity(self.outputs.len());
        for (i, (name, id)) in self.outputs.iter().enumerate() {
            let missing = || RuntimeError::Plan {
                graph: self.graph_name.clone(),
                reason: format!("output '{name}' was not computed"),
            };
            // A value listed twice as an output is cloned for all but its last listing.
            let listed_again = self.outputs[i + 1..].iter().any(|(_, other)| other == id);
            let value = if listed_again {
                slots[*id].as_ref().ok_or_else(missing)?.get().clone()
            } else {
                match slots[*id].take().ok_or_else(missing)? {
                    Slot::Borrowed(t) => t.clone(),
                    Slot::Shared(t) => Arc::try_unwrap(t).unwrap_or_else(|t| (*t).clone()),
                }
            };
            results.push(value);
        }
        Ok(results)
    }
}

fn check_output_count(node: &Node, results: &[Tensor]) -> Result<(), RuntimeError> {
    let required = node
        .outputs
        .iter()
        .rposition(|n| !n.is_empty())
        .map_or(0, |p| p + 1);
    if results.len() < required {
        return Err(crate::kernel_err(format!(
            "the kernel produced {} outputs, the node declares {required}",
            results.len()
        )));
    }
    Ok(())
}
