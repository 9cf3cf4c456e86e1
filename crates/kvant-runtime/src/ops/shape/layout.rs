//! Operators that rearrange or combine whole tensors: Transpose, DepthToSpace, SpaceToDepth,
//! Concat, Split, Tile, Expand.

use super::data::{
    axis_of, checked_size, dispatch_any, make, transpose, unsupported_dtype, view, Strided, PAR_MIN,
};
use super::kernel;
use crate::ops::{attr_err, broadcast_shape, input, optional_input};
use crate::ops::{BuildContext, Kernel};
use crate::{kernel_err, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::Tensor;
use rayon::prelude::*;

/// Transposes any tensor by `perm` (validated here).
pub(super) fn transpose_tensor(
    x: &Tensor,
    shape: &[usize],
    perm: &[usize],
    op: &str,
) -> Result<Tensor, RuntimeError> {
    let mut seen = vec![false; shape.len()];
    for &p in perm {
        match seen.get_mut(p) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(kernel_err(format!(
                    "{perm:?} is not a permutation of the axes of shape {shape:?}"
                )))
            }
        }
    }
    if perm.len() != shape.len() {
        return Err(kernel_err(format!(
            "permutation {perm:?} does not match rank {}",
            shape.len()
        )));
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let dtype = x.dtype();
    dispatch_any!(dtype, T => {
        let src = view::<T>(x)?;
        make(out_shape, transpose(&src, shape, perm)?, dtype)
    }, _ => Err(unsupported_dtype(op, dtype)))
}

pub(super) fn build_transpose(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let perm = node
        .attr_ints("perm")
        .map_err(attr_err)?
        .map(|p| {
            p.iter()
                .map(|&v| {
                    usize::try_from(v)
                        .map_err(|_| kernel_err(format!("perm {p:?} has a negative axis")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let perm = perm
            .clone()
            .unwrap_or_else(|| (0..x.rank()).rev().collect());
        Ok(vec![transpose_tensor(x, x.shape(), &perm, "Transpose")?])
    }))
}

fn blocksize(node: &Node) -> Result<usize, RuntimeError> {
    let b = node
        .attr_int("blocksize")
        .map_err(attr_err)?
        .ok_or_else(|| kernel_err("'blocksize' is required"))?;
    match usize::try_from(b) {
        // Keep blocksize² far from overflowing.
        Ok(b) if b > 0 && b < 1 << 16 => Ok(b),
        _ => Err(kernel_err(format!("blocksize {b} must be positive"))),
    }
}

fn nchw(x: &Tensor) -> Result<[usize; 4], RuntimeError> {
    match *x.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(kernel_err(format!(
            "expected a 4-D input, got {:?}",
            x.shape()
        ))),
    }
}

pub(super) fn build_depth_to_space(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let b = blocksize(node)?;
    let crd = match node.attr_string("mode").map_err(attr_err)?.as_deref() {
        None | Some("DCR") => false,
        Some("CRD") => true,
        Some(m) => return Err(kernel_err(format!("DepthToSpace mode '{m}' is unknown"))),
    };
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let [n, c, h, w] = nchw(x)?;
        if c % (b * b) != 0 {
            return Err(kernel_err(format!(
                "channels {c} are not divisible by blocksize² {}",
                b * b
            )));
        }
        let c2 = c / (b * b);
        // Both modes are a 6-D transpose; they differ in where the block axes sit in C.
        let (shape, perm) = if crd {
            (vec![n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3])
        } else {
            (vec![n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2])
        };
        let t = transpose_tensor(x, &shape, &perm, "DepthToSpace")?;
        Ok(vec![t.reshape(vec![n, c2, h * b, w * b])?])
    }))
}

pub(super) fn build_space_to_depth(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let b = blocksize(node)?;
    // CRD mode (opset 25 on) keeps the channel axis outermost in the output channels.
    let perm = match node.attr_string("mode").map_err(attr_err)?.as_deref() {
        None | Some("DCR") => [0, 3, 5, 1, 2, 4],
        Some("CRD") => [0, 1, 3, 5, 2, 4],
        Some(m) => return Err(kernel_err(format!("SpaceToDepth mode '{m}' is unknown"))),
    };
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let [n, c, h, w] = nchw(x)?;
        if h % b != 0 || w % b != 0 {
            return Err(kernel_err(format!(
                "spatial size {h}x{w} is not divisible by blocksize {b}"
            )));
        }
        let shape = [n, c, h / b, b, w / b, b];
        let t = transpose_tensor(x, &shape, &perm, "SpaceToDepth")?;
        Ok(vec![t.reshape(vec![n, c * b * b, h / b, w / b])?])
    }))
}

