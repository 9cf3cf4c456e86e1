//! Pooling: MaxPool (with Indices), AveragePool, LpPool, their global forms, MaxUnpool,
//! RoiAlign and MaxRoiPool.
//!
//! Windowed pools work per `(n, c)` plane, in parallel over planes, on windows normalized to
//! three spatial dimensions. Window positions outside the input are skipped (MaxPool, LpPool)
//! or skipped and optionally counted (AveragePool's `count_include_pad`).

use super::geometry::{valid_range, Window, WindowAttrs};
use crate::ops::{attr_err, input, optional_input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{dispatch_numeric, DType, Scalar, Tensor};
use rayon::prelude::*;

/// Registers the pooling operators.
pub(super) fn register(r: &mut Registry) {
    r.add("MaxPool", build_max_pool);
    r.add("AveragePool", build_average_pool);
    r.add("LpPool", build_lp_pool);
    r.add("GlobalMaxPool", build_global_max);
    r.add("GlobalAveragePool", build_global_average);
    r.add("GlobalLpPool", build_global_lp);
    r.add("MaxUnpool", build_max_unpool);
    r.add("RoiAlign", build_roi_align);
    r.add("MaxRoiPool", build_max_roi_pool);
}

/// What a windowed pool computes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum PoolKind {
    Max,
    Average { count_include_pad: bool },
    Lp { p: f64 },
}

/// Checks `x` is `[N, C, spatial...]` and resolves the window.
fn pool_window(attrs: &WindowAttrs, x: &Tensor) -> Result<(usize, Window), RuntimeError> {
    let shape = x.shape();
    if shape.len() < 3 {
        return Err(kernel_err(format!(
            "pool input must be [N, C, spatial...], got {shape:?}"
        )));
    }
    let window = attrs.resolve(&shape[2..], None)?;
    Ok((shape[0] * shape[1], window))
}

fn output_shape(x: &Tensor, win: &Window) -> Vec<usize> {
    let mut shape = x.shape()[..2].to_vec();
    shape.extend(win.output_shape());
    shape
}

/// Valid taps of one dimension for output `o`: the taps `t` in `0..k` whose input coordinate
/// `o * s + t * d - pad` lies in `0..len` (`extra` widens that range by the padding, for
/// `count_include_pad`).
#[inline]
fn taps(win: &Window, dim: usize, o: usize, before: usize, after: usize) -> (usize, usize) {
    let start = (o * win.stride[dim]) as isize - win.pad_begin[dim] as isize + before as isize;
    valid_range(
        win.kernel[dim],
        win.input[dim] + before + after,
        win.dilation[dim],
        start,
    )
}

/// Input coordinate of tap `t` of output `o` along `dim`.
#[inline]
fn coord(win: &Window, dim: usize, o: usize, t: usize) -> usize {
    (o * win.stride[dim] + t * win.dilation[dim]) - win.pad_begin[dim]
}

