//! Control flow (`If`, `Loop`, `Scan`) and the random generators (see [`random`]).
//!
//! Subgraphs are planned once, when the node's kernel is built. At run time a kernel receives
//! the outer-scope values its subgraphs read after its declared inputs (in
//! [`BuildContext::implicit_inputs`] order) and hands each subgraph plan the ones it needs, by
//! name. kvant's executor only carries tensors, so a subgraph whose inputs or outputs are
//! declared as sequences, optionals or maps is reported as unsupported when it is built.

use super::{attr_err, input, normalize_axis, optional_input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, Plan, RuntimeError};
use kvant_graph::{Dim, Graph, Node};
use kvant_tensor::{DType, Tensor, TensorData};
use std::ops::Range;

pub mod random;

/// Registers this module's operators.
pub fn register(r: &mut Registry) {
    r.add("If", build_if);
    r.add("Loop", build_loop);
    r.add("Scan", build_scan);
    random::register(r);
}

/// A planned subgraph and where its outer-scope values come from.
struct Body {
    plan: Plan,
    /// For each name in `plan.outer_names()`, its position among the node's implicit inputs.
    outer_index: Vec<usize>,
    /// Declared outputs of the graph (for element types and shapes when nothing ran).
    outputs: Vec<kvant_graph::ValueInfo>,
}

