//! One-input element-wise operators: math functions, activations, `Clip`, `Shrink`, the
//! logical / bitwise `Not`s and the NaN / Inf tests.

use super::num::{Arith, Bits, MathFn, Real};
use super::{map_chunks, map_slice};
use crate::ops::{attr_err, input, optional_input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{bf16, f16, Element, Scalar, Tensor, TensorData};

/// Registers the unary operators.
pub(super) fn register(r: &mut Registry) {
    for op in [
        "Exp",
        "Log",
        "Sqrt",
        "Reciprocal",
        "Floor",
        "Ceil",
        "Round",
        "Sin",
        "Cos",
        "Tan",
        "Asin",
        "Acos",
        "Atan",
        "Sinh",
        "Cosh",
        "Asinh",
        "Acosh",
        "Atanh",
        "Erf",
        "Sigmoid",
        "Tanh",
        "LeakyRelu",
        "Elu",
        "Selu",
        "Celu",
        "HardSigmoid",
        "HardSwish",
        "Softplus",
        "Softsign",
        "Gelu",
        "Mish",
        "ThresholdedRelu",
        "Swish",
    ] {
        r.add(op, build_float);
    }
    for op in ["Abs", "Neg", "Sign", "Relu"] {
        r.add(op, build_numeric);
    }
    r.add("Clip", build_clip);
    r.add("Shrink", build_shrink);
    r.add("Not", build_not);
    r.add("BitwiseNot", build_bitwise_not);
    r.add("IsNaN", build_isnan);
    r.add("IsInf", build_isinf);
}

/// An f32 attribute with a default.
fn float_attr(node: &Node, name: &str, default: f32) -> Result<f64, RuntimeError> {
    Ok(node.attr_float(name).map_err(attr_err)?.unwrap_or(default) as f64)
}

/// Operators defined on floating-point inputs only.
#[derive(Debug, Clone, Copy)]
enum FloatOp {
    Exp,
    Log,
    Sqrt,
    Reciprocal,
    Round,
    Math(MathFn),
    Erf,
    Sigmoid,
    Tanh,
    LeakyRelu(f64),
    Elu(f64),
    Selu { alpha: f64, gamma: f64 },
    Celu(f64),
    HardSigmoid { alpha: f64, beta: f64 },
    HardSwish,
    Softplus,
    Softsign,
    Gelu,
    GeluTanh,
    Mish,
    ThresholdedRelu(f64),
    Swish(f64),
}

fn build_float(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let op = match node.op_type.as_str() {
        "Exp" => FloatOp::Exp,
        "Log" => FloatOp::Log,
        "Sqrt" => FloatOp::Sqrt,
        "Reciprocal" => FloatOp::Reciprocal,
        "Floor" => FloatOp::Math(MathFn::Floor),
        "Ceil" => FloatOp::Math(MathFn::Ceil),
        "Round" => FloatOp::Round,
        "Sin" => FloatOp::Math(MathFn::Sin),
        "Cos" => FloatOp::Math(MathFn::Cos),
        "Tan" => FloatOp::Math(MathFn::Tan),
        "Asin" => FloatOp::Math(MathFn::Asin),
        "Acos" => FloatOp::Math(MathFn::Acos),
        "Atan" => FloatOp::Math(MathFn::Atan),
        "Sinh" => FloatOp::Math(MathFn::Sinh),
        "Cosh" => FloatOp::Math(MathFn::Cosh),
        "Asinh" => FloatOp::Math(MathFn::Asinh),
        "Acosh" => FloatOp::Math(MathFn::Acosh),
        "Atanh" => FloatOp::Math(MathFn::Atanh),
        "Erf" => FloatOp::Erf,
        "Sigmoid" => FloatOp::Sigmoid,
        "Tanh" => FloatOp::Tanh,
        "LeakyRelu" => FloatOp::LeakyRelu(float_attr(node, "alpha", 0.01)?),
        "Elu" => FloatOp::Elu(float_attr(node, "alpha", 1.0)?),
        "Selu" => FloatOp::Selu {
            alpha: float_attr(node, "alpha", 1.673_263_2)?,
            gamma: float_attr(node, "gamma", 1.050_701)?,
        },
        "Celu" => {
            let alpha = float_attr(node, "alpha", 1.0)?;
            if alpha == 0.0 {
                return Err(kernel_err("Celu: alpha must not be 0"));
            }
            FloatOp::Celu(alpha)
        }
        "HardSigmoid" => FloatOp::HardSigmoid {
            alpha: float_attr(node, "alpha", 0.2)?,
            beta: float_attr(node, "beta", 0.5)?,
        },
        "HardSwish" => FloatOp::HardSwish,
        "Softplus" => FloatOp::Softplus,
        "Softsign" => FloatOp::Softsign,
        "Gelu" => match node
            .attr_string("approximate")
            .map_err(attr_err)?
            .as_deref()
        {
            None | Some("none") => FloatOp::Gelu,
            Some("tanh") => FloatOp::GeluTanh,
            Some(other) => {
                return Err(kernel_err(format!(
                    "Gelu: approximate must be 'none' or 'tanh', not '{other}'"
                )))
            }
        },
        "Mish" => FloatOp::Mish,
        "ThresholdedRelu" => FloatOp::ThresholdedRelu(float_attr(node, "alpha", 1.0)?),
        "Swish" => FloatOp::Swish(float_attr(node, "alpha", 1.0)?),
        other => return Err(kernel_err(format!("no float kernel for {other}"))),
    };
    Ok(Box::new(FloatKernel { op }))
}

/// Logistic function, written so that neither branch overflows.
#[inline]
fn sigmoid<F: Real>(x: F) -> F {
    let one = F::c(1.0);
    if x >= F::default() {
        one / (one + (-x).exp())
    } else {
        let e = x.exp();
        e / (one + e)
    }
}

/// ln(1 + e^x) without overflow for large x.
#[inline]
fn softplus<F: Real>(x: F) -> F {
    if x > F::default() {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

/// Applies a float operator to a chunk. The `match` is outside the loops so that each loop
/// body is a single inlined expression.
fn apply_float<F: Real>(op: FloatOp, s: &[F], d: &mut [F]) {
    macro_rules! each {
        ($x:ident => $e:expr) => {
            for (o, &$x) in d.iter_mut().zip(s) {
                *o = $e;
            }
        };
    }
    let zero = F::default();
    let one = F::c(1.0);
    match op {
        FloatOp::Exp => each!(x => x.exp()),
        FloatOp::Log => each!(x => x.ln()),
        FloatOp::Sqrt => each!(x => x.sqrt()),
        FloatOp::Reciprocal => each!(x => one / x),
        FloatOp::Round => each!(x => x.round_even()),
        FloatOp::Math(f) => each!(x => x.math(f)),
        FloatOp::Erf => each!(x => x.erf()),
        FloatOp::Sigmoid => each!(x => sigmoid(x)),
        FloatOp::Tanh => each!(x => x.tanh()),
        FloatOp::LeakyRelu(alpha) => {
            let a = F::c(alpha);
            each!(x => if x < zero { a * x } else { x })
        }
        FloatOp::Elu(alpha) => {
            let a = F::c(alpha);
            each!(x => if x < zero { a * x.exp_m1() } else { x })
        }
        FloatOp::Selu { alpha, gamma } => {
            let (a, g) = (F::c(alpha), F::c(gamma));
            each!(x => if x <= zero { g * (a * x.exp() - a) } else { g * x })
        }
        FloatOp::Celu(alpha) => {
            let a = F::c(alpha);
            each!(x => if x < zero { a * (x / a).exp_m1() } else { x })
        }
        FloatOp::HardSigmoid { alpha, beta } => {
            let (a, b) = (F::c(alpha), F::c(beta));
            each!(x => clamp01(a * x + b))
        }
        FloatOp::HardSwish => {
            let (a, b) = (F::c(1.0 / 6.0), F::c(0.5));
            each!(x => x * clamp01(a * x + b))
        }
        FloatOp::Softplus => each!(x => softplus(x)),
        FloatOp::Softsign => each!(x => x / (one + x.abs())),
        FloatOp::Gelu => {
            let (half, inv_sqrt2) = (F::c(0.5), F::c(std::f64::consts::FRAC_1_SQRT_2));
            each!(x => half * x * (one + (x * inv_sqrt2).erf()))
        }
        FloatOp::GeluTanh => {
            let half = F::c(0.5);
            let k = F::c((2.0 / std::f64::consts::PI).sqrt());
            let c = F::c(0.044_715);
            each!(x => half * x * (one + (k * (x + c * x * x * x)).tanh()))
        }
        FloatOp::Mish => each!(x => x * softplus(x).tanh()),
        FloatOp::ThresholdedRelu(alpha) => {
            let a = F::c(alpha);
            each!(x => if x > a { x } else { zero })
        }
        FloatOp::Swish(alpha) => {
            let a = F::c(alpha);
            each!(x => x * sigmoid(a * x))
        }
    }
}

/// max(0, min(1, v)), keeping NaN.
#[inline]
fn clamp01<F: Real>(v: F) -> F {
    let one = F::c(1.0);
    let v = if v < F::default() { F::default() } else { v };
    if v > one {
        one
    } else {
        v
    }
}

/// Runs a float operator on f16 / bf16 data through f32, chunk by chunk.
fn apply_half<H: Element>(op: FloatOp, src: &[H], to: fn(H) -> f32, from: fn(f32) -> H) -> Vec<H> {
    map_chunks(src, |s, d| {
        let wide: Vec<f32> = s.iter().map(|&v| to(v)).collect();
        let mut out = vec![0f32; wide.len()];
        apply_float(op, &wide, &mut out);
        for (o, v) in d.iter_mut().zip(out) {
            *o = from(v);
        }
    })
}

struct FloatKernel {
    op: FloatOp,
}

impl Kernel for FloatKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let op = self.op;
        let data = match x.data() {
            TensorData::F32(v) => TensorData::F32(map_chunks(v, |s, d| apply_float(op, s, d))),
            TensorData::F64(v) => TensorData::F64(map_chunks(v, |s, d| apply_float(op, s, d))),
            TensorData::F16(v) => TensorData::F16(apply_half(op, v, f16::to_f32, f16::from_f32)),
            TensorData::BF16(v) => {
                TensorData::BF16(apply_half(op, v, bf16::to_f32, bf16::from_f32))
            }
            other => {
                return Err(unsupported(format!(
                    "input of type {} (float types only)",
                    other.dtype()
                )))
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// Operators on every numeric type.
#[derive(Debug, Clone, Copy)]
enum NumericOp {
    Abs,
    Neg,
    Sign,
    Relu,
}

fn build_numeric(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let op = match node.op_type.as_str() {
        "Abs" => NumericOp::Abs,
        "Neg" => NumericOp::Neg,
        "Sign" => NumericOp::Sign,
        "Relu" => NumericOp::Relu,
        other => return Err(kernel_err(format!("no numeric kernel for {other}"))),
    };
    Ok(Box::new(NumericKernel { op }))
}

struct NumericKernel {
    op: NumericOp,
}

fn apply_numeric<T: Arith>(op: NumericOp, v: &[T]) -> Vec<T> {
    let zero = T::zero();
    match op {
        NumericOp::Abs => map_slice(v, T::op_abs),
        NumericOp::Neg => map_slice(v, T::op_neg),
        NumericOp::Sign => map_slice(v, T::op_sign),
        // `x < 0` is false for NaN, which therefore passes through (like numpy's maximum).
        NumericOp::Relu => map_slice(v, |x| if x < zero { zero } else { x }),
    }
}

impl Kernel for NumericKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let data = kvant_tensor::dispatch_numeric!(x.dtype(), T => {
            T::into_data(apply_numeric(self.op, x.as_slice::<T>()?))
        }, _ => return Err(unsupported(format!("input of type {}", x.dtype()))));
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

/// `Clip`: bounds from attributes (opset < 11) or from optional scalar inputs.
fn build_clip(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let attrs = if ctx.opset < 11 {
        Some((
            node.attr_float("min")
                .map_err(attr_err)?
                .unwrap_or(f32::MIN),
            node.attr_float("max")
                .map_err(attr_err)?
                .unwrap_or(f32::MAX),
        ))
    } else {
        None
    };
    Ok(Box::new(ClipKernel { attrs }))
}

struct ClipKernel {
    attrs: Option<(f32, f32)>,
}

/// The single value of a bound input.
fn bound<T: Scalar>(t: Option<&Tensor>, which: &str) -> Result<Option<T>, RuntimeError> {
    let Some(t) = t else { return Ok(None) };
    let v = t.as_slice::<T>()?;
    match v {
        [x] => Ok(Some(*x)),
        _ => Err(kernel_err(format!(
            "Clip: {which} must be a single value, got shape {:?}",
            t.shape()
        ))),
    }
}

fn clip<T: Scalar>(v: &[T], lo: Option<T>, hi: Option<T>) -> Vec<T> {
    // Lower bound first, then upper: when min > max every value becomes max (ONNX spec).
    // Comparisons are false for NaN, so NaN inputs stay NaN.
    match (lo, hi) {
        (Some(l), Some(h)) => map_slice(v, |x| {
            let y = if x < l { l } else { x };
            if y > h {
                h
            } else {
                y
            }
        }),
        (Some(l), None) => map_slice(v, |x| if x < l { l } else { x }),
        (None, Some(h)) => map_slice(v, |x| if x > h { h } else { x }),
        (None, None) => v.to_vec(),
    }
}

impl Kernel for ClipKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let data = kvant_tensor::dispatch_numeric!(x.dtype(), T => {
            let (lo, hi) = match self.attrs {
                Some((l, h)) => (Some(T::from_f32(l)), Some(T::from_f32(h))),
                None => (
                    bound::<T>(optional_input(inputs, 1), "min")?,
                    bound::<T>(optional_input(inputs, 2), "max")?,
                ),
            };
            T::into_data(clip(x.as_slice::<T>()?, lo, hi))
        }, _ => return Err(unsupported(format!("input of type {}", x.dtype()))));
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

fn build_shrink(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(ShrinkKernel {
        lambd: float_attr(node, "lambd", 0.5)?,
        bias: float_attr(node, "bias", 0.0)?,
    }))
}

struct ShrinkKernel {
    lambd: f64,
    bias: f64,
}

impl Kernel for ShrinkKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let (l, b) = (self.lambd, self.bias);
        // Computed in f64 and converted back, as the reference does for integer inputs.
        let data = kvant_tensor::dispatch_numeric!(x.dtype(), T => {
            T::into_data(map_slice(x.as_slice::<T>()?, |v: T| {
                let f = v.to_f64();
                let r = if f < -l { f + b } else if f > l { f - b } else { 0.0 };
                T::from_f64(r)
            }))
        }, _ => return Err(unsupported(format!("input of type {}", x.dtype()))));
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

fn build_not(_node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(NotKernel))
}

struct NotKernel;

impl Kernel for NotKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let v = x.as_slice::<bool>()?;
        Ok(vec![Tensor::from_vec(
            x.shape().to_vec(),
            map_slice(v, |b: bool| !b),
        )?])
    }
}

fn build_bitwise_not(_node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(BitwiseNotKernel))
}

