//! Conv, ConvTranspose and ConvInteger.
//!
//! Every convolution is normalized to three spatial dimensions (see [`super::geometry`]).
//! Float convolutions use im2col + `gemm` (a 1x1 / stride 1 / unpadded convolution multiplies
//! the input planes directly), depthwise 2-D convolutions a direct kernel vectorized along
//! output rows, and ConvTranspose `gemm` + col2im. f16 / bf16 are computed in f32.

use super::blas::{gemm, gemm_block, GemmElem, Init, Mat, SharedMut};
use super::geometry::{usize_list, valid_range, AutoPad, Window, WindowAttrs, SPATIAL};
use crate::ops::{attr_err, input, optional_input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Element, Tensor};
use rayon::prelude::*;
use std::ops::Range;

/// Registers Conv, ConvTranspose and ConvInteger.
pub(super) fn register(r: &mut Registry) {
    r.add("Conv", build_conv);
    r.add("ConvTranspose", build_conv_transpose);
    r.add("ConvInteger", build_conv_integer);
}

/// Target size of one im2col tile (bytes). Measured on PP-OCR's 3x3 convolutions: `gemm`
/// runs faster on wide tiles (~3 MiB, L3-resident) than on L2-sized ones, whose per-call
/// packing overhead dominates.
const COL_TILE_BYTES: usize = 3 << 20;

/// Output positions per tile of a pointwise (1x1) convolution, which needs no im2col.
const POINTWISE_TILE_COLS: usize = 4096;

/// Shapes of one convolution, checked against each other.
#[derive(Debug, Clone)]
struct ConvDims {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    group: usize,
    window: Window,
}

impl ConvDims {
    fn in_per_group(&self) -> usize {
        self.in_channels / self.group
    }
    fn out_per_group(&self) -> usize {
        self.out_channels / self.group
    }
    /// Rows of the im2col matrix of one group.
    fn col_rows(&self) -> usize {
        self.in_per_group() * self.window.kernel_size()
    }
    fn output_shape(&self) -> Vec<usize> {
        let mut shape = vec![self.batch, self.out_channels];
        shape.extend(self.window.output_shape());
        shape
    }
}

/// Checks X `[N, C, spatial...]` and W `[M, C / group, kernel...]` and resolves the window.
fn conv_dims(
    attrs: &WindowAttrs,
    group: usize,
    x: &[usize],
    w: &[usize],
) -> Result<ConvDims, RuntimeError> {
    if x.len() < 3 || w.len() != x.len() {
        return Err(kernel_err(format!(
            "Conv input {x:?} and weight {w:?} must have the same rank, at least 3"
        )));
    }
    let (batch, in_channels, out_channels) = (x[0], x[1], w[0]);
    if in_channels % group != 0 || out_channels % group != 0 || w[1] * group != in_channels {
        return Err(kernel_err(format!(
            "Conv channels do not match: input {x:?}, weight {w:?}, group {group}"
        )));
    }
    if let Some(k) = &attrs.kernel {
        if k.as_slice() != &w[2..] {
            return Err(kernel_err(format!(
                "kernel_shape {k:?} differs from the weight's {:?}",
                &w[2..]
            )));
        }
    }
    let window = attrs.resolve(&x[2..], Some(&w[2..]))?;
    Ok(ConvDims {
        batch,
        in_channels,
        out_channels,
        group,
        window,
    })
}

fn parse_group(node: &Node) -> Result<usize, RuntimeError> {
    match node.attr_int("group").map_err(attr_err)?.unwrap_or(1) {
        g if g >= 1 => Ok(g as usize),
        g => Err(kernel_err(format!("group must be positive, got {g}"))),
    }
}

/// The float element types the convolution loops run on.
trait ConvElem: GemmElem + Element {
    /// One depthwise output plane (see [`depthwise_plane_impl`]).
    fn depthwise_plane(x: &[Self], w: &[Self], bias: Self, win: &Window, out: &mut [Self]);
}

impl ConvElem for f32 {
    fn depthwise_plane(x: &[f32], w: &[f32], bias: f32, win: &Window, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports the feature the function is compiled for.
                unsafe { depthwise_plane_avx2(x, w, bias, win, out) };
                return;
            }
        }
        depthwise_plane_impl(x, w, bias, win, out)
    }
}

impl ConvElem for f64 {
    fn depthwise_plane(x: &[f64], w: &[f64], bias: f64, win: &Window, out: &mut [f64]) {
        depthwise_plane_impl(x, w, bias, win, out)
    }
}

/// Copies the receptive fields of one image `x` (`[C, D, H, W]`) into `col`
/// (`[C * kernel, output positions]`, row-major), zeros where the window hits padding.
fn im2col<T: Copy + Default + Send + Sync>(x: &[T], win: &Window, col: &mut [T]) {
    let rows = win.output[0] * win.output[1];
    im2col_rows(x, win, 0..rows, col);
}

