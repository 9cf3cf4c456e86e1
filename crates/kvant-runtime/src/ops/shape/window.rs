//! Operators that take or add a window of a tensor: Slice, Pad, CenterCropPad, ReverseSequence,
//! Trilu.

use super::data::{
    dispatch_any, int_values, istrides, make, normalize_axes, unsupported_dtype, view, Item,
    Strided,
};
use super::kernel;
use crate::ops::{attr_err, input, optional_input, BuildContext, Kernel};
use crate::{kernel_err, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::Tensor;

/// Start, step and length of one sliced axis, after ONNX's clamping rules.
fn slice_axis(start: i64, end: i64, step: i64, dim: usize) -> (i64, i64) {
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (norm(start), norm(end));
    let (s, e) = if step > 0 {
        (s.clamp(0, d), e.clamp(0, d))
    } else {
        // Stepping backwards, `end` may reach -1 (one before the first element).
        (s.max(0).min(d - 1), e.max(-1).min(d - 1))
    };
    // In i128: a step near i64::MAX must not overflow the ceiling division.
    let (s128, e128, st) = (s as i128, e as i128, step as i128);
    let len = if step > 0 {
        (e128 - s128 + st - 1).div_euclid(st)
    } else {
        (s128 - e128 - st - 1).div_euclid(-st)
    };
    (s, len.max(0) as i64)
}

/// Slices `x` with per-axis starts, ends, steps (`axes` lists the sliced axes).
pub(super) fn slice_tensor(
    x: &Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Tensor, RuntimeError> {
    let rank = x.rank();
    let n = starts.len();
    let default_axes: Vec<i64> = (0..n as i64).collect();
    let axes = normalize_axes(axes.unwrap_or(&default_axes), rank)?;
    if ends.len() != n || axes.len() != n || steps.is_some_and(|s| s.len() != n) {
        return Err(kernel_err(format!(
            "Slice starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
        )));
    }
    let src_strides = istrides(x.shape());
    let mut out_shape = x.shape().to_vec();
    let mut strides = src_strides.clone();
    let mut base: isize = 0;
    for (i, &a) in axes.iter().enumerate() {
        let step = steps.map_or(1, |s| s[i]);
        if step == 0 {
            return Err(kernel_err("Slice step must not be zero"));
        }
        let (s, len) = slice_axis(starts[i], ends[i], step, x.shape()[a]);
        out_shape[a] = len as usize;
        if len > 0 {
            base += s as isize * src_strides[a];
        }
        // A step only matters when at least two elements are taken (and then it is small
        // enough not to overflow, being below the dimension).
        strides[a] = if len > 1 {
            src_strides[a] * step as isize
        } else {
            0
        };
    }
    if out_shape == x.shape() && strides == src_strides {
        return Ok(x.clone());
    }
    let dtype = x.dtype();
    let view_ = Strided::new(
        &out_shape,
        &strides,
        if out_shape.contains(&0) { 0 } else { base },
    );
    dispatch_any!(dtype, T => {
        let src = view::<T>(x)?;
        make(out_shape, view_.gather(&src)?, dtype)
    }, _ => Err(unsupported_dtype("Slice", dtype)))
}

pub(super) fn build_slice(
    node: &Node,
    ctx: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    // Before opset 10, starts / ends / axes were attributes and steps did not exist.
    let attrs = if ctx.opset < 10 {
        let get = |name: &str| -> Result<Option<Vec<i64>>, RuntimeError> {
            Ok(node.attr_ints(name).map_err(attr_err)?.map(<[i64]>::to_vec))
        };
        let starts = get("starts")?.ok_or_else(|| kernel_err("Slice needs 'starts'"))?;
        let ends = get("ends")?.ok_or_else(|| kernel_err("Slice needs 'ends'"))?;
        Some((starts, ends, get("axes")?))
    } else {
        None
    };
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        if let Some((starts, ends, axes)) = &attrs {
            return Ok(vec![slice_tensor(x, starts, ends, axes.as_deref(), None)?]);
        }
        let starts = int_values(input(inputs, 1)?, "Slice starts")?;
        let ends = int_values(input(inputs, 2)?, "Slice ends")?;
        let axes = optional_input(inputs, 3)
            .map(|t| int_values(t, "Slice axes"))
            .transpose()?;
        let steps = optional_input(inputs, 4)
            .map(|t| int_values(t, "Slice steps"))
            .transpose()?;
        Ok(vec![slice_tensor(
            x,
            &starts,
            &ends,
            axes.as_deref(),
            steps.as_deref(),
        )?])
    }))
}