struct BitwiseNotKernel;

fn bitwise_not<T: Bits>(v: &[T]) -> TensorData {
    T::into_data(map_slice(v, T::op_not))
}

impl Kernel for BitwiseNotKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let data = match x.data() {
            TensorData::I8(v) => bitwise_not(v),
            TensorData::U8(v) => bitwise_not(v),
            TensorData::I16(v) => bitwise_not(v),
            TensorData::U16(v) => bitwise_not(v),
            TensorData::I32(v) => bitwise_not(v),
            TensorData::U32(v) => bitwise_not(v),
            TensorData::I64(v) => bitwise_not(v),
            TensorData::U64(v) => bitwise_not(v),
            other => {
                return Err(unsupported(format!(
                    "input of type {} (integer types only)",
                    other.dtype()
                )))
            }
        };
        Ok(vec![Tensor::new(x.shape().to_vec(), data)?])
    }
}

fn build_isnan(_node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(FloatTestKernel {
        test: FloatTest::Nan,
    }))
}

fn build_isinf(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let neg = node
        .attr_int("detect_negative")
        .map_err(attr_err)?
        .unwrap_or(1)
        != 0;
    let pos = node
        .attr_int("detect_positive")
        .map_err(attr_err)?
        .unwrap_or(1)
        != 0;
    Ok(Box::new(FloatTestKernel {
        test: FloatTest::Inf { neg, pos },
    }))
}

