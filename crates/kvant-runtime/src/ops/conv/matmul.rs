//! MatMul (numpy batching), Gemm and MatMulInteger.
//!
//! f32 and f64 go through the `gemm` crate; f16 / bf16 are computed in f32 (as ONNX Runtime
//! does); integers are computed with wrapping 64-bit arithmetic and narrowed at the end, which
//! gives the same bits as wrapping arithmetic in the narrow type.

use super::blas::{gemm, GemmElem, Mat};
use crate::ops::{
    attr_err, broadcast_shape, broadcast_strides, input, optional_input, BuildContext, Kernel,
    Registry,
};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Tensor};
use rayon::prelude::*;

/// Registers MatMul, Gemm and MatMulInteger.
pub(super) fn register(r: &mut Registry) {
    r.add("MatMul", build_matmul);
    r.add("Gemm", build_gemm);
    r.add("MatMulInteger", build_matmul_integer);
}

/// Products with fewer multiply-adds than this are not worth splitting across threads.
const PARALLEL_WORK: usize = 1 << 21;

/// How a numpy-style matmul lines up its operands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MatMulShape {
    /// Shape of the result.
    pub out_shape: Vec<usize>,
    /// Element offset of the A matrix of each output matrix.
    pub a_offsets: Vec<usize>,
    /// Element offset of the B matrix of each output matrix.
    pub b_offsets: Vec<usize>,
    /// Rows of each product.
    pub m: usize,
    /// Inner dimension.
    pub k: usize,
    /// Columns of each product.
    pub n: usize,
}