pub(super) fn build_concat(
    node: &Node,
    ctx: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    // Concat-1 defaulted the axis to 1; later it is required.
    let axis = match node.attr_int("axis").map_err(attr_err)? {
        Some(a) => a,
        None if ctx.opset < 4 => 1,
        None => return Err(kernel_err("Concat needs an 'axis' attribute")),
    };
    Ok(kernel(move |inputs| {
        let xs: Vec<&Tensor> = inputs.iter().flatten().copied().collect();
        let first = *xs
            .first()
            .ok_or_else(|| kernel_err("Concat needs at least one input"))?;
        let rank = first.rank();
        let a = axis_of(axis, rank)?;
        let dtype = first.dtype();
        let mut out_shape = first.shape().to_vec();
        out_shape[a] = 0;
        for x in &xs {
            let s = x.shape();
            let same_other_dims = s.len() == rank
                && s.iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (p, q))| i == a || p == q);
            if x.dtype() != dtype || !same_other_dims {
                return Err(kernel_err(format!(
                    "Concat inputs {:?} ({}) and {:?} ({}) do not match",
                    first.shape(),
                    dtype,
                    s,
                    x.dtype()
                )));
            }
            out_shape[a] += s[a];
        }
        let outer: usize = out_shape[..a].iter().product();
        let after: usize = out_shape[a + 1..].iter().product();
        let total: usize = out_shape.iter().product();
        let out = dispatch_any!(dtype, T => {
            let srcs = xs.iter().map(|x| view::<T>(x)).collect::<Result<Vec<_>, _>>()?;
            let blocks: Vec<usize> = xs.iter().map(|x| x.shape()[a] * after).collect();
            let row: usize = blocks.iter().sum();
            let out = if total >= PAR_MIN && outer > 1 {
                // Each output row (one outer index) is filled by one task.
                let mut out = vec![T::default(); total];
                out.par_chunks_mut(row).enumerate().for_each(|(o, dst)| {
                    let mut at = 0;
                    for (src, &blk) in srcs.iter().zip(&blocks) {
                        dst[at..at + blk].clone_from_slice(&src[o * blk..(o + 1) * blk]);
                        at += blk;
                    }
                });
                out
            } else {
                let mut out = Vec::with_capacity(total);
                for o in 0..outer {
                    for (src, &blk) in srcs.iter().zip(&blocks) {
                        out.extend_from_slice(&src[o * blk..(o + 1) * blk]);
                    }
                }
                out
            };
            make(out_shape, out, dtype)?
        }, _ => return Err(unsupported_dtype("Concat", dtype)));
        Ok(vec![out])
    }))
}

/// Where Split's sizes come from.
#[derive(Clone)]
enum SplitSizes {
    Attr(Vec<i64>),
    /// Input 1 when given (opset 13 on), otherwise an even split into this many parts.
    InputOrEven(usize),
}