/// [`im2col`] restricted to the output rows `rows` (rows of `output[2]` positions, counted over
/// the flattened depth x height): `col` is `[C * kernel, rows.len() * output[2]]`.
fn im2col_rows<T: Copy + Default>(x: &[T], win: &Window, rows: Range<usize>, col: &mut [T]) {
    let p = rows.len() * win.output[2];
    let taps = win.kernel_size();
    let plane = win.input_size();
    if p == 0 || taps == 0 {
        return;
    }
    for (row_index, row) in col.chunks_mut(p).enumerate() {
        let (c, tap) = (row_index / taps, row_index % taps);
        let kk = [
            tap / (win.kernel[1] * win.kernel[2]),
            (tap / win.kernel[2]) % win.kernel[1],
            tap % win.kernel[2],
        ];
        let src = x.get(c * plane..(c + 1) * plane).unwrap_or(&[]);
        fill_col_row(src, win, kk, rows.clone(), row);
    }
}

/// Offset of input coordinate `o * stride + tap * dilation - pad` relative to `o * stride`.
#[inline]
fn tap_offset(win: &Window, dim: usize, tap: usize) -> isize {
    (tap * win.dilation[dim]) as isize - win.pad_begin[dim] as isize
}

/// Fills one im2col row: kernel tap `kk` over the output positions of output rows `rows`.
fn fill_col_row<T: Copy + Default>(
    src: &[T],
    win: &Window,
    kk: [usize; 3],
    rows: Range<usize>,
    row: &mut [T],
) {
    let [id, ih, iw] = win.input;
    let [od, oh, ow] = win.output;
    let [sd, sh, sw] = win.stride;
    let (rd, rh, rw) = (
        valid_range(od, id, sd, tap_offset(win, 0, kk[0])),
        valid_range(oh, ih, sh, tap_offset(win, 1, kk[1])),
        valid_range(ow, iw, sw, tap_offset(win, 2, kk[2])),
    );
    let off_w = tap_offset(win, 2, kk[2]);
    if ow == 0 {
        return;
    }
    for (r, dst) in rows.zip(row.chunks_mut(ow)) {
        let (z, y) = (r / oh.max(1), r % oh.max(1));
        if z < rd.0 || z >= rd.1 || y < rh.0 || y >= rh.1 {
            dst.fill(T::default());
            continue;
        }
        let iz = (z * sd) as isize + tap_offset(win, 0, kk[0]);
        let iy = (y * sh) as isize + tap_offset(win, 1, kk[1]);
        let start = (iz as usize * ih + iy as usize) * iw;
        let src_row = &src[start..start + iw];
        let (lo, hi) = rw;
        dst[..lo].fill(T::default());
        dst[hi..].fill(T::default());
        if lo >= hi {
            continue;
        }
        if sw == 1 {
            let s0 = (lo as isize + off_w) as usize;
            dst[lo..hi].copy_from_slice(&src_row[s0..s0 + (hi - lo)]);
        } else {
            for (o, d) in dst[lo..hi].iter_mut().enumerate() {
                *d = src_row[(((lo + o) * sw) as isize + off_w) as usize];
            }
        }
    }
}

/// Output columns one depthwise block accumulates in registers.
const DW_BLOCK: usize = 32;