impl MatMulShape {
    /// Lines up `a` and `b` like `numpy.matmul` (1-D operands are promoted to matrices and the
    /// added dimension removed from the result; batch dimensions broadcast).
    pub fn new(a: &[usize], b: &[usize]) -> Result<MatMulShape, RuntimeError> {
        if a.is_empty() || b.is_empty() {
            return Err(kernel_err(
                "MatMul operands must have at least one dimension",
            ));
        }
        let a_mat: Vec<usize> = if a.len() == 1 {
            vec![1, a[0]]
        } else {
            a.to_vec()
        };
        let b_mat: Vec<usize> = if b.len() == 1 {
            vec![b[0], 1]
        } else {
            b.to_vec()
        };
        let (ra, rb) = (a_mat.len(), b_mat.len());
        let (m, k) = (a_mat[ra - 2], a_mat[ra - 1]);
        let (kb, n) = (b_mat[rb - 2], b_mat[rb - 1]);
        if k != kb {
            return Err(kernel_err(format!(
                "MatMul inner dimensions differ: {a:?} x {b:?}"
            )));
        }
        let (a_batch, b_batch) = (&a_mat[..ra - 2], &b_mat[..rb - 2]);
        let batch = broadcast_shape(&[a_batch, b_batch])?;
        let count: usize = batch.iter().product();
        let a_strides = broadcast_strides(a_batch, &batch);
        let b_strides = broadcast_strides(b_batch, &batch);
        let mut a_offsets = Vec::with_capacity(count);
        let mut b_offsets = Vec::with_capacity(count);
        let mut index = vec![0usize; batch.len()];
        for _ in 0..count {
            let dot = |strides: &[usize]| -> usize {
                index.iter().zip(strides).map(|(i, s)| i * s).sum()
            };
            a_offsets.push(dot(&a_strides) * m * k);
            b_offsets.push(dot(&b_strides) * k * n);
            // Odometer increment over the batch shape.
            for d in (0..batch.len()).rev() {
                index[d] += 1;
                if index[d] < batch[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        let mut out_shape = batch;
        if a.len() > 1 {
            out_shape.push(m);
        }
        if b.len() > 1 {
            out_shape.push(n);
        }
        Ok(MatMulShape {
            out_shape,
            a_offsets,
            b_offsets,
            m,
            k,
            n,
        })
    }
}

/// One product `out[m x n] = a[m x k] * b[k x n]` on row-major slices, using at most
/// `threads` threads.
type MatProduct<'f, T> = dyn Fn(usize, usize, usize, &[T], &[T], &mut [T], usize) -> Result<(), RuntimeError>
    + Sync
    + 'f;

/// Runs `mm` on every matrix of a batched matmul and returns the result's elements.
pub(super) fn run_batched<T: Copy + Default + Send + Sync>(
    a: &[T],
    b: &[T],
    s: &MatMulShape,
    mm: &MatProduct<'_, T>,
) -> Result<Vec<T>, RuntimeError> {
    let (m, k, n) = (s.m, s.k, s.n);
    let batches = s.a_offsets.len();
    let mut out = vec![T::default(); batches * m * n];
    if out.is_empty() {
        return Ok(out);
    }
    let (a_len, b_len, o_len) = (m * k, k * n, m * n);
    let threads = rayon::current_num_threads();
    // A batch of A matrices times one shared B (e.g. [batch, seq, k] x [k, n]) is a single
    // tall product, which gemm handles far better than many small ones.
    let b_shared = s.b_offsets.iter().all(|&o| o == s.b_offsets[0]);
    let a_in_order = s.a_offsets.iter().enumerate().all(|(i, &o)| o == i * a_len);
    if batches > 1 && b_shared && a_in_order {
        let a_all = slice(a, 0, batches * a_len)?;
        let b_one = slice(b, s.b_offsets[0], b_len)?;
        mm(batches * m, k, n, a_all, b_one, &mut out, threads)?;
        return Ok(out);
    }
    let work = m * k * n;
    if batches > 1 && threads > 1 && work < PARALLEL_WORK {
        out.par_chunks_mut(o_len)
            .enumerate()
            .try_for_each(|(i, o)| {
                let a_i = slice(a, s.a_offsets[i], a_len)?;
                let b_i = slice(b, s.b_offsets[i], b_len)?;
                mm(m, k, n, a_i, b_i, o, 1)
            })?;
    } else {
        for (i, o) in out.chunks_mut(o_len).enumerate() {
            let a_i = slice(a, s.a_offsets[i], a_len)?;
            let b_i = slice(b, s.b_offsets[i], b_len)?;
            mm(m, k, n, a_i, b_i, o, threads)?;
        }
    }
    Ok(out)
}

/// `data[at..at + len]`, or an error when the operand is shorter than its shape says.
fn slice<T>(data: &[T], at: usize, len: usize) -> Result<&[T], RuntimeError> {
    data.get(at..at + len)
        .ok_or_else(|| kernel_err("MatMul operand is smaller than its shape"))
}

/// A row-major float product through `gemm`.
fn mm_float<T: GemmElem>(
    m: usize,
    k: usize,
    n: usize,
    a: &[T],
    b: &[T],
    out: &mut [T],
    threads: usize,
) -> Result<(), RuntimeError> {
    gemm(
        m,
        n,
        k,
        out,
        n,
        false,
        Mat::row_major(a, k),
        Mat::row_major(b, n),
        T::ONE,
        threads,
    )
}

/// A row-major integer product with wrapping arithmetic.
pub(super) fn mm_i64(
    m: usize,
    k: usize,
    n: usize,
    a: &[i64],
    b: &[i64],
    out: &mut [i64],
    _threads: usize,
) -> Result<(), RuntimeError> {
    if a.len() < m * k || b.len() < k * n || out.len() < m * n {
        return Err(kernel_err(
            "internal error: integer product buffers too small",
        ));
    }
    for (row, a_row) in out.chunks_mut(n.max(1)).zip(a.chunks(k.max(1))).take(m) {
        row.iter_mut().for_each(|v| *v = 0);
        for (&av, b_row) in a_row.iter().zip(b.chunks(n.max(1))) {
            for (o, &bv) in row.iter_mut().zip(b_row) {
                *o = o.wrapping_add(av.wrapping_mul(bv));
            }
        }
    }
    Ok(())
}

/// Narrows an i64 result to `dtype` with wrapping (C cast) semantics.
fn i64_tensor_as(
    shape: Vec<usize>,
    values: Vec<i64>,
    dtype: DType,
) -> Result<Tensor, RuntimeError> {
    Ok(Tensor::from_vec(shape, values)?.cast(dtype)?)
}

/// numpy.matmul of two tensors of the same type.
pub(super) fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor, RuntimeError> {
    if a.dtype() != b.dtype() {
        return Err(kernel_err(format!(
            "MatMul operands have different types {} and {}",
            a.dtype(),
            b.dtype()
        )));
    }
    let s = MatMulShape::new(a.shape(), b.shape())?;
    let shape = s.out_shape.clone();
    match a.dtype() {
        DType::F32 => {
            let out = run_batched(
                a.as_slice::<f32>()?,
                b.as_slice::<f32>()?,
                &s,
                &mm_float::<f32>,
            )?;
            Ok(Tensor::from_vec(shape, out)?)
        }
        DType::F64 => {
            let out = run_batched(
                a.as_slice::<f64>()?,
                b.as_slice::<f64>()?,
                &s,
                &mm_float::<f64>,
            )?;
            Ok(Tensor::from_vec(shape, out)?)
        }
        DType::F16 | DType::BF16 => {
            let out = matmul(&a.cast(DType::F32)?, &b.cast(DType::F32)?)?;
            Ok(out.cast(a.dtype())?)
        }
        d if d.is_int() => {
            let out = run_batched(&a.to_i64_vec()?, &b.to_i64_vec()?, &s, &mm_i64)?;
            i64_tensor_as(shape, out, d)
        }
        d => Err(unsupported(format!("MatMul of {d}"))),
    }
}

struct MatMulKernel;

impl Kernel for MatMulKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        Ok(vec![matmul(input(inputs, 0)?, input(inputs, 1)?)?])
    }
}

fn build_matmul(_node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(MatMulKernel))
}