/// Pools one plane. For MaxPool, `indices` (when present) receives each maximum's position:
/// `base` plus its offset in the plane, row-major or (`col_major`) column-major.
fn pool_plane<T: Scalar>(
    x: &[T],
    win: &Window,
    kind: PoolKind,
    out: &mut [T],
    mut indices: Option<&mut [i64]>,
    base: usize,
    col_major: bool,
) {
    let [id, ih, iw] = win.input;
    let [od, oh, ow] = win.output;
    let mut pos = 0;
    // The column tap ranges are the same for every row: compute them once per plane.
    let column_taps: Vec<(usize, usize)> = (0..ow).map(|xo| taps(win, 2, xo, 0, 0)).collect();
    for z in 0..od {
        let rz = taps(win, 0, z, 0, 0);
        for y in 0..oh {
            let ry = taps(win, 1, y, 0, 0);
            for (xo, &rx) in column_taps.iter().enumerate() {
                let mut best: Option<(T, usize)> = None;
                let mut sum = 0f64;
                let mut count = 0usize;
                for tz in rz.0..rz.1 {
                    let iz = coord(win, 0, z, tz);
                    for ty in ry.0..ry.1 {
                        let iy = coord(win, 1, y, ty);
                        let row = (iz * ih + iy) * iw;
                        for tx in rx.0..rx.1 {
                            let ix = coord(win, 2, xo, tx);
                            let v = x[row + ix];
                            match kind {
                                PoolKind::Max => {
                                    // NaNs are skipped, like ONNX Runtime's `v > max` test.
                                    #[allow(clippy::eq_op)]
                                    let is_nan = v != v;
                                    if !is_nan && best.is_none_or(|(b, _)| v > b) {
                                        let at = if col_major {
                                            (ix * ih + iy) * id + iz
                                        } else {
                                            row + ix
                                        };
                                        best = Some((v, at));
                                    }
                                }
                                PoolKind::Average { .. } => sum += v.to_f64(),
                                PoolKind::Lp { p } => sum += v.to_f64().abs().powf(p),
                            }
                            count += 1;
                        }
                    }
                }
                out[pos] = match kind {
                    PoolKind::Max => match best {
                        Some((v, at)) => {
                            if let Some(ix) = indices.as_deref_mut() {
                                ix[pos] = (base + at) as i64;
                            }
                            v
                        }
                        None => T::from_f64(f64::NAN),
                    },
                    PoolKind::Average { count_include_pad } => {
                        let n = if count_include_pad {
                            // Taps inside the explicitly padded input count, taps in the extra
                            // area that ceil_mode adds do not.
                            let c = |dim: usize, o: usize| {
                                let (lo, hi) =
                                    taps(win, dim, o, win.pad_begin[dim], win.pad_end[dim]);
                                hi - lo
                            };
                            c(0, z) * c(1, y) * c(2, xo)
                        } else {
                            count
                        };
                        T::from_f64(if n == 0 { f64::NAN } else { sum / n as f64 })
                    }
                    PoolKind::Lp { p } => T::from_f64(sum.powf(1.0 / p)),
                };
                pos += 1;
            }
        }
    }
}

/// Runs a windowed pool on every plane in parallel.
fn pool_typed<T: Scalar>(
    x: &[T],
    planes: usize,
    win: &Window,
    kind: PoolKind,
    want_indices: bool,
    col_major: bool,
) -> Result<(Vec<T>, Option<Vec<i64>>), RuntimeError> {
    let (p_in, p_out) = (win.input_size(), win.output_size());
    if x.len() != planes * p_in {
        return Err(kernel_err("pool input is smaller than its shape"));
    }
    let mut out = vec![T::default(); planes * p_out];
    if out.is_empty() {
        return Ok((out, want_indices.then(Vec::new)));
    }
    if want_indices {
        let mut idx = vec![0i64; planes * p_out];
        out.par_chunks_mut(p_out)
            .zip(idx.par_chunks_mut(p_out))
            .enumerate()
            .for_each(|(i, (o, ix))| {
                let xs = &x[i * p_in..(i + 1) * p_in];
                pool_plane(xs, win, kind, o, Some(ix), i * p_in, col_major);
            });
        Ok((out, Some(idx)))
    } else {
        out.par_chunks_mut(p_out).enumerate().for_each(|(i, o)| {
            pool_plane(&x[i * p_in..(i + 1) * p_in], win, kind, o, None, 0, false);
        });
        Ok((out, None))
    }
}

/// MaxPool, AveragePool and LpPool.
struct PoolKernel {
    attrs: WindowAttrs,
    kind: PoolKind,
    want_indices: bool,
    col_major: bool,
}

impl Kernel for PoolKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let (planes, win) = pool_window(&self.attrs, x)?;
        let shape = output_shape(x, &win);
        let dtype = x.dtype();
        let allowed = match self.kind {
            PoolKind::Max => dtype.is_float() || matches!(dtype, DType::U8 | DType::I8),
            _ => dtype.is_float(),
        };
        if !allowed {
            return Err(unsupported(format!("pooling of {dtype}")));
        }
        let (y, idx) = dispatch_numeric!(dtype, T => {
            let (out, idx) = pool_typed(
                x.as_slice::<T>()?, planes, &win, self.kind, self.want_indices, self.col_major,
            )?;
            (Tensor::from_vec(shape.clone(), out)?, idx)
        }, _ => return Err(unsupported(format!("pooling of {dtype}"))));
        let mut outputs = vec![y];
        if let Some(idx) = idx {
            outputs.push(Tensor::from_vec(shape, idx)?);
        }
        Ok(outputs)
    }
}