/// Depthwise 2-D convolution of one output plane: `out[oh, ow] = bias + sum w * x`.
///
/// The input plane is first copied into a zero-padded buffer whose rows are split into
/// `stride_w` column phases (`phase[p][j] = padded_row[j * stride_w + p]`), so that every
/// kernel tap reads a contiguous run for consecutive outputs, whatever the stride. Outputs are
/// then computed in blocks of [`DW_BLOCK`] columns, accumulating all taps in registers.
#[inline(always)]
fn depthwise_plane_impl<T: GemmElem>(x: &[T], w: &[T], bias: T, win: &Window, out: &mut [T]) {
    let [_, ih, iw] = win.input;
    let [_, oh, ow] = win.output;
    let [_, sh, sw] = win.stride;
    let [_, kh, kw] = win.kernel;
    let [_, dh, dw] = win.dilation;
    let (pt, pl) = (win.pad_begin[1], win.pad_begin[2]);
    if ow == 0 || oh == 0 {
        return;
    }
    // Extent of the padded input the outputs read.
    let hp = (oh - 1) * sh + (kh - 1) * dh + 1;
    let wp = (ow - 1) * sw + (kw - 1) * dw + 1;
    let len = wp.div_ceil(sw);
    let mut buf = vec![T::ZERO; hp * sw * len];
    // Padded columns px with 0 <= px - pl < iw.
    let (px_lo, px_hi) = (pl.min(wp), (pl + iw).min(wp));
    for (py, dst) in buf.chunks_mut(sw * len).enumerate() {
        let Some(iy) = py.checked_sub(pt).filter(|&iy| iy < ih) else {
            continue;
        };
        let row = &x[iy * iw..(iy + 1) * iw];
        if sw == 1 {
            dst[px_lo..px_hi].copy_from_slice(&row[px_lo - pl..px_hi - pl]);
            continue;
        }
        if sw == 2 {
            // The common strided case: split pairs without a gather per element.
            let (even, odd) = dst.split_at_mut(len);
            let mut px = px_lo;
            if px % 2 == 1 && px < px_hi {
                odd[px / 2] = row[px - pl];
                px += 1;
            }
            let pairs = (px_hi - px) / 2;
            let src = &row[px - pl..px - pl + 2 * pairs];
            let j = px / 2;
            for ((e, o), pair) in even[j..j + pairs]
                .iter_mut()
                .zip(&mut odd[j..j + pairs])
                .zip(src.chunks_exact(2))
            {
                *e = pair[0];
                *o = pair[1];
            }
            px += 2 * pairs;
            if px < px_hi {
                even[px / 2] = row[px - pl];
            }
            continue;
        }
        for (p, phase) in dst.chunks_mut(len).enumerate() {
            // First padded column of this phase inside the input; no division per element.
            let px0 = px_lo + (p + sw - px_lo % sw) % sw;
            if px0 >= px_hi {
                continue;
            }
            let count = (px_hi - px0).div_ceil(sw);
            let src = row[px0 - pl..].iter().step_by(sw).take(count);
            for (d, &v) in phase[px0 / sw..].iter_mut().zip(src) {
                *d = v;
            }
        }
    }
    // Each tap as (weight, offset of its run relative to output row start), computed once:
    // the phase arithmetic divides by the stride.
    let taps: Vec<(T, usize)> = (0..kh)
        .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
        .zip(w)
        .map(|((ky, kx), &wv)| {
            let px = kx * dw;
            (wv, (ky * dh * sw + px % sw) * len + px / sw)
        })
        .collect();
    let row_step = sh * sw * len;
    for (y, out_row) in out.chunks_mut(ow).enumerate().take(oh) {
        let base = y * row_step;
        let mut x0 = 0;
        while x0 < ow {
            let left = ow - x0;
            let dst = &mut out_row[x0..];
            let src = &buf[base + x0..];
            // Widest block that fits; all taps accumulate in registers.
            x0 += if left >= DW_BLOCK {
                dw_block::<T, DW_BLOCK>(src, &taps, bias, dst)
            } else if left >= 16 {
                dw_block::<T, 16>(src, &taps, bias, dst)
            } else if left >= 8 {
                dw_block::<T, 8>(src, &taps, bias, dst)
            } else if left >= 4 {
                dw_block::<T, 4>(src, &taps, bias, dst)
            } else {
                dw_block::<T, 1>(src, &taps, bias, dst)
            };
        }
    }
}