/// How Pad fills the border.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

impl PadMode {
    /// The source coordinate of output coordinate `o` along an axis of size `n` padded by `pb`
    /// in front; `None` where the constant goes.
    fn source(self, o: usize, pb: i64, n: usize) -> Option<usize> {
        let i = o as i64 - pb;
        let n_ = n as i64;
        if (0..n_).contains(&i) {
            return Some(i as usize);
        }
        if n == 0 {
            return None;
        }
        let r = match self {
            PadMode::Constant => return None,
            PadMode::Edge => i.clamp(0, n_ - 1),
            PadMode::Wrap => i.rem_euclid(n_),
            PadMode::Reflect => {
                if n == 1 {
                    0
                } else {
                    // Reflection without repeating the edge has period 2(n-1).
                    let p = 2 * (n_ - 1);
                    let m = i.rem_euclid(p);
                    if m < n_ {
                        m
                    } else {
                        p - m
                    }
                }
            }
        };
        Some(r as usize)
    }
}

/// Pads (or, with negative pads, crops) `src` of `shape`; `pads` holds begin values for every
/// axis, then end values.
fn pad_slice<T: Item>(
    src: &[T],
    shape: &[usize],
    pads: &[i64],
    mode: PadMode,
    value: &T,
) -> Result<(Vec<usize>, Vec<T>), RuntimeError> {
    let rank = shape.len();
    let mut out_shape = Vec::with_capacity(rank);
    for d in 0..rank {
        let o = (shape[d] as i64)
            .checked_add(pads[d])
            .and_then(|o| o.checked_add(pads[rank + d]))
            .ok_or_else(|| kernel_err(format!("pads {pads:?} are too large")))?;
        if o < 0 {
            return Err(kernel_err(format!(
                "pads {pads:?} remove more than shape {shape:?} holds"
            )));
        }
        if mode != PadMode::Constant && shape[d] == 0 && o > 0 {
            return Err(kernel_err(format!(
                "cannot pad an empty axis in {mode:?} mode"
            )));
        }
        out_shape.push(o as usize);
    }
    let total = super::data::checked_size(&out_shape)?;
    if total == 0 {
        return Ok((out_shape, Vec::new()));
    }
    if rank == 0 {
        return Ok((out_shape, src.to_vec()));
    }
    // Source coordinate of every output coordinate, per axis.
    let maps: Vec<Vec<Option<usize>>> = (0..rank)
        .map(|d| {
            (0..out_shape[d])
                .map(|o| mode.source(o, pads[d], shape[d]))
                .collect()
        })
        .collect();
    let strides = kvant_tensor::strides_of(shape);
    let last = rank - 1;
    let (inner_out, inner_in) = (out_shape[last], shape[last]);
    // The run of the last axis that copies straight from the source.
    let pb = pads[last];
    let mid_out = pb.max(0) as usize;
    let mid_src = (-pb).max(0) as usize;
    let mid_len = inner_in
        .saturating_sub(mid_src)
        .min(inner_out.saturating_sub(mid_out));
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; last];
    let rows = total / inner_out;
    for _ in 0..rows {
        let mut base = Some(0usize);
        for d in 0..last {
            base = match (base, maps[d][idx[d]]) {
                (Some(b), Some(s)) => Some(b + s * strides[d]),
                _ => None,
            };
        }
        match base {
            None => out.extend(std::iter::repeat_n(value.clone(), inner_out)),
            Some(b) => {
                let row = &src[b..b + inner_in];
                let at = |j: usize| maps[last][j].map_or_else(|| value.clone(), |s| row[s].clone());
                out.extend((0..mid_out.min(inner_out)).map(at));
                out.extend_from_slice(&row[mid_src..mid_src + mid_len]);
                out.extend((mid_out + mid_len..inner_out).map(at));
            }
        }
        for d in (0..last).rev() {
            idx[d] += 1;
            if idx[d] < out_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok((out_shape, out))
}

/// Pads any tensor; `value` is the constant (same type as `x`) or `None` for zero.
fn pad_tensor(
    x: &Tensor,
    pads: &[i64],
    mode: PadMode,
    value: Option<&Tensor>,
) -> Result<Tensor, RuntimeError> {
    let dtype = x.dtype();
    dispatch_any!(dtype, T => {
        let src = view::<T>(x)?;
        let v = match value {
            Some(v) => view::<T>(v)?.first().cloned().unwrap_or_default(),
            None => T::default(),
        };
        let (shape, out) = pad_slice(&src, x.shape(), pads, mode, &v)?;
        make(shape, out, dtype)
    }, _ => Err(unsupported_dtype("Pad", dtype)))
}

pub(super) fn build_pad(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let mode = match node.attr_string("mode").map_err(attr_err)?.as_deref() {
        None | Some("constant") => PadMode::Constant,
        Some("reflect") => PadMode::Reflect,
        Some("edge") => PadMode::Edge,
        Some("wrap") => PadMode::Wrap,
        Some(m) => return Err(kernel_err(format!("Pad mode '{m}' is unknown"))),
    };
    // Before opset 11, pads and the (float) value were attributes ('paddings' in Pad-1).
    let attrs = if ctx.opset < 11 {
        let name = if ctx.opset < 2 { "paddings" } else { "pads" };
        let pads = node
            .attr_ints(name)
            .map_err(attr_err)?
            .ok_or_else(|| kernel_err(format!("Pad needs '{name}'")))?
            .to_vec();
        let value = node.attr_float("value").map_err(attr_err)?.unwrap_or(0.0);
        Some((pads, value))
    } else {
        None
    };
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let rank = x.rank();
        let (raw, axes, value) = match &attrs {
            Some((pads, v)) => {
                // The float value is cast to the data type, as a one-element tensor.
                let v = Tensor::scalar(*v).cast(x.dtype()).ok();
                (pads.clone(), None, v)
            }
            None => (
                int_values(input(inputs, 1)?, "Pad pads")?,
                optional_input(inputs, 3)
                    .map(|t| int_values(t, "Pad axes"))
                    .transpose()?,
                None,
            ),
        };
        let constant = match &attrs {
            Some(_) => value.as_ref(),
            None => optional_input(inputs, 2),
        };
        if let Some(c) = constant {
            if c.dtype() != x.dtype() {
                return Err(kernel_err(format!(
                    "Pad constant has type {}, data has {}",
                    c.dtype(),
                    x.dtype()
                )));
            }
        }
        let pads = match axes {
            None => raw,
            Some(a) => {
                let a = normalize_axes(&a, rank)?;
                if raw.len() != 2 * a.len() {
                    return Err(kernel_err(format!(
                        "Pad has {} pads for {} axes",
                        raw.len(),
                        a.len()
                    )));
                }
                let mut full = vec![0; 2 * rank];
                for (i, &ax) in a.iter().enumerate() {
                    full[ax] = raw[i];
                    full[rank + ax] = raw[a.len() + i];
                }
                full
            }
        };
        if pads.len() != 2 * rank {
            return Err(kernel_err(format!(
                "Pad has {} pads for rank {rank}",
                pads.len()
            )));
        }
        Ok(vec![pad_tensor(x, &pads, mode, constant)?])
    }))
}