fn build_max_pool(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let attrs = WindowAttrs::parse(node)?;
    if ctx.opset < 10 && attrs.ceil_mode {
        return Err(kernel_err("ceil_mode needs opset 10"));
    }
    let storage_order = node
        .attr_int("storage_order")
        .map_err(attr_err)?
        .unwrap_or(0);
    Ok(Box::new(PoolKernel {
        attrs,
        kind: PoolKind::Max,
        want_indices: node.outputs.get(1).is_some_and(|s| !s.is_empty()),
        col_major: storage_order != 0,
    }))
}

fn build_average_pool(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let count_include_pad = node
        .attr_int("count_include_pad")
        .map_err(attr_err)?
        .unwrap_or(0)
        != 0;
    Ok(Box::new(PoolKernel {
        attrs: WindowAttrs::parse(node)?,
        kind: PoolKind::Average { count_include_pad },
        want_indices: false,
        col_major: false,
    }))
}

/// LpPool's `p`: an INT from opset 2, a FLOAT before.
fn lp_p(node: &Node) -> Result<f64, RuntimeError> {
    let p = match node.attr_int("p") {
        Ok(p) => p.map(|p| p as f64),
        Err(_) => node.attr_float("p").map_err(attr_err)?.map(f64::from),
    };
    match p.unwrap_or(2.0) {
        p if p > 0.0 => Ok(p),
        p => Err(kernel_err(format!("LpPool p must be positive, got {p}"))),
    }
}

fn build_lp_pool(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(PoolKernel {
        attrs: WindowAttrs::parse(node)?,
        kind: PoolKind::Lp { p: lp_p(node)? },
        want_indices: false,
        col_major: false,
    }))
}

/// GlobalMaxPool, GlobalAveragePool, GlobalLpPool: one value per `(n, c)` plane.
struct GlobalPoolKernel {
    kind: PoolKind,
}

fn global_plane<T: Scalar>(x: &[T], kind: PoolKind) -> T {
    match kind {
        PoolKind::Max => {
            let mut best: Option<T> = None;
            for &v in x {
                #[allow(clippy::eq_op)]
                let is_nan = v != v;
                if !is_nan && best.is_none_or(|b| v > b) {
                    best = Some(v);
                }
            }
            best.unwrap_or_else(|| T::from_f64(f64::NAN))
        }
        PoolKind::Average { .. } => {
            let sum: f64 = x.iter().map(|v| v.to_f64()).sum();
            T::from_f64(sum / x.len() as f64)
        }
        PoolKind::Lp { p } => {
            let sum: f64 = x.iter().map(|v| v.to_f64().abs().powf(p)).sum();
            T::from_f64(sum.powf(1.0 / p))
        }
    }
}

/// A fast f32 mean: eight independent partial sums (vectorizable) in f32, combined in f64.
fn mean_f32(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    let sum: f64 =
        acc.iter().map(|&v| v as f64).sum::<f64>() + rest.iter().map(|&v| v as f64).sum::<f64>();
    (sum / x.len() as f64) as f32
}

