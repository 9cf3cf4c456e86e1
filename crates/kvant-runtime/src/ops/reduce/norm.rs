//! Normalizations: `BatchNormalization`, `LayerNormalization`, `RMSNormalization`,
//! `InstanceNormalization`, `GroupNormalization`, `LpNormalization` and
//! `MeanVarianceNormalization`.
//!
//! Statistics are computed in f64 with two passes (mean, then squared deviations), so long rows
//! and large offsets do not lose precision; the element-wise passes run in the compute type.

use super::{
    compute_type, normalize_axes, real_data, real_tensor, split_at_axis, sum_f64, sum_sq_dev_f64,
    transpose, Real, PAR_MIN_WORK,
};
use crate::ops::{
    attr_err, broadcast_shape, broadcast_strides, input, normalize_axis, optional_input,
    BuildContext, Kernel, Registry,
};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Tensor};
use rayon::prelude::*;

/// Registers the normalization operators.
pub fn register(r: &mut Registry) {
    r.add("BatchNormalization", build_batch_norm);
    r.add("LayerNormalization", build_layer_norm);
    r.add("RMSNormalization", build_rms_norm);
    r.add("InstanceNormalization", build_instance_norm);
    r.add("GroupNormalization", build_group_norm);
    r.add("LpNormalization", build_lp_norm);
    r.add("MeanVarianceNormalization", build_mvn);
}

/// Runs `f` on every `(src, dst)` pair of `len`-element chunks, in parallel when the total is
/// large enough to pay for it.
fn for_chunks<R: Real>(
    src: &[R],
    dst: &mut [R],
    len: usize,
    f: impl Fn(usize, &[R], &mut [R]) + Sync + Send,
) {
    if len == 0 {
        return;
    }
    if src.len() >= PAR_MIN_WORK && src.len() > len {
        src.par_chunks(len)
            .zip(dst.par_chunks_mut(len))
            .enumerate()
            .for_each(|(i, (s, d))| f(i, s, d));
    } else {
        src.chunks(len)
            .zip(dst.chunks_mut(len))
            .enumerate()
            .for_each(|(i, (s, d))| f(i, s, d));
    }
}

/// `values` (of shape `from`) broadcast to the shape `to`, as a dense vector.
fn expand<R: Real>(values: &[R], from: &[usize], to: &[usize]) -> Result<Vec<R>, RuntimeError> {
    if from == to {
        return Ok(values.to_vec());
    }
    if from.len() > to.len() || broadcast_shape(&[from, to])? != to {
        return Err(kernel_err(format!(
            "a parameter of shape {from:?} does not broadcast to {to:?}"
        )));
    }
    let strides = broadcast_strides(from, to);
    let n: usize = to.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; to.len()];
    for _ in 0..n {
        let off: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(values[off]);
        for d in (0..to.len()).rev() {
            idx[d] += 1;
            if idx[d] < to[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

/// A per-channel parameter of exactly `n` values.
fn per_channel<'a, R: Real>(
    t: &'a Tensor,
    n: usize,
    what: &str,
) -> Result<std::borrow::Cow<'a, [R]>, RuntimeError> {
    let v = real_data::<R>(t)?;
    if v.len() != n {
        return Err(kernel_err(format!(
            "{what} has {} values, expected {n}",
            v.len()
        )));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// BatchNormalization.

struct BatchNormKernel {
    epsilon: f64,
    momentum: f64,
    training: bool,
    /// Opset < 9 `spatial = 0`: the parameters hold one value per element of a sample.
    per_activation: bool,
}

fn build_batch_norm(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let training = if ctx.opset >= 14 {
        node.attr_int("training_mode")
            .map_err(attr_err)?
            .unwrap_or(0)
            != 0
    } else {
        // Older opsets only differ in training through the extra outputs; with just Y the
        // node is used for inference (is_test is a hint for training frameworks).
        if node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
            return Err(unsupported(
                "BatchNormalization training outputs before opset 14",
            ));
        }
        false
    };
    let per_activation =
        ctx.opset < 9 && node.attr_int("spatial").map_err(attr_err)?.unwrap_or(1) == 0;
    Ok(Box::new(BatchNormKernel {
        epsilon: node
            .attr_float("epsilon")
            .map_err(attr_err)?
            .unwrap_or(1e-5) as f64,
        momentum: node
            .attr_float("momentum")
            .map_err(attr_err)?
            .unwrap_or(0.9) as f64,
        training,
        per_activation,
    }))
}

impl Kernel for BatchNormKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        match compute_type(x.dtype(), "BatchNormalization")? {
            DType::F64 => self.compute::<f64>(inputs),
            _ => self.compute::<f32>(inputs),
        }
    }
}