pub(super) fn build_center_crop_pad(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axes = node
        .attr_ints("axes")
        .map_err(attr_err)?
        .map(<[i64]>::to_vec);
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let target = int_values(input(inputs, 1)?, "CenterCropPad shape")?;
        let rank = x.rank();
        let axes = match &axes {
            Some(a) => normalize_axes(a, rank)?,
            None => (0..rank).collect(),
        };
        if target.len() != axes.len() {
            return Err(kernel_err(format!(
                "CenterCropPad shape {target:?} does not match axes {axes:?}"
            )));
        }
        // Cropping and padding are both a Pad with the begin amount rounded down.
        let mut pads = vec![0i64; 2 * rank];
        for (&a, &t) in axes.iter().zip(&target) {
            if t < 0 {
                return Err(kernel_err(format!("CenterCropPad size {t} is negative")));
            }
            let dim = x.shape()[a] as i64;
            let begin = if t < dim {
                -((dim - t) / 2)
            } else {
                (t - dim) / 2
            };
            pads[a] = begin;
            pads[rank + a] = t - dim - begin;
        }
        Ok(vec![pad_tensor(x, &pads, PadMode::Constant, None)?])
    }))
}

pub(super) fn build_reverse_sequence(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let batch_axis = node.attr_int("batch_axis").map_err(attr_err)?.unwrap_or(1);
    let time_axis = node.attr_int("time_axis").map_err(attr_err)?.unwrap_or(0);
    let (batch_axis, time_axis) = match (batch_axis, time_axis) {
        (1, 0) => (1usize, 0usize),
        (0, 1) => (0, 1),
        _ => {
            return Err(kernel_err(format!(
                "ReverseSequence axes batch={batch_axis} time={time_axis} must be 0 and 1"
            )))
        }
    };
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let lens = int_values(input(inputs, 1)?, "sequence_lens")?;
        let shape = x.shape();
        if shape.len() < 2 {
            return Err(kernel_err(
                "ReverseSequence needs an input of rank 2 or more",
            ));
        }
        let (batch, time) = (shape[batch_axis], shape[time_axis]);
        if lens.len() != batch || lens.iter().any(|&l| l < 0 || l as usize > time) {
            return Err(kernel_err(format!(
                "sequence_lens {lens:?} do not fit batch {batch} and time {time}"
            )));
        }
        let inner: usize = shape[2..].iter().product();
        let strides = kvant_tensor::strides_of(shape);
        let (bs, ts) = (strides[batch_axis], strides[time_axis]);
        let dtype = x.dtype();
        let out = dispatch_any!(dtype, T => {
            let src = view::<T>(x)?;
            let mut out = src.to_vec();
            for (b, &l) in lens.iter().enumerate() {
                let l = l as usize;
                for t in 0..l {
                    let (d, s) = (b * bs + t * ts, b * bs + (l - 1 - t) * ts);
                    out[d..d + inner].clone_from_slice(&src[s..s + inner]);
                }
            }
            make(shape.to_vec(), out, dtype)?
        }, _ => return Err(unsupported_dtype("ReverseSequence", dtype)));
        Ok(vec![out])
    }))
}