impl Kernel for GlobalPoolKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        if shape.len() < 3 {
            return Err(kernel_err(format!(
                "global pool input must be [N, C, spatial...], got {shape:?}"
            )));
        }
        let planes = shape[0] * shape[1];
        let plane: usize = shape[2..].iter().product();
        let mut out_shape = shape[..2].to_vec();
        out_shape.extend(std::iter::repeat_n(1, shape.len() - 2));
        let dtype = x.dtype();
        if !(dtype.is_float()
            || (self.kind == PoolKind::Max && matches!(dtype, DType::U8 | DType::I8)))
        {
            return Err(unsupported(format!("global pooling of {dtype}")));
        }
        if plane == 0 {
            return Err(unsupported("global pooling over an empty plane"));
        }
        if dtype == DType::F32 && matches!(self.kind, PoolKind::Average { .. }) {
            let xs = x.as_slice::<f32>()?;
            let out: Vec<f32> = xs.par_chunks(plane).map(mean_f32).collect();
            return Ok(vec![Tensor::from_vec(out_shape, out)?]);
        }
        let y = dispatch_numeric!(dtype, T => {
            let xs = x.as_slice::<T>()?;
            let out: Vec<T> = xs.par_chunks(plane).map(|p| global_plane(p, self.kind)).collect();
            if out.len() != planes {
                return Err(kernel_err("global pool input is smaller than its shape"));
            }
            Tensor::from_vec(out_shape, out)?
        }, _ => return Err(unsupported(format!("global pooling of {dtype}"))));
        Ok(vec![y])
    }
}

fn build_global_max(_node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(GlobalPoolKernel {
        kind: PoolKind::Max,
    }))
}

fn build_global_average(
    _node: &Node,
    _ctx: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(GlobalPoolKernel {
        kind: PoolKind::Average {
            count_include_pad: false,
        },
    }))
}

fn build_global_lp(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(GlobalPoolKernel {
        kind: PoolKind::Lp { p: lp_p(node)? },
    }))
}

/// MaxUnpool: scatters X to the positions `I` recorded by MaxPool.
struct MaxUnpoolKernel {
    attrs: WindowAttrs,
}

fn build_max_unpool(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let attrs = WindowAttrs::parse(node)?;
    if attrs.kernel.is_none() {
        return Err(kernel_err("MaxUnpool needs kernel_shape"));
    }
    Ok(Box::new(MaxUnpoolKernel { attrs }))
}

impl Kernel for MaxUnpoolKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (x, idx) = (input(inputs, 0)?, input(inputs, 1)?);
        let shape = x.shape();
        if shape.len() < 3 || idx.shape() != shape {
            return Err(kernel_err(format!(
                "MaxUnpool X {shape:?} and I {:?} must match, rank >= 3",
                idx.shape()
            )));
        }
        let rank = shape.len() - 2;
        let kernel = self.attrs.kernel.clone().unwrap_or_default();
        let strides = self.attrs.strides.clone().unwrap_or_else(|| vec![1; rank]);
        let pads = self.attrs.pads.clone().unwrap_or_else(|| vec![0; 2 * rank]);
        if kernel.len() != rank || strides.len() != rank || pads.len() != 2 * rank {
            return Err(kernel_err(
                "MaxUnpool attributes do not match the input rank",
            ));
        }
        // The shape MaxPool's input had; indices address it.
        let mut inferred = shape[..2].to_vec();
        for i in 0..rank {
            let full = (shape[2 + i].max(1) - 1) * strides[i] + kernel[i];
            inferred.push(
                full.checked_sub(pads[i] + pads[rank + i]).ok_or_else(|| {
                    kernel_err("MaxUnpool pads are larger than the unpooled size")
                })?,
            );
        }
        let out_shape = match optional_input(inputs, 2) {
            Some(s) => {
                let s = s.to_i64_vec()?;
                if s.len() != shape.len() || s.iter().zip(&inferred).any(|(&o, &i)| o < i as i64) {
                    return Err(unsupported(format!(
                        "MaxUnpool output_shape {s:?} smaller than the unpooled shape {inferred:?}"
                    )));
                }
                s.iter().map(|&v| v as usize).collect()
            }
            None => inferred.clone(),
        };
        let indices = idx.to_i64_vec()?;
        let total: usize = inferred.iter().product();
        let dtype = x.dtype();
        let y = dispatch_numeric!(dtype, T => {
            let xs = x.as_slice::<T>()?;
            let mut dense = vec![T::default(); total];
            for (&v, &i) in xs.iter().zip(&indices) {
                let slot = usize::try_from(i).ok().and_then(|i| dense.get_mut(i)).ok_or_else(|| {
                    kernel_err(format!("MaxUnpool index {i} is out of range"))
                })?;
                *slot = v;
            }
            Tensor::from_vec(out_shape.clone(), place_at_origin(&dense, &inferred, &out_shape))?
        }, _ => return Err(unsupported(format!("MaxUnpool of {dtype}"))));
        Ok(vec![y])
    }
}