impl Body {
    fn new(graph: &Graph, ctx: &BuildContext) -> Result<Body, RuntimeError> {
        for v in graph.inputs.iter().chain(&graph.outputs) {
            if !v.is_tensor() {
                return Err(unsupported(format!(
                    "subgraph '{}' value '{}' is not a tensor (sequence / optional / map \
                     values are not represented by kvant's executor)",
                    graph.name, v.name
                )));
            }
        }
        let plan = ctx.build_subgraph(graph)?;
        let outer_index = plan
            .outer_names()
            .map(|name| {
                ctx.implicit_inputs
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| {
                        kernel_err(format!(
                            "subgraph '{}' reads '{name}', which the enclosing scope does not \
                             provide",
                            graph.name
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Body {
            plan,
            outer_index,
            outputs: graph.outputs.clone(),
        })
    }

    fn input_count(&self) -> usize {
        self.plan.inputs().count()
    }

    /// Picks this body's outer values out of the node's implicit inputs.
    fn outer<'a>(&self, implicit: &[Option<&'a Tensor>]) -> Result<Vec<&'a Tensor>, RuntimeError> {
        self.outer_index
            .iter()
            .map(|&i| {
                implicit
                    .get(i)
                    .copied()
                    .flatten()
                    .ok_or_else(|| kernel_err(format!("outer-scope value {i} is missing")))
            })
            .collect()
    }

    fn run(&self, inputs: &[&Tensor], outer: &[&Tensor]) -> Result<Vec<Tensor>, RuntimeError> {
        let out = self.plan.run_subgraph(inputs, outer)?;
        if out.len() != self.outputs.len() {
            return Err(kernel_err(format!(
                "subgraph produced {} outputs, expected {}",
                out.len(),
                self.outputs.len()
            )));
        }
        Ok(out)
    }

    /// Shape and type of a scan output's slice when the body never ran (from declarations).
    fn declared_slice(&self, index: usize) -> Option<(DType, Vec<usize>)> {
        let info = self.outputs.get(index)?;
        let dtype = info.dtype()?;
        let shape = info
            .shape()?
            .into_iter()
            .map(|d| match d {
                Dim::Fixed(v) if v >= 0 => Some(v as usize),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some((dtype, shape))
    }
}

/// Reads a single-element tensor as a bool (any numeric type; non-zero is true).
fn scalar_bool(t: &Tensor, what: &str) -> Result<bool, RuntimeError> {
    if t.len() != 1 {
        return Err(kernel_err(format!(
            "{what} must have one element, got shape {:?}",
            t.shape()
        )));
    }
    let v = t.cast(DType::Bool)?.into_vec::<bool>()?;
    Ok(v.first().copied().unwrap_or(false))
}

// ---------------------------------------------------------------------------------------------
// If

struct If {
    then_branch: Body,
    else_branch: Body,
}

fn build_if(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let branch = |name: &str| -> Result<Body, RuntimeError> {
        let g = node
            .attr_graph(name)
            .map_err(attr_err)?
            .ok_or_else(|| kernel_err(format!("attribute '{name}' is required")))?;
        Body::new(g, ctx)
    };
    let then_branch = branch("then_branch")?;
    let else_branch = branch("else_branch")?;
    for b in [&then_branch, &else_branch] {
        if b.input_count() != 0 {
            return Err(kernel_err("If branches must not declare inputs"));
        }
    }
    if then_branch.outputs.len() != else_branch.outputs.len() {
        return Err(kernel_err(format!(
            "then_branch has {} outputs but else_branch has {}",
            then_branch.outputs.len(),
            else_branch.outputs.len()
        )));
    }
    Ok(Box::new(If {
        then_branch,
        else_branch,
    }))
}

impl Kernel for If {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let cond = scalar_bool(input(inputs, 0)?, "cond")?;
        let implicit = inputs.get(1..).unwrap_or(&[]);
        let branch = if cond {
            &self.then_branch
        } else {
            &self.else_branch
        };
        let outer = branch.outer(implicit)?;
        branch.run(&[], &outer)
    }
}

// ---------------------------------------------------------------------------------------------
// Loop

struct Loop {
    body: Body,
    /// Declared inputs of the node (M, cond, then the loop-carried initial values).
    declared: usize,
    carried: usize,
    scans: usize,
}

fn build_loop(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let graph = node
        .attr_graph("body")
        .map_err(attr_err)?
        .ok_or_else(|| kernel_err("attribute 'body' is required"))?;
    let declared = node.inputs.len();
    if declared < 2 {
        return Err(kernel_err(
            "Loop needs the inputs M and cond (either may be empty)",
        ));
    }
    let carried = declared - 2;
    let body = Body::new(graph, ctx)?;
    if body.input_count() != carried + 2 {
        return Err(kernel_err(format!(
            "the body declares {} inputs, expected {} (iteration number, condition and {} \
             loop-carried values)",
            body.input_count(),
            carried + 2,
            carried
        )));
    }
    let Some(scans) = body.outputs.len().checked_sub(carried + 1) else {
        return Err(kernel_err(format!(
            "the body has {} outputs, expected at least {}",
            body.outputs.len(),
            carried + 1
        )));
    };
    Ok(Box::new(Loop {
        body,
        declared,
        carried,
        scans,
    }))
}

impl Kernel for Loop {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let max_trips = match optional_input(inputs, 0) {
            Some(m) => {
                let v = m.to_i64_vec()?;
                match v.as_slice() {
                    [n] => Some(*n),
                    _ => return Err(kernel_err("M must have one element")),
                }
            }
            None => None,
        };
        let mut cond = match optional_input(inputs, 1) {
            Some(c) => scalar_bool(c, "cond")?,
            None => true,
        };
        let mut state: Vec<Tensor> = (0..self.carried)
            .map(|i| input(inputs, 2 + i).cloned())
            .collect::<Result<_, _>>()?;
        let implicit = inputs.get(self.declared..).unwrap_or(&[]);
        let outer = self.body.outer(implicit)?;
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); self.scans];

        let mut iter: i64 = 0;
        while cond && max_trips.is_none_or(|m| iter < m) {
            let iter_t = Tensor::scalar(iter);
            let cond_t = Tensor::scalar(cond);
            let mut args: Vec<&Tensor> = Vec::with_capacity(2 + self.carried);
            args.push(&iter_t);
            args.push(&cond_t);
            args.extend(state.iter());
            let mut out = self.body.run(&args, &outer)?.into_iter();
            let cond_out = out
                .next()
                .ok_or_else(|| kernel_err("the body produced no condition"))?;
            cond = scalar_bool(&cond_out, "the body's condition output")?;
            state = out.by_ref().take(self.carried).collect();
            push_scan_outputs(&mut scans, out)?;
            iter += 1;
        }