impl BatchNormKernel {
    fn compute<R: Real>(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        if shape.len() < 2 && !(shape.len() == 1 && self.per_activation) {
            return Err(kernel_err(format!(
                "BatchNormalization input must have rank >= 2, got {shape:?}"
            )));
        }
        let n = shape.first().copied().unwrap_or(1);
        let (channels, plane) = if self.per_activation {
            (shape[1..].iter().product::<usize>(), 1)
        } else {
            (shape[1], shape[2..].iter().product::<usize>())
        };
        let data = real_data::<R>(x)?;
        let scale = per_channel::<R>(input(inputs, 1)?, channels, "scale")?;
        let bias = per_channel::<R>(input(inputs, 2)?, channels, "B")?;
        let in_mean = per_channel::<R>(input(inputs, 3)?, channels, "input_mean")?;
        let in_var = per_channel::<R>(input(inputs, 4)?, channels, "input_var")?;

        // Batch statistics in training mode, the running ones otherwise.
        let (mean, var): (Vec<f64>, Vec<f64>) = if self.training {
            let count = (n * plane) as f64;
            let mut mean = vec![0f64; channels];
            let mut var = vec![0f64; channels];
            for c in 0..channels {
                let planes = (0..n).map(|b| &data[(b * channels + c) * plane..][..plane]);
                let m = planes.clone().map(sum_f64).sum::<f64>() / count;
                var[c] = planes.map(|p| sum_sq_dev_f64(p, m)).sum::<f64>() / count;
                mean[c] = m;
            }
            (mean, var)
        } else {
            (
                in_mean.iter().map(|v| v.f64()).collect(),
                in_var.iter().map(|v| v.f64()).collect(),
            )
        };
        // y = x * a + b with a = scale / sqrt(var + eps) and b = bias - mean * a.
        let a: Vec<R> = (0..channels)
            .map(|c| R::of(scale[c].f64() / (var[c] + self.epsilon).sqrt()))
            .collect();
        let b: Vec<R> = (0..channels)
            .map(|c| R::of(bias[c].f64() - mean[c] * a[c].f64()))
            .collect();
        let mut out = vec![R::ZERO; data.len()];
        if plane == 1 {
            for_chunks(&data, &mut out, channels, |_, src, dst| {
                for (((d, &v), &a), &b) in dst.iter_mut().zip(src).zip(&a).zip(&b) {
                    *d = v * a + b;
                }
            });
        } else {
            for_chunks(&data, &mut out, plane, |i, src, dst| {
                let c = i % channels;
                let (a, b) = (a[c], b[c]);
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = v * a + b;
                }
            });
        }
        let mut outputs = vec![real_tensor(shape.to_vec(), out, x.dtype())?];
        if self.training {
            let m = self.momentum;
            let running = |old: &[R], batch: &[f64]| -> Vec<R> {
                old.iter()
                    .zip(batch)
                    .map(|(&o, &b)| R::of(o.f64() * m + b * (1.0 - m)))
                    .collect()
            };
            let dtype = input(inputs, 3)?.dtype();
            outputs.push(real_tensor(
                vec![channels],
                running(&in_mean, &mean),
                dtype,
            )?);
            outputs.push(real_tensor(vec![channels], running(&in_var, &var), dtype)?);
        }
        Ok(outputs)
    }
}

// ---------------------------------------------------------------------------------------------
// LayerNormalization / RMSNormalization.

struct LayerNormKernel {
    axis: i64,
    epsilon: f64,
    /// The type of the Mean / InvStdDev outputs.
    stash: DType,
    /// RMSNormalization: no mean is subtracted and there is no bias.
    rms: bool,
}

fn build_norm_over_axes(node: &Node, rms: bool) -> Result<Box<dyn Kernel>, RuntimeError> {
    let stash = match node.attr_int("stash_type").map_err(attr_err)?.unwrap_or(1) {
        1 => DType::F32,
        11 => DType::F64,
        16 => DType::BF16,
        10 => DType::F16,
        other => return Err(unsupported(format!("stash_type {other}"))),
    };
    Ok(Box::new(LayerNormKernel {
        axis: node.attr_int("axis").map_err(attr_err)?.unwrap_or(-1),
        epsilon: node
            .attr_float("epsilon")
            .map_err(attr_err)?
            .unwrap_or(1e-5) as f64,
        stash,
        rms,
    }))
}

