//! `Cast` and `CastLike`, including to and from strings and the packed low-precision types.

use super::packed;
use crate::ops::{attr_err, input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{dispatch_numeric, DType, Element, Scalar, Tensor, TensorData};

/// Registers `Cast` and `CastLike`.
pub(super) fn register(r: &mut Registry) {
    r.add("Cast", build_cast);
    r.add("CastLike", build_cast_like);
}

/// Options shared by `Cast` and `CastLike`.
#[derive(Debug, Clone, Copy)]
struct CastOptions {
    /// Float8 conversions clamp out-of-range values to the largest finite value.
    saturate: bool,
}

fn options(node: &Node) -> Result<CastOptions, RuntimeError> {
    let saturate = node.attr_int("saturate").map_err(attr_err)?.unwrap_or(1) != 0;
    Ok(CastOptions { saturate })
}

fn build_cast(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let code = node
        .attr_int("to")
        .map_err(attr_err)?
        .ok_or_else(|| kernel_err("Cast: attribute 'to' is required"))?;
    let to = i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx_code)
        .ok_or_else(|| kernel_err(format!("Cast: unknown data type {code}")))?;
    Ok(Box::new(CastKernel {
        to: Some(to),
        opts: options(node)?,
    }))
}

fn build_cast_like(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(CastKernel {
        to: None,
        opts: options(node)?,
    }))
}

/// Casts input 0 to `to`, or (`CastLike`) to the type of input 1.
struct CastKernel {
    to: Option<DType>,
    opts: CastOptions,
}

impl Kernel for CastKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let to = match self.to {
            Some(t) => t,
            None => input(inputs, 1)?.dtype(),
        };
        Ok(vec![cast(x, to, self.opts)?])
    }
}

/// Converts a tensor to another element type with ONNX `Cast` semantics.
fn cast(x: &Tensor, to: DType, opts: CastOptions) -> Result<Tensor, RuntimeError> {
    let from = x.dtype();
    if from == to {
        return Ok(x.clone());
    }
    match (from, to) {
        (DType::String, _) => from_strings(x, to),
        (_, DType::String) => to_strings(x),
        _ if from.is_packed() || to.is_packed() => cast_packed(x, to, opts),
        _ => Ok(x.cast(to)?),
    }
}

/// Casts from or to a packed type through f64 (exact for every value these types hold).
fn cast_packed(x: &Tensor, to: DType, opts: CastOptions) -> Result<Tensor, RuntimeError> {
    let values: Vec<f64> = if x.dtype().is_packed() {
        packed::decode(x)?
    } else if packed::packed_int(to).is_some() && !x.dtype().is_float() {
        // Integer sources keep their exact value (f64 would round large i64 / u64).
        x.to_i64_vec()?.into_iter().map(|v| v as f64).collect()
    } else {
        x.cast(DType::F64)?.into_vec::<f64>()?
    };
    if to.is_packed() {
        // Floats truncate toward zero before wrapping into 2 / 4 bits, like any int cast.
        let values: Vec<f64> = if packed::packed_int(to).is_some() {
            values
                .iter()
                .map(|&v| if v.is_finite() { v.trunc() } else { 0.0 })
                .collect()
        } else {
            values
        };
        return packed::encode(x.shape().to_vec(), &values, to, opts.saturate);
    }
    Ok(Tensor::from_vec(x.shape().to_vec(), values)?.cast(to)?)
}

/// Formats numbers the way ONNX's reference does for common values.
fn to_strings(x: &Tensor) -> Result<Tensor, RuntimeError> {
    let strings: Vec<Vec<u8>> = match x.data() {
        TensorData::Bool(v) => v
            .iter()
            .map(|&b| {
                if b {
                    b"True".to_vec()
                } else {
                    b"False".to_vec()
                }
            })
            .collect(),
        _ => dispatch_numeric!(x.dtype(), T => {
            x.as_slice::<T>()?.iter().map(|&v| format_number(v).into_bytes()).collect()
        }, _ => return Err(unsupported(format!("Cast from {} to string", x.dtype())))),
    };
    Ok(Tensor::new(
        x.shape().to_vec(),
        TensorData::String(strings),
    )?)
}

fn format_number<T: Scalar>(v: T) -> String {
    if !T::IS_FLOAT {
        return if T::DTYPE == DType::U64 {
            format!("{}", v.to_f64() as u64)
        } else {
            format!("{}", v.to_i64())
        };
    }
    let f = v.to_f64();
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "INF" } else { "-INF" }.into()
    } else if T::DTYPE == DType::F32 {
        // Shortest representation of the f32 value, not of its f64 widening.
        format!("{}", v.to_f32())
    } else {
        format!("{f}")
    }
}

/// Parses strings as numbers ("NaN", "INF", "-INF" and "inf" spellings are accepted).
fn from_strings(x: &Tensor, to: DType) -> Result<Tensor, RuntimeError> {
    let TensorData::String(v) = x.data() else {
        return Err(kernel_err("expected a string tensor"));
    };
    let parse = |s: &Vec<u8>| -> Result<f64, RuntimeError> {
        let text = String::from_utf8_lossy(s);
        let t = text.trim();
        let lower = t.to_ascii_lowercase();
        match lower.as_str() {
            "nan" | "+nan" | "-nan" => Ok(f64::NAN),
            "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
            "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
            _ => t
                .parse::<f64>()
                .map_err(|_| kernel_err(format!("Cast: cannot parse '{t}' as a number"))),
        }
    };
    let data = match to {
        DType::Bool => TensorData::Bool(
            v.iter()
                .map(|s| parse(s).map(|f| f != 0.0))
                .collect::<Result<_, _>>()?,
        ),
        DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U64 | DType::U32 => {
            // Parse integers exactly when they are written as integers.
            dispatch_numeric!(to, T => T::into_data(v.iter().map(|s| {
                let text = String::from_utf8_lossy(s);
                match text.trim().parse::<i128>() {
                    Ok(i) => Ok(T::from_i64(i as i64)),
                    Err(_) => parse(s).map(T::from_f64),
                }
            }).collect::<Result<Vec<T>, RuntimeError>>()?), _ => return Err(unsupported(format!("Cast from string to {to}"))))
        }
        _ => dispatch_numeric!(to, T => {
            T::into_data(v.iter().map(|s| parse(s).map(T::from_f64)).collect::<Result<Vec<T>, _>>()?)
        }, _ => return Err(unsupported(format!("Cast from string to {to}")))),
    };
    Ok(Tensor::new(x.shape().to_vec(), data)?)
}
