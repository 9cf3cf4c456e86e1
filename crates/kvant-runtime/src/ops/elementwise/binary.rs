//! Operators with two or more broadcast inputs: arithmetic, `Pow`, `Mod`, `PRelu`, the variadic
//! `Max` / `Min` / `Sum` / `Mean`, comparisons, logic, bit operations and `Where`.

use super::num::{Arith, Bits};
use super::{binary, Layout};
use crate::ops::{attr_err, input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{dispatch_numeric, dispatch_typed, DType, Element, Scalar, Tensor, TensorData};

/// Registers the broadcasting operators.
pub(super) fn register(r: &mut Registry) {
    for op in ["Add", "Sub", "Mul", "Div", "Mod", "PRelu"] {
        r.add(op, build_arith);
    }
    for op in ["Max", "Min", "Sum", "Mean"] {
        r.add(op, build_variadic);
    }
    r.add("Pow", build_pow);
    for op in ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"] {
        r.add(op, build_compare);
    }
    for op in ["And", "Or", "Xor"] {
        r.add(op, build_logic);
    }
    for op in ["BitShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor"] {
        r.add(op, build_bits);
    }
    r.add("Where", build_where);
}

/// Opset < 7 broadcasting: with `broadcast=1`, B's shape is matched against A's starting at
/// `axis` (default: trailing alignment, as numpy). Returns the shape to read B with.
#[derive(Debug, Clone, Copy)]
struct Legacy {
    axis: Option<i64>,
}

fn legacy(node: &Node, ctx: &BuildContext) -> Result<Option<Legacy>, RuntimeError> {
    if ctx.opset >= 7 {
        return Ok(None);
    }
    let broadcast = node.attr_int("broadcast").map_err(attr_err)?.unwrap_or(0);
    if broadcast == 0 {
        return Ok(None);
    }
    Ok(Some(Legacy {
        axis: node.attr_int("axis").map_err(attr_err)?,
    }))
}

/// B's shape as numpy broadcasting should see it.
fn b_shape(legacy: Option<Legacy>, a: &[usize], b: &[usize]) -> Result<Vec<usize>, RuntimeError> {
    let Some(Legacy { axis: Some(axis) }) = legacy else {
        return Ok(b.to_vec());
    };
    let axis = crate::ops::normalize_axis(axis, a.len())?;
    if axis + b.len() > a.len() {
        return Err(kernel_err(format!(
            "legacy broadcast of shape {b:?} at axis {axis} does not fit shape {a:?}"
        )));
    }
    let mut shape = b.to_vec();
    shape.resize(a.len() - axis, 1);
    Ok(shape)
}

/// Both inputs, with B's shape adjusted for legacy broadcasting.
fn two_inputs<'a>(
    inputs: &[Option<&'a Tensor>],
    legacy_bcast: Option<Legacy>,
) -> Result<(&'a Tensor, &'a Tensor, Vec<usize>), RuntimeError> {
    let a = input(inputs, 0)?;
    let b = input(inputs, 1)?;
    let bs = b_shape(legacy_bcast, a.shape(), b.shape())?;
    Ok((a, b, bs))
}