/// `B` consecutive depthwise outputs: `dst[i] = bias + sum_t w_t * src[offset_t + i]`.
/// Returns `B`.
#[inline(always)]
fn dw_block<T: GemmElem, const B: usize>(
    src: &[T],
    taps: &[(T, usize)],
    bias: T,
    dst: &mut [T],
) -> usize {
    let mut acc = [bias; B];
    for &(wv, off) in taps {
        let seg = &src[off..off + B];
        for i in 0..B {
            acc[i] = T::mul_add(wv, seg[i], acc[i]);
        }
    }
    dst[..B].copy_from_slice(&acc);
    B
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn depthwise_plane_avx2(x: &[f32], w: &[f32], bias: f32, win: &Window, out: &mut [f32]) {
    depthwise_plane_impl(x, w, bias, win, out)
}

/// Runs a float convolution. `x`: `[N, C, spatial]`, `w`: `[M, C / group, kernel]`.
fn conv_float<T: ConvElem>(
    x: &[T],
    w: &[T],
    bias: Option<&[T]>,
    d: &ConvDims,
) -> Result<Vec<T>, RuntimeError> {
    let win = &d.window;
    let (cg, mg, g) = (d.in_per_group(), d.out_per_group(), d.group);
    let (plane_in, plane_out) = (win.input_size(), win.output_size());
    let k = d.col_rows();
    if x.len() != d.batch * d.in_channels * plane_in || w.len() != d.out_channels * k {
        return Err(kernel_err("Conv input or weight is smaller than its shape"));
    }
    if bias.is_some_and(|b| b.len() != d.out_channels) {
        return Err(kernel_err(format!(
            "Conv bias must have {} values",
            d.out_channels
        )));
    }
    let mut out = vec![T::ZERO; d.batch * d.out_channels * plane_out];
    if out.is_empty() {
        return Ok(out);
    }
    let threads = rayon::current_num_threads();

    // Depthwise (one input channel per group), 2-D: direct kernel, parallel over planes.
    if cg == 1 && win.kernel[0] == 1 && win.input[0] == 1 {
        let taps = win.kernel_size();
        let task = |(plane, o): (usize, &mut [T])| {
            let (n, m) = (plane / d.out_channels, plane % d.out_channels);
            // Output channel m reads input channel m / (M / group).
            let c = m / mg;
            let xs = &x[(n * d.in_channels + c) * plane_in..][..plane_in];
            let ws = &w[m * taps..(m + 1) * taps];
            T::depthwise_plane(xs, ws, bias.map_or(T::ZERO, |b| b[m]), win, o);
        };
        if threads > 1 {
            out.par_chunks_mut(plane_out).enumerate().for_each(task);
        } else {
            out.chunks_mut(plane_out).enumerate().for_each(task);
        }
        return Ok(out);
    }

    let pointwise = win.is_pointwise();
    let items = d.batch * g;
    let (out_rows, ow) = (win.output[0] * win.output[1], win.output[2]);
    // Output positions are processed in tiles of whole output rows, sized so that a tile's
    // im2col block stays in cache; tiles are also the unit of parallel work, so that two
    // threads never share one small product.
    let target_cols = if pointwise {
        POINTWISE_TILE_COLS
    } else {
        COL_TILE_BYTES / (k.max(1) * std::mem::size_of::<T>())
    };
    let tile_rows = (target_cols / ow.max(1)).clamp(1, out_rows.max(1));
    let tiles = out_rows.div_ceil(tile_rows);
    let tasks = items * tiles;
    let shared = SharedMut::new(&mut out);
    let task = |t: usize, col: &mut Vec<T>, gemm_threads: usize| -> Result<(), RuntimeError> {
        let (item, tile) = (t / tiles, t % tiles);
        let (n, gi) = (item / g, item % g);
        let r0 = tile * tile_rows;
        let r1 = (r0 + tile_rows).min(out_rows);
        let (p0, cols) = (r0 * ow, (r1 - r0) * ow);
        let x_img = &x[(n * d.in_channels + gi * cg) * plane_in..][..cg * plane_in];
        let rhs = if pointwise {
            Mat {
                data: &x_img[p0..],
                rs: plane_in,
                cs: 1,
            }
        } else {
            if col.len() < k * cols {
                col.resize(k * cols, T::ZERO);
            }
            im2col_rows(x_img, win, r0..r1, &mut col[..k * cols]);
            Mat::row_major(&col[..k * cols], cols)
        };
        let init = match bias {
            Some(b) => Init::Rows(&b[gi * mg..(gi + 1) * mg]),
            None => Init::Zero,
        };
        // Output layout [N, M, P]: item (n, gi) owns rows item * mg .. (item + 1) * mg.
        let offset = item * mg * plane_out + p0;
        let w_g = Mat::row_major(&w[gi * mg * k..(gi + 1) * mg * k], k);
        // SAFETY: each task writes the block of its own (item, tile): rows of its item,
        // columns of its tile; blocks of different tasks are disjoint.
        unsafe {
            gemm_block(
                &shared,
                offset,
                mg,
                cols,
                k,
                plane_out,
                init,
                w_g,
                rhs,
                T::ONE,
                gemm_threads,
            )
        }
    };
    if threads > 1 && tasks >= threads {
        (0..tasks)
            .into_par_iter()
            .try_for_each_init(Vec::new, |col, t| task(t, col, 1))?;
    } else {
        let mut col = Vec::new();
        for t in 0..tasks {
            task(t, &mut col, threads)?;
        }
    }
    Ok(out)
}

/// Checks that optional bias / weight types match the input's.
fn same_types(what: &str, tensors: &[Option<&Tensor>]) -> Result<DType, RuntimeError> {
    let mut dtype = None;
    for t in tensors.iter().flatten() {
        match dtype {
            None => dtype = Some(t.dtype()),
            Some(d) if d != t.dtype() => {
                return Err(kernel_err(format!(
                    "{what} inputs have different types {d} and {}",
                    t.dtype()
                )))
            }
            Some(_) => {}
        }
    }
    dtype.ok_or_else(|| kernel_err(format!("{what} has no inputs")))
}

/// Casts f16 / bf16 operands to f32 so that one float path serves them.
fn widen(t: Option<&Tensor>) -> Result<Option<Tensor>, RuntimeError> {
    Ok(t.map(|t| t.cast(DType::F32)).transpose()?)
}

/// Conv (float).
struct ConvKernel {
    attrs: WindowAttrs,
    group: usize,
}

fn build_conv(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(ConvKernel {
        attrs: WindowAttrs::parse(node)?,
        group: parse_group(node)?,
    }))
}

impl ConvKernel {
    fn run_typed<T: ConvElem>(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<Tensor, RuntimeError> {
        let d = conv_dims(&self.attrs, self.group, x.shape(), w.shape())?;
        let bias = b.map(|b| b.as_slice::<T>()).transpose()?;
        let out = conv_float(x.as_slice::<T>()?, w.as_slice::<T>()?, bias, &d)?;
        Ok(Tensor::from_vec(d.output_shape(), out)?)
    }
}

impl Kernel for ConvKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (x, w, b) = (
            input(inputs, 0)?,
            input(inputs, 1)?,
            optional_input(inputs, 2),
        );
        let y = match same_types("Conv", &[Some(x), Some(w), b])? {
            DType::F32 => self.run_typed::<f32>(x, w, b)?,
            DType::F64 => self.run_typed::<f64>(x, w, b)?,
            d @ (DType::F16 | DType::BF16) => {
                let (x, w) = (x.cast(DType::F32)?, w.cast(DType::F32)?);
                let b = widen(b)?;
                self.run_typed::<f32>(&x, &w, b.as_ref())?.cast(d)?
            }
            d => return Err(unsupported(format!("Conv of {d}"))),
        };
        Ok(vec![y])
    }
}