/// Gemm: `alpha * op(A) * op(B) + beta * C`.
struct GemmKernel {
    trans_a: bool,
    trans_b: bool,
    alpha: f32,
    beta: f32,
}

fn build_gemm(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(GemmKernel {
        trans_a: node.attr_int("transA").map_err(attr_err)?.unwrap_or(0) != 0,
        trans_b: node.attr_int("transB").map_err(attr_err)?.unwrap_or(0) != 0,
        alpha: node.attr_float("alpha").map_err(attr_err)?.unwrap_or(1.0),
        beta: node.attr_float("beta").map_err(attr_err)?.unwrap_or(1.0),
    }))
}

/// `C` broadcast (unidirectionally) to `m x n`, row-major.
fn broadcast_c<T: Copy>(
    c: &Tensor,
    values: &[T],
    m: usize,
    n: usize,
) -> Result<Vec<T>, RuntimeError> {
    let shape = c.shape();
    let (cm, cn) = match *shape {
        [] => (1, 1),
        [cn] => (1, cn),
        [cm, cn] => (cm, cn),
        _ => {
            return Err(kernel_err(format!(
                "Gemm C has shape {shape:?}, expected rank <= 2"
            )))
        }
    };
    if (cm != 1 && cm != m) || (cn != 1 && cn != n) || values.len() != cm * cn {
        return Err(kernel_err(format!(
            "Gemm C of shape {shape:?} cannot be broadcast to [{m}, {n}]"
        )));
    }
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        let row = if cm == 1 { 0 } else { i * cn };
        for j in 0..n {
            out.push(values[row + if cn == 1 { 0 } else { j }]);
        }
    }
    Ok(out)
}

impl GemmKernel {
    fn dims(&self, a: &Tensor, b: &Tensor) -> Result<(usize, usize, usize), RuntimeError> {
        let (&[a0, a1], &[b0, b1]) = (a.shape(), b.shape()) else {
            return Err(kernel_err(format!(
                "Gemm needs 2-D A and B, got {:?} and {:?}",
                a.shape(),
                b.shape()
            )));
        };
        let (m, k) = if self.trans_a { (a1, a0) } else { (a0, a1) };
        let (kb, n) = if self.trans_b { (b1, b0) } else { (b0, b1) };
        if k != kb {
            return Err(kernel_err(format!(
                "Gemm inner dimensions differ: {:?} x {:?} (transA={}, transB={})",
                a.shape(),
                b.shape(),
                self.trans_a,
                self.trans_b
            )));
        }
        Ok((m, k, n))
    }

