//! Reductions (`Reduce*`, `ArgMax` / `ArgMin`, `CumSum`, `TopK`), softmax-like ops
//! (`Softmax`, `LogSoftmax`, `Hardmax`), normalizations and `Resize` / `Upsample`.
//!
//! Most kernels view their input as `[outer, r, inner]` around the reduced axis (or the block of
//! reduced axes): `r` elements `inner` apart are combined for each of the `outer * inner` outputs.
//! Float math runs in the input type for f32 / f64 (f16 and bf16 go through f32), with sums
//! accumulated in f64 so that long rows keep their precision.

mod norm;
mod resize;
mod softmax;

use super::{attr_err, input, normalize_axis, optional_input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{dispatch_numeric, dispatch_typed, DType, Element, Scalar, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// Registers this module's operators.
pub fn register(r: &mut Registry) {
    r.add("ReduceSum", build_reduce_sum);
    r.add("ReduceMean", build_reduce_mean);
    r.add("ReduceMax", build_reduce_max);
    r.add("ReduceMin", build_reduce_min);
    r.add("ReduceProd", build_reduce_prod);
    r.add("ReduceL1", build_reduce_l1);
    r.add("ReduceL2", build_reduce_l2);
    r.add("ReduceLogSum", build_reduce_log_sum);
    r.add("ReduceLogSumExp", build_reduce_log_sum_exp);
    r.add("ReduceSumSquare", build_reduce_sum_square);
    r.add("ArgMax", build_argmax);
    r.add("ArgMin", build_argmin);
    r.add("CumSum", build_cumsum);
    r.add("TopK", build_topk);
    softmax::register(r);
    norm::register(r);
    resize::register(r);
}

/// Work (in elements) below which kernels stay on the calling thread: splitting small tensors
/// costs more in scheduling than it saves.
const PAR_MIN_WORK: usize = 1 << 15;

// ---------------------------------------------------------------------------------------------
// Float helpers shared by the submodules.

/// The float types kernels compute in: f32 and f64 (f16 / bf16 are widened to f32).
pub(crate) trait Real:
    Element
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
{
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// Conversion from f64 (rounding).
    fn of(v: f64) -> Self;
    /// Conversion to f64 (exact).
    fn f64(self) -> f64;
    /// e^self.
    fn exp(self) -> Self;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline]
            fn of(v: f64) -> Self {
                v as $t
            }
            #[inline]
            fn f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
        }
    };
}
real!(f32);
real!(f64);

/// The type a float kernel computes in for a tensor type; other types are not supported.
pub(crate) fn compute_type(dtype: DType, op: &str) -> Result<DType, RuntimeError> {
    match dtype {
        DType::F64 => Ok(DType::F64),
        DType::F32 | DType::F16 | DType::BF16 => Ok(DType::F32),
        other => Err(unsupported(format!("{op} on {other} tensors"))),
    }
}

/// The elements of a numeric tensor as `R`, borrowed when the type already matches.
pub(crate) fn real_data<R: Real>(t: &Tensor) -> Result<Cow<'_, [R]>, RuntimeError> {
    if t.dtype() == R::DTYPE {
        return Ok(Cow::Borrowed(t.as_slice::<R>()?));
    }
    Ok(Cow::Owned(t.cast(R::DTYPE)?.into_vec::<R>()?))
}

/// A tensor of `dtype` from values computed in `R`.
pub(crate) fn real_tensor<R: Real>(
    shape: Vec<usize>,
    values: Vec<R>,
    dtype: DType,
) -> Result<Tensor, RuntimeError> {
    let t = Tensor::from_vec(shape, values)?;
    Ok(if dtype == R::DTYPE { t } else { t.cast(dtype)? })
}

/// Sum of a slice in f64, with four partial sums so the additions can overlap.
#[inline]
pub(crate) fn sum_f64<R: Real>(xs: &[R]) -> f64 {
    let mut acc = [0f64; 4];
    let mut chunks = xs.chunks_exact(4);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v.f64();
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|v| v.f64()).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Sum of `(x - mean)^2` over a slice, in f64.
#[inline]
pub(crate) fn sum_sq_dev_f64<R: Real>(xs: &[R], mean: f64) -> f64 {
    let mut acc = [0f64; 4];
    let mut chunks = xs.chunks_exact(4);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            let d = v.f64() - mean;
            *a += d * d;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|v| {
            let d = v.f64() - mean;
            d * d
        })
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `(outer, size of axis, inner)` of a shape around one axis.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let r = shape.get(axis).copied().unwrap_or(1);
    let inner = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    (outer, r, inner)
}