/// Copies a row-major block of shape `inner` into the leading corner of a zero tensor of
/// shape `outer` (every `inner[i] <= outer[i]`).
fn place_at_origin<T: Copy + Default>(data: &[T], inner: &[usize], outer: &[usize]) -> Vec<T> {
    if inner == outer {
        return data.to_vec();
    }
    let mut out = vec![T::default(); outer.iter().product()];
    let row = inner.last().copied().unwrap_or(1);
    let rows = data.len() / row.max(1);
    let outer_strides = kvant_tensor::strides_of(outer);
    let mut index = vec![0usize; inner.len().saturating_sub(1)];
    for r in 0..rows {
        let start: usize = index.iter().zip(&outer_strides).map(|(i, s)| i * s).sum();
        out[start..start + row].copy_from_slice(&data[r * row..(r + 1) * row]);
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < inner[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

/// RoiAlign (bilinear sampling of regions of interest).
struct RoiAlignKernel {
    max_mode: bool,
    output_height: usize,
    output_width: usize,
    sampling_ratio: usize,
    spatial_scale: f32,
    half_pixel: bool,
}

fn build_roi_align(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let positive = |name: &str, default: i64| -> Result<usize, RuntimeError> {
        match node.attr_int(name).map_err(attr_err)?.unwrap_or(default) {
            v if v >= 0 => Ok(v as usize),
            v => Err(kernel_err(format!("{name} must not be negative, got {v}"))),
        }
    };
    let mode = node
        .attr_string("mode")
        .map_err(attr_err)?
        .unwrap_or_else(|| "avg".into());
    // Opset 16 added coordinate_transformation_mode, defaulting to half_pixel; before, the
    // behaviour was output_half_pixel.
    let default_ctm = if ctx.opset >= 16 {
        "half_pixel"
    } else {
        "output_half_pixel"
    };
    let ctm = node
        .attr_string("coordinate_transformation_mode")
        .map_err(attr_err)?
        .unwrap_or_else(|| default_ctm.into());
    Ok(Box::new(RoiAlignKernel {
        max_mode: match mode.as_str() {
            "avg" => false,
            "max" => true,
            other => return Err(kernel_err(format!("unknown RoiAlign mode '{other}'"))),
        },
        output_height: positive("output_height", 1)?,
        output_width: positive("output_width", 1)?,
        sampling_ratio: positive("sampling_ratio", 0)?,
        spatial_scale: node
            .attr_float("spatial_scale")
            .map_err(attr_err)?
            .unwrap_or(1.0),
        half_pixel: match ctm.as_str() {
            "half_pixel" => true,
            "output_half_pixel" => false,
            other => {
                return Err(kernel_err(format!(
                    "unknown coordinate_transformation_mode '{other}'"
                )))
            }
        },
    }))
}

/// One bilinear sample: four input offsets and their weights.
#[derive(Clone, Copy, Default)]
struct Sample {
    pos: [usize; 4],
    w: [f32; 4],
}

impl RoiAlignKernel {
    /// The bilinear samples of every output bin of one ROI, bin-major.
    #[allow(clippy::too_many_arguments)]
    fn samples(
        &self,
        h: usize,
        w: usize,
        start: (f32, f32),
        bin: (f32, f32),
        grid: (usize, usize),
    ) -> Vec<Sample> {
        let (ph, pw) = (self.output_height, self.output_width);
        let mut out = Vec::with_capacity(ph * pw * grid.0 * grid.1);
        for by in 0..ph {
            for bx in 0..pw {
                for gy in 0..grid.0 {
                    let yy =
                        start.0 + by as f32 * bin.0 + (gy as f32 + 0.5) * bin.0 / grid.0 as f32;
                    for gx in 0..grid.1 {
                        let xx =
                            start.1 + bx as f32 * bin.1 + (gx as f32 + 0.5) * bin.1 / grid.1 as f32;
                        out.push(bilinear(yy, xx, h, w));
                    }
                }
            }
        }
        out
    }
}

/// Bilinear weights for a sample at (y, x); samples far outside the map get zero weights.
fn bilinear(y: f32, x: f32, h: usize, w: usize) -> Sample {
    if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 || h == 0 || w == 0 {
        return Sample::default();
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let mut y_low = y as usize;
    let mut x_low = x as usize;
    let y_high = if y_low >= h - 1 {
        y_low = h - 1;
        y = y_low as f32;
        y_low
    } else {
        y_low + 1
    };
    let x_high = if x_low >= w - 1 {
        x_low = w - 1;
        x = x_low as f32;
        x_low
    } else {
        x_low + 1
    };
    let (ly, lx) = (y - y_low as f32, x - x_low as f32);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    Sample {
        pos: [
            y_low * w + x_low,
            y_low * w + x_high,
            y_high * w + x_low,
            y_high * w + x_high,
        ],
        w: [hy * hx, hy * lx, ly * hx, ly * lx],
    }
}

impl Kernel for RoiAlignKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (x, rois, batch) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let dtype = x.dtype();
        if !dtype.is_float() {
            return Err(unsupported(format!("RoiAlign of {dtype}")));
        }
        let &[n, c, h, w] = x.shape() else {
            return Err(kernel_err(format!(
                "RoiAlign X must be 4-D, got {:?}",
                x.shape()
            )));
        };
        let r = batch.len();
        if rois.shape() != [r, 4] || batch.rank() != 1 {
            return Err(kernel_err(format!(
                "RoiAlign rois {:?} must be [num_rois, 4] and batch_indices {:?} [num_rois]",
                rois.shape(),
                batch.shape()
            )));
        }
        let xs = x.to_f32_vec()?;
        let boxes = rois.to_f32_vec()?;
        let batch = batch.to_i64_vec()?;
        let (ph, pw) = (self.output_height, self.output_width);
        let bins = ph * pw;
        let mut out = vec![0f32; r * c * bins];
        let offset = if self.half_pixel { 0.5 } else { 0.0 };
        out.par_chunks_mut((c * bins).max(1))
            .enumerate()
            .try_for_each(|(i, o)| -> Result<(), RuntimeError> {
                let b = usize::try_from(batch[i])
                    .ok()
                    .filter(|&b| b < n)
                    .ok_or_else(|| kernel_err(format!("batch index {} out of range", batch[i])))?;
                let bx = &boxes[i * 4..i * 4 + 4];
                let s = self.spatial_scale;
                let (x0, y0) = (bx[0] * s - offset, bx[1] * s - offset);
                let (x1, y1) = (bx[2] * s - offset, bx[3] * s - offset);
                let (mut rw, mut rh) = (x1 - x0, y1 - y0);
                if !self.half_pixel {
                    rw = rw.max(1.0);
                    rh = rh.max(1.0);
                }
                let (bin_h, bin_w) = (rh / ph as f32, rw / pw as f32);
                let grid = if self.sampling_ratio > 0 {
                    (self.sampling_ratio, self.sampling_ratio)
                } else {
                    (
                        bin_h.ceil().max(0.0) as usize,
                        bin_w.ceil().max(0.0) as usize,
                    )
                };
                let count = (grid.0 * grid.1).max(1) as f32;
                let samples = self.samples(h, w, (y0, x0), (bin_h, bin_w), grid);
                let per_bin = grid.0 * grid.1;
                for (ci, plane_out) in o.chunks_mut(bins.max(1)).enumerate() {
                    let plane = &xs[(b * c + ci) * h * w..(b * c + ci + 1) * h * w];
                    for (bin, v) in plane_out.iter_mut().enumerate() {
                        let ss = &samples[bin * per_bin..(bin + 1) * per_bin];
                        *v = if self.max_mode {
                            ss.iter()
                                .map(|s| {
                                    (0..4)
                                        .map(|k| s.w[k] * plane[s.pos[k]])
                                        .fold(f32::NEG_INFINITY, f32::max)
                                })
                                .fold(None, |m: Option<f32>, v| Some(m.map_or(v, |m| m.max(v))))
                                .unwrap_or(0.0)
                        } else {
                            ss.iter()
                                .map(|s| (0..4).map(|k| s.w[k] * plane[s.pos[k]]).sum::<f32>())
                                .sum::<f32>()
                                / count
                        };
                    }
                }
                Ok(())
            })?;
        let y = Tensor::from_vec(vec![r, c, ph, pw], out)?.cast(dtype)?;
        Ok(vec![y])
    }
}

/// MaxRoiPool (Caffe-style max pooling over quantized ROI bins).
struct MaxRoiPoolKernel {
    pooled: (usize, usize),
    spatial_scale: f32,
}

fn build_max_roi_pool(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let pooled = match node.attr_ints("pooled_shape").map_err(attr_err)? {
        Some(&[h, w]) if h > 0 && w > 0 => (h as usize, w as usize),
        _ => {
            return Err(kernel_err(
                "MaxRoiPool needs pooled_shape [h, w] with positive values",
            ))
        }
    };
    Ok(Box::new(MaxRoiPoolKernel {
        pooled,
        spatial_scale: node
            .attr_float("spatial_scale")
            .map_err(attr_err)?
            .unwrap_or(1.0),
    }))
}

impl Kernel for MaxRoiPoolKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (x, rois) = (input(inputs, 0)?, input(inputs, 1)?);
        let dtype = x.dtype();
        if !dtype.is_float() {
            return Err(unsupported(format!("MaxRoiPool of {dtype}")));
        }
        let &[n, c, h, w] = x.shape() else {
            return Err(kernel_err(format!(
                "MaxRoiPool X must be 4-D, got {:?}",
                x.shape()
            )));
        };
        let &[r, 5] = rois.shape() else {
            return Err(kernel_err(format!(
                "MaxRoiPool rois must be [num_rois, 5], got {:?}",
                rois.shape()
            )));
        };
        let xs = x.to_f32_vec()?;
        let boxes = rois.to_f32_vec()?;
        let (ph, pw) = self.pooled;
        let mut out = vec![0f32; r * c * ph * pw];
        let s = self.spatial_scale;
        for (i, o) in out.chunks_mut(c * ph * pw).enumerate() {
            let bx = &boxes[i * 5..i * 5 + 5];
            let b = bx[0] as i64;
            if b < 0 || b as usize >= n {
                return Err(kernel_err(format!(
                    "MaxRoiPool batch index {b} out of range"
                )));
            }
            let (x0, y0) = ((bx[1] * s).round() as i64, (bx[2] * s).round() as i64);
            let (x1, y1) = ((bx[3] * s).round() as i64, (bx[4] * s).round() as i64);
            let rh = (y1 - y0 + 1).max(1) as f32;
            let rw = (x1 - x0 + 1).max(1) as f32;
            let (bin_h, bin_w) = (rh / ph as f32, rw / pw as f32);
            let clamp = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
            for ci in 0..c {
                let plane = &xs[(b as usize * c + ci) * h * w..][..h * w];
                for py in 0..ph {
                    let hs = clamp((py as f32 * bin_h).floor() as i64 + y0, h);
                    let he = clamp(((py + 1) as f32 * bin_h).ceil() as i64 + y0, h);
                    for px in 0..pw {
                        let ws = clamp((px as f32 * bin_w).floor() as i64 + x0, w);
                        let we = clamp(((px + 1) as f32 * bin_w).ceil() as i64 + x0, w);
                        let mut m = if he <= hs || we <= ws {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        };
                        for yy in hs..he {
                            for &v in &plane[yy * w + ws..yy * w + we] {
                                m = m.max(v);
                            }
                        }
                        o[(ci * ph + py) * pw + px] = m;
                    }
                }
            }
        }
        Ok(vec![Tensor::from_vec(vec![r, c, ph, pw], out)?.cast(dtype)?])
    }
}