/// ConvInteger: `conv(X - x_zero_point, W - w_zero_point)` in i32.
struct ConvIntegerKernel {
    attrs: WindowAttrs,
    group: usize,
}

fn build_conv_integer(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(ConvIntegerKernel {
        attrs: WindowAttrs::parse(node)?,
        group: parse_group(node)?,
    }))
}

fn quantized(t: &Tensor, what: &str) -> Result<Vec<i64>, RuntimeError> {
    match t.dtype() {
        DType::U8 | DType::I8 => Ok(t.to_i64_vec()?),
        d => Err(unsupported(format!("ConvInteger {what} of type {d}"))),
    }
}

impl Kernel for ConvIntegerKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let d = conv_dims(&self.attrs, self.group, x.shape(), w.shape())?;
        let mut xv = quantized(x, "input")?;
        let mut wv = quantized(w, "weight")?;
        if let Some(zp) = optional_input(inputs, 2) {
            match quantized(zp, "x_zero_point")?.as_slice() {
                [z] => xv.iter_mut().for_each(|v| *v -= z),
                _ => return Err(unsupported("ConvInteger x_zero_point that is not a scalar")),
            }
        }
        let k = d.col_rows();
        if let Some(zp) = optional_input(inputs, 3) {
            let zp = quantized(zp, "w_zero_point")?;
            if zp.len() == 1 {
                wv.iter_mut().for_each(|v| *v -= zp[0]);
            } else if zp.len() == d.out_channels {
                // One zero point per output channel.
                for (chunk, z) in wv.chunks_mut(k.max(1)).zip(&zp) {
                    chunk.iter_mut().for_each(|v| *v -= z);
                }
            } else {
                return Err(kernel_err(format!(
                    "w_zero_point has {} values, expected 1 or {}",
                    zp.len(),
                    d.out_channels
                )));
            }
        }
        let win = &d.window;
        let (cg, mg, g) = (d.in_per_group(), d.out_per_group(), d.group);
        let (plane_in, plane_out) = (win.input_size(), win.output_size());
        if xv.len() != d.batch * d.in_channels * plane_in || wv.len() != d.out_channels * k {
            return Err(kernel_err(
                "ConvInteger input or weight is smaller than its shape",
            ));
        }
        let mut out = vec![0i64; d.batch * d.out_channels * plane_out];
        let mut col = vec![0i64; k * plane_out];
        for (item, o) in out.chunks_mut((mg * plane_out).max(1)).enumerate() {
            let (n, gi) = (item / g, item % g);
            let x_img = &xv[(n * d.in_channels + gi * cg) * plane_in..][..cg * plane_in];
            im2col(x_img, win, &mut col);
            super::matmul::mm_i64(
                mg,
                k,
                plane_out,
                &wv[gi * mg * k..(gi + 1) * mg * k],
                &col,
                o,
                1,
            )?;
        }
        Ok(vec![
            Tensor::from_vec(d.output_shape(), out)?.cast(DType::I32)?
        ])
    }
}

/// ConvTranspose.
struct ConvTransposeKernel {
    attrs: WindowAttrs,
    group: usize,
    output_padding: Option<Vec<usize>>,
    output_shape: Option<Vec<usize>>,
}

fn build_conv_transpose(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(ConvTransposeKernel {
        attrs: WindowAttrs::parse(node)?,
        group: parse_group(node)?,
        output_padding: usize_list(node, "output_padding", 0)?,
        output_shape: usize_list(node, "output_shape", 0)?,
    }))
}

/// The geometry of a transposed convolution: `window` describes the *forward* convolution
/// from the output back to the input (so `window.input` is ConvTranspose's output size).
#[derive(Debug)]
struct TransposeDims {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    group: usize,
    window: Window,
}