        let mut results = state;
        for (k, parts) in scans.into_iter().enumerate() {
            if parts.is_empty() {
                // No iteration ran: an empty stack, shaped after the body's declaration.
                let (dtype, slice) = self
                    .body
                    .declared_slice(1 + self.carried + k)
                    .unwrap_or((DType::F32, Vec::new()));
                let mut shape = vec![0];
                shape.extend(slice);
                results.push(Tensor::zeros(dtype, shape));
            } else {
                results.push(stack(&parts, 0)?);
            }
        }
        Ok(results)
    }
}

// ---------------------------------------------------------------------------------------------
// Scan

struct Scan {
    body: Body,
    declared: usize,
    /// Scan-8: the first input is `sequence_lens` and every other input has a batch axis 0.
    batched: bool,
    states: usize,
    scan_inputs: usize,
    input_axes: Vec<i64>,
    input_reverse: Vec<bool>,
    output_axes: Vec<i64>,
    output_reverse: Vec<bool>,
}

fn build_scan(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let batched = ctx.opset < 9;
    let graph = node
        .attr_graph("body")
        .map_err(attr_err)?
        .ok_or_else(|| kernel_err("attribute 'body' is required"))?;
    let m = node
        .attr_int("num_scan_inputs")
        .map_err(attr_err)?
        .ok_or_else(|| kernel_err("attribute 'num_scan_inputs' is required"))?;
    let declared = node.inputs.len();
    // Scan-8 declares `sequence_lens` (possibly empty) before the states.
    let values = if batched {
        declared.saturating_sub(1)
    } else {
        declared
    };
    if m < 1 || m as usize > values {
        return Err(kernel_err(format!(
            "num_scan_inputs is {m} but the node has {values} state and scan inputs"
        )));
    }
    let scan_inputs = m as usize;
    let states = values - scan_inputs;
    let body = Body::new(graph, ctx)?;
    if body.input_count() != values {
        return Err(kernel_err(format!(
            "the body declares {} inputs, expected {values}",
            body.input_count()
        )));
    }
    let Some(scan_outputs) = body.outputs.len().checked_sub(states) else {
        return Err(kernel_err(format!(
            "the body has {} outputs, expected at least {states}",
            body.outputs.len()
        )));
    };
    let list = |name: &str, len: usize| -> Result<Vec<i64>, RuntimeError> {
        match node.attr_ints(name).map_err(attr_err)? {
            Some(v) if v.len() == len => Ok(v.to_vec()),
            Some(v) => Err(kernel_err(format!(
                "attribute '{name}' has {} entries, expected {len}",
                v.len()
            ))),
            None => Ok(vec![0; len]),
        }
    };
    let flags = |name: &str, len: usize| -> Result<Vec<bool>, RuntimeError> {
        list(name, len)?
            .into_iter()
            .map(|v| match v {
                0 => Ok(false),
                1 => Ok(true),
                other => Err(kernel_err(format!(
                    "attribute '{name}' entries must be 0 or 1, got {other}"
                ))),
            })
            .collect()
    };
    let scan = if batched {
        // Scan-8 scans axis 1 of every input (axis 0 is the batch), and has no output
        // axes or directions: outputs are stacked in iteration order.
        Scan {
            input_axes: vec![0; scan_inputs],
            input_reverse: flags("directions", scan_inputs)?,
            output_axes: vec![0; scan_outputs],
            output_reverse: vec![false; scan_outputs],
            body,
            declared,
            batched,
            states,
            scan_inputs,
        }
    } else {
        Scan {
            input_axes: list("scan_input_axes", scan_inputs)?,
            input_reverse: flags("scan_input_directions", scan_inputs)?,
            output_axes: list("scan_output_axes", scan_outputs)?,
            output_reverse: flags("scan_output_directions", scan_outputs)?,
            body,
            declared,
            batched,
            states,
            scan_inputs,
        }
    };
    Ok(Box::new(scan))
}

