//! `Softmax`, `LogSoftmax` and `Hardmax`.
//!
//! Before opset 13 these flatten the input to 2-D at `axis` (default 1) and work on whole rows;
//! from 13 they work along the single axis `axis` (default -1).

use super::{compute_type, real_data, real_tensor, split_at_axis, Real, PAR_MIN_WORK};
use crate::ops::{attr_err, input, normalize_axis, BuildContext, Kernel, Registry};
use crate::RuntimeError;
use kvant_graph::Node;
use kvant_tensor::{DType, Tensor};
use rayon::prelude::*;

/// Registers `Softmax`, `LogSoftmax` and `Hardmax`.
pub fn register(r: &mut Registry) {
    r.add("Softmax", build_softmax);
    r.add("LogSoftmax", build_log_softmax);
    r.add("Hardmax", build_hardmax);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

struct SoftmaxKernel {
    kind: Kind,
    axis: i64,
    /// Opset < 13: coerce to 2-D at `axis` instead of working along one axis.
    flatten: bool,
}

fn build(node: &Node, ctx: &BuildContext, kind: Kind) -> Result<Box<dyn Kernel>, RuntimeError> {
    let flatten = ctx.opset < 13;
    let default_axis = if flatten { 1 } else { -1 };
    Ok(Box::new(SoftmaxKernel {
        kind,
        axis: node
            .attr_int("axis")
            .map_err(attr_err)?
            .unwrap_or(default_axis),
        flatten,
    }))
}

fn build_softmax(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    build(node, ctx, Kind::Softmax)
}

fn build_log_softmax(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    build(node, ctx, Kind::LogSoftmax)
}

fn build_hardmax(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    build(node, ctx, Kind::Hardmax)
}

impl Kernel for SoftmaxKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        let axis = normalize_axis(self.axis, x.rank())?;
        let (outer, r, inner) = if self.flatten {
            let (o, _, _) = split_at_axis(shape, axis);
            (o, shape[axis.min(shape.len())..].iter().product(), 1)
        } else {
            split_at_axis(shape, axis)
        };
        let half = matches!(x.dtype(), DType::F16 | DType::BF16);
        let out = match compute_type(x.dtype(), "Softmax")? {
            DType::F64 => self.compute::<f64>(x, outer, r, inner)?,
            _ if half && self.kind != Kind::Hardmax => {
                let data = x.to_f32_vec()?;
                let mut y = vec![0f32; data.len()];
                half_precision(self.kind, &data, &mut y, (outer, r, inner), x.dtype());
                real_tensor(shape.to_vec(), y, x.dtype())?
            }
            _ => self.compute::<f32>(x, outer, r, inner)?,
        };
        Ok(vec![out])
    }
}

impl SoftmaxKernel {
    fn compute<R: Real>(
        &self,
        x: &Tensor,
        outer: usize,
        r: usize,
        inner: usize,
    ) -> Result<Tensor, RuntimeError> {
        let data = real_data::<R>(x)?;
        let mut out = vec![R::ZERO; data.len()];
        let block = r * inner;
        if block > 0 {
            let kind = self.kind;
            let work = |(src, dst): (&[R], &mut [R])| {
                if inner == 1 {
                    row(kind, src, dst);
                } else {
                    strided(kind, src, dst, r, inner);
                }
            };
            if outer > 1 && data.len() >= PAR_MIN_WORK {
                data.par_chunks(block)
                    .zip(out.par_chunks_mut(block))
                    .for_each(work);
            } else {
                data.chunks(block).zip(out.chunks_mut(block)).for_each(work);
            }
        }
        real_tensor(x.shape().to_vec(), out, x.dtype())
    }
}

/// Largest value of a slice, ignoring NaN (NaN still poisons the result through exp()).
#[inline]
fn max_of<R: Real>(xs: &[R]) -> R {
    let mut m = R::of(f64::NEG_INFINITY);
    for &v in xs {
        if v > m {
            m = v;
        }
    }
    m
}

/// One contiguous row.
fn row<R: Real>(kind: Kind, x: &[R], y: &mut [R]) {
    let m = max_of(x);
    match kind {
        Kind::Softmax => {
            // A row of only -inf has no finite maximum; shifting by 0 then gives 0/0 = NaN,
            // as the definition does.
            let shift = if m.f64().is_finite() { m } else { R::ZERO };
            let mut sum = 0f64;
            for (d, &v) in y.iter_mut().zip(x) {
                let e = (v - shift).exp();
                *d = e;
                sum += e.f64();
            }
            let inv = R::of(1.0 / sum);
            for d in y.iter_mut() {
                *d = *d * inv;
            }
        }
        Kind::LogSoftmax => {
            let shift = if m.f64().is_finite() { m } else { R::ZERO };
            let sum: f64 = x.iter().map(|&v| (v - shift).exp().f64()).sum();
            // (v - shift) first: it is exact near the maximum, so large inputs keep precision.
            let log_sum = R::of(sum.ln());
            for (d, &v) in y.iter_mut().zip(x) {
                *d = (v - shift) - log_sum;
            }
        }
        Kind::Hardmax => {
            // The first maximum gets the 1.
            if let Some(pos) = x.iter().position(|&v| v == m) {
                y[pos] = R::ONE;
            }
        }
    }
}

