//! `GridSample` (opsets 16 and 20), for any number of spatial dimensions.
//!
//! Input `X` is `[N, C, D1, ..., Dk]` and `grid` is `[N, H1, ..., Hk, k]`; the output is
//! `[N, C, H1, ..., Hk]`. The last grid axis holds normalized coordinates in `[-1, 1]` in
//! *reverse* spatial order (`x` for the innermost axis first), as in PyTorch.
//!
//! Interpolation is separable, so for each output position every spatial axis gets a short
//! list of taps (input index, weight): 1 for nearest, 2 for linear, 4 for cubic. The taps do
//! not depend on the channel, so they are computed once per position and applied to all
//! channels. Padding follows the ONNX reference: the continuous coordinate is first clamped
//! (`border`) or reflected (`reflection`) when it lies outside the valid range, then each
//! integer tap index is padded again (zero, clamped or reflected).

use crate::ops::{attr_err, input, BuildContext, Kernel};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

/// A configured `GridSample` node.
struct GridSampleKernel {
    mode: Mode,
    padding: Padding,
    align_corners: bool,
}

/// Builds a `GridSample` kernel.
pub fn build(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    // Opset 16 names the modes bilinear / bicubic, opset 20 linear / cubic; accept both.
    let mode = match node
        .attr_string("mode")
        .map_err(attr_err)?
        .as_deref()
        .unwrap_or("linear")
    {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" | "bicubic" => Mode::Cubic,
        other => return Err(unsupported(format!("GridSample mode '{other}'"))),
    };
    let padding = match node
        .attr_string("padding_mode")
        .map_err(attr_err)?
        .as_deref()
        .unwrap_or("zeros")
    {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        other => return Err(unsupported(format!("GridSample padding_mode '{other}'"))),
    };
    let align_corners = node
        .attr_int("align_corners")
        .map_err(attr_err)?
        .unwrap_or(0)
        != 0;
    Ok(Box::new(GridSampleKernel {
        mode,
        padding,
        align_corners,
    }))
}

/// Reflects `x` into `[lo, hi]` by bouncing off the nearer border until it lands inside.
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let range = hi - lo;
    // A one-pixel axis with aligned corners has an empty range: everything maps onto it.
    if range <= 0.0 || !x.is_finite() {
        return lo;
    }
    if x < lo {
        let dx = lo - x;
        let n = (dx / range).trunc();
        let r = dx - n * range;
        if n % 2.0 == 0.0 {
            lo + r
        } else {
            hi - r
        }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / range).trunc();
        let r = dx - n * range;
        if n % 2.0 == 0.0 {
            hi - r
        } else {
            lo + r
        }
    } else {
        x
    }
}

/// Keys' cubic convolution weights (a = -0.75) for the taps at `-1, 0, 1, 2` relative to
/// `floor(x)`, given the fractional part `t`.
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let t = t.abs();
    let far = |d: f64| ((A * d - 5.0 * A) * d + 8.0 * A) * d - 4.0 * A;
    let near = |d: f64| ((A + 2.0) * d - (A + 3.0)) * d * d + 1.0;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// One spatial axis: its length and the valid coordinate range for reflection.
struct Axis {
    len: usize,
    lo: f64,
    hi: f64,
}

impl GridSampleKernel {
    /// Maps a normalized coordinate to a pixel coordinate of an axis of `len` pixels.
    fn denormalize(&self, n: f64, len: usize) -> f64 {
        let len = len as f64;
        if self.align_corners {
            (n + 1.0) / 2.0 * (len - 1.0)
        } else {
            ((n + 1.0) * len - 1.0) / 2.0
        }
    }

    /// The input index a (possibly out-of-range) integer tap reads, or `None` for a zero.
    fn pad_index(&self, i: i64, axis: &Axis) -> Option<usize> {
        if axis.len == 0 {
            return None;
        }
        let last = axis.len as i64 - 1;
        let j = match self.padding {
            Padding::Zeros => {
                if (0..=last).contains(&i) {
                    i
                } else {
                    return None;
                }
            }
            Padding::Border => i.clamp(0, last),
            // Truncation toward zero, as the reference's int(); clamp only guards rounding.
            Padding::Reflection => (reflect(i as f64, axis.lo, axis.hi) as i64).clamp(0, last),
        };
        usize::try_from(j).ok()
    }