fn same_types(a: &Tensor, b: &Tensor) -> Result<(), RuntimeError> {
    if a.dtype() != b.dtype() {
        return Err(kernel_err(format!(
            "inputs have different types {} and {}",
            a.dtype(),
            b.dtype()
        )));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Fmod,
    Max,
    Min,
    PRelu,
}

fn build_arith(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let op = match node.op_type.as_str() {
        "Add" => ArithOp::Add,
        "Sub" => ArithOp::Sub,
        "Mul" => ArithOp::Mul,
        "Div" => ArithOp::Div,
        "Mod" => {
            if node.attr_int("fmod").map_err(attr_err)?.unwrap_or(0) != 0 {
                ArithOp::Fmod
            } else {
                ArithOp::Mod
            }
        }
        "PRelu" => ArithOp::PRelu,
        other => return Err(kernel_err(format!("no arithmetic kernel for {other}"))),
    };
    Ok(Box::new(ArithKernel {
        op,
        legacy: legacy(node, ctx)?,
        channel_slope: matches!(op, ArithOp::PRelu) && ctx.opset < 7,
    }))
}

struct ArithKernel {
    op: ArithOp,
    legacy: Option<Legacy>,
    /// PRelu before opset 7: a 1-D slope holds one value per channel (axis 1).
    channel_slope: bool,
}

type Shaped<T> = (Vec<usize>, Vec<T>);

fn arith<T: Arith>(
    op: ArithOp,
    a: &[T],
    ash: &[usize],
    b: &[T],
    bsh: &[usize],
) -> Result<Shaped<T>, RuntimeError> {
    match op {
        ArithOp::Add => binary(a, ash, b, bsh, T::op_add),
        ArithOp::Sub => binary(a, ash, b, bsh, T::op_sub),
        ArithOp::Mul => binary(a, ash, b, bsh, T::op_mul),
        ArithOp::Div => binary(a, ash, b, bsh, T::op_div),
        ArithOp::Mod => binary(a, ash, b, bsh, T::op_mod),
        ArithOp::Fmod => binary(a, ash, b, bsh, T::op_fmod),
        ArithOp::Max => binary(a, ash, b, bsh, T::op_max),
        ArithOp::Min => binary(a, ash, b, bsh, T::op_min),
        ArithOp::PRelu => {
            let zero = T::zero();
            binary(
                a,
                ash,
                b,
                bsh,
                move |x: T, s: T| {
                    if x < zero {
                        x.op_mul(s)
                    } else {
                        x
                    }
                },
            )
        }
    }
}

/// Runs a same-type arithmetic operator on two tensors.
fn arith_tensors(
    op: ArithOp,
    a: &Tensor,
    b: &Tensor,
    bsh: &[usize],
) -> Result<Tensor, RuntimeError> {
    same_types(a, b)?;
    dispatch_numeric!(a.dtype(), T => {
        let (shape, out) = arith(op, a.as_slice::<T>()?, a.shape(), b.as_slice::<T>()?, bsh)?;
        Ok(Tensor::from_vec(shape, out)?)
    }, _ => Err(unsupported(format!("input of type {}", a.dtype()))))
}

impl Kernel for ArithKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (a, b, mut bsh) = two_inputs(inputs, self.legacy)?;
        if self.channel_slope && bsh.len() == 1 && a.rank() >= 2 && a.shape()[1] == bsh[0] {
            bsh.resize(a.rank() - 1, 1);
        }
        Ok(vec![arith_tensors(self.op, a, b, &bsh)?])
    }
}

/// `Max`, `Min`, `Sum`, `Mean` over any number of broadcast inputs.
fn build_variadic(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let (op, mean) = match node.op_type.as_str() {
        "Max" => (ArithOp::Max, false),
        "Min" => (ArithOp::Min, false),
        "Sum" => (ArithOp::Add, false),
        "Mean" => (ArithOp::Add, true),
        other => return Err(kernel_err(format!("no variadic kernel for {other}"))),
    };
    Ok(Box::new(VariadicKernel { op, mean }))
}

struct VariadicKernel {
    op: ArithOp,
    mean: bool,
}

impl Kernel for VariadicKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let mut present = inputs.iter().flatten();
        let first = present
            .next()
            .ok_or_else(|| kernel_err("at least one input is required"))?;
        let mut acc: Option<Tensor> = None;
        let mut count = 1usize;
        for t in present {
            let cur = acc.as_ref().unwrap_or(first);
            acc = Some(arith_tensors(self.op, cur, t, t.shape())?);
            count += 1;
        }
        let acc = match acc {
            Some(t) => t,
            None => (*first).clone(),
        };
        if !self.mean || count == 1 {
            return Ok(vec![acc]);
        }
        let out = dispatch_numeric!(acc.dtype(), T => {
            let n = T::from_i64(count as i64);
            let shape = acc.shape().to_vec();
            let v = acc.into_vec::<T>()?;
            Tensor::from_vec(shape, super::map_slice(&v, |x: T| x.op_div(n)))?
        }, _ => return Err(unsupported(format!("input of type {}", acc.dtype()))));
        Ok(vec![out])
    }
}