pub(super) fn build_split(
    node: &Node,
    ctx: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axis = node.attr_int("axis").map_err(attr_err)?.unwrap_or(0);
    let n_out = node.outputs.len();
    let num_outputs = if ctx.opset >= 18 {
        node.attr_int("num_outputs").map_err(attr_err)?
    } else {
        None
    };
    let parts = match num_outputs {
        Some(n) if n as usize != n_out || n < 1 => {
            return Err(kernel_err(format!(
                "Split num_outputs {n} does not match its {n_out} outputs"
            )))
        }
        _ => n_out,
    };
    let sizes = match node.attr_ints("split").map_err(attr_err)? {
        Some(s) if ctx.opset < 13 => SplitSizes::Attr(s.to_vec()),
        _ => SplitSizes::InputOrEven(parts),
    };
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let a = axis_of(axis, x.rank())?;
        let dim = x.shape()[a];
        let sizes: Vec<i64> = match (&sizes, optional_input(inputs, 1)) {
            (SplitSizes::Attr(s), _) => s.clone(),
            (SplitSizes::InputOrEven(_), Some(t)) => super::data::int_values(t, "Split sizes")?,
            (SplitSizes::InputOrEven(n), None) => {
                let n = *n;
                if n == 0 {
                    return Err(kernel_err("Split has no outputs"));
                }
                // Uneven splits (opset 18) make every part ceil(dim / n) but the last.
                let chunk = dim.div_ceil(n);
                let mut v = vec![chunk as i64; n];
                if let Some(last) = v.last_mut() {
                    *last = dim as i64 - (chunk * (n - 1)) as i64;
                }
                v
            }
        };
        if sizes.len() != n_out
            || sizes.iter().any(|&s| s < 0)
            || sizes.iter().sum::<i64>() != dim as i64
        {
            return Err(kernel_err(format!(
                "Split sizes {sizes:?} do not cover dimension {dim} with {n_out} outputs"
            )));
        }
        let outer: usize = x.shape()[..a].iter().product();
        let after: usize = x.shape()[a + 1..].iter().product();
        let dtype = x.dtype();
        let out = dispatch_any!(dtype, T => {
            let src = view::<T>(x)?;
            let mut outs = Vec::with_capacity(n_out);
            let mut start = 0usize;
            for &s in &sizes {
                let s = s as usize;
                let mut v = Vec::with_capacity(outer * s * after);
                for o in 0..outer {
                    let base = (o * dim + start) * after;
                    v.extend_from_slice(&src[base..base + s * after]);
                }
                let mut shape = x.shape().to_vec();
                shape[a] = s;
                outs.push(make(shape, v, dtype)?);
                start += s;
            }
            outs
        }, _ => return Err(unsupported_dtype("Split", dtype)));
        Ok(out)
    }))
}

pub(super) fn build_tile(_: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(kernel(|inputs| {
        let x = input(inputs, 0)?;
        let reps = super::data::int_values(input(inputs, 1)?, "Tile repeats")?;
        if reps.len() != x.rank() || reps.iter().any(|&r| r < 0) {
            return Err(kernel_err(format!(
                "Tile repeats {reps:?} do not fit shape {:?}",
                x.shape()
            )));
        }
        let dtype = x.dtype();
        let out_shape: Vec<usize> = x
            .shape()
            .iter()
            .zip(&reps)
            .map(|(&d, &r)| d.saturating_mul(r as usize))
            .collect();
        checked_size(&out_shape)?;
        let out = dispatch_any!(dtype, T => {
            let mut cur: Vec<T> = view::<T>(x)?.into_owned();
            // Repeat innermost axes first: after axis `d` is done, each block of the data holds
            // the finished suffix, which the next axis out repeats whole.
            let mut block: usize = 1;
            for d in (0..x.rank()).rev() {
                let r = reps[d] as usize;
                let inner = x.shape()[d] * block;
                if r != 1 {
                    let outer = cur.len().checked_div(inner).unwrap_or(0);
                    let mut next = Vec::with_capacity(cur.len() * r);
                    for o in 0..outer {
                        let chunk = &cur[o * inner..(o + 1) * inner];
                        for _ in 0..r {
                            next.extend_from_slice(chunk);
                        }
                    }
                    cur = next;
                }
                block *= out_shape[d];
            }
            make(out_shape, cur, dtype)?
        }, _ => return Err(unsupported_dtype("Tile", dtype)));
        Ok(vec![out])
    }))
}

/// Broadcasts `x` to `shape` (numpy rules), copying runs where the data is contiguous.
pub(super) fn broadcast_to(x: &Tensor, shape: &[usize], op: &str) -> Result<Tensor, RuntimeError> {
    let strides: Vec<isize> = super::super::broadcast_strides(x.shape(), shape)
        .into_iter()
        .map(|s| s as isize)
        .collect();
    let view_ = Strided::new(shape, &strides, 0);
    let dtype = x.dtype();
    dispatch_any!(dtype, T => {
        let src = view::<T>(x)?;
        make(shape.to_vec(), view_.gather(&src)?, dtype)
    }, _ => Err(unsupported_dtype(op, dtype)))
}

pub(super) fn build_expand(_: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(kernel(|inputs| {
        let x = input(inputs, 0)?;
        let target = super::data::int_values(input(inputs, 1)?, "Expand shape")?
            .into_iter()
            .map(|d| super::data::to_usize(d, "Expand dimension"))
            .collect::<Result<Vec<_>, _>>()?;
        let shape = broadcast_shape(&[x.shape(), &target])?;
        checked_size(&shape)?;
        if shape == x.shape() {
            return Ok(vec![x.clone()]);
        }
        Ok(vec![broadcast_to(x, &shape, "Expand")?])
    }))
}