#[derive(Debug, Clone, Copy)]
enum FloatTest {
    Nan,
    Inf { neg: bool, pos: bool },
}

struct FloatTestKernel {
    test: FloatTest,
}

impl Kernel for FloatTestKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        if !x.dtype().is_float() {
            return Err(unsupported(format!(
                "input of type {} (float types only)",
                x.dtype()
            )));
        }
        let test = self.test;
        let check = move |f: f64| match test {
            FloatTest::Nan => f.is_nan(),
            FloatTest::Inf { neg, pos } => {
                (pos && f == f64::INFINITY) || (neg && f == f64::NEG_INFINITY)
            }
        };
        let out: Vec<bool> = match x.data() {
            TensorData::F32(v) => map_slice(v, |f: f32| check(f as f64)),
            _ => kvant_tensor::dispatch_numeric!(x.dtype(), T => {
                map_slice(x.as_slice::<T>()?, |f: T| check(f.to_f64()))
            }, _ => return Err(unsupported(format!("input of type {}", x.dtype())))),
        };
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), out)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_f32(op: FloatOp, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        apply_float(op, x, &mut out);
        out
    }

    #[test]
    fn activations_match_formulas() {
        let x = [-2.0f32, -0.5, 0.0, 0.5, 2.0];
        let s = run_f32(FloatOp::Sigmoid, &x);
        for (v, &xi) in s.iter().zip(&x) {
            assert!((v - 1.0 / (1.0 + (-xi).exp())).abs() < 1e-7);
        }
        assert_eq!(
            run_f32(FloatOp::Sigmoid, &[-1000.0, 1000.0]),
            vec![0.0, 1.0]
        );
        assert_eq!(run_f32(FloatOp::Softplus, &[1000.0]), vec![1000.0]);
        let hs = run_f32(FloatOp::HardSwish, &[-4.0, 0.0, 1.0, 4.0]);
        assert_eq!(hs, vec![0.0, 0.0, 1.0 * (1.0 / 6.0 + 0.5), 4.0]);
        let g = run_f32(FloatOp::Gelu, &[1.0]);
        assert!((g[0] - 0.841_344_7).abs() < 1e-6);
        assert_eq!(
            run_f32(FloatOp::Round, &[0.5, 1.5, 2.5, -0.5]),
            vec![0.0, 2.0, 2.0, -0.0]
        );
    }

    #[test]
    fn clip_min_above_max_gives_max() {
        assert_eq!(
            clip(&[1.0f32, 5.0, -3.0], Some(2.0), Some(1.0)),
            vec![1.0, 1.0, 1.0]
        );
        assert!(clip(&[f32::NAN], Some(0.0), Some(1.0))[0].is_nan());
        assert_eq!(clip(&[-5i8, 5], Some(-1), None), vec![-1, 5]);
    }
}