impl Scan {
    /// Runs the body over `len` slices of the scan inputs (taken along `axes`); returns the
    /// final states and, per scan output, the slices in iteration order.
    fn iterate(
        &self,
        mut state: Vec<Tensor>,
        xs: &[&Tensor],
        axes: &[usize],
        len: usize,
        outer: &[&Tensor],
    ) -> Result<(Vec<Tensor>, Vec<Vec<Tensor>>), RuntimeError> {
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); self.output_axes.len()];
        for i in 0..len {
            let slices: Vec<Tensor> = xs
                .iter()
                .zip(axes)
                .zip(&self.input_reverse)
                .map(|((x, &a), &rev)| take_along(x, a, if rev { len - 1 - i } else { i }))
                .collect::<Result<_, _>>()?;
            let mut args: Vec<&Tensor> = state.iter().collect();
            args.extend(slices.iter());
            let mut out = self.body.run(&args, outer)?.into_iter();
            state = out.by_ref().take(self.states).collect();
            push_scan_outputs(&mut scans, out)?;
        }
        Ok((state, scans))
    }

    /// Type and shape of scan output `k`'s slices, from a run or else the declaration.
    fn slice_type(
        &self,
        k: usize,
        seen: Option<&Tensor>,
    ) -> Result<(DType, Vec<usize>), RuntimeError> {
        match seen {
            Some(t) => Ok((t.dtype(), t.shape().to_vec())),
            None => self.body.declared_slice(self.states + k).ok_or_else(|| {
                unsupported("a zero-length Scan whose body does not declare its output shapes")
            }),
        }
    }

    fn run_batched(
        &self,
        inputs: &[Option<&Tensor>],
        outer: &[&Tensor],
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let values: Vec<&Tensor> = (1..=self.states + self.scan_inputs)
            .map(|i| input(inputs, i))
            .collect::<Result<_, _>>()?;
        let Some(first) = values.first() else {
            return Err(kernel_err("Scan has no inputs"));
        };
        let batch = first.shape().first().copied().unwrap_or(0);
        let xs = &values[self.states..];
        for v in &values {
            if v.shape().first() != Some(&batch) {
                return Err(kernel_err(format!(
                    "every Scan-8 input needs the batch axis 0 of size {batch}, got shape {:?}",
                    v.shape()
                )));
            }
        }
        let max_len = match xs.first() {
            Some(x) if x.rank() >= 2 => x.shape()[1],
            _ => return Err(kernel_err("Scan-8 scan inputs need a sequence axis 1")),
        };
        for x in xs {
            if x.rank() < 2 || x.shape()[1] != max_len {
                return Err(kernel_err(format!(
                    "scan inputs disagree on the sequence length ({:?} vs {max_len})",
                    x.shape()
                )));
            }
        }
        let lens: Vec<usize> = match optional_input(inputs, 0) {
            Some(l) => {
                let v = l.to_i64_vec()?;
                if v.len() != batch {
                    return Err(kernel_err(format!(
                        "sequence_lens has {} entries for a batch of {batch}",
                        v.len()
                    )));
                }
                v.into_iter()
                    .map(|n| match usize::try_from(n) {
                        Ok(n) if n <= max_len => Ok(n),
                        _ => Err(kernel_err(format!(
                            "sequence length {n} is outside [0, {max_len}]"
                        ))),
                    })
                    .collect::<Result<_, _>>()?
            }
            None => vec![max_len; batch],
        };
        let n_out = self.output_axes.len();
        let mut final_states: Vec<Vec<Tensor>> = vec![Vec::new(); self.states];
        let mut per_batch: Vec<Vec<Vec<Tensor>>> = Vec::with_capacity(batch);
        for (b, &len) in lens.iter().enumerate() {
            let state: Vec<Tensor> = values[..self.states]
                .iter()
                .map(|v| take_along(v, 0, b))
                .collect::<Result<_, _>>()?;
            // Only the first `len` steps of this batch entry are scanned.
            let xb: Vec<Tensor> = xs
                .iter()
                .map(|x| take_along(x, 0, b).and_then(|t| prefix(&t, len)))
                .collect::<Result<_, _>>()?;
            let xb_refs: Vec<&Tensor> = xb.iter().collect();
            let axes = vec![0; xb_refs.len()];
            let (state, scans) = self.iterate(state, &xb_refs, &axes, len, outer)?;
            for (i, s) in state.into_iter().enumerate() {
                final_states[i].push(s);
            }
            per_batch.push(scans);
        }
        let mut results = Vec::with_capacity(self.states + n_out);
        for parts in final_states {
            results.push(stack(&parts, 0)?);
        }
        for k in 0..n_out {
            let seen = per_batch.iter().find_map(|s| s[k].first());
            let (dtype, slice) = self.slice_type(k, seen)?;
            let mut rows = Vec::with_capacity(batch);
            for scans in &mut per_batch {
                // Steps past a batch entry's length are zero-filled.
                let mut steps = std::mem::take(&mut scans[k]);
                while steps.len() < max_len {
                    steps.push(Tensor::zeros(dtype, slice.clone()));
                }
                rows.push(stack(&steps, 0)?);
            }
            results.push(if rows.is_empty() {
                let mut shape = vec![0, max_len];
                shape.extend(slice);
                Tensor::zeros(dtype, shape)
            } else {
                stack(&rows, 0)?
            });
        }
        Ok(results)
    }
}