fn build_layer_norm(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    build_norm_over_axes(node, false)
}

fn build_rms_norm(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    build_norm_over_axes(node, true)
}

impl Kernel for LayerNormKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        match compute_type(x.dtype(), "LayerNormalization")? {
            DType::F64 => self.compute::<f64>(inputs),
            _ => self.compute::<f32>(inputs),
        }
    }
}

impl LayerNormKernel {
    fn compute<R: Real>(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        let axis = normalize_axis(self.axis, shape.len())?;
        let norm_shape = &shape[axis..];
        let cols: usize = norm_shape.iter().product();
        let rows: usize = shape[..axis].iter().product();
        let scale_t = input(inputs, 1)?;
        let scale = expand(&real_data::<R>(scale_t)?, scale_t.shape(), norm_shape)?;
        let bias = match optional_input(inputs, 2) {
            Some(b) if !self.rms => Some(expand(&real_data::<R>(b)?, b.shape(), norm_shape)?),
            _ => None,
        };
        let data = real_data::<R>(x)?;
        let mut out = vec![R::ZERO; data.len()];
        let mut means = vec![0f64; rows];
        let mut inv_stds = vec![0f64; rows];
        let eps = self.epsilon;
        let rms = self.rms;
        let norm_row = |src: &[R], dst: &mut [R]| -> (f64, f64) {
            let n = src.len() as f64;
            let (mean, var) = if rms {
                (0.0, sum_sq_dev_f64(src, 0.0) / n)
            } else {
                let mean = sum_f64(src) / n;
                (mean, sum_sq_dev_f64(src, mean) / n)
            };
            let inv = 1.0 / (var + eps).sqrt();
            let (m, s) = (R::of(mean), R::of(inv));
            match &bias {
                Some(bias) => {
                    for (((d, &v), &g), &b) in dst.iter_mut().zip(src).zip(&scale).zip(bias) {
                        *d = (v - m) * s * g + b;
                    }
                }
                None => {
                    for ((d, &v), &g) in dst.iter_mut().zip(src).zip(&scale) {
                        *d = (v - m) * s * g;
                    }
                }
            }
            (mean, inv)
        };
        if cols > 0 {
            let stats = means.iter_mut().zip(inv_stds.iter_mut());
            if rows > 1 && data.len() >= PAR_MIN_WORK {
                data.par_chunks(cols)
                    .zip(out.par_chunks_mut(cols))
                    .zip(means.par_iter_mut().zip(inv_stds.par_iter_mut()))
                    .for_each(|((s, d), (m, i))| (*m, *i) = norm_row(s, d));
            } else {
                data.chunks(cols)
                    .zip(out.chunks_mut(cols))
                    .zip(stats)
                    .for_each(|((s, d), (m, i))| (*m, *i) = norm_row(s, d));
            }
        }
        let mut outputs = vec![real_tensor(shape.to_vec(), out, x.dtype())?];
        // Mean and InvStdDev keep the rank of X with 1 for the normalized axes.
        let stat_shape: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(i, &d)| if i < axis { d } else { 1 })
            .collect();
        let stat = |v: Vec<f64>| -> Result<Tensor, RuntimeError> {
            Ok(Tensor::from_vec(stat_shape.clone(), v)?.cast(self.stash)?)
        };
        if rms {
            return Ok(outputs);
        }
        outputs.push(stat(means)?);
        outputs.push(stat(inv_stds)?);
        Ok(outputs)
    }
}

// ---------------------------------------------------------------------------------------------
// InstanceNormalization / GroupNormalization.

struct GroupNormKernel {
    epsilon: f64,
    /// `None` for InstanceNormalization (one group per channel).
    groups: Option<usize>,
    /// GroupNormalization before opset 21 takes scale / bias per group, not per channel.
    per_group_params: bool,
}

fn build_instance_norm(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(GroupNormKernel {
        epsilon: node
            .attr_float("epsilon")
            .map_err(attr_err)?
            .unwrap_or(1e-5) as f64,
        groups: None,
        per_group_params: false,
    }))
}

