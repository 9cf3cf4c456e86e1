//! Operators that write updates into a copy of the data: ScatterElements (and its deprecated
//! alias Scatter) and ScatterND, with their reductions.

use super::data::{axis_of, dispatch_any, int_values, make, unsupported_dtype, view, Item};
use super::gather::{element_offsets, nd_slices};
use super::kernel;
use crate::ops::{attr_err, input, BuildContext, Kernel};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{bf16, f16, Tensor};

/// How an update combines with the value already there.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

impl Reduction {
    fn parse(node: &Node) -> Result<Reduction, RuntimeError> {
        Ok(
            match node.attr_string("reduction").map_err(attr_err)?.as_deref() {
                None | Some("none") => Reduction::None,
                Some("add") => Reduction::Add,
                Some("mul") => Reduction::Mul,
                Some("max") => Reduction::Max,
                Some("min") => Reduction::Min,
                Some(r) => return Err(kernel_err(format!("reduction '{r}' is unknown"))),
            },
        )
    }
}

/// Arithmetic the reductions need (integers wrap like numpy).
trait Combine: Item + Copy + PartialOrd {
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
}

macro_rules! int_combine {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
        }
    )*};
}
int_combine!(i8, u8, i16, u16, i32, u32, i64, u64);

macro_rules! float_combine {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            fn add(self, o: Self) -> Self { self + o }
            fn mul(self, o: Self) -> Self { self * o }
        }
    )*};
}
float_combine!(f32, f64, f16, bf16);

impl Combine for bool {
    fn add(self, o: Self) -> Self {
        self || o
    }
    fn mul(self, o: Self) -> Self {
        self && o
    }
}

/// Applies `updates` at flat `offsets` (each a run of `len` elements) to `out`.
fn apply_reduced<T: Combine>(
    out: &mut [T],
    updates: &[T],
    offsets: &[usize],
    len: usize,
    r: Reduction,
) {
    for (&o, u) in offsets.iter().zip(updates.chunks(len.max(1))) {
        for (d, &v) in out[o..o + len].iter_mut().zip(u) {
            *d = match r {
                Reduction::None => v,
                Reduction::Add => d.add(v),
                Reduction::Mul => d.mul(v),
                Reduction::Max => {
                    if v > *d {
                        v
                    } else {
                        *d
                    }
                }
                Reduction::Min => {
                    if v < *d {
                        v
                    } else {
                        *d
                    }
                }
            };
        }
    }
}

/// A copy of `data` with `updates` written at `offsets` (runs of `len`).
fn scatter(
    data: &Tensor,
    updates: &Tensor,
    offsets: &[usize],
    len: usize,
    r: Reduction,
    op: &str,
) -> Result<Tensor, RuntimeError> {
    let dtype = data.dtype();
    if updates.dtype() != dtype {
        return Err(kernel_err(format!(
            "updates have type {}, data has {dtype}",
            updates.dtype()
        )));
    }
    if updates.len() != offsets.len() * len {
        return Err(kernel_err(format!(
            "updates of shape {:?} do not match the indices",
            updates.shape()
        )));
    }
    if r == Reduction::None {
        return dispatch_any!(dtype, T => {
            let mut out = view::<T>(data)?.into_owned();
            let u = view::<T>(updates)?;
            for (&o, chunk) in offsets.iter().zip(u.chunks(len.max(1))) {
                out[o..o + len].clone_from_slice(chunk);
            }
            make(data.shape().to_vec(), out, dtype)
        }, _ => Err(unsupported_dtype(op, dtype)));
    }
    macro_rules! reduce_as {
        ($($t:ty),*) => {
            match dtype {
                $(d if d == <$t as kvant_tensor::Element>::DTYPE => {
                    let mut out = view::<$t>(data)?.into_owned();
                    apply_reduced(&mut out, &view::<$t>(updates)?, offsets, len, r);
                    make(data.shape().to_vec(), out, dtype)
                })*
                _ => Err(unsupported(format!("{op} reduction on {dtype} tensors"))),
            }
        };
    }
    reduce_as!(f32, f64, f16, bf16, i8, u8, i16, u16, i32, u32, i64, u64, bool)
}

fn build_elements(
    node: &Node,
    reduction: Reduction,
    op: &'static str,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let axis = node.attr_int("axis").map_err(attr_err)?.unwrap_or(0);
    Ok(kernel(move |inputs| {
        let (x, ind, upd) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let a = axis_of(axis, x.rank())?;
        if upd.shape() != ind.shape() {
            return Err(kernel_err(format!(
                "updates of shape {:?} differ from indices of shape {:?}",
                upd.shape(),
                ind.shape()
            )));
        }
        let offsets = element_offsets(x.shape(), ind.shape(), &int_values(ind, "indices")?, a)?;
        Ok(vec![scatter(x, upd, &offsets, 1, reduction, op)?])
    }))
}

pub(super) fn build_scatter_elements(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    build_elements(node, Reduction::parse(node)?, "ScatterElements")
}

pub(super) fn build_scatter(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    build_elements(node, Reduction::None, "Scatter")
}

pub(super) fn build_scatter_nd(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    let reduction = Reduction::parse(node)?;
    Ok(kernel(move |inputs| {
        let (x, ind, upd) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let s = nd_slices(x.shape(), ind, 0)?;
        let k = ind.shape().last().copied().unwrap_or(0);
        let mut want = s.grid.clone();
        want.extend_from_slice(&x.shape()[k..]);
        if upd.shape() != want.as_slice() {
            return Err(kernel_err(format!(
                "ScatterND updates have shape {:?}, expected {want:?}",
                upd.shape()
            )));
        }
        Ok(vec![scatter(
            x,
            upd,
            &s.offsets,
            s.len,
            reduction,
            "ScatterND",
        )?])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_accumulate_duplicates() {
        let mut out = vec![1i32, 2, 3];
        apply_reduced(&mut out, &[5, 5, 7], &[0, 0, 2], 1, Reduction::Add);
        assert_eq!(out, vec![11, 2, 10]);
        let mut m = vec![4.0f32, 4.0];
        apply_reduced(&mut m, &[1.0, 9.0], &[0, 1], 1, Reduction::Min);
        assert_eq!(m, vec![1.0, 4.0]);
    }
}