impl ConvTransposeKernel {
    fn dims(&self, x: &[usize], w: &[usize]) -> Result<TransposeDims, RuntimeError> {
        if x.len() < 3 || w.len() != x.len() {
            return Err(kernel_err(format!(
                "ConvTranspose input {x:?} and weight {w:?} must have the same rank, at least 3"
            )));
        }
        let g = self.group;
        let (batch, in_channels) = (x[0], x[1]);
        if w[0] != in_channels || in_channels % g != 0 {
            return Err(kernel_err(format!(
                "ConvTranspose channels do not match: input {x:?}, weight {w:?}, group {g}"
            )));
        }
        let out_channels = w[1] * g;
        let rank = x.len() - 2;
        if rank > SPATIAL {
            return Err(unsupported(format!("{rank} spatial dimensions")));
        }
        let kernel = &w[2..];
        if let Some(k) = &self.attrs.kernel {
            if k.as_slice() != kernel {
                return Err(kernel_err("kernel_shape differs from the weight's shape"));
            }
        }
        let list = |v: &Option<Vec<usize>>, default: usize, len: usize, name: &str| {
            let v = v.clone().unwrap_or_else(|| vec![default; len]);
            if v.len() == len {
                Ok(v)
            } else {
                Err(kernel_err(format!("'{name}' must have {len} values")))
            }
        };
        let strides = list(&self.attrs.strides, 1, rank, "strides")?;
        let dilations = list(&self.attrs.dilations, 1, rank, "dilations")?;
        let out_pad = list(&self.output_padding, 0, rank, "output_padding")?;
        let pads = match self.attrs.auto_pad {
            AutoPad::NotSet => list(&self.attrs.pads, 0, 2 * rank, "pads")?,
            _ => vec![0; 2 * rank],
        };
        // output_shape may or may not include the batch and channel dimensions.
        let wanted = match &self.output_shape {
            Some(s) if s.len() >= rank => Some(s[s.len() - rank..].to_vec()),
            Some(s) => return Err(kernel_err(format!("output_shape {s:?} is too short"))),
            None => None,
        };
        let same = matches!(self.attrs.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
        let mut out = vec![0; rank];
        let mut pad_begin = vec![0; rank];
        let mut pad_end = vec![0; rank];
        for i in 0..rank {
            let span = (kernel[i] - 1) * dilations[i] + 1;
            let full = strides[i] * (x[2 + i].max(1) - 1) + out_pad[i] + span;
            let target = match &wanted {
                Some(s) => Some(s[i]),
                None if same => Some(x[2 + i] * strides[i]),
                None => None,
            };
            match target {
                Some(t) => {
                    // A negative total (output_shape beyond the full output) leaves zeros
                    // (plus bias) at the end; numpy's floor division decides the split.
                    let total = full as i64 - t as i64;
                    let small = total.div_euclid(2);
                    let begin = if self.attrs.auto_pad == AutoPad::SameUpper {
                        small
                    } else {
                        total - small
                    };
                    pad_begin[i] = usize::try_from(begin).map_err(|_| {
                        unsupported("ConvTranspose output_shape that implies negative leading pads")
                    })?;
                    // pad_end is implied by the output size and not used by col2im.
                    pad_end[i] = usize::try_from(total - begin).unwrap_or(0);
                    out[i] = t;
                }
                None => {
                    let (pb, pe) = (pads[i], pads[rank + i]);
                    out[i] = full.checked_sub(pb + pe).ok_or_else(|| {
                        kernel_err("ConvTranspose pads are larger than the output")
                    })?;
                    (pad_begin[i], pad_end[i]) = (pb, pe);
                }
            }
        }
        let lift = super::geometry::lift;
        Ok(TransposeDims {
            batch,
            in_channels,
            out_channels,
            group: g,
            window: Window {
                rank,
                input: lift(&out, 1)?,
                kernel: lift(kernel, 1)?,
                stride: lift(&strides, 1)?,
                dilation: lift(&dilations, 1)?,
                pad_begin: lift(&pad_begin, 0)?,
                pad_end: lift(&pad_end, 0)?,
                output: lift(&x[2..], 1)?,
            },
        })
    }

    fn run_typed<T: ConvElem>(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
    ) -> Result<Tensor, RuntimeError> {
        let d = self.dims(x.shape(), w.shape())?;
        let (xv, wv) = (x.as_slice::<T>()?, w.as_slice::<T>()?);
        let bias = b.map(|b| b.as_slice::<T>()).transpose()?;
        let win = &d.window;
        let (cg, mg, g) = (d.in_channels / d.group, d.out_channels / d.group, d.group);
        let taps = win.kernel_size();
        let rows = mg * taps;
        // Note the naming: ConvTranspose's input positions are the window's outputs.
        let (p_in, p_out) = (win.output_size(), win.input_size());
        if bias.is_some_and(|b| b.len() != d.out_channels) {
            return Err(kernel_err(format!(
                "ConvTranspose bias must have {} values",
                d.out_channels
            )));
        }
        let mut out = vec![T::ZERO; d.batch * d.out_channels * p_out];
        let mut shape = vec![d.batch, d.out_channels];
        shape.extend(win.input[SPATIAL - win.rank..].iter().copied());
        if out.is_empty() {
            return Ok(Tensor::from_vec(shape, out)?);
        }
        let threads = rayon::current_num_threads();
        let mut col = vec![T::ZERO; rows * p_in];
        for (item, o) in out.chunks_mut(mg * p_out).enumerate() {
            let (n, gi) = (item / g, item % g);
            let x_img = &xv[(n * d.in_channels + gi * cg) * p_in..][..cg * p_in];
            // col [mg * taps, P_in] = W_g^T x X_g, W_g being [cg, mg * taps].
            let w_g = &wv[gi * cg * rows..(gi + 1) * cg * rows];
            gemm(
                rows,
                p_in,
                cg,
                &mut col,
                p_in,
                false,
                Mat {
                    data: w_g,
                    rs: 1,
                    cs: rows,
                },
                Mat::row_major(x_img, p_in),
                T::ONE,
                threads,
            )?;
            let bias_g = bias.map(|b| &b[gi * mg..(gi + 1) * mg]);
            let task = |(m, plane): (usize, &mut [T])| {
                plane.fill(bias_g.map_or(T::ZERO, |b| b[m]));
                col2im_plane(&col[m * taps * p_in..(m + 1) * taps * p_in], win, plane);
            };
            if threads > 1 && mg > 1 {
                o.par_chunks_mut(p_out).enumerate().for_each(task);
            } else {
                o.chunks_mut(p_out).enumerate().for_each(task);
            }
        }
        Ok(Tensor::from_vec(shape, out)?)
    }
}

/// Adds the columns of one output channel (`[taps, positions]`) back into its plane: the
/// adjoint of [`im2col`].
fn col2im_plane<T: GemmElem>(col: &[T], win: &Window, plane: &mut [T]) {
    let [id, ih, iw] = win.input;
    let [od, oh, ow] = win.output;
    let [sd, sh, sw] = win.stride;
    let p = od * oh * ow;
    if p == 0 {
        return;
    }
    for (tap, row) in col.chunks(p).enumerate() {
        let kk = [
            tap / (win.kernel[1] * win.kernel[2]),
            (tap / win.kernel[2]) % win.kernel[1],
            tap % win.kernel[2],
        ];
        let (offd, offh, offw) = (
            tap_offset(win, 0, kk[0]),
            tap_offset(win, 1, kk[1]),
            tap_offset(win, 2, kk[2]),
        );
        let rd = valid_range(od, id, sd, offd);
        let rh = valid_range(oh, ih, sh, offh);
        let (lo, hi) = valid_range(ow, iw, sw, offw);
        for z in rd.0..rd.1 {
            let iz = ((z * sd) as isize + offd) as usize;
            for y in rh.0..rh.1 {
                let iy = ((y * sh) as isize + offh) as usize;
                let src = &row[(z * oh + y) * ow..][..ow];
                let dst = &mut plane[(iz * ih + iy) * iw..][..iw];
                for (xo, &v) in src.iter().enumerate().take(hi).skip(lo) {
                    let ix = ((xo * sw) as isize + offw) as usize;
                    dst[ix] = T::mul_add(T::ONE, v, dst[ix]);
                }
            }
        }
    }
}

impl Kernel for ConvTransposeKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (x, w, b) = (
            input(inputs, 0)?,
            input(inputs, 1)?,
            optional_input(inputs, 2),
        );
        let y = match same_types("ConvTranspose", &[Some(x), Some(w), b])? {
            DType::F32 => self.run_typed::<f32>(x, w, b)?,
            DType::F64 => self.run_typed::<f64>(x, w, b)?,
            d @ (DType::F16 | DType::BF16) => {
                let (x, w) = (x.cast(DType::F32)?, w.cast(DType::F32)?);
                let b = widen(b)?;
                self.run_typed::<f32>(&x, &w, b.as_ref())?.cast(d)?
            }
            d => return Err(unsupported(format!("ConvTranspose of {d}"))),
        };
        Ok(vec![y])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic pseudo-random sequence in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    struct Case {
        x: [usize; 4],
        m: usize,
        k: [usize; 2],
        group: usize,
        stride: [usize; 2],
        dil: [usize; 2],
        pads: [usize; 4],
    }