/// Copies `data` (of `shape`) into the axis order `perm`.
pub(crate) fn transpose<T: Copy>(data: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let strides = kvant_tensor::strides_of(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let src_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    let n = data.len();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let rank = out_shape.len();
    let mut idx = vec![0usize; rank];
    let mut offset = 0usize;
    for _ in 0..n {
        out.push(data[offset]);
        // Odometer step over the output index, keeping the source offset in sync.
        for d in (0..rank).rev() {
            idx[d] += 1;
            offset += src_strides[d];
            if idx[d] < out_shape[d] {
                break;
            }
            offset -= src_strides[d] * out_shape[d];
            idx[d] = 0;
        }
    }
    out
}

/// Reads an `axes`-like integer tensor.
pub(crate) fn int_values(t: &Tensor, what: &str) -> Result<Vec<i64>, RuntimeError> {
    if !t.dtype().is_int() {
        return Err(kernel_err(format!(
            "{what} must be an integer tensor, got {}",
            t.dtype()
        )));
    }
    Ok(t.to_i64_vec()?)
}

/// Resolves axes against a rank: sorted, without negative values; duplicates are an error.
pub(crate) fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, RuntimeError> {
    let mut out = axes
        .iter()
        .map(|&a| normalize_axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    out.sort_unstable();
    let before = out.len();
    out.dedup();
    if out.len() != before {
        return Err(kernel_err(format!("axes {axes:?} repeat an axis")));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Reduce*.

/// Which reduction a `Reduce*` node computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

impl ReduceOp {
    /// First opset in which `axes` is an input rather than an attribute.
    fn axes_input_since(self) -> i64 {
        if self == ReduceOp::Sum {
            13
        } else {
            18
        }
    }

    /// The per-element transform applied before summing (for the sum-based reductions).
    #[inline]
    fn map(self, v: f64, shift: f64) -> f64 {
        match self {
            ReduceOp::L1 => v.abs(),
            ReduceOp::L2 | ReduceOp::SumSquare => v * v,
            ReduceOp::LogSumExp => (v - shift).exp(),
            _ => v,
        }
    }

    /// The final transform of the accumulated value over `count` elements.
    #[inline]
    fn finish(self, acc: f64, count: usize, shift: f64) -> f64 {
        match self {
            ReduceOp::Mean => acc / count as f64,
            ReduceOp::L2 => acc.sqrt(),
            ReduceOp::LogSum => acc.ln(),
            ReduceOp::LogSumExp => acc.ln() + shift,
            _ => acc,
        }
    }
}

struct ReduceKernel {
    op: ReduceOp,
    /// Axes from the attribute (older opsets); `None` when absent or given as an input.
    attr_axes: Option<Vec<i64>>,
    axes_from_input: bool,
    keepdims: bool,
    noop_with_empty_axes: bool,
}

fn build_reduce(
    node: &Node,
    ctx: &BuildContext,
    op: ReduceOp,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axes_from_input = ctx.opset >= op.axes_input_since();
    let attr_axes = if axes_from_input {
        None
    } else {
        node.attr_ints("axes")
            .map_err(attr_err)?
            .map(<[i64]>::to_vec)
    };
    Ok(Box::new(ReduceKernel {
        op,
        attr_axes,
        axes_from_input,
        keepdims: node.attr_int("keepdims").map_err(attr_err)?.unwrap_or(1) != 0,
        noop_with_empty_axes: node
            .attr_int("noop_with_empty_axes")
            .map_err(attr_err)?
            .unwrap_or(0)
            != 0,
    }))
}

macro_rules! reduce_builders {
    ($($name:ident => $op:ident),* $(,)?) => {$(
        fn $name(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
            build_reduce(node, ctx, ReduceOp::$op)
        }
    )*};
}
reduce_builders!(
    build_reduce_sum => Sum,
    build_reduce_mean => Mean,
    build_reduce_max => Max,
    build_reduce_min => Min,
    build_reduce_prod => Prod,
    build_reduce_l1 => L1,
    build_reduce_l2 => L2,
    build_reduce_log_sum => LogSum,
    build_reduce_log_sum_exp => LogSumExp,
    build_reduce_sum_square => SumSquare,
);

impl Kernel for ReduceKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let rank = x.rank();
        let axes: Vec<i64> = if self.axes_from_input {
            match optional_input(inputs, 1) {
                Some(t) => int_values(t, "axes")?,
                None => Vec::new(),
            }
        } else {
            self.attr_axes.clone().unwrap_or_default()
        };
        // Empty axes reduce everything, unless noop_with_empty_axes asks to reduce nothing
        // (the per-element transform of e.g. ReduceSumSquare still applies then).
        let axes: Vec<usize> = if axes.is_empty() {
            if self.noop_with_empty_axes && self.axes_from_input {
                Vec::new()
            } else {
                (0..rank).collect()
            }
        } else {
            normalize_axes(&axes, rank)?
        };
        let shape = x.shape();
        let out_shape: Vec<usize> = shape
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| {
                if !axes.contains(&i) {
                    Some(d)
                } else if self.keepdims {
                    Some(1)
                } else {
                    None
                }
            })
            .collect();
        let op = self.op;
        let out = dispatch_typed!(x.dtype(), T => {
            let data = x.as_slice::<T>()?;
            let values = reduce_any::<T>(data, shape, &axes, op)?;
            Tensor::from_vec(out_shape, values)?
        }, _ => return Err(unsupported(format!("{op:?} reduction of {} tensors", x.dtype()))));
        Ok(vec![out])
    }
}

/// Reduces `data` over `axes` (sorted), returning the values in the order of the kept axes.
fn reduce_any<T: Scalar>(
    data: &[T],
    shape: &[usize],
    axes: &[usize],
    op: ReduceOp,
) -> Result<Vec<T>, RuntimeError> {
    if T::DTYPE == DType::Bool && !matches!(op, ReduceOp::Max | ReduceOp::Min) {
        return Err(unsupported(format!("{op:?} reduction of bool tensors")));
    }
    // A contiguous block of reduced axes is read in place as [outer, r, inner]; anything else
    // is first transposed so that the reduced axes come last.
    let contiguous = axes.windows(2).all(|w| w[1] == w[0] + 1);
    if contiguous {
        let (start, end) = match (axes.first(), axes.last()) {
            (Some(&s), Some(&e)) => (s, e + 1),
            _ => (shape.len(), shape.len()),
        };
        let outer: usize = shape[..start].iter().product();
        let r: usize = shape[start..end].iter().product();
        let inner: usize = shape[end..].iter().product();
        Ok(reduce_block(data, outer, r, inner, op))
    } else {
        let mut perm: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
        let outer: usize = perm.iter().map(|&i| shape[i]).product();
        perm.extend_from_slice(axes);
        let r: usize = axes.iter().map(|&i| shape[i]).product();
        let moved = transpose(data, shape, &perm);
        Ok(reduce_block(&moved, outer, r, 1, op))
    }
}

/// Reduces `[outer, r, inner]` over the middle dimension.
fn reduce_block<T: Scalar>(
    data: &[T],
    outer: usize,
    r: usize,
    inner: usize,
    op: ReduceOp,
) -> Vec<T> {
    let mut out = vec![T::default(); outer * inner];
    if inner == 0 || outer == 0 {
        return out;
    }
    let block = r * inner;
    let work = |(o, dst): (usize, &mut [T])| {
        let src = &data[o * block..(o + 1) * block];
        reduce_one(src, r, inner, op, dst);
    };
    if outer > 1 && outer * block >= PAR_MIN_WORK {
        out.par_chunks_mut(inner).enumerate().for_each(work);
    } else {
        out.chunks_mut(inner).enumerate().for_each(work);
    }
    out
}

/// Reduces one `[r, inner]` block into `dst` (`inner` values).
fn reduce_one<T: Scalar>(src: &[T], r: usize, inner: usize, op: ReduceOp, dst: &mut [T]) {
    match op {
        ReduceOp::Max | ReduceOp::Min => {
            let is_max = op == ReduceOp::Max;
            // The identity of an empty max / min: the lowest (highest) value of the type.
            let init = if T::DTYPE == DType::Bool {
                T::from_i64(if is_max { 0 } else { 1 })
            } else if is_max {
                T::from_f64(f64::NEG_INFINITY)
            } else {
                T::from_f64(f64::INFINITY)
            };
            dst.fill(init);
            for k in 0..r {
                let row = &src[k * inner..(k + 1) * inner];
                for (d, &v) in dst.iter_mut().zip(row) {
                    // NaN propagates (`v != v` only for NaN); a NaN already in d stays.
                    #[allow(clippy::eq_op)]
                    let nan = v != v;
                    if nan || (if is_max { v > *d } else { v < *d }) {
                        *d = v;
                    }
                }
            }
        }
        _ if !T::IS_FLOAT
            && matches!(
                op,
                ReduceOp::Sum | ReduceOp::Prod | ReduceOp::SumSquare | ReduceOp::L1
            ) =>
        {
            // Integer sums and products wrap like the type's own arithmetic.
            let mut acc = vec![if op == ReduceOp::Prod { 1i64 } else { 0 }; inner];
            for k in 0..r {
                let row = &src[k * inner..(k + 1) * inner];
                for (a, &v) in acc.iter_mut().zip(row) {
                    let v = v.to_i64();
                    *a = match op {
                        ReduceOp::Prod => a.wrapping_mul(v),
                        ReduceOp::SumSquare => a.wrapping_add(v.wrapping_mul(v)),
                        ReduceOp::L1 => a.wrapping_add(v.wrapping_abs()),
                        _ => a.wrapping_add(v),
                    };
                }
            }
            for (d, a) in dst.iter_mut().zip(acc) {
                *d = T::from_i64(a);
            }
        }
        _ => {
            // LogSumExp subtracts the largest finite value first so exp() cannot overflow.
            let mut shift = vec![0f64; inner];
            if op == ReduceOp::LogSumExp {
                shift.fill(f64::NEG_INFINITY);
                for k in 0..r {
                    for (s, v) in shift.iter_mut().zip(&src[k * inner..(k + 1) * inner]) {
                        let v = v.to_f64();
                        if v.is_finite() && v > *s {
                            *s = v;
                        }
                    }
                }
                for s in &mut shift {
                    if !s.is_finite() {
                        *s = 0.0;
                    }
                }
            }
            if inner == 1 && op != ReduceOp::Prod {
                let s = shift[0];
                let acc = if matches!(op, ReduceOp::Sum | ReduceOp::Mean | ReduceOp::LogSum) {
                    sum_scalar(src)
                } else {
                    src.iter().map(|v| op.map(v.to_f64(), s)).sum()
                };
                dst[0] = T::from_f64(op.finish(acc, r, s));
                return;
            }
            let mut acc = vec![if op == ReduceOp::Prod { 1f64 } else { 0.0 }; inner];
            for k in 0..r {
                let row = &src[k * inner..(k + 1) * inner];
                for ((a, &v), &s) in acc.iter_mut().zip(row).zip(&shift) {
                    if op == ReduceOp::Prod {
                        *a *= v.to_f64();
                    } else {
                        *a += op.map(v.to_f64(), s);
                    }
                }
            }
            for ((d, a), &s) in dst.iter_mut().zip(acc).zip(&shift) {
                *d = T::from_f64(op.finish(a, r, s));
            }
        }
    }
}

/// Sum of any numeric slice in f64, with four partial sums.
#[inline]
fn sum_scalar<T: Scalar>(xs: &[T]) -> f64 {
    let mut acc = [0f64; 4];
    let mut chunks = xs.chunks_exact(4);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v.to_f64();
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|v| v.to_f64()).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

// ---------------------------------------------------------------------------------------------
// ArgMax / ArgMin.

struct ArgKernel {
    max: bool,
    axis: i64,
    keepdims: bool,
    select_last_index: bool,
}

fn build_arg(node: &Node, max: bool) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(ArgKernel {
        max,
        axis: node.attr_int("axis").map_err(attr_err)?.unwrap_or(0),
        keepdims: node.attr_int("keepdims").map_err(attr_err)?.unwrap_or(1) != 0,
        select_last_index: node
            .attr_int("select_last_index")
            .map_err(attr_err)?
            .unwrap_or(0)
            != 0,
    }))
}