    fn run_float<T: GemmElem + kvant_tensor::Element>(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: Option<&Tensor>,
    ) -> Result<Tensor, RuntimeError> {
        let (m, k, n) = self.dims(a, b)?;
        let (av, bv) = (a.as_slice::<T>()?, b.as_slice::<T>()?);
        let beta = T::from_f32(self.beta);
        let (mut y, accumulate) = match c {
            Some(c) => {
                let mut y = broadcast_c(c, c.as_slice::<T>()?, m, n)?;
                y.iter_mut()
                    .for_each(|v| *v = T::mul_add(beta, *v, T::ZERO));
                (y, true)
            }
            None => (vec![T::ZERO; m * n], false),
        };
        // Element (i, p) of op(A): transposed A is stored [k, m].
        let a_view = if self.trans_a {
            Mat {
                data: av,
                rs: 1,
                cs: m,
            }
        } else {
            Mat::row_major(av, k)
        };
        let b_view = if self.trans_b {
            Mat {
                data: bv,
                rs: 1,
                cs: k,
            }
        } else {
            Mat::row_major(bv, n)
        };
        gemm(
            m,
            n,
            k,
            &mut y,
            n,
            accumulate,
            a_view,
            b_view,
            T::from_f32(self.alpha),
            rayon::current_num_threads(),
        )?;
        Ok(Tensor::from_vec(vec![m, n], y)?)
    }

    fn run_int(&self, a: &Tensor, b: &Tensor, c: Option<&Tensor>) -> Result<Tensor, RuntimeError> {
        if self.alpha.fract() != 0.0 || self.beta.fract() != 0.0 {
            return Err(unsupported("integer Gemm with non-integral alpha or beta"));
        }
        let (alpha, beta) = (self.alpha as i64, self.beta as i64);
        let (m, k, n) = self.dims(a, b)?;
        let (av, bv) = (a.to_i64_vec()?, b.to_i64_vec()?);
        let a_at = |i: usize, p: usize| {
            if self.trans_a {
                av[p * m + i]
            } else {
                av[i * k + p]
            }
        };
        let b_at = |p: usize, j: usize| {
            if self.trans_b {
                bv[j * k + p]
            } else {
                bv[p * n + j]
            }
        };
        let cv = match c {
            Some(c) => Some(broadcast_c(c, &c.to_i64_vec()?, m, n)?),
            None => None,
        };
        let mut y = vec![0i64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0i64;
                for p in 0..k {
                    acc = acc.wrapping_add(a_at(i, p).wrapping_mul(b_at(p, j)));
                }
                let mut v = acc.wrapping_mul(alpha);
                if let Some(cv) = &cv {
                    v = v.wrapping_add(cv[i * n + j].wrapping_mul(beta));
                }
                y[i * n + j] = v;
            }
        }
        i64_tensor_as(vec![m, n], y, a.dtype())
    }
}

impl Kernel for GemmKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (a, b, c) = (
            input(inputs, 0)?,
            input(inputs, 1)?,
            optional_input(inputs, 2),
        );
        let dtype = a.dtype();
        if b.dtype() != dtype || c.is_some_and(|c| c.dtype() != dtype) {
            return Err(kernel_err("Gemm inputs have different types"));
        }
        let y = match dtype {
            DType::F32 => self.run_float::<f32>(a, b, c)?,
            DType::F64 => self.run_float::<f64>(a, b, c)?,
            DType::F16 | DType::BF16 => {
                let c32 = c.map(|c| c.cast(DType::F32)).transpose()?;
                self.run_float::<f32>(&a.cast(DType::F32)?, &b.cast(DType::F32)?, c32.as_ref())?
                    .cast(dtype)?
            }
            d if d.is_int() => self.run_int(a, b, c)?,
            d => return Err(unsupported(format!("Gemm of {d}"))),
        };
        Ok(vec![y])
    }
}

