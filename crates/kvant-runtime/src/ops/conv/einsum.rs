//! Einsum, by direct summation over every label combination.
//!
//! This is general (ellipses, repeated labels / diagonals, broadcasting, implicit output) but
//! not fast: it costs the product of all label sizes per input. Models that spend real time in
//! Einsum should get a contraction-to-MatMul path later.

use crate::ops::{attr_err, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Tensor};

/// Registers Einsum.
pub(super) fn register(r: &mut Registry) {
    r.add("Einsum", build_einsum);
}

/// Labels 0..52 are letters; ellipsis dimension `j` is label `ELLIPSIS_BASE + j`.
const ELLIPSIS_BASE: usize = 52;

/// One term of the equation: letters and at most one ellipsis.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    /// Letter label ids before the ellipsis.
    before: Vec<usize>,
    /// Letter label ids after the ellipsis (empty without one).
    after: Vec<usize>,
    /// Whether the term has an ellipsis.
    ellipsis: bool,
}

fn letter_id(c: u8) -> Option<usize> {
    match c {
        b'a'..=b'z' => Some((c - b'a') as usize),
        b'A'..=b'Z' => Some(26 + (c - b'A') as usize),
        _ => None,
    }
}

impl Term {
    fn parse(text: &str) -> Result<Term, RuntimeError> {
        let bytes = text.as_bytes();
        let mut term = Term {
            before: Vec::new(),
            after: Vec::new(),
            ellipsis: false,
        };
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'.' {
                if term.ellipsis || !text[i..].starts_with("...") {
                    return Err(kernel_err(format!(
                        "malformed ellipsis in Einsum term '{text}'"
                    )));
                }
                term.ellipsis = true;
                i += 3;
                continue;
            }
            let id = letter_id(bytes[i])
                .ok_or_else(|| kernel_err(format!("invalid character in Einsum term '{text}'")))?;
            if term.ellipsis {
                term.after.push(id);
            } else {
                term.before.push(id);
            }
            i += 1;
        }
        Ok(term)
    }

    fn letters(&self) -> usize {
        self.before.len() + self.after.len()
    }

    /// Label ids of every axis, given the global ellipsis rank and this term's own.
    fn labels(&self, ellipsis_rank: usize, own: usize) -> Vec<usize> {
        let mut out = self.before.clone();
        out.extend((ellipsis_rank - own..ellipsis_rank).map(|j| ELLIPSIS_BASE + j));
        out.extend(&self.after);
        out
    }
}

/// A parsed equation.
#[derive(Debug, Clone)]
struct Equation {
    inputs: Vec<Term>,
    /// Explicit output term, if the equation has `->`.
    output: Option<Term>,
}

impl Equation {
    fn parse(text: &str) -> Result<Equation, RuntimeError> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let (lhs, rhs) = match text.split_once("->") {
            Some((l, r)) => (l.to_string(), Some(r.to_string())),
            None => (text.clone(), None),
        };
        let inputs = lhs
            .split(',')
            .map(Term::parse)
            .collect::<Result<Vec<_>, _>>()?;
        let output = rhs.as_deref().map(Term::parse).transpose()?;
        Ok(Equation { inputs, output })
    }
}

struct EinsumKernel {
    equation: Equation,
}

fn build_einsum(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let text = node
        .attr_string("equation")
        .map_err(attr_err)?
        .ok_or_else(|| kernel_err("Einsum needs an 'equation' attribute"))?;
    Ok(Box::new(EinsumKernel {
        equation: Equation::parse(&text)?,
    }))
}

/// Arithmetic the summation needs (wrapping for integers).
trait Acc: Copy {
    const ZERO: Self;
    const ONE: Self;
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
}

impl Acc for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn add(self, o: Self) -> Self {
        self + o
    }
    fn mul(self, o: Self) -> Self {
        self * o
    }
}

impl Acc for i64 {
    const ZERO: Self = 0;
    const ONE: Self = 1;
    fn add(self, o: Self) -> Self {
        self.wrapping_add(o)
    }
    fn mul(self, o: Self) -> Self {
        self.wrapping_mul(o)
    }
}

/// The summation plan: label sizes, output labels and per-input strides by label.
struct Plan {
    sizes: Vec<usize>,
    out_labels: Vec<usize>,
    sum_labels: Vec<usize>,
    /// `strides[input][label]` (0 where the input lacks the label or broadcasts it).
    strides: Vec<Vec<usize>>,
}