fn build_argmax(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    build_arg(node, true)
}

fn build_argmin(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    build_arg(node, false)
}

impl Kernel for ArgKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let axis = normalize_axis(self.axis, x.rank())?;
        let (outer, r, inner) = split_at_axis(x.shape(), axis);
        if r == 0 {
            return Err(kernel_err("ArgMax/ArgMin over an empty axis"));
        }
        let mut out_shape = x.shape().to_vec();
        if x.rank() > 0 {
            if self.keepdims {
                out_shape[axis] = 1;
            } else {
                out_shape.remove(axis);
            }
        }
        let indices = dispatch_typed!(x.dtype(), T => {
            arg_select(x.as_slice::<T>()?, outer, r, inner, self.max, self.select_last_index)
        }, _ => return Err(unsupported(format!("ArgMax/ArgMin of {} tensors", x.dtype()))));
        Ok(vec![Tensor::from_vec(out_shape, indices)?])
    }
}

/// Index of the largest (smallest) element along the middle dimension; the first NaN wins.
fn arg_select<T: PartialOrd + Copy>(
    data: &[T],
    outer: usize,
    r: usize,
    inner: usize,
    max: bool,
    last: bool,
) -> Vec<i64> {
    let mut out = Vec::with_capacity(outer * inner);
    #[allow(clippy::eq_op)]
    let is_nan = |v: T| v != v;
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| data[(o * r + k) * inner + i];
            let mut best = 0usize;
            let mut best_v = at(0);
            for k in 1..r {
                if is_nan(best_v) {
                    break;
                }
                let v = at(k);
                let better = if is_nan(v) {
                    true
                } else if max {
                    v > best_v || (last && v == best_v)
                } else {
                    v < best_v || (last && v == best_v)
                };
                if better {
                    best = k;
                    best_v = v;
                }
            }
            out.push(best as i64);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// CumSum.

struct CumSumKernel {
    exclusive: bool,
    reverse: bool,
}

fn build_cumsum(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(CumSumKernel {
        exclusive: node.attr_int("exclusive").map_err(attr_err)?.unwrap_or(0) != 0,
        reverse: node.attr_int("reverse").map_err(attr_err)?.unwrap_or(0) != 0,
    }))
}