impl Kernel for Scan {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let implicit = inputs.get(self.declared..).unwrap_or(&[]);
        let outer = self.body.outer(implicit)?;
        if self.batched {
            return self.run_batched(inputs, &outer);
        }
        let state: Vec<Tensor> = (0..self.states)
            .map(|i| input(inputs, i).cloned())
            .collect::<Result<_, _>>()?;
        let xs: Vec<&Tensor> = (0..self.scan_inputs)
            .map(|j| input(inputs, self.states + j))
            .collect::<Result<_, _>>()?;
        let axes: Vec<usize> = xs
            .iter()
            .zip(&self.input_axes)
            .map(|(x, &a)| normalize_axis(a, x.rank()))
            .collect::<Result<_, _>>()?;
        let len = match (xs.first(), axes.first()) {
            (Some(x), Some(&a)) => x.shape()[a],
            _ => 0,
        };
        for (x, &a) in xs.iter().zip(&axes) {
            if x.shape()[a] != len {
                return Err(kernel_err(format!(
                    "scan inputs disagree on the sequence length ({} vs {len})",
                    x.shape()[a]
                )));
            }
        }
        let (state, scans) = self.iterate(state, &xs, &axes, len, &outer)?;
        let mut results = state;
        for (k, mut parts) in scans.into_iter().enumerate() {
            if parts.is_empty() {
                let (dtype, slice) = self.slice_type(k, None)?;
                let axis = normalize_axis(self.output_axes[k], slice.len() + 1)?;
                let mut shape = slice;
                shape.insert(axis, 0);
                results.push(Tensor::zeros(dtype, shape));
                continue;
            }
            if self.output_reverse[k] {
                parts.reverse();
            }
            let axis = normalize_axis(self.output_axes[k], parts[0].rank() + 1)?;
            results.push(stack(&parts, axis)?);
        }
        Ok(results)
    }
}

/// The first `len` entries of `t` along axis 0.
fn prefix(t: &Tensor, len: usize) -> Result<Tensor, RuntimeError> {
    let n = t.shape().first().copied().unwrap_or(0);
    if len == n {
        return Ok(t.clone());
    }
    let inner: usize = t.shape()[1..].iter().product();
    let data = copy_ranges(t.data(), std::slice::from_ref(&(0..len * inner)))?;
    let mut shape = t.shape().to_vec();
    shape[0] = len;
    Ok(Tensor::new(shape, data)?)
}

