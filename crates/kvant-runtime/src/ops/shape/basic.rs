//! Operators that only look at or change shapes, and small generators: Identity, Constant,
//! Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze, Dropout, ConstantOfShape, Range, EyeLike.

use super::data::{
    checked_size, dispatch_any, int_values, make, normalize_axes, to_usize, unsupported_dtype,
    view, Item,
};
use super::kernel;
use crate::ops::{attr_err, input, optional_input, BuildContext, Kernel};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::{AttrValue, Node};
use kvant_tensor::{DType, Scalar, Tensor, TensorData};

pub(super) fn build_identity(_: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(kernel(|inputs| Ok(vec![input(inputs, 0)?.clone()])))
}

/// The tensor a Constant node holds, from whichever `value*` attribute it has.
fn constant_value(node: &Node) -> Result<Tensor, RuntimeError> {
    let present: Vec<&str> = node
        .attributes
        .iter()
        .map(|a| a.name.as_str())
        .filter(|n| n.starts_with("value") || *n == "sparse_value")
        .collect();
    if present.len() != 1 {
        return Err(kernel_err(format!(
            "Constant needs exactly one value attribute, got {present:?}"
        )));
    }
    let name = present[0];
    let t = match node.attr(name) {
        Some(AttrValue::Tensor(init)) if name == "value" => init.tensor.clone(),
        Some(AttrValue::Float(v)) if name == "value_float" => Tensor::scalar(*v),
        Some(AttrValue::Floats(v)) if name == "value_floats" => {
            Tensor::from_vec(vec![v.len()], v.clone())?
        }
        Some(AttrValue::Int(v)) if name == "value_int" => Tensor::scalar(*v),
        Some(AttrValue::Ints(v)) if name == "value_ints" => {
            Tensor::from_vec(vec![v.len()], v.clone())?
        }
        Some(AttrValue::String(v)) if name == "value_string" => {
            Tensor::new(Vec::new(), TensorData::String(vec![v.clone()]))?
        }
        Some(AttrValue::Strings(v)) if name == "value_strings" => {
            Tensor::new(vec![v.len()], TensorData::String(v.clone()))?
        }
        Some(AttrValue::SparseTensor(_)) if name == "sparse_value" => {
            return Err(unsupported("Constant with a sparse_value"))
        }
        Some(other) => {
            return Err(kernel_err(format!(
                "Constant attribute '{name}' has unexpected type {}",
                other.type_name()
            )))
        }
        None => return Err(kernel_err("Constant has no value")),
    };
    Ok(t)
}

pub(super) fn build_constant(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let value = constant_value(node)?;
    Ok(kernel(move |_| Ok(vec![value.clone()])))
}

pub(super) fn build_shape(node: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let start = node.attr_int("start").map_err(attr_err)?.unwrap_or(0);
    let end = node.attr_int("end").map_err(attr_err)?;
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let r = x.rank() as i64;
        let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
        let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
        let dims: Vec<i64> = x
            .shape()
            .get(s..e.max(s))
            .unwrap_or(&[])
            .iter()
            .map(|&d| d as i64)
            .collect();
        Ok(vec![Tensor::from_vec(vec![dims.len()], dims)?])
    }))
}

pub(super) fn build_size(_: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(kernel(|inputs| {
        Ok(vec![Tensor::scalar(input(inputs, 0)?.len() as i64)])
    }))
}

/// The output shape of Reshape: `0` copies the input dimension (unless `allowzero`), `-1` is
/// inferred from the element count.
pub(super) fn reshape_target(
    input_shape: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, RuntimeError> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &v) in spec.iter().enumerate() {
        match v {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(kernel_err(format!("Reshape shape {spec:?} has several -1")));
                }
                out.push(1);
            }
            0 if !allowzero => out.push(*input_shape.get(i).ok_or_else(|| {
                kernel_err(format!(
                    "Reshape shape {spec:?} copies dimension {i} of a rank-{} input",
                    input_shape.len()
                ))
            })?),
            v => out.push(to_usize(v, "Reshape dimension")?),
        }
    }
    let total: usize = input_shape.iter().product();
    let known = checked_size(&out)?;
    if let Some(i) = infer {
        if total.checked_rem(known) != Some(0) {
            return Err(kernel_err(format!(
                "cannot reshape {input_shape:?} to {spec:?}"
            )));
        }
        out[i] = total / known;
    } else if known != total {
        return Err(kernel_err(format!(
            "cannot reshape {input_shape:?} ({total} elements) to {out:?}"
        )));
    }
    Ok(out)
}