    /// Direct 2-D convolution straight from the definition.
    fn naive(c: &Case, x: &[f32], w: &[f32], b: &[f32]) -> (Vec<usize>, Vec<f32>) {
        let [n, ci, h, wd] = c.x;
        let (cg, mg) = (ci / c.group, c.m / c.group);
        let oh = (h + c.pads[0] + c.pads[2] - (c.k[0] - 1) * c.dil[0] - 1) / c.stride[0] + 1;
        let ow = (wd + c.pads[1] + c.pads[3] - (c.k[1] - 1) * c.dil[1] - 1) / c.stride[1] + 1;
        let mut out = vec![0f32; n * c.m * oh * ow];
        for b_i in 0..n {
            for m in 0..c.m {
                let g = m / mg;
                for y in 0..oh {
                    for xo in 0..ow {
                        let mut acc = b[m] as f64;
                        for cc in 0..cg {
                            for ky in 0..c.k[0] {
                                for kx in 0..c.k[1] {
                                    let iy = (y * c.stride[0] + ky * c.dil[0]) as isize
                                        - c.pads[0] as isize;
                                    let ix = (xo * c.stride[1] + kx * c.dil[1]) as isize
                                        - c.pads[1] as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xi = ((b_i * ci + g * cg + cc) * h + iy as usize) * wd
                                        + ix as usize;
                                    let wi = ((m * cg + cc) * c.k[0] + ky) * c.k[1] + kx;
                                    acc += x[xi] as f64 * w[wi] as f64;
                                }
                            }
                        }
                        out[((b_i * c.m + m) * oh + y) * ow + xo] = acc as f32;
                    }
                }
            }
        }
        (vec![n, c.m, oh, ow], out)
    }