pub(super) fn build_trilu(node: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let upper = node.attr_int("upper").map_err(attr_err)?.unwrap_or(1) != 0;
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let k = match optional_input(inputs, 1) {
            Some(t) => *int_values(t, "Trilu k")?
                .first()
                .ok_or_else(|| kernel_err("Trilu k is empty"))?,
            None => 0,
        };
        let shape = x.shape();
        let r = shape.len();
        if r < 2 {
            return Err(kernel_err("Trilu needs an input of rank 2 or more"));
        }
        let (rows, cols) = (shape[r - 2], shape[r - 1]);
        let dtype = x.dtype();
        let out = dispatch_any!(dtype, T => {
            let mut v = view::<T>(x)?.into_owned();
            if rows * cols > 0 {
                for m in v.chunks_mut(rows * cols) {
                    for (i, row) in m.chunks_mut(cols).enumerate() {
                        for (j, e) in row.iter_mut().enumerate() {
                            let diag = j as i64 - i as i64;
                            let keep = if upper { diag >= k } else { diag <= k };
                            if !keep {
                                *e = T::default();
                            }
                        }
                    }
                }
            }
            make(shape.to_vec(), v, dtype)?
        }, _ => return Err(unsupported_dtype("Trilu", dtype)));
        Ok(vec![out])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_clamps_like_onnx() {
        assert_eq!(slice_axis(0, i64::MAX, 1, 5), (0, 5));
        assert_eq!(slice_axis(-1, i64::MIN, -1, 5), (4, 5));
        assert_eq!(slice_axis(10, -10, -2, 5), (4, 3));
        assert_eq!(slice_axis(3, 1, 1, 5), (3, 0));
        assert_eq!(slice_axis(0, 5, 2, 5), (0, 3));
        assert_eq!(slice_axis(-1, 0, -1, 0).1, 0);
    }

    #[test]
    fn pad_reflect_and_wrap_beyond_the_size() {
        let src = [1, 2, 3];
        let (_, r) = pad_slice(&src, &[3], &[5, 2], PadMode::Reflect, &0).unwrap();
        // numpy: np.pad([1, 2, 3], (5, 2), 'reflect')
        assert_eq!(r, vec![2, 1, 2, 3, 2, 1, 2, 3, 2, 1]);
        let (_, w) = pad_slice(&src, &[3], &[4, 1], PadMode::Wrap, &0).unwrap();
        assert_eq!(w, vec![3, 1, 2, 3, 1, 2, 3, 1]);
        let (s, c) = pad_slice(&src, &[3], &[-1, 1], PadMode::Constant, &9).unwrap();
        assert_eq!((s, c), (vec![3], vec![2, 3, 9]));
    }
}