pub(super) fn build_reshape(
    node: &Node,
    ctx: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let allowzero = node.attr_int("allowzero").map_err(attr_err)?.unwrap_or(0) != 0;
    // Before opset 5 the target shape was an attribute.
    let attr_shape = if ctx.opset < 5 {
        Some(
            node.attr_ints("shape")
                .map_err(attr_err)?
                .ok_or_else(|| kernel_err("Reshape-1 needs a 'shape' attribute"))?
                .to_vec(),
        )
    } else {
        None
    };
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let spec = match &attr_shape {
            Some(s) => s.clone(),
            None => int_values(input(inputs, 1)?, "Reshape shape")?,
        };
        let shape = reshape_target(x.shape(), &spec, allowzero)?;
        Ok(vec![x.clone().reshape(shape)?])
    }))
}

pub(super) fn build_flatten(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axis = node.attr_int("axis").map_err(attr_err)?.unwrap_or(1);
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let r = x.rank() as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if !(0..=r).contains(&a) {
            return Err(kernel_err(format!(
                "Flatten axis {axis} is out of range for rank {r}"
            )));
        }
        let (outer, inner) = x.shape().split_at(a as usize);
        let shape = vec![outer.iter().product(), inner.iter().product()];
        Ok(vec![x.clone().reshape(shape)?])
    }))
}

/// Axes from the `axes` attribute (old opsets) or from input 1 (opset 13 on).
#[derive(Clone)]
enum AxesSource {
    Attr(Option<Vec<i64>>),
    Input,
}

impl AxesSource {
    fn new(node: &Node, ctx: &BuildContext) -> Result<AxesSource, RuntimeError> {
        Ok(if ctx.opset < 13 {
            AxesSource::Attr(
                node.attr_ints("axes")
                    .map_err(attr_err)?
                    .map(<[i64]>::to_vec),
            )
        } else {
            AxesSource::Input
        })
    }

    fn get(&self, inputs: &[Option<&Tensor>]) -> Result<Option<Vec<i64>>, RuntimeError> {
        match self {
            AxesSource::Attr(a) => Ok(a.clone()),
            AxesSource::Input => optional_input(inputs, 1)
                .map(|t| int_values(t, "axes"))
                .transpose(),
        }
    }
}

pub(super) fn build_squeeze(
    node: &Node,
    ctx: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axes = AxesSource::new(node, ctx)?;
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let shape = x.shape();
        let out: Vec<usize> = match axes.get(inputs)? {
            None => shape.iter().copied().filter(|&d| d != 1).collect(),
            Some(a) => {
                let a = normalize_axes(&a, shape.len())?;
                if let Some(&bad) = a.iter().find(|&&i| shape[i] != 1) {
                    return Err(kernel_err(format!(
                        "cannot squeeze axis {bad} of shape {shape:?}: its size is not 1"
                    )));
                }
                shape
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !a.contains(i))
                    .map(|(_, &d)| d)
                    .collect()
            }
        };
        Ok(vec![x.clone().reshape(out)?])
    }))
}

pub(super) fn build_unsqueeze(
    node: &Node,
    ctx: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axes = AxesSource::new(node, ctx)?;
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let a = axes
            .get(inputs)?
            .ok_or_else(|| kernel_err("Unsqueeze needs axes"))?;
        let rank = x.rank() + a.len();
        let a = normalize_axes(&a, rank)?;
        let mut dims = x.shape().iter();
        let out: Vec<usize> = (0..rank)
            .map(|i| {
                if a.contains(&i) {
                    1
                } else {
                    dims.next().copied().unwrap_or(1)
                }
            })
            .collect();
        Ok(vec![x.clone().reshape(out)?])
    }))
}

pub(super) fn build_dropout(
    node: &Node,
    ctx: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let want_mask = node.outputs.get(1).is_some_and(|n| !n.is_empty());
    // The mask became bool in opset 10; before, it had the input's type.
    let bool_mask = ctx.opset >= 10;
    let inputs_carry_mode = ctx.opset >= 12;
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        if inputs_carry_mode {
            if let Some(t) = optional_input(inputs, 2) {
                let training = t.cast(DType::Bool)?.into_vec::<bool>()?;
                let ratio = match optional_input(inputs, 1) {
                    Some(r) => r.to_f32_vec()?.first().copied().unwrap_or(0.5),
                    None => 0.5,
                };
                if training.first().copied().unwrap_or(false) && ratio != 0.0 {
                    return Err(unsupported(
                        "Dropout in training mode (random masks are not reproducible)",
                    ));
                }
            }
        }
        let mut out = vec![x.clone()];
        if want_mask {
            let ones = Tensor::from_vec(x.shape().to_vec(), vec![true; x.len()])?;
            out.push(if bool_mask {
                ones
            } else {
                ones.cast(x.dtype())?
            });
        }
        Ok(out)
    }))
}

