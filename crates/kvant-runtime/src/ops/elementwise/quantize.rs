//! `QuantizeLinear`, `DequantizeLinear` and `DynamicQuantizeLinear`.
//!
//! Scales and zero points are per tensor (one value), per axis (a 1-D tensor along `axis`) or
//! blocked (opset 21: same rank as the input, `block_size` consecutive elements along `axis`
//! share one value). Integer quantization rounds half to even and saturates; float8 outputs
//! go through the packed-float encoder (saturating unless `saturate=0`).

use super::packed;
use crate::ops::{attr_err, input, normalize_axis, optional_input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{bf16, f16, DType, Scalar, Tensor};

/// Registers the quantization operators.
pub(super) fn register(r: &mut Registry) {
    r.add("QuantizeLinear", build_quantize);
    r.add("DequantizeLinear", build_dequantize);
    r.add("DynamicQuantizeLinear", build_dynamic);
}

/// Attributes shared by both directions.
#[derive(Debug, Clone, Copy)]
struct QParams {
    axis: i64,
    block_size: usize,
    output_dtype: Option<DType>,
    saturate: bool,
}

fn params(node: &Node) -> Result<QParams, RuntimeError> {
    let block = node.attr_int("block_size").map_err(attr_err)?.unwrap_or(0);
    let block_size = usize::try_from(block)
        .map_err(|_| kernel_err(format!("block_size must not be negative, got {block}")))?;
    let output_dtype = match node
        .attr_int("output_dtype")
        .map_err(attr_err)?
        .unwrap_or(0)
    {
        0 => None,
        code => Some(
            i32::try_from(code)
                .ok()
                .and_then(DType::from_onnx_code)
                .ok_or_else(|| kernel_err(format!("unknown output_dtype {code}")))?,
        ),
    };
    if let Some(p) = node.attr_int("precision").map_err(attr_err)? {
        if p != 0 && p != DType::F32.onnx_code() as i64 {
            return Err(unsupported(format!("precision {p} (only float32)")));
        }
    }
    Ok(QParams {
        axis: node.attr_int("axis").map_err(attr_err)?.unwrap_or(1),
        block_size,
        output_dtype,
        saturate: node.attr_int("saturate").map_err(attr_err)?.unwrap_or(1) != 0,
    })
}

/// How a scale / zero point maps onto the input's elements.
#[derive(Debug, Clone, Copy)]
struct ParamLayout {
    /// Elements before the axis, along it, and after it.
    outer: usize,
    dim: usize,
    inner: usize,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    PerTensor,
    PerAxis,
    /// Blocks of this many elements along the axis; `nb` blocks in all.
    Blocked {
        size: usize,
        nb: usize,
    },
}

impl ParamLayout {
    fn new(x_shape: &[usize], scale_shape: &[usize], p: &QParams) -> Result<Self, RuntimeError> {
        let n: usize = scale_shape.iter().product();
        if scale_shape.is_empty() || n == 1 && p.block_size == 0 {
            return Ok(ParamLayout {
                outer: 1,
                dim: 1,
                inner: x_shape.iter().product(),
                kind: Kind::PerTensor,
            });
        }
        let axis = normalize_axis(p.axis, x_shape.len())?;
        let outer = x_shape[..axis].iter().product();
        let dim = x_shape[axis];
        let inner = x_shape[axis + 1..].iter().product();
        let kind = if p.block_size == 0 {
            if scale_shape.len() != 1 || n != dim {
                return Err(kernel_err(format!(
                    "per-axis scale of shape {scale_shape:?} does not match axis {axis} of shape {x_shape:?}"
                )));
            }
            Kind::PerAxis
        } else {
            let nb = dim.div_ceil(p.block_size);
            let mut want = x_shape.to_vec();
            want[axis] = nb;
            if scale_shape != want.as_slice() {
                return Err(kernel_err(format!(
                    "blocked scale of shape {scale_shape:?} does not match shape {x_shape:?} with block size {} on axis {axis}",
                    p.block_size
                )));
            }
            Kind::Blocked {
                size: p.block_size,
                nb,
            }
        };
        Ok(ParamLayout {
            outer,
            dim,
            inner,
            kind,
        })
    }

    /// Calls `f(element_index, param_index)` for every element, in order.
    fn for_each(&self, mut f: impl FnMut(usize, usize)) {
        let mut i = 0;
        for o in 0..self.outer {
            for a in 0..self.dim {
                let (base, step) = match self.kind {
                    Kind::PerTensor => (0, 0),
                    Kind::PerAxis => (a, 0),
                    Kind::Blocked { size, nb } => ((o * nb + a / size) * self.inner, 1),
                };
                for j in 0..self.inner {
                    f(i, base + j * step);
                    i += 1;
                }
            }
        }
    }
}

/// Values of a zero point (any integer type, packed or not), as f64.
fn zero_point_values(t: &Tensor) -> Result<Vec<f64>, RuntimeError> {
    if t.dtype().is_packed() {
        return packed::decode(t);
    }
    Ok(t.cast(DType::F64)?.into_vec::<f64>()?)
}

/// Integer range of a quantized type.
fn int_range(d: DType) -> Option<(f32, f32)> {
    Some(match d {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::U4 => (0.0, 15.0),
        DType::I4 => (-8.0, 7.0),
        DType::U2 => (0.0, 3.0),
        DType::I2 => (-2.0, 1.0),
        // int32 is a valid DequantizeLinear input only; as an output it is not a quant type.
        _ => return None,
    })
}

fn build_quantize(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(QuantizeKernel { p: params(node)? }))
}