fn build_pow(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(PowKernel {
        legacy: legacy(node, ctx)?,
    }))
}

struct PowKernel {
    legacy: Option<Legacy>,
}

/// Integer power by squaring, wrapping on overflow; negative exponents give the truncated
/// result (0 unless the base is ±1).
fn int_pow<T: Arith>(base: T, exp: i64) -> T {
    if exp < 0 {
        let b = base.to_i64();
        return match b {
            1 => T::one(),
            -1 => {
                if exp % 2 == 0 {
                    T::one()
                } else {
                    base
                }
            }
            _ => T::zero(),
        };
    }
    let mut result = T::one();
    let mut b = base;
    let mut e = exp as u64;
    while e > 0 {
        if e & 1 == 1 {
            result = result.op_mul(b);
        }
        e >>= 1;
        if e > 0 {
            b = b.op_mul(b);
        }
    }
    result
}

impl Kernel for PowKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (a, b, bsh) = two_inputs(inputs, self.legacy)?;
        // The result has the base's type. f32 ** f32 stays in f32; other mixes are computed
        // in f64 (numpy's promotion) or, for two integer types, in exact integer arithmetic.
        if let (TensorData::F32(x), TensorData::F32(y)) = (a.data(), b.data()) {
            let (shape, out) = binary(x, a.shape(), y, &bsh, f32::powf)?;
            return Ok(vec![Tensor::from_vec(shape, out)?]);
        }
        let int_exp = b.dtype().is_int() || b.dtype() == DType::Bool;
        if a.dtype().is_int() && int_exp {
            let e = b.to_i64_vec()?;
            let out = dispatch_numeric!(a.dtype(), T => {
                let (shape, out) = binary(a.as_slice::<T>()?, a.shape(), &e, &bsh, int_pow::<T>)?;
                Tensor::from_vec(shape, out)?
            }, _ => return Err(unsupported(format!("base of type {}", a.dtype()))));
            return Ok(vec![out]);
        }
        if !(b.dtype().is_float() || int_exp) {
            return Err(unsupported(format!("exponent of type {}", b.dtype())));
        }
        let e = b.cast(DType::F64)?.into_vec::<f64>()?;
        let out = dispatch_numeric!(a.dtype(), T => {
            let (shape, out) = binary(a.as_slice::<T>()?, a.shape(), &e, &bsh, |x: T, y: f64| {
                T::from_f64(x.to_f64().powf(y))
            })?;
            Tensor::from_vec(shape, out)?
        }, _ => return Err(unsupported(format!("base of type {}", a.dtype()))));
        Ok(vec![out])
    }
}

#[derive(Debug, Clone, Copy)]
enum CmpOp {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

fn build_compare(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let op = match node.op_type.as_str() {
        "Equal" => CmpOp::Eq,
        "Less" => CmpOp::Lt,
        "Greater" => CmpOp::Gt,
        "LessOrEqual" => CmpOp::Le,
        "GreaterOrEqual" => CmpOp::Ge,
        other => return Err(kernel_err(format!("no comparison kernel for {other}"))),
    };
    Ok(Box::new(CompareKernel {
        op,
        legacy: legacy(node, ctx)?,
    }))
}

struct CompareKernel {
    op: CmpOp,
    legacy: Option<Legacy>,
}

fn compare<T: Copy + Sync + PartialOrd>(
    op: CmpOp,
    a: &[T],
    ash: &[usize],
    b: &[T],
    bsh: &[usize],
) -> Result<Shaped<bool>, RuntimeError> {
    match op {
        CmpOp::Eq => binary(a, ash, b, bsh, |x: T, y: T| x == y),
        CmpOp::Lt => binary(a, ash, b, bsh, |x: T, y: T| x < y),
        CmpOp::Gt => binary(a, ash, b, bsh, |x: T, y: T| x > y),
        CmpOp::Le => binary(a, ash, b, bsh, |x: T, y: T| x <= y),
        CmpOp::Ge => binary(a, ash, b, bsh, |x: T, y: T| x >= y),
    }
}

impl Kernel for CompareKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (a, b, bsh) = two_inputs(inputs, self.legacy)?;
        same_types(a, b)?;
        let (shape, out) = match (a.data(), b.data()) {
            (TensorData::String(x), TensorData::String(y)) => {
                // Compare by reference: byte strings are not Copy.
                let xr: Vec<&Vec<u8>> = x.iter().collect();
                let yr: Vec<&Vec<u8>> = y.iter().collect();
                compare(self.op, &xr, a.shape(), &yr, &bsh)?
            }
            _ => dispatch_typed!(a.dtype(), T => {
                compare(self.op, a.as_slice::<T>()?, a.shape(), b.as_slice::<T>()?, &bsh)?
            }, _ => return Err(unsupported(format!("inputs of type {}", a.dtype())))),
        };
        Ok(vec![Tensor::from_vec(shape, out)?])
    }
}