// ---------------------------------------------------------------------------------------------
// Slicing and stacking, for any element type

/// Copies the given ranges of `data`, in order, into a new vector of the same type.
fn copy_ranges(data: &TensorData, ranges: &[Range<usize>]) -> Result<TensorData, RuntimeError> {
    fn pick<T: Clone>(src: &[T], ranges: &[Range<usize>]) -> Vec<T> {
        let mut out = Vec::with_capacity(ranges.iter().map(|r| r.len()).sum());
        for r in ranges {
            out.extend_from_slice(&src[r.clone()]);
        }
        out
    }
    Ok(match data {
        TensorData::String(v) => TensorData::String(pick(v, ranges)),
        other => kvant_tensor::dispatch_typed!(other.dtype(), T => {
            let src = <T as kvant_tensor::Element>::slice(other)
                .ok_or_else(|| kernel_err("tensor data does not match its type"))?;
            <T as kvant_tensor::Element>::into_data(pick(src, ranges))
        }, _ => return Err(unsupported(format!("{} tensors in a Scan", other.dtype())))),
    })
}

/// The slice `index` of `t` along `axis`, with that axis removed.
fn take_along(t: &Tensor, axis: usize, index: usize) -> Result<Tensor, RuntimeError> {
    let shape = t.shape();
    let outer: usize = shape[..axis].iter().product();
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let ranges: Vec<Range<usize>> = (0..outer)
        .map(|o| {
            let start = (o * n + index) * inner;
            start..start + inner
        })
        .collect();
    let data = copy_ranges(t.data(), &ranges)?;
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    Ok(Tensor::new(out_shape, data)?)
}

/// Stacks tensors of one shape and type along a new axis `axis`.
fn stack(parts: &[Tensor], axis: usize) -> Result<Tensor, RuntimeError> {
    let Some(first) = parts.first() else {
        return Err(kernel_err("nothing to stack"));
    };
    let shape = first.shape();
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis..].iter().product();
    // Lay the parts end to end, then pick rows in (outer, part, inner) order.
    let joined = join(parts)?;
    let count = parts.len();
    let ranges: Vec<Range<usize>> = (0..outer)
        .flat_map(|o| {
            (0..count).map(move |p| {
                let start = (p * outer + o) * inner;
                start..start + inner
            })
        })
        .collect();
    let data = if axis == 0 {
        joined
    } else {
        copy_ranges(&joined, &ranges)?
    };
    let mut out_shape = shape.to_vec();
    out_shape.insert(axis, count);
    Ok(Tensor::new(out_shape, data)?)
}

/// Concatenates the data of same-typed tensors.
fn join(parts: &[Tensor]) -> Result<TensorData, RuntimeError> {
    let Some(first) = parts.first() else {
        return Err(kernel_err("nothing to join"));
    };
    let dtype = first.dtype();
    Ok(match first.data() {
        TensorData::String(_) => {
            let mut out = Vec::new();
            for p in parts {
                match p.data() {
                    TensorData::String(v) => out.extend_from_slice(v),
                    _ => return Err(kernel_err("scan outputs change type between iterations")),
                }
            }
            TensorData::String(out)
        }
        _ => kvant_tensor::dispatch_typed!(dtype, T => {
            let mut out: Vec<T> = Vec::new();
            for p in parts {
                out.extend_from_slice(p.as_slice::<T>()?);
            }
            <T as kvant_tensor::Element>::into_data(out)
        }, _ => return Err(unsupported(format!("{dtype} scan outputs")))),
    })
}