struct QuantizeKernel {
    p: QParams,
}

/// The quantized values (before conversion to the output type) for an integer target.
fn quantize_ints(
    x: &[f32],
    scale: &[f32],
    zp: Option<&[f64]>,
    layout: &ParamLayout,
    (lo, hi): (f32, f32),
) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    layout.for_each(|i, k| {
        let s = scale.get(k).copied().unwrap_or(1.0);
        let z = zp.and_then(|z| z.get(k)).copied().unwrap_or(0.0) as f32;
        // NaN saturates like the reference's cast through int32 would not define; 0 is used.
        let q = (x.get(i).copied().unwrap_or(0.0) / s).round_ties_even() + z;
        out[i] = if q.is_nan() { 0.0 } else { q.clamp(lo, hi) };
    });
    out
}

fn typed<T: Scalar>(shape: Vec<usize>, v: &[f32]) -> Result<Tensor, RuntimeError> {
    Ok(Tensor::from_vec(
        shape,
        v.iter().map(|&f| T::from_f32(f)).collect::<Vec<T>>(),
    )?)
}

impl Kernel for QuantizeKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let scale = input(inputs, 1)?;
        let zp = optional_input(inputs, 2);
        let out_type = match (zp, self.p.output_dtype) {
            (Some(z), Some(o)) if z.dtype() != o => {
                return Err(kernel_err(format!(
                    "zero point type {} differs from output_dtype {o}",
                    z.dtype()
                )))
            }
            (Some(z), _) => z.dtype(),
            (None, Some(o)) => o,
            (None, None) => DType::U8,
        };
        if !(x.dtype().is_float() || x.dtype() == DType::I32) {
            return Err(unsupported(format!(
                "QuantizeLinear input of type {}",
                x.dtype()
            )));
        }
        let layout = ParamLayout::new(x.shape(), scale.shape(), &self.p)?;
        let xv = x.to_f32_vec()?;
        let sv = scale.to_f32_vec()?;
        let zv = zp.map(zero_point_values).transpose()?;
        if let Some(z) = &zv {
            if z.len() != sv.len() {
                return Err(kernel_err("zero point and scale have different sizes"));
            }
        }
        let shape = x.shape().to_vec();
        if let Some(range) = int_range(out_type) {
            let q = quantize_ints(&xv, &sv, zv.as_deref(), &layout, range);
            let out = match out_type {
                DType::U8 => typed::<u8>(shape, &q)?,
                DType::I8 => typed::<i8>(shape, &q)?,
                DType::U16 => typed::<u16>(shape, &q)?,
                DType::I16 => typed::<i16>(shape, &q)?,
                packed_type => {
                    let wide: Vec<f64> = q.iter().map(|&v| v as f64).collect();
                    packed::encode(shape, &wide, packed_type, true)?
                }
            };
            return Ok(vec![out]);
        }
        if packed::mini_float(out_type).is_some() {
            // Float8: x / scale converted directly (the zero point must be 0); float4 adds
            // the zero point as the reference does.
            let add_zp = out_type == DType::F4E2M1;
            let mut v = vec![0f64; xv.len()];
            layout.for_each(|i, k| {
                let s = sv.get(k).copied().unwrap_or(1.0);
                let mut q = xv.get(i).copied().unwrap_or(0.0) / s;
                if add_zp {
                    q += zv.as_ref().and_then(|z| z.get(k)).copied().unwrap_or(0.0) as f32;
                }
                v[i] = q as f64;
            });
            return Ok(vec![packed::encode(shape, &v, out_type, self.p.saturate)?]);
        }
        Err(unsupported(format!("QuantizeLinear to {out_type}")))
    }
}

fn build_dequantize(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(DequantizeKernel { p: params(node)? }))
}

struct DequantizeKernel {
    p: QParams,
}