#[derive(Debug, Clone, Copy)]
enum LogicOp {
    And,
    Or,
    Xor,
}

fn build_logic(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let op = match node.op_type.as_str() {
        "And" => LogicOp::And,
        "Or" => LogicOp::Or,
        "Xor" => LogicOp::Xor,
        other => return Err(kernel_err(format!("no logic kernel for {other}"))),
    };
    Ok(Box::new(LogicKernel {
        op,
        legacy: legacy(node, ctx)?,
    }))
}

struct LogicKernel {
    op: LogicOp,
    legacy: Option<Legacy>,
}

impl Kernel for LogicKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (a, b, bsh) = two_inputs(inputs, self.legacy)?;
        let (x, y) = (a.as_slice::<bool>()?, b.as_slice::<bool>()?);
        let (shape, out) = match self.op {
            LogicOp::And => binary(x, a.shape(), y, &bsh, |p: bool, q: bool| p & q)?,
            LogicOp::Or => binary(x, a.shape(), y, &bsh, |p: bool, q: bool| p | q)?,
            LogicOp::Xor => binary(x, a.shape(), y, &bsh, |p: bool, q: bool| p ^ q)?,
        };
        Ok(vec![Tensor::from_vec(shape, out)?])
    }
}

#[derive(Debug, Clone, Copy)]
enum BitOp {
    Shl,
    Shr,
    And,
    Or,
    Xor,
}

fn build_bits(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let op = match node.op_type.as_str() {
        "BitShift" => match node.attr_string("direction").map_err(attr_err)?.as_deref() {
            Some("LEFT") => BitOp::Shl,
            Some("RIGHT") => BitOp::Shr,
            other => {
                return Err(kernel_err(format!(
                    "BitShift: direction must be LEFT or RIGHT, got {other:?}"
                )))
            }
        },
        "BitwiseAnd" => BitOp::And,
        "BitwiseOr" => BitOp::Or,
        "BitwiseXor" => BitOp::Xor,
        other => return Err(kernel_err(format!("no bit kernel for {other}"))),
    };
    Ok(Box::new(BitKernel { op }))
}

struct BitKernel {
    op: BitOp,
}

fn bits<T: Bits>(op: BitOp, a: &Tensor, b: &Tensor) -> Result<Tensor, RuntimeError> {
    let (x, y) = (a.as_slice::<T>()?, b.as_slice::<T>()?);
    let (ash, bsh) = (a.shape(), b.shape());
    let (shape, out) = match op {
        BitOp::Shl => binary(x, ash, y, bsh, T::op_shl)?,
        BitOp::Shr => binary(x, ash, y, bsh, T::op_shr)?,
        BitOp::And => binary(x, ash, y, bsh, T::op_and)?,
        BitOp::Or => binary(x, ash, y, bsh, T::op_or)?,
        BitOp::Xor => binary(x, ash, y, bsh, T::op_xor)?,
    };
    Ok(Tensor::from_vec(shape, out)?)
}

impl Kernel for BitKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let a = input(inputs, 0)?;
        let b = input(inputs, 1)?;
        same_types(a, b)?;
        let out = match a.dtype() {
            DType::I8 => bits::<i8>(self.op, a, b)?,
            DType::U8 => bits::<u8>(self.op, a, b)?,
            DType::I16 => bits::<i16>(self.op, a, b)?,
            DType::U16 => bits::<u16>(self.op, a, b)?,
            DType::I32 => bits::<i32>(self.op, a, b)?,
            DType::U32 => bits::<u32>(self.op, a, b)?,
            DType::I64 => bits::<i64>(self.op, a, b)?,
            DType::U64 => bits::<u64>(self.op, a, b)?,
            other => {
                return Err(unsupported(format!(
                    "inputs of type {other} (integer types only)"
                )))
            }
        };
        Ok(vec![out])
    }
}