/// Appends one iteration's scan outputs to their per-output lists; every iteration must give
/// each scan output the same type and shape, since they are stacked afterwards.
fn push_scan_outputs(
    scans: &mut [Vec<Tensor>],
    outputs: impl Iterator<Item = Tensor>,
) -> Result<(), RuntimeError> {
    for (k, t) in outputs.enumerate() {
        let list = scans
            .get_mut(k)
            .ok_or_else(|| kernel_err(format!("the body produced an extra output {k}")))?;
        if let Some(first) = list.first() {
            if first.shape() != t.shape() || first.dtype() != t.dtype() {
                return Err(kernel_err(format!(
                    "scan output {k} changes from {} {:?} to {} {:?} between iterations",
                    first.dtype(),
                    first.shape(),
                    t.dtype(),
                    t.shape()
                )));
            }
        }
        list.push(t);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvant_graph::{AttrValue, Attribute, Initializer, Model, OpsetImport, ValueInfo};

    fn f32_info(name: &str, dims: &[i64]) -> ValueInfo {
        let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Fixed(d)).collect();
        ValueInfo::tensor(name, DType::F32, &dims)
    }

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<Attribute>) -> Node {
        let mut n = Node::new(
            op,
            "",
            inputs.iter().map(|s| s.to_string()).collect(),
            outputs.iter().map(|s| s.to_string()).collect(),
        );
        n.attributes = attrs;
        n
    }

    fn graph(name: &str, nodes: Vec<Node>, inputs: Vec<ValueInfo>, outputs: &[&str]) -> Graph {
        Graph {
            name: name.to_string(),
            nodes,
            inputs,
            outputs: outputs
                .iter()
                .map(|o| ValueInfo {
                    name: o.to_string(),
                    ..ValueInfo::default()
                })
                .collect(),
            ..Graph::default()
        }
    }

    fn run(graph: Graph, feeds: &[&Tensor]) -> Vec<Tensor> {
        let model = Model {
            opset_import: vec![OpsetImport::new("", 17)],
            graph,
            ..Model::default()
        };
        let plan = Plan::new(&model).expect("plan");
        plan.run(feeds, None).expect("run")
    }

    fn vals(t: &Tensor) -> Vec<f32> {
        t.as_slice::<f32>().expect("f32").to_vec()
    }

    /// `If` picks a branch by its condition; both branches read the outer `x`, the else
    /// branch also a constant of its own.
    #[test]
    fn if_selects_branch_and_reads_outer_values() {
        let then_g = graph(
            "then",
            vec![node("Add", &["x", "x"], &["t"], vec![])],
            vec![],
            &["t"],
        );
        let mut else_g = graph(
            "else",
            vec![node("Add", &["x", "c"], &["e"], vec![])],
            vec![],
            &["e"],
        );
        else_g.initializers.push(Initializer::new(
            "c",
            Tensor::from_vec(vec![2], vec![10f32, 20.0]).expect("tensor"),
        ));
        let main = graph(
            "main",
            vec![node(
                "If",
                &["cond"],
                &["y"],
                vec![
                    Attribute::new("then_branch", AttrValue::Graph(then_g)),
                    Attribute::new("else_branch", AttrValue::Graph(else_g)),
                ],
            )],
            vec![
                ValueInfo::tensor("cond", DType::Bool, &[]),
                f32_info("x", &[2]),
            ],
            &["y"],
        );
        let x = Tensor::from_vec(vec![2], vec![1f32, 2.0]).expect("tensor");
        let yes = run(main.clone(), &[&Tensor::scalar(true), &x]);
        assert_eq!(vals(&yes[0]), vec![2.0, 4.0]);
        let no = run(main, &[&Tensor::scalar(false), &x]);
        assert_eq!(vals(&no[0]), vec![11.0, 22.0]);
    }

    /// A Loop body that adds the outer value `k` to its carried value: final value and the
    /// stacked scan output, and the zero-trip case.
    fn accumulate_loop(with_m: bool) -> Graph {
        let body = graph(
            "body",
            vec![node("Add", &["acc_in", "k"], &["acc_out"], vec![])],
            vec![
                ValueInfo::tensor("i", DType::I64, &[]),
                ValueInfo::tensor("c_in", DType::Bool, &[]),
                f32_info("acc_in", &[2]),
            ],
            &["c_in", "acc_out", "acc_out"],
        );
        let mut body = body;
        // The scan output is declared so that a zero-trip loop knows its shape.
        body.outputs[2] = f32_info("acc_out", &[2]);
        let mut inputs = vec![];
        if with_m {
            inputs.push(ValueInfo::tensor("M", DType::I64, &[]));
        }
        inputs.push(ValueInfo::tensor("cond", DType::Bool, &[]));
        inputs.push(f32_info("x0", &[2]));
        inputs.push(f32_info("k", &[2]));
        graph(
            "main",
            vec![node(
                "Loop",
                &[if with_m { "M" } else { "" }, "cond", "x0"],
                &["final", "scan"],
                vec![Attribute::new("body", AttrValue::Graph(body))],
            )],
            inputs,
            &["final", "scan"],
        )
    }

    #[test]
    fn loop_accumulates_outer_value_and_stacks_scan_outputs() {
        let x0 = Tensor::from_vec(vec![2], vec![1f32, 2.0]).expect("tensor");
        let k = Tensor::from_vec(vec![2], vec![10f32, 100.0]).expect("tensor");
        let m = Tensor::scalar(3i64);
        let out = run(accumulate_loop(true), &[&m, &Tensor::scalar(true), &x0, &k]);
        assert_eq!(vals(&out[0]), vec![31.0, 302.0]);
        assert_eq!(out[1].shape(), &[3, 2]);
        assert_eq!(vals(&out[1]), vec![11.0, 102.0, 21.0, 202.0, 31.0, 302.0]);
    }

    #[test]
    fn loop_with_false_condition_runs_zero_times() {
        let x0 = Tensor::from_vec(vec![2], vec![1f32, 2.0]).expect("tensor");
        let k = Tensor::from_vec(vec![2], vec![10f32, 100.0]).expect("tensor");
        let out = run(accumulate_loop(false), &[&Tensor::scalar(false), &x0, &k]);
        assert_eq!(vals(&out[0]), vec![1.0, 2.0]);
        assert_eq!(out[1].shape(), &[0, 2]);
    }

    #[test]
    fn stack_and_take_along_are_inverse() {
        let t =
            Tensor::from_vec(vec![2, 3, 2], (0..12).map(|v| v as f32).collect()).expect("tensor");
        for axis in 0..3 {
            let n = t.shape()[axis];
            let parts: Vec<Tensor> = (0..n)
                .map(|i| take_along(&t, axis, i).expect("slice"))
                .collect();
            assert_eq!(stack(&parts, axis).expect("stack"), t);
        }
        let s = take_along(&t, 1, 2).expect("slice");
        assert_eq!(s.shape(), &[2, 2]);
        assert_eq!(vals(&s), vec![4.0, 5.0, 10.0, 11.0]);
    }

    #[test]
    fn sequence_typed_branch_is_unsupported() {
        let mut then_g = graph("then", vec![], vec![], &["x"]);
        then_g.outputs[0].ty = Some(kvant_graph::proto::TypeProto {
            denotation: None,
            value: Some(kvant_graph::proto::type_proto::Value::SequenceType(
                Box::new(kvant_graph::proto::type_proto::Sequence { elem_type: None }),
            )),
        });
        let main = graph(
            "main",
            vec![node(
                "If",
                &["cond"],
                &["y"],
                vec![
                    Attribute::new("then_branch", AttrValue::Graph(then_g.clone())),
                    Attribute::new("else_branch", AttrValue::Graph(then_g)),
                ],
            )],
            vec![
                ValueInfo::tensor("cond", DType::Bool, &[]),
                f32_info("x", &[2]),
            ],
            &["y"],
        );
        let model = Model {
            opset_import: vec![OpsetImport::new("", 17)],
            graph: main,
            ..Model::default()
        };
        assert!(matches!(
            Plan::new(&model),
            Err(RuntimeError::Unsupported { .. })
        ));
    }
}