/// `(x - zp) * scale` for every element, in f32.
fn dequantize_f32(x: &[f32], scale: &[f32], zp: Option<&[f64]>, layout: &ParamLayout) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    layout.for_each(|i, k| {
        let s = scale.get(k).copied().unwrap_or(1.0);
        let z = zp.and_then(|z| z.get(k)).copied().unwrap_or(0.0) as f32;
        out[i] = (x.get(i).copied().unwrap_or(0.0) - z) * s;
    });
    out
}

impl Kernel for DequantizeKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let scale = input(inputs, 1)?;
        let zp = optional_input(inputs, 2);
        let layout = ParamLayout::new(x.shape(), scale.shape(), &self.p)?;
        let xv: Vec<f32> = if x.dtype().is_packed() {
            packed::decode(x)?.into_iter().map(|v| v as f32).collect()
        } else if x.dtype().is_int() {
            x.to_f32_vec()?
        } else {
            return Err(unsupported(format!(
                "DequantizeLinear input of type {}",
                x.dtype()
            )));
        };
        let sv = scale.to_f32_vec()?;
        // Float zero points (float8 / float4 inputs) are ignored, as in the reference.
        let float_input = packed::mini_float(x.dtype()).is_some();
        let zv = match zp {
            Some(z) if !float_input => {
                if z.dtype() != x.dtype() {
                    return Err(kernel_err(format!(
                        "zero point type {} differs from input type {}",
                        z.dtype(),
                        x.dtype()
                    )));
                }
                let v = zero_point_values(z)?;
                if v.len() != sv.len() {
                    return Err(kernel_err("zero point and scale have different sizes"));
                }
                Some(v)
            }
            _ => None,
        };
        let y = dequantize_f32(&xv, &sv, zv.as_deref(), &layout);
        let out_type = self.p.output_dtype.unwrap_or(scale.dtype());
        let shape = x.shape().to_vec();
        let out = match out_type {
            DType::F32 => Tensor::from_vec(shape, y)?,
            DType::F16 => Tensor::from_vec(shape, y.iter().map(|&v| f16::from_f32(v)).collect())?,
            DType::BF16 => Tensor::from_vec(shape, y.iter().map(|&v| bf16::from_f32(v)).collect())?,
            DType::F64 => Tensor::from_vec(shape, y.iter().map(|&v| v as f64).collect())?,
            other => {
                return Err(unsupported(format!(
                    "DequantizeLinear output of type {other}"
                )))
            }
        };
        Ok(vec![out])
    }
}

fn build_dynamic(_node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(DynamicKernel))
}

/// `DynamicQuantizeLinear`: uint8 asymmetric quantization with the range taken from the
/// data (always including 0).
struct DynamicKernel;

impl Kernel for DynamicKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        if x.dtype() != DType::F32 {
            return Err(unsupported(format!(
                "DynamicQuantizeLinear input of type {}",
                x.dtype()
            )));
        }
        let v = x.as_slice::<f32>()?;
        let (mut lo, mut hi) = (0f32, 0f32);
        for &f in v {
            // NaN is skipped: comparisons with it are false.
            if f < lo {
                lo = f;
            }
            if f > hi {
                hi = f;
            }
        }
        let scale = if hi == lo { 1.0 } else { hi - lo } / 255.0;
        let zp = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even();
        let y: Vec<u8> = super::map_slice(v, |f: f32| {
            let q = (f / scale).round_ties_even() + zp;
            if q.is_nan() {
                0
            } else {
                q.clamp(0.0, 255.0) as u8
            }
        });
        Ok(vec![
            Tensor::from_vec(x.shape().to_vec(), y)?,
            Tensor::scalar(scale),
            Tensor::scalar(zp as u8),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(axis: i64, block_size: usize) -> QParams {
        QParams {
            axis,
            block_size,
            output_dtype: None,
            saturate: true,
        }
    }

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let l = ParamLayout::new(&[5], &[], &p(1, 0)).unwrap();
        let q = quantize_ints(
            &[0.5, 1.5, 2.5, 1000.0, -3.0],
            &[1.0],
            Some(&[1.0]),
            &l,
            (0.0, 255.0),
        );
        assert_eq!(q, vec![1.0, 3.0, 3.0, 255.0, 0.0]);
    }

    #[test]
    fn blocked_layout_indexes_blocks() {
        // x [2, 5], blocks of 2 along axis 1 -> scale [2, 3].
        let l = ParamLayout::new(&[2, 5], &[2, 3], &p(1, 2)).unwrap();
        let mut idx = Vec::new();
        l.for_each(|_, k| idx.push(k));
        assert_eq!(idx, vec![0, 0, 1, 1, 2, 3, 3, 4, 4, 5]);
        let axis0 = ParamLayout::new(&[4, 2], &[2, 2], &p(0, 2)).unwrap();
        let mut idx = Vec::new();
        axis0.for_each(|_, k| idx.push(k));
        assert_eq!(idx, vec![0, 1, 0, 1, 2, 3, 2, 3]);
    }
}