fn build_group_norm(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let groups = node
        .attr_int("num_groups")
        .map_err(attr_err)?
        .ok_or_else(|| kernel_err("GroupNormalization needs 'num_groups'"))?;
    if groups <= 0 {
        return Err(kernel_err(format!(
            "num_groups must be positive, got {groups}"
        )));
    }
    Ok(Box::new(GroupNormKernel {
        epsilon: node
            .attr_float("epsilon")
            .map_err(attr_err)?
            .unwrap_or(1e-5) as f64,
        groups: Some(groups as usize),
        per_group_params: ctx.opset < 21,
    }))
}

impl Kernel for GroupNormKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let out = match compute_type(x.dtype(), "GroupNormalization")? {
            DType::F64 => self.compute::<f64>(inputs)?,
            _ => self.compute::<f32>(inputs)?,
        };
        Ok(vec![out])
    }
}

impl GroupNormKernel {
    fn compute<R: Real>(&self, inputs: &[Option<&Tensor>]) -> Result<Tensor, RuntimeError> {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        if shape.len() < 2 {
            return Err(kernel_err(format!(
                "normalization input must have rank >= 2, got {shape:?}"
            )));
        }
        let channels = shape[1];
        let plane: usize = shape[2..].iter().product();
        let groups = self.groups.unwrap_or(channels);
        if groups == 0 || channels % groups != 0 {
            return Err(kernel_err(format!(
                "{channels} channels cannot be split into {groups} groups"
            )));
        }
        let per_group = channels / groups;
        let param_len = if self.per_group_params {
            groups
        } else {
            channels
        };
        let scale = per_channel::<R>(input(inputs, 1)?, param_len, "scale")?;
        let bias = per_channel::<R>(input(inputs, 2)?, param_len, "bias")?;
        let data = real_data::<R>(x)?;
        let mut out = vec![R::ZERO; data.len()];
        let group_len = per_group * plane;
        let eps = self.epsilon;
        let per_group_params = self.per_group_params;
        for_chunks(&data, &mut out, group_len, |i, src, dst| {
            let g = i % groups;
            let n = src.len() as f64;
            let mean = sum_f64(src) / n;
            let inv = 1.0 / (sum_sq_dev_f64(src, mean) / n + eps).sqrt();
            for (k, (s, d)) in src
                .chunks(plane.max(1))
                .zip(dst.chunks_mut(plane.max(1)))
                .enumerate()
            {
                let p = if per_group_params {
                    g
                } else {
                    g * per_group + k
                };
                // y = (x - mean) * inv * scale + bias, folded into one multiply-add.
                let a = inv * scale[p].f64();
                let (ra, rb) = (R::of(a), R::of(bias[p].f64() - mean * a));
                for (d, &v) in d.iter_mut().zip(s) {
                    *d = v * ra + rb;
                }
            }
        });
        real_tensor(shape.to_vec(), out, x.dtype())
    }
}

// ---------------------------------------------------------------------------------------------
// LpNormalization.

struct LpNormKernel {
    axis: i64,
    p: i64,
}

fn build_lp_norm(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let p = node.attr_int("p").map_err(attr_err)?.unwrap_or(2);
    if p != 1 && p != 2 {
        return Err(unsupported(format!("LpNormalization with p={p}")));
    }
    Ok(Box::new(LpNormKernel {
        axis: node.attr_int("axis").map_err(attr_err)?.unwrap_or(-1),
        p,
    }))
}

impl Kernel for LpNormKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let out = match compute_type(x.dtype(), "LpNormalization")? {
            DType::F64 => self.compute::<f64>(x)?,
            _ => self.compute::<f32>(x)?,
        };
        Ok(vec![out])
    }
}

impl LpNormKernel {
    fn compute<R: Real>(&self, x: &Tensor) -> Result<Tensor, RuntimeError> {
        let axis = normalize_axis(self.axis, x.rank())?;
        let (outer, r, inner) = split_at_axis(x.shape(), axis);
        let data = real_data::<R>(x)?;
        let mut out = vec![R::ZERO; data.len()];
        for o in 0..outer {
            for i in 0..inner {
                let idx = |k: usize| (o * r + k) * inner + i;
                let norm = if self.p == 1 {
                    (0..r).map(|k| data[idx(k)].f64().abs()).sum::<f64>()
                } else {
                    (0..r)
                        .map(|k| data[idx(k)].f64().powi(2))
                        .sum::<f64>()
                        .sqrt()
                };
                // A zero norm gives zeros rather than 0/0.
                if norm != 0.0 {
                    for k in 0..r {
                        out[idx(k)] = R::of(data[idx(k)].f64() / norm);
                    }
                }
            }
        }
        real_tensor(x.shape().to_vec(), out, x.dtype())
    }
}