impl Kernel for CumSumKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let axis_values = int_values(input(inputs, 1)?, "axis")?;
        let axis = match axis_values.as_slice() {
            [a] => normalize_axis(*a, x.rank())?,
            _ => return Err(kernel_err("CumSum axis must hold exactly one value")),
        };
        let (outer, r, inner) = split_at_axis(x.shape(), axis);
        let out = dispatch_numeric!(x.dtype(), T => {
            let data = x.as_slice::<T>()?;
            let values = cumsum(data, outer, r, inner, self.exclusive, self.reverse);
            Tensor::from_vec(x.shape().to_vec(), values)?
        }, _ => return Err(unsupported(format!("CumSum of {} tensors", x.dtype()))));
        Ok(vec![out])
    }
}

/// Running sums along the middle dimension (floats accumulate in f64, integers wrap).
fn cumsum<T: Scalar>(
    data: &[T],
    outer: usize,
    r: usize,
    inner: usize,
    exclusive: bool,
    reverse: bool,
) -> Vec<T> {
    let mut out = vec![T::default(); data.len()];
    let mut acc_f = vec![0f64; inner];
    let mut acc_i = vec![0i64; inner];
    for o in 0..outer {
        acc_f.fill(0.0);
        acc_i.fill(0);
        for step in 0..r {
            let k = if reverse { r - 1 - step } else { step };
            let base = (o * r + k) * inner;
            for i in 0..inner {
                let v = data[base + i];
                if T::IS_FLOAT {
                    let before = acc_f[i];
                    acc_f[i] += v.to_f64();
                    out[base + i] = T::from_f64(if exclusive { before } else { acc_f[i] });
                } else {
                    let before = acc_i[i];
                    acc_i[i] = acc_i[i].wrapping_add(v.to_i64());
                    out[base + i] = T::from_i64(if exclusive { before } else { acc_i[i] });
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// TopK.

struct TopKKernel {
    /// `k` from the attribute (opset 1); from opset 10 it is an input.
    attr_k: Option<i64>,
    axis: i64,
    largest: bool,
}

fn build_topk(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let attr_k = if ctx.opset < 10 {
        Some(
            node.attr_int("k")
                .map_err(attr_err)?
                .ok_or_else(|| kernel_err("TopK needs the 'k' attribute"))?,
        )
    } else {
        None
    };
    // `sorted = 0` leaves the order unspecified; sorted output is a valid choice.
    Ok(Box::new(TopKKernel {
        attr_k,
        axis: node.attr_int("axis").map_err(attr_err)?.unwrap_or(-1),
        largest: node.attr_int("largest").map_err(attr_err)?.unwrap_or(1) != 0,
    }))
}

impl Kernel for TopKKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let k = match self.attr_k {
            Some(k) => k,
            None => match int_values(input(inputs, 1)?, "K")?.as_slice() {
                [k] => *k,
                _ => return Err(kernel_err("TopK's K must hold exactly one value")),
            },
        };
        let axis = normalize_axis(self.axis, x.rank())?;
        let (outer, r, inner) = split_at_axis(x.shape(), axis);
        if k < 0 || k as usize > r {
            return Err(kernel_err(format!(
                "TopK k={k} is out of range for an axis of {r}"
            )));
        }
        let k = k as usize;
        let mut out_shape = x.shape().to_vec();
        if let Some(d) = out_shape.get_mut(axis) {
            *d = k;
        }
        let (values, indices) = dispatch_numeric!(x.dtype(), T => {
            let (v, i) = topk(x.as_slice::<T>()?, outer, r, inner, k, self.largest);
            (Tensor::from_vec(out_shape.clone(), v)?, Tensor::from_vec(out_shape, i)?)
        }, _ => return Err(unsupported(format!("TopK of {} tensors", x.dtype()))));
        Ok(vec![values, indices])
    }
}

/// The `k` largest (smallest) values along the middle dimension, sorted, ties broken by the
/// lower index; NaN counts as larger than every number.
fn topk<T: Scalar>(
    data: &[T],
    outer: usize,
    r: usize,
    inner: usize,
    k: usize,
    largest: bool,
) -> (Vec<T>, Vec<i64>) {
    use std::cmp::Ordering;
    let mut values = vec![T::default(); outer * k * inner];
    let mut indices = vec![0i64; outer * k * inner];
    #[allow(clippy::eq_op)]
    let cmp_values = |a: T, b: T| -> Ordering {
        match (a != a, b != b) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        }
    };
    let mut order: Vec<usize> = Vec::with_capacity(r);
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| data[(o * r + j) * inner + i];
            order.clear();
            order.extend(0..r);
            let cmp = |&a: &usize, &b: &usize| {
                let c = cmp_values(at(a), at(b));
                let c = if largest { c.reverse() } else { c };
                c.then(a.cmp(&b))
            };
            if k < r {
                order.select_nth_unstable_by(k.saturating_sub(1).min(r - 1), cmp);
                order.truncate(k);
            }
            order.sort_unstable_by(cmp);
            for (j, &src) in order.iter().take(k).enumerate() {
                let dst = (o * k + j) * inner + i;
                values[dst] = at(src);
                indices[dst] = src as i64;
            }
        }
    }
    (values, indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_non_contiguous_axes() {
        // shape [2, 3, 2], reduce axes 0 and 2.
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let out = reduce_any(&data, &[2, 3, 2], &[0, 2], ReduceOp::Sum).unwrap();
        assert_eq!(
            out,
            vec![0. + 1. + 6. + 7., 2. + 3. + 8. + 9., 4. + 5. + 10. + 11.]
        );
    }

    #[test]
    fn log_sum_exp_is_stable() {
        let data = [1000f32, 1000.0];
        let out = reduce_any(&data, &[2], &[0], ReduceOp::LogSumExp).unwrap();
        assert!((out[0] - (1000.0 + 2f32.ln())).abs() < 1e-3);
    }

    #[test]
    fn empty_max_is_lowest() {
        let data: [i32; 0] = [];
        let out = reduce_any(&data, &[0, 2], &[0], ReduceOp::Max).unwrap();
        assert_eq!(out, vec![i32::MIN, i32::MIN]);
    }

    #[test]
    fn topk_ties_prefer_lower_index() {
        let data = [1i64, 3, 3, 2, 3];
        let (v, i) = topk(&data, 1, 5, 1, 3, true);
        assert_eq!(v, vec![3, 3, 3]);
        assert_eq!(i, vec![1, 2, 4]);
        let (v, i) = topk(&data, 1, 5, 1, 2, false);
        assert_eq!(v, vec![1, 2]);
        assert_eq!(i, vec![0, 3]);
    }

    #[test]
    fn cumsum_exclusive_reverse() {
        let data = [1i32, 2, 3];
        assert_eq!(cumsum(&data, 1, 3, 1, true, true), vec![5, 3, 0]);
        assert_eq!(cumsum(&data, 1, 3, 1, false, false), vec![1, 3, 6]);
    }
}