    #[test]
    fn conv_matches_direct_definition() {
        let cases = [
            // im2col + gemm, padding and stride
            Case {
                x: [2, 3, 9, 8],
                m: 4,
                k: [3, 3],
                group: 1,
                stride: [2, 2],
                dil: [1, 1],
                pads: [1, 1, 1, 1],
            },
            // 1x1 pointwise (no im2col), batch 2
            Case {
                x: [2, 5, 4, 6],
                m: 7,
                k: [1, 1],
                group: 1,
                stride: [1, 1],
                dil: [1, 1],
                pads: [0, 0, 0, 0],
            },
            // groups with dilation and asymmetric pads
            Case {
                x: [1, 6, 10, 7],
                m: 4,
                k: [3, 2],
                group: 2,
                stride: [1, 2],
                dil: [2, 1],
                pads: [2, 0, 1, 3],
            },
            // depthwise 3x3 stride (2, 1) and 5x5 stride 1
            Case {
                x: [2, 8, 11, 9],
                m: 8,
                k: [3, 3],
                group: 8,
                stride: [2, 1],
                dil: [1, 1],
                pads: [1, 1, 1, 1],
            },
            Case {
                x: [1, 4, 7, 13],
                m: 4,
                k: [5, 5],
                group: 4,
                stride: [1, 1],
                dil: [1, 1],
                pads: [2, 2, 2, 2],
            },
            // depthwise with channel multiplier, stride 2, dilation
            Case {
                x: [1, 3, 9, 9],
                m: 6,
                k: [3, 3],
                group: 3,
                stride: [2, 2],
                dil: [2, 1],
                pads: [1, 2, 0, 1],
            },
            // depthwise with stride 3 (generic phase split) and horizontal dilation
            Case {
                x: [1, 2, 10, 11],
                m: 2,
                k: [3, 3],
                group: 2,
                stride: [3, 3],
                dil: [1, 2],
                pads: [1, 1, 2, 2],
            },
            // window larger than the input along one axis thanks to padding
            Case {
                x: [1, 2, 1, 5],
                m: 3,
                k: [3, 1],
                group: 1,
                stride: [1, 1],
                dil: [1, 1],
                pads: [1, 0, 1, 0],
            },
        ];
        for (i, c) in cases.iter().enumerate() {
            let cg = c.x[1] / c.group;
            let x = values(c.x.iter().product(), i as u64);
            let w = values(c.m * cg * c.k[0] * c.k[1], 100 + i as u64);
            let b = values(c.m, 200 + i as u64);
            let (shape, want) = naive(c, &x, &w, &b);
            let kernel = ConvKernel {
                attrs: WindowAttrs {
                    auto_pad: AutoPad::NotSet,
                    kernel: None,
                    strides: Some(c.stride.to_vec()),
                    dilations: Some(c.dil.to_vec()),
                    pads: Some(c.pads.to_vec()),
                    ceil_mode: false,
                },
                group: c.group,
            };
            let xt = Tensor::from_vec(c.x.to_vec(), x).unwrap();
            let wt = Tensor::from_vec(vec![c.m, cg, c.k[0], c.k[1]], w).unwrap();
            let bt = Tensor::from_vec(vec![c.m], b).unwrap();
            let y = kernel
                .run(&[Some(&xt), Some(&wt), Some(&bt)])
                .unwrap()
                .remove(0);
            assert_eq!(y.shape(), shape.as_slice(), "case {i}");
            for (j, (g, w)) in y.as_slice::<f32>().unwrap().iter().zip(&want).enumerate() {
                assert!((g - w).abs() < 1e-4, "case {i} element {j}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn conv_transpose_is_the_adjoint_scatter() {
        // x [1, 2, 3, 2], w [2, 3 (per group: 3 outputs), 2, 3], stride (2, 1), pads (1, 0, 0, 1)
        let (c, m, h, wd, kh, kw) = (2usize, 3usize, 3usize, 2usize, 2usize, 3usize);
        let (sh, sw, pt, pl, pb, pr) = (2usize, 1usize, 1usize, 0usize, 0usize, 1usize);
        let x = values(c * h * wd, 7);
        let w = values(c * m * kh * kw, 8);
        let oh = sh * (h - 1) + kh - pt - pb;
        let ow = sw * (wd - 1) + kw - pl - pr;
        let mut want = vec![0f32; m * oh * ow];
        for ci in 0..c {
            for y in 0..h {
                for xx in 0..wd {
                    for mo in 0..m {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let oy = (y * sh + ky) as isize - pt as isize;
                                let ox = (xx * sw + kx) as isize - pl as isize;
                                if oy < 0 || ox < 0 || oy >= oh as isize || ox >= ow as isize {
                                    continue;
                                }
                                want[(mo * oh + oy as usize) * ow + ox as usize] += x
                                    [(ci * h + y) * wd + xx]
                                    * w[((ci * m + mo) * kh + ky) * kw + kx];
                            }
                        }
                    }
                }
            }
        }
        let kernel = ConvTransposeKernel {
            attrs: WindowAttrs {
                auto_pad: AutoPad::NotSet,
                kernel: None,
                strides: Some(vec![sh, sw]),
                dilations: None,
                pads: Some(vec![pt, pl, pb, pr]),
                ceil_mode: false,
            },
            group: 1,
            output_padding: None,
            output_shape: None,
        };
        let xt = Tensor::from_vec(vec![1, c, h, wd], x).unwrap();
        let wt = Tensor::from_vec(vec![c, m, kh, kw], w).unwrap();
        let y = kernel.run(&[Some(&xt), Some(&wt)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, m, oh, ow]);
        for (g, w) in y.as_slice::<f32>().unwrap().iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
}