// ---------------------------------------------------------------------------------------------
// MeanVarianceNormalization.

struct MvnKernel {
    axes: Vec<i64>,
}

fn build_mvn(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axes = node
        .attr_ints("axes")
        .map_err(attr_err)?
        .map_or_else(|| vec![0, 2, 3], <[i64]>::to_vec);
    Ok(Box::new(MvnKernel { axes }))
}

impl Kernel for MvnKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let out = match compute_type(x.dtype(), "MeanVarianceNormalization")? {
            DType::F64 => self.compute::<f64>(x)?,
            _ => self.compute::<f32>(x)?,
        };
        Ok(vec![out])
    }
}

impl MvnKernel {
    fn compute<R: Real>(&self, x: &Tensor) -> Result<Tensor, RuntimeError> {
        let shape = x.shape();
        let axes = normalize_axes(&self.axes, shape.len())?;
        // Move the normalized axes last, normalize rows, move them back.
        let mut perm: Vec<usize> = (0..shape.len()).filter(|i| !axes.contains(i)).collect();
        perm.extend_from_slice(&axes);
        let moved_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let data = real_data::<R>(x)?;
        let moved = transpose(&data, shape, &perm);
        let cols: usize = axes.iter().map(|&a| shape[a]).product();
        let mut out = vec![R::ZERO; moved.len()];
        for_chunks(&moved, &mut out, cols, |_, src, dst| {
            let n = src.len() as f64;
            let mean = sum_f64(src) / n;
            let std = (sum_sq_dev_f64(src, mean) / n).sqrt();
            // The definition adds 1e-9 to the standard deviation (not to the variance).
            let inv = 1.0 / (std + 1e-9);
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = R::of((v.f64() - mean) * inv);
            }
        });
        let mut inverse = vec![0usize; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inverse[p] = i;
        }
        let back = transpose(&out, &moved_shape, &inverse);
        real_tensor(shape.to_vec(), back, x.dtype())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_norm_opset18_takes_params_per_group() {
        let k = GroupNormKernel {
            epsilon: 0.0,
            groups: Some(2),
            per_group_params: true,
        };
        let x = Tensor::from_vec(vec![1, 4, 1], vec![1f32, 3.0, 5.0, 9.0]).unwrap();
        let scale = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
        let bias = Tensor::from_vec(vec![2], vec![0f32, 10.0]).unwrap();
        let y = k.run(&[Some(&x), Some(&scale), Some(&bias)]).unwrap();
        let y = y[0].as_slice::<f32>().unwrap();
        // Group 0: mean 2, std 1; group 1: mean 7, std 2.
        assert_eq!(y, &[-1.0, 1.0, 8.0, 12.0]);
    }

    #[test]
    fn batch_norm_per_activation() {
        let k = BatchNormKernel {
            epsilon: 0.0,
            momentum: 0.9,
            training: false,
            per_activation: true,
        };
        let x = Tensor::from_vec(vec![2, 2], vec![1f32, 2.0, 3.0, 4.0]).unwrap();
        let p = |v: [f32; 2]| Tensor::from_vec(vec![2], v.to_vec()).unwrap();
        let (s, b, m, v) = (p([1.0, 2.0]), p([0.0, 1.0]), p([1.0, 0.0]), p([4.0, 1.0]));
        let y = k
            .run(&[Some(&x), Some(&s), Some(&b), Some(&m), Some(&v)])
            .unwrap();
        assert_eq!(y[0].as_slice::<f32>().unwrap(), &[0.0, 5.0, 1.0, 9.0]);
    }

    #[test]
    fn expand_broadcasts_trailing_dims() {
        let v = expand(&[1f32, 2.0], &[2], &[3, 2]).unwrap();
        assert_eq!(v, vec![1., 2., 1., 2., 1., 2.]);
        assert!(expand(&[1f32, 2.0, 3.0], &[3], &[3, 2]).is_err());
    }
}
