//! Operators that pick elements by index or condition: Gather, GatherElements, GatherND,
//! Compress, NonZero, OneHot.

use super::data::{
    axis_of, dispatch_any, gather_rows, int_values, make, resolve_index, unsupported_dtype, view,
    Item,
};
use super::kernel;
use crate::ops::{attr_err, input, normalize_axis, BuildContext, Kernel};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Scalar, Tensor};

/// Resolves every index against `dim` (negative ones count from the end).
fn resolve_all(indices: &[i64], dim: usize) -> Result<Vec<usize>, RuntimeError> {
    indices.iter().map(|&i| resolve_index(i, dim)).collect()
}

pub(super) fn build_gather(node: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axis = node.attr_int("axis").map_err(attr_err)?.unwrap_or(0);
    Ok(kernel(move |inputs| {
        let (x, ind) = (input(inputs, 0)?, input(inputs, 1)?);
        let a = axis_of(axis, x.rank())?;
        if x.rank() == 0 {
            return Err(kernel_err("Gather needs an input of rank 1 or more"));
        }
        let dim = x.shape()[a];
        let idx = resolve_all(&int_values(ind, "Gather indices")?, dim)?;
        let outer: usize = x.shape()[..a].iter().product();
        let inner: usize = x.shape()[a + 1..].iter().product();
        // Source rows (of `inner` elements) for every output row, outer index first.
        let rows: Vec<usize> = (0..outer)
            .flat_map(|o| idx.iter().map(move |&i| o * dim + i))
            .collect();
        let mut shape = x.shape()[..a].to_vec();
        shape.extend_from_slice(ind.shape());
        shape.extend_from_slice(&x.shape()[a + 1..]);
        let dtype = x.dtype();
        let out = dispatch_any!(dtype, T => {
            let src = view::<T>(x)?;
            make(shape, gather_rows(&src, inner, &rows), dtype)?
        }, _ => return Err(unsupported_dtype("Gather", dtype)));
        Ok(vec![out])
    }))
}