/// One `[r, inner]` block, working along `r` for each of the `inner` columns.
fn strided<R: Real>(kind: Kind, x: &[R], y: &mut [R], r: usize, inner: usize) {
    let mut max = vec![R::of(f64::NEG_INFINITY); inner];
    for k in 0..r {
        for (m, &v) in max.iter_mut().zip(&x[k * inner..(k + 1) * inner]) {
            if v > *m {
                *m = v;
            }
        }
    }
    if kind == Kind::Hardmax {
        let mut done = vec![false; inner];
        for k in 0..r {
            let base = k * inner;
            for i in 0..inner {
                if !done[i] && x[base + i] == max[i] {
                    y[base + i] = R::ONE;
                    done[i] = true;
                }
            }
        }
        return;
    }
    for m in &mut max {
        if !m.f64().is_finite() {
            *m = R::ZERO;
        }
    }
    let mut sum = vec![0f64; inner];
    for k in 0..r {
        let base = k * inner;
        for i in 0..inner {
            let e = (x[base + i] - max[i]).exp();
            y[base + i] = e;
            sum[i] += e.f64();
        }
    }
    if kind == Kind::Softmax {
        let inv: Vec<R> = sum.iter().map(|&s| R::of(1.0 / s)).collect();
        for k in 0..r {
            for (d, &f) in y[k * inner..(k + 1) * inner].iter_mut().zip(&inv) {
                *d = *d * f;
            }
        }
    } else {
        let log_sum: Vec<R> = sum.iter().map(|&s| R::of(s.ln())).collect();
        for k in 0..r {
            let base = k * inner;
            for i in 0..inner {
                y[base + i] = (x[base + i] - max[i]) - log_sum[i];
            }
        }
    }
}

/// Softmax / LogSoftmax of f16 and bf16 values (held in f32), rounding every intermediate
/// to the tensor type as an operator computing in that type does: `x - max`, `exp`, the sum,
/// the quotient and (LogSoftmax) its logarithm. f16 sums are accumulated in f32 and rounded
/// once; bf16 sums round after every addition. This reproduces the ONNX reference results
/// bit for bit instead of being one rounding off.
fn half_precision(
    kind: Kind,
    x: &[f32],
    y: &mut [f32],
    (outer, r, inner): (usize, usize, usize),
    dtype: DType,
) {
    use kvant_tensor::{bf16, f16};
    let round: fn(f32) -> f32 = if dtype == DType::BF16 {
        |v| bf16::from_f32(v).to_f32()
    } else {
        |v| f16::from_f32(v).to_f32()
    };
    let sequential = dtype == DType::BF16;
    let mut e = vec![0f32; r];
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| (o * r + k) * inner + i;
            let m = (0..r).map(|k| x[at(k)]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (k, ek) in e.iter_mut().enumerate() {
                *ek = round(round(x[at(k)] - m).exp());
                sum = if sequential {
                    round(sum + *ek)
                } else {
                    sum + *ek
                };
            }
            let sum = round(sum);
            for (k, &ek) in e.iter().enumerate() {
                let p = round(ek / sum);
                y[at(k)] = if kind == Kind::LogSoftmax {
                    round(p.ln())
                } else {
                    p
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_matches_rows() {
        // [2, 3] along axis 0 == rows of the transpose.
        let x = [1f32, 5.0, -2.0, 3.0, 0.5, 4.0];
        let mut y = [0f32; 6];
        strided(Kind::Softmax, &x, &mut y, 2, 3);
        for i in 0..3 {
            let (a, b) = (x[i], x[3 + i]);
            let mut r = [0f32; 2];
            row(Kind::Softmax, &[a, b], &mut r);
            assert!((r[0] - y[i]).abs() < 1e-6 && (r[1] - y[3 + i]).abs() < 1e-6);
        }
    }

    #[test]
    fn log_softmax_large_values() {
        let x = [1000f32, 1001.0];
        let mut y = [0f32; 2];
        row(Kind::LogSoftmax, &x, &mut y);
        assert!((y[1] - (-(1.0f32 + (-1f32).exp()).ln())).abs() < 1e-5);
    }
}