pub(super) fn build_constant_of_shape(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let value = match node.attr_tensor("value").map_err(attr_err)? {
        Some(t) if t.len() == 1 => t.clone(),
        Some(t) => {
            return Err(kernel_err(format!(
                "ConstantOfShape value must hold one element, has {}",
                t.len()
            )))
        }
        None => Tensor::scalar(0f32),
    };
    Ok(kernel(move |inputs| {
        let shape = int_values(input(inputs, 0)?, "ConstantOfShape shape")?
            .into_iter()
            .map(|d| to_usize(d, "ConstantOfShape dimension"))
            .collect::<Result<Vec<_>, _>>()?;
        let n = checked_size(&shape)?;
        let dtype = value.dtype();
        let out = dispatch_any!(dtype, T => {
            let v = view::<T>(&value)?;
            make(shape, filled(&v[0], n), dtype)?
        }, _ => return Err(unsupported_dtype("ConstantOfShape", dtype)));
        Ok(vec![out])
    }))
}

/// `n` copies of `v`.
fn filled<T: Item>(v: &T, n: usize) -> Vec<T> {
    vec![v.clone(); n]
}

/// Largest output Range will make (guards against absurd limits).
const RANGE_MAX: usize = 1 << 31;

pub(super) fn build_range(_: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(kernel(|inputs| {
        let (s, l, d) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let dtype = s.dtype();
        if l.dtype() != dtype || d.dtype() != dtype || s.len() != 1 || l.len() != 1 || d.len() != 1
        {
            return Err(kernel_err(
                "Range needs three one-element tensors of one type",
            ));
        }
        let out = kvant_tensor::dispatch_numeric!(dtype, T => {
            let (s, l, d) = (s.as_slice::<T>()?[0], l.as_slice::<T>()?[0], d.as_slice::<T>()?[0]);
            let values: Vec<T> = if T::IS_FLOAT {
                // numpy's arange: length and values computed in double precision.
                let (s, l, d) = (s.to_f64(), l.to_f64(), d.to_f64());
                if d == 0.0 || !d.is_finite() || !s.is_finite() || !l.is_finite() {
                    return Err(kernel_err("Range needs finite bounds and a non-zero delta"));
                }
                let n = ((l - s) / d).ceil().max(0.0);
                if n > RANGE_MAX as f64 {
                    return Err(kernel_err("Range output is too large"));
                }
                (0..n as usize).map(|i| T::from_f64(s + i as f64 * d)).collect()
            } else {
                let (s, l, d) = (s.to_i64() as i128, l.to_i64() as i128, d.to_i64() as i128);
                if d == 0 {
                    return Err(kernel_err("Range delta must not be zero"));
                }
                let span = l - s;
                // Ceiling division for either sign of delta.
                let n = (span / d + i128::from(span % d != 0 && (span < 0) == (d < 0))).max(0);
                if n > RANGE_MAX as i128 {
                    return Err(kernel_err("Range output is too large"));
                }
                (0..n).map(|i| T::from_i64((s + i * d) as i64)).collect()
            };
            make(vec![values.len()], values, dtype)?
        }, _ => return Err(unsupported(format!("Range of {dtype}"))));
        Ok(vec![out])
    }))
}

pub(super) fn build_eye_like(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let k = node.attr_int("k").map_err(attr_err)?.unwrap_or(0);
    let dtype = node
        .attr_int("dtype")
        .map_err(attr_err)?
        .map(|c| {
            i32::try_from(c)
                .ok()
                .and_then(DType::from_onnx_code)
                .ok_or_else(|| kernel_err(format!("EyeLike dtype {c} is unknown")))
        })
        .transpose()?;
    Ok(kernel(move |inputs| {
        let x = input(inputs, 0)?;
        let &[rows, cols] = x.shape() else {
            return Err(kernel_err(format!(
                "EyeLike needs a 2-D input, got {:?}",
                x.shape()
            )));
        };
        let dtype = dtype.unwrap_or(x.dtype());
        let out = kvant_tensor::dispatch_typed!(dtype, T => {
            let mut v = vec![T::zero(); rows * cols];
            for i in 0..rows {
                let j = i as i64 + k;
                if (0..cols as i64).contains(&j) {
                    v[i * cols + j as usize] = T::one();
                }
            }
            make(vec![rows, cols], v, dtype)?
        }, _ => return Err(unsupported(format!("EyeLike of {dtype}"))));
        Ok(vec![out])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_zero_and_infer() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_target(&[0, 3], &[3, 0], true).unwrap(), vec![3, 0]);
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[4, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[0, 0, 0], false).is_err());
    }
}