/// Flat source offsets of GatherElements / ScatterElements: for every element of an index
/// tensor of `ind_shape`, the offset in data of `data_shape` with the `axis` coordinate replaced
/// by the index.
pub(super) fn element_offsets(
    data_shape: &[usize],
    ind_shape: &[usize],
    indices: &[i64],
    axis: usize,
) -> Result<Vec<usize>, RuntimeError> {
    let rank = data_shape.len();
    if ind_shape.len() != rank
        || ind_shape
            .iter()
            .zip(data_shape)
            .enumerate()
            .any(|(d, (&i, &s))| d != axis && i > s)
    {
        return Err(kernel_err(format!(
            "indices of shape {ind_shape:?} do not fit data of shape {data_shape:?}"
        )));
    }
    let strides = kvant_tensor::strides_of(data_shape);
    let dim = data_shape[axis];
    let mut idx = vec![0usize; rank];
    let mut out = Vec::with_capacity(indices.len());
    for &i in indices {
        let r = resolve_index(i, dim)?;
        let off: usize = idx
            .iter()
            .zip(&strides)
            .enumerate()
            .map(|(d, (&c, &s))| if d == axis { r * s } else { c * s })
            .sum();
        out.push(off);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < ind_shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

pub(super) fn build_gather_elements(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axis = node.attr_int("axis").map_err(attr_err)?.unwrap_or(0);
    Ok(kernel(move |inputs| {
        let (x, ind) = (input(inputs, 0)?, input(inputs, 1)?);
        let a = axis_of(axis, x.rank())?;
        let offsets = element_offsets(
            x.shape(),
            ind.shape(),
            &int_values(ind, "GatherElements indices")?,
            a,
        )?;
        let dtype = x.dtype();
        let out = dispatch_any!(dtype, T => {
            let src = view::<T>(x)?;
            make(ind.shape().to_vec(), gather_rows(&src, 1, &offsets), dtype)?
        }, _ => return Err(unsupported_dtype("GatherElements", dtype)));
        Ok(vec![out])
    }))
}

/// Where the slices that GatherND reads / ScatterND writes start, and how long they are.
pub(super) struct NdSlices {
    /// Start offset of each slice in the data.
    pub offsets: Vec<usize>,
    /// Elements per slice.
    pub len: usize,
    /// Shape of the index tuples' grid (the index tensor's shape without its last axis).
    pub grid: Vec<usize>,
}

/// Resolves the index tuples of GatherND / ScatterND into slice offsets.
pub(super) fn nd_slices(
    data_shape: &[usize],
    ind: &Tensor,
    batch_dims: usize,
) -> Result<NdSlices, RuntimeError> {
    let ishape = ind.shape();
    let (r, q, b) = (data_shape.len(), ishape.len(), batch_dims);
    let k = *ishape
        .last()
        .ok_or_else(|| kernel_err("indices must have rank 1 or more"))?;
    if b >= q || b + k > r || ishape[..b] != data_shape[..b] {
        return Err(kernel_err(format!(
            "indices of shape {ishape:?} (batch_dims {b}) do not fit data of shape {data_shape:?}"
        )));
    }
    let indices = int_values(ind, "indices")?;
    let strides = kvant_tensor::strides_of(data_shape);
    let len: usize = data_shape[b + k..].iter().product();
    // Elements per batch entry in data, and index tuples per batch entry.
    let batch_span: usize = data_shape[b..].iter().product();
    let per_batch: usize = ishape[b..q - 1].iter().product();
    let mut offsets = Vec::with_capacity(indices.len() / k.max(1));
    let tuples: Box<dyn Iterator<Item = &[i64]>> = if k == 0 {
        Box::new(std::iter::repeat_n(
            &[][..],
            ishape[..q - 1].iter().product(),
        ))
    } else {
        Box::new(indices.chunks_exact(k))
    };
    for (t, tuple) in tuples.enumerate() {
        let batch = t.checked_div(per_batch).unwrap_or(0);
        let mut off = batch * batch_span;
        for (j, &i) in tuple.iter().enumerate() {
            off += resolve_index(i, data_shape[b + j])? * strides[b + j];
        }
        offsets.push(off);
    }
    Ok(NdSlices {
        offsets,
        len,
        grid: ishape[..q - 1].to_vec(),
    })
}

pub(super) fn build_gather_nd(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let batch_dims = node.attr_int("batch_dims").map_err(attr_err)?.unwrap_or(0);
    let batch_dims = super::data::to_usize(batch_dims, "batch_dims")?;
    Ok(kernel(move |inputs| {
        let (x, ind) = (input(inputs, 0)?, input(inputs, 1)?);
        let s = nd_slices(x.shape(), ind, batch_dims)?;
        let k = ind.shape().last().copied().unwrap_or(0);
        let mut shape = s.grid.clone();
        shape.extend_from_slice(&x.shape()[batch_dims + k..]);
        let dtype = x.dtype();
        let out = dispatch_any!(dtype, T => {
            let src = view::<T>(x)?;
            let mut v = Vec::with_capacity(s.offsets.len() * s.len);
            for &o in &s.offsets {
                v.extend_from_slice(&src[o..o + s.len]);
            }
            make(shape, v, dtype)?
        }, _ => return Err(unsupported_dtype("GatherND", dtype)));
        Ok(vec![out])
    }))
}

pub(super) fn build_compress(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axis = node.attr_int("axis").map_err(attr_err)?;
    Ok(kernel(move |inputs| {
        let (x, cond) = (input(inputs, 0)?, input(inputs, 1)?);
        let cond = cond.cast(DType::Bool)?.into_vec::<bool>()?;
        // Without an axis, the input is read flattened.
        let (a, shape) = match axis {
            Some(ax) => (axis_of(ax, x.rank())?, x.shape().to_vec()),
            None => (0, vec![x.len()]),
        };
        let dim = shape[a];
        let picked: Vec<usize> = cond
            .iter()
            .enumerate()
            .filter(|(_, &c)| c)
            .map(|(i, _)| i)
            .collect();
        if let Some(&bad) = picked.iter().find(|&&i| i >= dim) {
            return Err(kernel_err(format!(
                "Compress condition selects index {bad} of a dimension of size {dim}"
            )));
        }
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let rows: Vec<usize> = (0..outer)
            .flat_map(|o| picked.iter().map(move |&i| o * dim + i))
            .collect();
        let mut out_shape = shape.clone();
        out_shape[a] = picked.len();
        let dtype = x.dtype();
        let out = dispatch_any!(dtype, T => {
            let src = view::<T>(x)?;
            make(out_shape, gather_rows(&src, inner, &rows), dtype)?
        }, _ => return Err(unsupported_dtype("Compress", dtype)));
        Ok(vec![out])
    }))
}

pub(super) fn build_non_zero(_: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(kernel(|inputs| {
        let x = input(inputs, 0)?;
        let dtype = x.dtype();
        let nz: Vec<usize> = kvant_tensor::dispatch_typed!(dtype, T => {
            let zero = T::zero();
            x.as_slice::<T>()?
                .iter()
                .enumerate()
                .filter(|(_, &v)| v != zero)
                .map(|(i, _)| i)
                .collect()
        }, _ => return Err(unsupported(format!("NonZero of {dtype}"))));
        // One row of coordinates per axis (a scalar counts as one element of shape [1]).
        let shape = if x.rank() == 0 {
            vec![1]
        } else {
            x.shape().to_vec()
        };
        let strides = kvant_tensor::strides_of(&shape);
        let mut out = Vec::with_capacity(shape.len() * nz.len());
        for (d, &s) in strides.iter().enumerate() {
            out.extend(nz.iter().map(|&i| ((i / s) % shape[d]) as i64));
        }
        Ok(vec![Tensor::from_vec(vec![shape.len(), nz.len()], out)?])
    }))
}

/// The OneHot output for `idx` read as `[outer, inner]`, with `depth` inserted between.
fn one_hot<T: Item>(off: &T, on: &T, idx: &[i64], [outer, depth, inner]: [usize; 3]) -> Vec<T> {
    let mut out = vec![off.clone(); outer * depth * inner];
    let d = depth as i64;
    for o in 0..outer {
        for i in 0..inner {
            let k = idx[o * inner + i];
            let k = if k < 0 { k + d } else { k };
            // Out-of-range indices give an all-"off" row.
            if (0..d).contains(&k) {
                out[(o * depth + k as usize) * inner + i] = on.clone();
            }
        }
    }
    out
}

pub(super) fn build_one_hot(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axis = node.attr_int("axis").map_err(attr_err)?.unwrap_or(-1);
    Ok(kernel(move |inputs| {
        let (ind, depth, values) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        if depth.len() != 1 || values.len() != 2 {
            return Err(kernel_err(
                "OneHot needs a one-element depth and two values",
            ));
        }
        // Depth and indices may be any numeric type; floats are truncated.
        let depth = depth.cast(DType::F64)?.into_vec::<f64>()?[0];
        if !(depth >= 1.0 && depth < (1u64 << 31) as f64) {
            return Err(kernel_err(format!("OneHot depth {depth} must be positive")));
        }
        let depth = depth as usize;
        let idx = ind.to_i64_vec()?;
        let a = normalize_axis(axis, ind.rank() + 1)?;
        let outer: usize = ind.shape()[..a].iter().product();
        let inner: usize = ind.shape()[a..].iter().product();
        let mut shape = ind.shape().to_vec();
        shape.insert(a, depth);
        let dtype = values.dtype();
        let out = dispatch_any!(dtype, T => {
            let v = view::<T>(values)?;
            make(shape, one_hot(&v[0], &v[1], &idx, [outer, depth, inner]), dtype)?
        }, _ => return Err(unsupported_dtype("OneHot", dtype)));
        Ok(vec![out])
    }))
}