fn build_where(_node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(WhereKernel))
}

struct WhereKernel;

/// `cond ? x : y` over the broadcast of the three inputs.
fn select<T: Copy + Default + Send + Sync>(
    c: &[bool],
    csh: &[usize],
    x: &[T],
    xsh: &[usize],
    y: &[T],
    ysh: &[usize],
) -> Result<Shaped<T>, RuntimeError> {
    let layout = Layout::new(&[csh, xsh, ysh])?;
    let mut out = vec![T::default(); layout.len()];
    let n = layout.inner();
    let (sc, sx, sy) = (
        layout.inner_stride(0),
        layout.inner_stride(1),
        layout.inner_stride(2),
    );
    layout.for_each_row(&mut out, |off, row| {
        let (oc, ox, oy) = (off[0], off[1], off[2]);
        if (sc, sx, sy) == (1, 1, 1) {
            for (((o, &k), &p), &q) in row
                .iter_mut()
                .zip(&c[oc..oc + n])
                .zip(&x[ox..ox + n])
                .zip(&y[oy..oy + n])
            {
                *o = if k { p } else { q };
            }
        } else {
            // Strides are 0 or 1 here, so `j * s` walks a run or repeats one element.
            for (j, o) in row.iter_mut().enumerate() {
                *o = if c[oc + j * sc] {
                    x[ox + j * sx]
                } else {
                    y[oy + j * sy]
                };
            }
        }
    });
    Ok((layout.out_shape, out))
}

impl Kernel for WhereKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let c = input(inputs, 0)?;
        let x = input(inputs, 1)?;
        let y = input(inputs, 2)?;
        same_types(x, y)?;
        let cond = c.as_slice::<bool>()?;
        let out = match (x.data(), y.data()) {
            (TensorData::String(xs), TensorData::String(ys)) => {
                // Select indices (x's first, then y's), then fetch the strings.
                let xi: Vec<usize> = (0..xs.len()).collect();
                let yi: Vec<usize> = (xs.len()..xs.len() + ys.len()).collect();
                let (shape, out) = select(cond, c.shape(), &xi, x.shape(), &yi, y.shape())?;
                let owned: Vec<Vec<u8>> = out
                    .into_iter()
                    .map(|i| {
                        xs.get(i)
                            .or_else(|| ys.get(i - xs.len()))
                            .cloned()
                            .unwrap_or_default()
                    })
                    .collect();
                Tensor::new(shape, TensorData::String(owned))?
            }
            _ => dispatch_typed!(x.dtype(), T => {
                let (shape, out) = select(
                    cond,
                    c.shape(),
                    x.as_slice::<T>()?,
                    x.shape(),
                    y.as_slice::<T>()?,
                    y.shape(),
                )?;
                Tensor::new(shape, T::into_data(out))?
            }, _ => return Err(unsupported(format!("inputs of type {}", x.dtype())))),
        };
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_pow_wraps_and_truncates() {
        assert_eq!(int_pow(3i32, 4), 81);
        assert_eq!(int_pow(2i8, 8), 0);
        assert_eq!(int_pow(2i64, -1), 0);
        assert_eq!(int_pow(-1i32, -3), -1);
    }

    #[test]
    fn where_broadcasts_three_ways() {
        let (shape, out) = select(&[true, false], &[2, 1], &[1, 2, 3], &[3], &[9], &[]).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(out, vec![1, 2, 3, 9, 9, 9]);
    }

    #[test]
    fn legacy_axis_shape() {
        let l = Some(Legacy { axis: Some(1) });
        assert_eq!(b_shape(l, &[2, 3, 4, 5], &[3, 4]).unwrap(), vec![3, 4, 1]);
        assert!(b_shape(l, &[2, 3], &[3, 4]).is_err());
    }
}