/// MatMulInteger: `(A - a_zero_point) * (B - b_zero_point)` in i32.
struct MatMulIntegerKernel;

fn build_matmul_integer(
    _node: &Node,
    _ctx: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(MatMulIntegerKernel))
}

/// Reads an 8-bit quantized tensor as i64.
fn quantized_values(t: &Tensor, what: &str) -> Result<Vec<i64>, RuntimeError> {
    match t.dtype() {
        DType::U8 | DType::I8 => Ok(t.to_i64_vec()?),
        d => Err(unsupported(format!("{what} of type {d} (only u8 / i8)"))),
    }
}

impl Kernel for MatMulIntegerKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let s = MatMulShape::new(a.shape(), b.shape())?;
        let mut av = quantized_values(a, "MatMulInteger A")?;
        let mut bv = quantized_values(b, "MatMulInteger B")?;
        let (k, n) = (s.k, s.n);
        if let Some(zp) = optional_input(inputs, 2) {
            let zp = quantized_values(zp, "a_zero_point")?;
            // A scalar, or one zero point per row of A.
            let rows = s.m;
            match zp.len() {
                1 => av.iter_mut().for_each(|v| *v -= zp[0]),
                len if len == rows && a.rank() >= 2 => {
                    for (i, v) in av.iter_mut().enumerate() {
                        *v -= zp[(i / k.max(1)) % rows];
                    }
                }
                len => return Err(unsupported(format!("a_zero_point with {len} values"))),
            }
        }
        if let Some(zp) = optional_input(inputs, 3) {
            let zp = quantized_values(zp, "b_zero_point")?;
            // A scalar, or one zero point per column of B.
            match zp.len() {
                1 => bv.iter_mut().for_each(|v| *v -= zp[0]),
                len if len == n && b.rank() >= 2 => {
                    for (i, v) in bv.iter_mut().enumerate() {
                        *v -= zp[i % n];
                    }
                }
                len => return Err(unsupported(format!("b_zero_point with {len} values"))),
            }
        }
        let out = run_batched(&av, &bv, &s, &mm_i64)?;
        Ok(vec![i64_tensor_as(s.out_shape, out, DType::I32)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    #[test]
    fn broadcast_batches_and_vectors() {
        let a: Vec<f32> = (0..2 * 3 * 4).map(|i| i as f32 * 0.25).collect();
        let b: Vec<f32> = (0..4 * 5).map(|i| (i % 7) as f32 - 3.0).collect();
        let ta = Tensor::from_vec(vec![2, 1, 3, 4], a.clone()).unwrap();
        let tb = Tensor::from_vec(vec![1, 2, 4, 5], [b.clone(), b.clone()].concat()).unwrap();
        let y = matmul(&ta, &tb).unwrap();
        assert_eq!(y.shape(), &[2, 2, 3, 5]);
        let y = y.as_slice::<f32>().unwrap();
        for batch in 0..4 {
            let ai = batch / 2;
            let want = naive(&a[ai * 12..ai * 12 + 12], &b, 3, 4, 5);
            for (g, w) in y[batch * 15..batch * 15 + 15].iter().zip(&want) {
                assert!((g - w).abs() < 1e-4);
            }
        }
        // 1-D x 1-D is a dot product of rank 0.
        let v = Tensor::from_vec(vec![3], vec![1i32, 2, 3]).unwrap();
        let d = matmul(&v, &v).unwrap();
        assert_eq!(d.shape(), &[] as &[usize]);
        assert_eq!(d.into_vec::<i32>().unwrap(), vec![14]);
    }

    #[test]
    fn integer_products_wrap() {
        let a = Tensor::from_vec(vec![1, 1], vec![u8::MAX]).unwrap();
        let b = Tensor::from_vec(vec![1, 1], vec![2u8]).unwrap();
        assert_eq!(matmul(&a, &b).unwrap().into_vec::<u8>().unwrap(), vec![254]);
    }
}
