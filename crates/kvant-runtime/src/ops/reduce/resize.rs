//! `Resize` and the deprecated `Upsample`.
//!
//! Resizing is separable: for every resized axis a table lists, for each output position, the
//! input positions it reads and their weights (or that it is extrapolated, for
//! `tf_crop_and_resize`). The tables follow the ONNX reference: the neighbourhood of the
//! source coordinate is taken on an edge-padded axis (so indices clamp to the border), and
//! `exclude_outside` drops and renormalizes taps that fall outside. The axes are then applied
//! one at a time; when only the last two axes change (NCHW images) they are applied in one
//! fused pass, parallel over the leading planes.

use super::{int_values, normalize_axes, Real, PAR_MIN_WORK};
use crate::ops::{attr_err, input, optional_input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{dispatch_numeric, DType, Scalar, Tensor};
use rayon::prelude::*;

/// Registers `Resize` and `Upsample`.
pub fn register(r: &mut Registry) {
    r.add("Resize", build_resize);
    r.add("Upsample", build_upsample);
}

/// Largest output (in elements) a resize may produce: 2^36 f32 values are 256 GiB.
const MAX_OUTPUT_ELEMENTS: usize = 1 << 36;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Resize-10 / Upsample: floor when upsampling, ceil when downsampling.
    Legacy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Where a node keeps its resize arguments.
#[derive(Clone, Debug)]
enum Args {
    /// Upsample-7: the scales attribute.
    ScalesAttr(Vec<f32>),
    /// Resize-10 / Upsample-9: `(X, scales)`.
    ScalesInput,
    /// Resize-11 and later: `(X, roi, scales, sizes)`.
    Full,
}

struct ResizeKernel {
    mode: Mode,
    coord: Coord,
    nearest: Nearest,
    cubic_a: f64,
    exclude_outside: bool,
    extrapolation: f64,
    antialias: bool,
    axes: Option<Vec<i64>>,
    policy: Policy,
    args: Args,
}

fn parse_mode(s: &str) -> Result<Mode, RuntimeError> {
    match s {
        "nearest" => Ok(Mode::Nearest),
        // "bilinear" is Upsample-1's name for linear.
        "linear" | "bilinear" => Ok(Mode::Linear),
        "cubic" => Ok(Mode::Cubic),
        other => Err(unsupported(format!("resize mode '{other}'"))),
    }
}

fn build_resize(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let s = |name: &str, default: &str| -> Result<String, RuntimeError> {
        Ok(node
            .attr_string(name)
            .map_err(attr_err)?
            .unwrap_or_else(|| default.to_string()))
    };
    let mode = parse_mode(&s("mode", "nearest")?)?;
    if ctx.opset < 11 {
        return Ok(Box::new(ResizeKernel {
            mode,
            coord: Coord::Asymmetric,
            nearest: Nearest::Legacy,
            cubic_a: -0.75,
            exclude_outside: false,
            extrapolation: 0.0,
            antialias: false,
            axes: None,
            policy: Policy::Stretch,
            args: Args::ScalesInput,
        }));
    }
    let coord = match s("coordinate_transformation_mode", "half_pixel")?.as_str() {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_crop_and_resize" => Coord::TfCropAndResize,
        other => {
            return Err(unsupported(format!(
                "coordinate_transformation_mode '{other}'"
            )))
        }
    };
    let nearest = match s("nearest_mode", "round_prefer_floor")?.as_str() {
        "round_prefer_floor" => Nearest::RoundPreferFloor,
        "round_prefer_ceil" => Nearest::RoundPreferCeil,
        "floor" => Nearest::Floor,
        "ceil" => Nearest::Ceil,
        other => return Err(unsupported(format!("nearest_mode '{other}'"))),
    };
    let policy = match s("keep_aspect_ratio_policy", "stretch")?.as_str() {
        "stretch" => Policy::Stretch,
        "not_larger" => Policy::NotLarger,
        "not_smaller" => Policy::NotSmaller,
        other => return Err(unsupported(format!("keep_aspect_ratio_policy '{other}'"))),
    };
    let antialias = node.attr_int("antialias").map_err(attr_err)?.unwrap_or(0) != 0;
    if antialias && mode == Mode::Nearest {
        return Err(unsupported("antialias with nearest mode"));
    }
    Ok(Box::new(ResizeKernel {
        mode,
        coord,
        nearest,
        cubic_a: node
            .attr_float("cubic_coeff_a")
            .map_err(attr_err)?
            .unwrap_or(-0.75) as f64,
        exclude_outside: node
            .attr_int("exclude_outside")
            .map_err(attr_err)?
            .unwrap_or(0)
            != 0,
        extrapolation: node
            .attr_float("extrapolation_value")
            .map_err(attr_err)?
            .unwrap_or(0.0) as f64,
        antialias,
        axes: node
            .attr_ints("axes")
            .map_err(attr_err)?
            .map(<[i64]>::to_vec),
        policy,
        args: Args::Full,
    }))
}

fn build_upsample(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let mode = parse_mode(
        &node
            .attr_string("mode")
            .map_err(attr_err)?
            .unwrap_or_else(|| "nearest".to_string()),
    )?;
    if mode == Mode::Cubic {
        return Err(unsupported("Upsample with cubic mode"));
    }
    let args = if ctx.opset >= 9 {
        Args::ScalesInput
    } else {
        match node.attr_floats("scales").map_err(attr_err)? {
            Some(s) => Args::ScalesAttr(s.to_vec()),
            None if ctx.opset < 7 => {
                // Upsample-1 had height_scale / width_scale for NCHW input.
                let h = node.attr_float("height_scale").map_err(attr_err)?;
                let w = node.attr_float("width_scale").map_err(attr_err)?;
                match (h, w) {
                    (Some(h), Some(w)) => Args::ScalesAttr(vec![1.0, 1.0, h, w]),
                    _ => return Err(kernel_err("Upsample needs its scales")),
                }
            }
            None => return Err(kernel_err("Upsample needs the 'scales' attribute")),
        }
    };
    Ok(Box::new(ResizeKernel {
        mode,
        coord: Coord::Asymmetric,
        nearest: Nearest::Legacy,
        cubic_a: -0.75,
        exclude_outside: false,
        extrapolation: 0.0,
        antialias: false,
        axes: None,
        policy: Policy::Stretch,
        args,
    }))
}

/// Float values of an optional 1-D input; an empty tensor counts as absent.
fn float_values(t: Option<&Tensor>) -> Result<Option<Vec<f64>>, RuntimeError> {
    match t {
        Some(t) if !t.is_empty() => {
            if !t.dtype().is_float() {
                return Err(kernel_err(format!(
                    "expected a float tensor, got {}",
                    t.dtype()
                )));
            }
            Ok(Some(t.cast(DType::F64)?.into_vec::<f64>()?))
        }
        _ => Ok(None),
    }
}

/// The resize of one axis: for each output position, its taps or "extrapolated".
struct AxisTable {
    /// `starts[y]..starts[y + 1]` are output `y`'s entries in `idx` / `w`.
    starts: Vec<usize>,
    idx: Vec<usize>,
    w: Vec<f64>,
    /// Output positions that take the extrapolation value.
    extrapolated: Vec<bool>,
}

/// The geometry of one resized axis.
struct AxisPlan {
    input: usize,
    output: usize,
    scale: f64,
    roi: (f64, f64),
}

impl ResizeKernel {
    /// Output size, scale and roi of every axis.
    fn plan(
        &self,
        inputs: &[Option<&Tensor>],
        shape: &[usize],
    ) -> Result<Vec<AxisPlan>, RuntimeError> {
        let rank = shape.len();
        let (roi, scales, sizes) = match &self.args {
            Args::ScalesAttr(s) => (None, Some(s.iter().map(|&v| v as f64).collect()), None),
            Args::ScalesInput => (None, float_values(optional_input(inputs, 1))?, None),
            Args::Full => {
                let sizes = match optional_input(inputs, 3) {
                    Some(t) if !t.is_empty() => Some(int_values(t, "sizes")?),
                    _ => None,
                };
                (
                    float_values(optional_input(inputs, 1))?,
                    float_values(optional_input(inputs, 2))?,
                    sizes,
                )
            }
        };
        let axes: Vec<usize> = match &self.axes {
            Some(a) => {
                let sorted = normalize_axes(a, rank)?;
                // Keep the given order: scales / sizes / roi follow it.
                let order: Vec<usize> = a
                    .iter()
                    .map(|&v| crate::ops::normalize_axis(v, rank))
                    .collect::<Result<_, _>>()?;
                debug_assert_eq!(sorted.len(), order.len());
                order
            }
            None => (0..rank).collect(),
        };
        let naxes = axes.len();
        let mut plans: Vec<AxisPlan> = shape
            .iter()
            .map(|&d| AxisPlan {
                input: d,
                output: d,
                scale: 1.0,
                roi: (0.0, 1.0),
            })
            .collect();
        if self.coord == Coord::TfCropAndResize {
            let roi = roi.ok_or_else(|| kernel_err("tf_crop_and_resize needs roi"))?;
            if roi.len() != 2 * naxes {
                return Err(kernel_err(format!(
                    "roi has {} values, expected {}",
                    roi.len(),
                    2 * naxes
                )));
            }
            for (i, &a) in axes.iter().enumerate() {
                plans[a].roi = (roi[i], roi[naxes + i]);
            }
        }
        match (scales, sizes) {
            (Some(scales), None) => {
                if scales.len() != naxes {
                    return Err(kernel_err(format!(
                        "scales has {} values for {naxes} axes",
                        scales.len()
                    )));
                }
                for (&a, &s) in axes.iter().zip(&scales) {
                    if s <= 0.0 || !s.is_finite() {
                        return Err(kernel_err(format!("scale {s} must be positive")));
                    }
                    let p = &mut plans[a];
                    p.scale = s;
                    p.output = (s * p.input as f64).floor() as usize;
                }
            }
            (None, Some(sizes)) => {
                if sizes.len() != naxes {
                    return Err(kernel_err(format!(
                        "sizes has {} values for {naxes} axes",
                        sizes.len()
                    )));
                }
                for (&a, &s) in axes.iter().zip(&sizes) {
                    if s < 0 {
                        return Err(kernel_err(format!("size {s} is negative")));
                    }
                    let p = &mut plans[a];
                    if p.input == 0 && s > 0 {
                        return Err(kernel_err("cannot resize an empty axis to a non-empty one"));
                    }
                    p.output = s as usize;
                    p.scale = if p.input == 0 {
                        1.0
                    } else {
                        s as f64 / p.input as f64
                    };
                }
                if self.policy != Policy::Stretch && naxes > 0 {
                    let pick = axes.iter().map(|&a| plans[a].scale);
                    let s = if self.policy == Policy::NotLarger {
                        pick.fold(f64::INFINITY, f64::min)
                    } else {
                        pick.fold(f64::NEG_INFINITY, f64::max)
                    };
                    for &a in &axes {
                        let p = &mut plans[a];
                        p.scale = s;
                        // Rounds half up, as the definition does.
                        p.output = (s * p.input as f64 + 0.5).floor() as usize;
                    }
                }
            }
            (Some(_), Some(_)) => {
                return Err(kernel_err("only one of scales and sizes may be given"))
            }
            (None, None) => return Err(kernel_err("one of scales and sizes must be given")),
        }
        // Refuse absurd sizes (a huge scale) with an error instead of failing to allocate.
        let total = plans
            .iter()
            .try_fold(1usize, |acc, p| acc.checked_mul(p.output))
            .filter(|&n| n <= MAX_OUTPUT_ELEMENTS);
        // Antialiased downsampling reads about 4 / scale inputs per output.
        let taps_ok = !self.antialias
            || plans.iter().all(|p| {
                let taps = (4.0 / p.scale.min(1.0)).ceil() + 4.0;
                taps * (p.output as f64) <= MAX_OUTPUT_ELEMENTS as f64
            });
        if total.is_none() || !taps_ok {
            return Err(kernel_err(format!(
                "output shape {:?} is too large",
                plans.iter().map(|p| p.output).collect::<Vec<_>>()
            )));
        }
        Ok(plans)
    }

    /// Whether an axis is left as it is.
    fn is_identity(&self, p: &AxisPlan) -> bool {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
        close(p.scale, 1.0)
            && p.output == p.input
            && (self.coord != Coord::TfCropAndResize
                || (p.roi.0.abs() <= 1e-9 && close(p.roi.1, 1.0)))
    }

    /// Interpolation coefficients for the fractional position `ratio` (1 at integers).
    fn coeffs(&self, ratio: f64, scale: f64) -> Vec<f64> {
        match self.mode {
            Mode::Nearest => {
                if ratio == 1.0 {
                    return vec![0.0, 1.0];
                }
                let right = match self.nearest {
                    Nearest::RoundPreferFloor => ratio > 0.5,
                    Nearest::RoundPreferCeil => ratio >= 0.5,
                    Nearest::Floor => false,
                    Nearest::Ceil => true,
                    Nearest::Legacy => scale < 1.0,
                };
                if right {
                    vec![0.0, 1.0]
                } else {
                    vec![1.0, 0.0]
                }
            }
            Mode::Linear if self.antialias => {
                let s = scale.min(1.0);
                let start = (-1.0 / s).floor() as i64 + 1;
                let footprint = 2 - 2 * start;
                let c: Vec<f64> = (0..footprint)
                    .map(|j| (1.0 - (((start + j) as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                    .collect();
                normalized(c)
            }
            Mode::Linear => vec![1.0 - ratio, ratio],
            Mode::Cubic if self.antialias => {
                let a = self.cubic_a;
                let s = scale.min(1.0);
                let start = (-2.0 / s).floor() as i64 + 1;
                let end = 2 - start;
                let c: Vec<f64> = (start..end)
                    .map(|i| cubic_kernel((s * (i as f64 - ratio)).abs(), a))
                    .collect();
                normalized(c)
            }
            Mode::Cubic => {
                let a = self.cubic_a;
                vec![
                    cubic_kernel(ratio + 1.0, a),
                    cubic_kernel(ratio, a),
                    cubic_kernel(1.0 - ratio, a),
                    cubic_kernel(2.0 - ratio, a),
                ]
            }
        }
    }

    /// The tap table of one axis.
    fn table(&self, p: &AxisPlan) -> AxisTable {
        let (input, output, scale) = (p.input, p.output, p.scale);
        let in_f = input as f64;
        let out_f = scale * in_f;
        let mut t = AxisTable {
            starts: Vec::with_capacity(output + 1),
            idx: Vec::new(),
            w: Vec::new(),
            extrapolated: vec![false; output],
        };
        t.starts.push(0);
        for y in 0..output {
            let yf = y as f64;
            let x = match self.coord {
                Coord::AlignCorners => {
                    if out_f == 1.0 {
                        0.0
                    } else {
                        yf * (in_f - 1.0) / (out_f - 1.0)
                    }
                }
                Coord::Asymmetric => yf / scale,
                Coord::TfCropAndResize => {
                    let (r0, r1) = p.roi;
                    let x = if out_f == 1.0 {
                        (r1 - r0) * (in_f - 1.0) / 2.0
                    } else {
                        yf * (r1 - r0) * (in_f - 1.0) / (out_f - 1.0)
                    };
                    x + r0 * (in_f - 1.0)
                }
                Coord::PytorchHalfPixel => {
                    if out_f == 1.0 {
                        -0.5
                    } else {
                        (yf + 0.5) / scale - 0.5
                    }
                }
                Coord::HalfPixel => (yf + 0.5) / scale - 0.5,
                Coord::HalfPixelSymmetric => {
                    let adjustment = output as f64 / out_f;
                    let offset = in_f / 2.0 * (1.0 - adjustment);
                    offset + (yf + 0.5) / scale - 0.5
                }
            };
            if self.coord == Coord::TfCropAndResize && (x < 0.0 || x > in_f - 1.0) {
                t.extrapolated[y] = true;
                t.starts.push(t.idx.len());
                continue;
            }
            let x_int = x.floor();
            let ratio = if x == x_int { 1.0 } else { x - x_int };
            let mut c = self.coeffs(ratio, scale);
            let n = c.len() as i64;
            // The n positions nearest to x on the edge-padded axis, ties to the left.
            let pad = (n + 1) / 2;
            let xp = x + pad as f64;
            let pp = xp.floor();
            let frac = xp - pp;
            let offset = if n % 2 == 0 {
                if frac == 0.0 {
                    -(n / 2)
                } else {
                    -(n / 2) + 1
                }
            } else {
                let base = -((n - 1) / 2);
                if frac <= 0.5 {
                    base
                } else {
                    base + 1
                }
            };
            let first = pp as i64 + offset - pad;
            if self.exclude_outside {
                for (k, ck) in c.iter_mut().enumerate() {
                    let i = first + k as i64;
                    if i < 0 || i >= input as i64 {
                        *ck = 0.0;
                    }
                }
                let sum: f64 = c.iter().sum();
                if sum != 0.0 {
                    for ck in &mut c {
                        *ck /= sum;
                    }
                }
            }
            let last = input as i64 - 1;
            for (k, &ck) in c.iter().enumerate() {
                if ck != 0.0 {
                    t.idx
                        .push((first + k as i64).clamp(0, last.max(0)) as usize);
                    t.w.push(ck);
                }
            }
            t.starts.push(t.idx.len());
        }
        t
    }
}

/// The Keys cubic convolution kernel at distance `x` with parameter `a`.
fn cubic_kernel(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

fn normalized(mut c: Vec<f64>) -> Vec<f64> {
    let sum: f64 = c.iter().sum();
    if sum != 0.0 {
        for v in &mut c {
            *v /= sum;
        }
    }
    c
}

/// A tap table with weights in the compute type.
struct Taps<R> {
    starts: Vec<usize>,
    idx: Vec<usize>,
    w: Vec<R>,
    extrapolated: Vec<bool>,
}

impl<R: Real> Taps<R> {
    fn new(t: AxisTable) -> Self {
        Taps {
            w: t.w.iter().map(|&w| R::of(w)).collect(),
            starts: t.starts,
            idx: t.idx,
            extrapolated: t.extrapolated,
        }
    }

    #[inline]
    fn of(&self, y: usize) -> (&[usize], &[R]) {
        let (s, e) = (self.starts[y], self.starts[y + 1]);
        (&self.idx[s..e], &self.w[s..e])
    }
}

/// Resizes `[outer, input, inner]` to `[outer, output, inner]` along the middle axis.
fn resize_axis<R: Real>(
    src: &[R],
    outer: usize,
    input: usize,
    inner: usize,
    taps: &Taps<R>,
    fill: R,
) -> Vec<R> {
    let output = taps.extrapolated.len();
    let mut out = vec![R::ZERO; outer * output * inner];
    let (sblock, dblock) = (input * inner, output * inner);
    if dblock == 0 {
        return out;
    }
    let work = |(o, dst): (usize, &mut [R])| {
        let s = &src[o * sblock..(o + 1) * sblock];
        for (y, row) in dst.chunks_mut(inner).enumerate() {
            if taps.extrapolated[y] {
                row.fill(fill);
                continue;
            }
            let (idx, w) = taps.of(y);
            match (idx, w) {
                ([i], [w]) if *w == R::ONE => {
                    row.copy_from_slice(&s[i * inner..(i + 1) * inner]);
                }
                _ => {
                    row.fill(R::ZERO);
                    for (&i, &w) in idx.iter().zip(w) {
                        for (d, &v) in row.iter_mut().zip(&s[i * inner..(i + 1) * inner]) {
                            *d = *d + w * v;
                        }
                    }
                }
            }
        }
    };
    if outer > 1 && out.len() >= PAR_MIN_WORK {
        out.par_chunks_mut(dblock).enumerate().for_each(work);
    } else {
        out.chunks_mut(dblock).enumerate().for_each(work);
    }
    out
}

/// Resizes the last two axes of `[planes, h, w]` at once.
fn resize_2d<R: Real>(
    src: &[R],
    planes: usize,
    (h, w): (usize, usize),
    ty: &Taps<R>,
    tx: &Taps<R>,
    fill: R,
) -> Vec<R> {
    let (oh, ow) = (ty.extrapolated.len(), tx.extrapolated.len());
    let mut out = vec![R::ZERO; planes * oh * ow];
    if oh * ow == 0 {
        return out;
    }
    // Nearest neighbour everywhere: a pure gather.
    let single = |t: &Taps<R>| {
        t.starts.windows(2).all(|s| s[1] - s[0] == 1) && t.w.iter().all(|&w| w == R::ONE)
    };
    let gather = single(ty) && single(tx);
    let work = |(p, dst): (usize, &mut [R])| {
        let s = &src[p * h * w..(p + 1) * h * w];
        for (y, row) in dst.chunks_mut(ow).enumerate() {
            if ty.extrapolated[y] {
                row.fill(fill);
                continue;
            }
            let (iy, wy) = ty.of(y);
            if gather {
                let line = &s[iy[0] * w..(iy[0] + 1) * w];
                for (d, &ix) in row.iter_mut().zip(&tx.idx) {
                    *d = line[ix];
                }
                continue;
            }
            for (x, d) in row.iter_mut().enumerate() {
                if tx.extrapolated[x] {
                    *d = fill;
                    continue;
                }
                let (ix, wx) = tx.of(x);
                let mut acc = R::ZERO;
                for (&i, &a) in iy.iter().zip(wy) {
                    let line = &s[i * w..(i + 1) * w];
                    let mut r = R::ZERO;
                    for (&j, &b) in ix.iter().zip(wx) {
                        r = r + b * line[j];
                    }
                    acc = acc + a * r;
                }
                *d = acc;
            }
        }
    };
    if planes > 1 && out.len() >= PAR_MIN_WORK {
        out.par_chunks_mut(oh * ow).enumerate().for_each(work);
    } else {
        out.chunks_mut(oh * ow).enumerate().for_each(work);
    }
    out
}

impl Kernel for ResizeKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let plans = self.plan(inputs, x.shape())?;
        let out = match x.dtype() {
            DType::F32 => {
                let v = self.compute::<f32>(x.as_slice::<f32>()?, &plans)?;
                Tensor::from_vec(plans.iter().map(|p| p.output).collect(), v)?
            }
            dt if dt.is_float() || dt.is_int() => {
                let data = x.cast(DType::F64)?.into_vec::<f64>()?;
                let v = self.compute::<f64>(&data, &plans)?;
                let shape: Vec<usize> = plans.iter().map(|p| p.output).collect();
                dispatch_numeric!(dt, T => {
                    // Integers round half to even and saturate, floats round to nearest.
                    let conv: Vec<T> = if T::IS_FLOAT {
                        v.iter().map(|&f| T::from_f64(f)).collect()
                    } else {
                        v.iter().map(|&f| T::from_f64(f.round_ties_even())).collect()
                    };
                    Tensor::from_vec(shape, conv)?
                }, _ => return Err(unsupported(format!("Resize of {dt} tensors"))))
            }
            other => return Err(unsupported(format!("Resize of {other} tensors"))),
        };
        Ok(vec![out])
    }
}

impl ResizeKernel {
    fn compute<R: Real>(&self, data: &[R], plans: &[AxisPlan]) -> Result<Vec<R>, RuntimeError> {
        let rank = plans.len();
        let active: Vec<usize> = (0..rank)
            .filter(|&a| !self.is_identity(&plans[a]))
            .collect();
        let fill = R::of(self.extrapolation);
        if active.is_empty() {
            return Ok(data.to_vec());
        }
        if active.iter().any(|&a| plans[a].input == 0) {
            let n: usize = plans.iter().map(|p| p.output).product();
            if n == 0 {
                return Ok(Vec::new());
            }
            return Err(kernel_err("cannot resize an empty tensor"));
        }
        if rank >= 2 && active.iter().all(|&a| a >= rank - 2) && active.len() == 2 {
            let (py, px) = (&plans[rank - 2], &plans[rank - 1]);
            let planes: usize = plans[..rank - 2].iter().map(|p| p.input).product();
            let ty = Taps::<R>::new(self.table(py));
            let tx = Taps::<R>::new(self.table(px));
            return Ok(resize_2d(
                data,
                planes,
                (py.input, px.input),
                &ty,
                &tx,
                fill,
            ));
        }
        // One axis at a time; the current shape has the outputs of the axes done so far.
        let mut current: Vec<usize> = plans.iter().map(|p| p.input).collect();
        let mut buf: Option<Vec<R>> = None;
        for &a in &active {
            let outer: usize = current[..a].iter().product();
            let inner: usize = current[a + 1..].iter().product();
            let taps = Taps::<R>::new(self.table(&plans[a]));
            let src = buf.as_deref().unwrap_or(data);
            let next = resize_axis(src, outer, current[a], inner, &taps, fill);
            current[a] = plans[a].output;
            buf = Some(next);
        }
        Ok(buf.unwrap_or_else(|| data.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(mode: Mode, coord: Coord) -> ResizeKernel {
        ResizeKernel {
            mode,
            coord,
            nearest: Nearest::RoundPreferFloor,
            cubic_a: -0.75,
            exclude_outside: false,
            extrapolation: 0.0,
            antialias: false,
            axes: None,
            policy: Policy::Stretch,
            args: Args::Full,
        }
    }

    #[test]
    fn legacy_nearest_ceils_when_downsampling() {
        let mut k = kernel(Mode::Nearest, Coord::Asymmetric);
        k.nearest = Nearest::Legacy;
        let down = k.table(&AxisPlan {
            input: 5,
            output: 3,
            scale: 0.6,
            roi: (0.0, 1.0),
        });
        // x = y / 0.6 = 0, 1.67, 3.33 -> ceil
        assert_eq!(down.idx, vec![0, 2, 4]);
        let up = k.table(&AxisPlan {
            input: 2,
            output: 5,
            scale: 2.5,
            roi: (0.0, 1.0),
        });
        assert_eq!(up.idx, vec![0, 0, 0, 1, 1]);
    }

    #[test]
    fn tf_crop_extrapolates_outside_roi() {
        let mut k = kernel(Mode::Linear, Coord::TfCropAndResize);
        k.extrapolation = 7.0;
        let plans = [AxisPlan {
            input: 3,
            output: 3,
            scale: 1.0,
            roi: (0.5, 1.5),
        }];
        let out = k.compute::<f32>(&[0.0, 2.0, 4.0], &plans).unwrap();
        // x = 1, 2, 3: the last lies past the input.
        assert_eq!(out, vec![2.0, 4.0, 7.0]);
    }

    #[test]
    fn nearest_2x_half_pixel() {
        let k = kernel(Mode::Nearest, Coord::HalfPixel);
        let t = k.table(&AxisPlan {
            input: 2,
            output: 4,
            scale: 2.0,
            roi: (0.0, 1.0),
        });
        assert_eq!(t.idx, vec![0, 0, 1, 1]);
    }

    #[test]
    fn linear_2x_half_pixel_clamps_edges() {
        let k = kernel(Mode::Linear, Coord::HalfPixel);
        let plans = [AxisPlan {
            input: 2,
            output: 4,
            scale: 2.0,
            roi: (0.0, 1.0),
        }];
        let out = k.compute::<f32>(&[0.0, 4.0], &plans).unwrap();
        assert_eq!(out, vec![0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn fused_2d_matches_separable() {
        let k = kernel(Mode::Cubic, Coord::HalfPixel);
        let plans = [
            AxisPlan {
                input: 3,
                output: 5,
                scale: 5.0 / 3.0,
                roi: (0.0, 1.0),
            },
            AxisPlan {
                input: 4,
                output: 7,
                scale: 7.0 / 4.0,
                roi: (0.0, 1.0),
            },
        ];
        let data: Vec<f64> = (0..12).map(|v| (v * v) as f64).collect();
        let fused = k.compute::<f64>(&data, &plans).unwrap();
        let ty = Taps::<f64>::new(k.table(&plans[0]));
        let tx = Taps::<f64>::new(k.table(&plans[1]));
        let a = resize_axis(&data, 1, 3, 4, &ty, 0.0);
        let b = resize_axis(&a, 5, 4, 1, &tx, 0.0);
        for (x, y) in fused.iter().zip(&b) {
            assert!((x - y).abs() < 1e-9);
        }
    }
}