impl EinsumKernel {
    fn plan(&self, shapes: &[&[usize]]) -> Result<Plan, RuntimeError> {
        let eq = &self.equation;
        if eq.inputs.len() != shapes.len() {
            return Err(kernel_err(format!(
                "Einsum equation has {} inputs but the node has {}",
                eq.inputs.len(),
                shapes.len()
            )));
        }
        let mut ellipsis_rank = 0;
        let mut own_ranks = Vec::with_capacity(shapes.len());
        for (term, shape) in eq.inputs.iter().zip(shapes) {
            let own = shape
                .len()
                .checked_sub(term.letters())
                .filter(|&r| term.ellipsis || r == 0);
            let own = own.ok_or_else(|| {
                kernel_err(format!(
                    "Einsum term has {} labels but its input has rank {}",
                    term.letters(),
                    shape.len()
                ))
            })?;
            ellipsis_rank = ellipsis_rank.max(own);
            own_ranks.push(own);
        }
        let n_labels = ELLIPSIS_BASE + ellipsis_rank;
        let mut sizes = vec![0usize; n_labels];
        let mut seen = vec![0usize; n_labels];
        let labels: Vec<Vec<usize>> = eq
            .inputs
            .iter()
            .zip(&own_ranks)
            .map(|(t, &own)| t.labels(ellipsis_rank, own))
            .collect();
        for (ls, shape) in labels.iter().zip(shapes) {
            for (&l, &d) in ls.iter().zip(shape.iter()) {
                seen[l] += 1;
                // Size-1 axes broadcast against the label's other occurrences.
                if seen[l] == 1 || sizes[l] == 1 {
                    sizes[l] = d;
                } else if d != sizes[l] && d != 1 {
                    return Err(kernel_err(format!(
                        "Einsum label has sizes {} and {d}",
                        sizes[l]
                    )));
                }
            }
        }
        let mut strides = Vec::with_capacity(shapes.len());
        for (ls, shape) in labels.iter().zip(shapes) {
            let own = kvant_tensor::strides_of(shape);
            let mut st = vec![0usize; n_labels];
            for ((&l, &d), &s) in ls.iter().zip(shape.iter()).zip(&own) {
                if d != 1 || sizes[l] == 1 {
                    st[l] += s;
                }
            }
            strides.push(st);
        }
        let out_labels: Vec<usize> = match &eq.output {
            Some(t) => {
                let ls = t.labels(ellipsis_rank, if t.ellipsis { ellipsis_rank } else { 0 });
                for &l in &ls {
                    if l < ELLIPSIS_BASE && seen[l] == 0 {
                        return Err(kernel_err(
                            "Einsum output label does not appear in any input",
                        ));
                    }
                }
                let mut uniq = ls.clone();
                uniq.sort_unstable();
                uniq.dedup();
                if uniq.len() != ls.len() {
                    return Err(unsupported("Einsum output with a repeated label"));
                }
                ls
            }
            None => {
                // Implicit output: ellipsis dimensions, then letters used once, alphabetically
                // (numpy orders upper-case before lower-case).
                let mut ls: Vec<usize> = (ELLIPSIS_BASE..n_labels).collect();
                let mut letters: Vec<usize> =
                    (0..ELLIPSIS_BASE).filter(|&l| seen[l] == 1).collect();
                letters.sort_by_key(|&l| if l >= 26 { l - 26 } else { l + 26 });
                ls.extend(letters);
                ls
            }
        };
        let sum_labels: Vec<usize> = (0..n_labels)
            .filter(|&l| (seen[l] > 0 || l >= ELLIPSIS_BASE) && !out_labels.contains(&l))
            .collect();
        Ok(Plan {
            sizes,
            out_labels,
            sum_labels,
            strides,
        })
    }
}