    /// Fills `taps` with the (index, weight) pairs of one axis for the pixel coordinate `x`.
    fn axis_taps(&self, x: f64, axis: &Axis, taps: &mut Vec<(Option<usize>, f64)>) {
        taps.clear();
        let mut x = if self.mode == Mode::Nearest {
            // Round half to even, as PyTorch and the reference do.
            x.round_ties_even()
        } else {
            x
        };
        if x < axis.lo || x > axis.hi {
            match self.padding {
                Padding::Border => x = x.clamp(0.0, (axis.len as f64 - 1.0).max(0.0)),
                Padding::Reflection => x = reflect(x, axis.lo, axis.hi),
                Padding::Zeros => {}
            }
        }
        match self.mode {
            Mode::Nearest => taps.push((self.pad_index(x as i64, axis), 1.0)),
            Mode::Linear => {
                let x0 = x.floor();
                let t = (x - x0).abs();
                let i0 = x0 as i64;
                taps.push((self.pad_index(i0, axis), 1.0 - t));
                taps.push((self.pad_index(i0.saturating_add(1), axis), t));
            }
            Mode::Cubic => {
                let x0 = x.floor();
                let i0 = x0 as i64;
                for (k, w) in cubic_weights(x - x0).into_iter().enumerate() {
                    let i = i0.saturating_add(k as i64 - 1);
                    taps.push((self.pad_index(i, axis), w));
                }
            }
        }
    }
}

impl Kernel for GridSampleKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x_t = input(inputs, 0)?;
        let grid_t = input(inputs, 1)?;
        let dtype = x_t.dtype();
        if !matches!(dtype, DType::F32 | DType::F64 | DType::F16) {
            return Err(unsupported(format!("GridSample on {dtype}")));
        }
        let (xs, gs) = (x_t.shape(), grid_t.shape());
        if xs.len() < 3 {
            return Err(kernel_err(format!(
                "GridSample input must be [N, C, D1, ...], got {xs:?}"
            )));
        }
        let k = xs.len() - 2;
        if gs.len() != k + 2 || gs[0] != xs[0] || gs[k + 1] != k {
            return Err(kernel_err(format!(
                "GridSample grid must be [{}, H1, ..., H{k}, {k}] for input {xs:?}, got {gs:?}",
                xs[0]
            )));
        }
        let (n, c) = (xs[0], xs[1]);
        let in_dims = &xs[2..];
        let out_dims = &gs[1..k + 1];
        let mut out_shape = vec![n, c];
        out_shape.extend_from_slice(out_dims);
        let in_plane: usize = in_dims.iter().product();
        let out_plane: usize = out_dims.iter().product();
        let total = n * c * out_plane;
        if total == 0 {
            return Ok(vec![Tensor::zeros(dtype, out_shape)]);
        }

        let x = x_t.cast(DType::F64)?.into_vec::<f64>()?;
        let grid = grid_t.cast(DType::F64)?.into_vec::<f64>()?;
        if x.len() != n * c * in_plane || grid.len() != n * out_plane * k {
            return Err(kernel_err("GridSample data does not match its shape"));
        }
        let axes: Vec<Axis> = in_dims
            .iter()
            .map(|&len| {
                let (lo, hi) = if self.align_corners {
                    (0.0, len as f64 - 1.0)
                } else {
                    (-0.5, len as f64 - 0.5)
                };
                Axis { len, lo, hi }
            })
            .collect();
        // Row-major strides of the spatial part of X.
        let mut strides = vec![1usize; k];
        for i in (0..k.saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * in_dims[i + 1];
        }

        let mut out = vec![0.0f64; total];
        let mut taps: Vec<Vec<(Option<usize>, f64)>> = vec![Vec::with_capacity(4); k];
        // Flattened (spatial offset, weight) pairs of all tap combinations for one position.
        let mut combos: Vec<(usize, f64)> = Vec::new();
        let mut counter = vec![0usize; k];
        for b in 0..n {
            for p in 0..out_plane {
                let g = &grid[(b * out_plane + p) * k..(b * out_plane + p + 1) * k];
                for (i, axis) in axes.iter().enumerate() {
                    // Grid components come in reverse axis order.
                    let xi = self.denormalize(g[k - 1 - i], axis.len);
                    self.axis_taps(xi, axis, &mut taps[i]);
                }
                combos.clear();
                counter.iter_mut().for_each(|v| *v = 0);
                'combos: loop {
                    let mut offset = 0usize;
                    let mut weight = 1.0f64;
                    let mut zero = false;
                    for i in 0..k {
                        let (idx, w) = taps[i][counter[i]];
                        match idx {
                            Some(j) => offset += j * strides[i],
                            None => zero = true,
                        }
                        weight *= w;
                    }
                    if !zero {
                        combos.push((offset, weight));
                    }
                    // Advance the mixed-radix counter over the tap lists.
                    for i in (0..k).rev() {
                        counter[i] += 1;
                        if counter[i] < taps[i].len() {
                            continue 'combos;
                        }
                        counter[i] = 0;
                    }
                    break;
                }
                for ch in 0..c {
                    let plane = (b * c + ch) * in_plane;
                    let src = &x[plane..plane + in_plane];
                    let v: f64 = combos
                        .iter()
                        .map(|&(o, w)| src.get(o).map_or(0.0, |s| s * w))
                        .sum();
                    out[(b * c + ch) * out_plane + p] = v;
                }
            }
        }
        let y = Tensor::from_vec(out_shape, out)?.cast(dtype)?;
        Ok(vec![y])
    }
}