/// Sums products over every combination of labels.
fn contract<T: Acc>(plan: &Plan, inputs: &[Vec<T>]) -> Vec<T> {
    let out_sizes: Vec<usize> = plan.out_labels.iter().map(|&l| plan.sizes[l]).collect();
    let sum_sizes: Vec<usize> = plan.sum_labels.iter().map(|&l| plan.sizes[l]).collect();
    let out_len: usize = out_sizes.iter().product();
    let sum_len: usize = sum_sizes.iter().product();
    let mut out = Vec::with_capacity(out_len);
    let mut out_idx = vec![0usize; out_sizes.len()];
    let mut sum_idx = vec![0usize; sum_sizes.len()];
    let step = |idx: &mut [usize], sizes: &[usize]| {
        for d in (0..sizes.len()).rev() {
            idx[d] += 1;
            if idx[d] < sizes[d] {
                return;
            }
            idx[d] = 0;
        }
    };
    for _ in 0..out_len {
        let bases: Vec<usize> = plan
            .strides
            .iter()
            .map(|st| {
                plan.out_labels
                    .iter()
                    .zip(&out_idx)
                    .map(|(&l, &i)| st[l] * i)
                    .sum()
            })
            .collect();
        let mut acc = T::ZERO;
        sum_idx.iter_mut().for_each(|v| *v = 0);
        for _ in 0..sum_len {
            let mut prod = T::ONE;
            for ((data, st), base) in inputs.iter().zip(&plan.strides).zip(&bases) {
                let off: usize = plan
                    .sum_labels
                    .iter()
                    .zip(&sum_idx)
                    .map(|(&l, &i)| st[l] * i)
                    .sum::<usize>()
                    + base;
                // Offsets stay inside each input by construction of the strides; a zero
                // stands in should that ever not hold rather than panicking.
                prod = prod.mul(data.get(off).copied().unwrap_or(T::ZERO));
            }
            acc = acc.add(prod);
            step(&mut sum_idx, &sum_sizes);
        }
        out.push(acc);
        step(&mut out_idx, &out_sizes);
    }
    out
}

impl Kernel for EinsumKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let tensors: Vec<&Tensor> = inputs
            .iter()
            .map(|t| t.ok_or_else(|| kernel_err("Einsum inputs cannot be omitted")))
            .collect::<Result<_, _>>()?;
        let dtype = tensors
            .first()
            .map(|t| t.dtype())
            .ok_or_else(|| kernel_err("Einsum needs at least one input"))?;
        if tensors.iter().any(|t| t.dtype() != dtype) {
            return Err(kernel_err("Einsum inputs have different types"));
        }
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
        let plan = self.plan(&shapes)?;
        let out_shape: Vec<usize> = plan.out_labels.iter().map(|&l| plan.sizes[l]).collect();
        let out = if dtype.is_float() {
            let values = tensors
                .iter()
                .map(|t| t.cast(DType::F64)?.into_vec::<f64>())
                .collect::<Result<Vec<_>, _>>()?;
            Tensor::from_vec(out_shape, contract(&plan, &values))?.cast(dtype)?
        } else if dtype.is_int() {
            let values = tensors
                .iter()
                .map(|t| t.to_i64_vec())
                .collect::<Result<Vec<_>, _>>()?;
            Tensor::from_vec(out_shape, contract(&plan, &values))?.cast(dtype)?
        } else {
            return Err(unsupported(format!("Einsum of {dtype}")));
        };
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(eq: &str, inputs: &[Tensor]) -> Tensor {
        let k = EinsumKernel {
            equation: Equation::parse(eq).unwrap(),
        };
        let args: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
        k.run(&args).unwrap().remove(0)
    }

    #[test]
    fn matmul_trace_and_implicit_output() {
        let a = Tensor::from_vec(vec![2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = Tensor::from_vec(vec![3, 2], vec![1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0]).unwrap();
        let y = run("ij,jk->ik", &[a.clone(), b.clone()]);
        assert_eq!(y.into_vec::<f32>().unwrap(), vec![4.0, 5.0, 10.0, 11.0]);
        // Implicit: "ij,jk" sums j and outputs ik.
        let y = run("ij,jk", &[a.clone(), b]);
        assert_eq!(y.shape(), &[2, 2]);
        // Transpose through the implicit alphabetical order.
        let y = run("ji", std::slice::from_ref(&a));
        assert_eq!(y.shape(), &[3, 2]);
        let sq = Tensor::from_vec(vec![2, 2], vec![1i64, 2, 3, 4]).unwrap();
        assert_eq!(
            run("ii->", std::slice::from_ref(&sq))
                .into_vec::<i64>()
                .unwrap(),
            vec![5]
        );
        assert_eq!(run("ii->i", &[sq]).into_vec::<i64>().unwrap(), vec![1, 4]);
        let y = run("...ij->...ji", &[a]);
        assert_eq!(y.shape(), &[3, 2]);
    }
}
