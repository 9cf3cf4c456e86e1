//! Type-agnostic element movement shared by the shape kernels.
//!
//! Data-movement operators do not care what an element is, only how to copy it. [`Item`] gives
//! every storable element type one generic face: the typed numeric and bool vectors, byte strings,
//! and packed types whose elements are whole bytes (float8, complex) as fixed-size byte arrays.
//! [`dispatch_any!`] picks the Rust type for a [`DType`]; kernels then call generic copy
//! routines once instead of once per type.

use crate::{kernel_err, unsupported, RuntimeError};
use kvant_tensor::{DType, Element, Tensor, TensorData};
use rayon::prelude::*;
use std::borrow::Cow;

/// Outputs with at least this many elements are filled in parallel.
pub(crate) const PAR_MIN: usize = 1 << 16;

/// An element type that data-movement kernels can copy.
pub(crate) trait Item: Clone + Default + Send + Sync + 'static {
    /// The elements of `data` if it holds this type (packed types are converted, so owned).
    fn view(data: &TensorData) -> Option<Cow<'_, [Self]>>;
    /// Wraps elements back into tensor data of type `dtype`.
    fn wrap(values: Vec<Self>, dtype: DType) -> TensorData;
}

macro_rules! element_item {
    ($($t:ty),*) => {$(
        impl Item for $t {
            fn view(data: &TensorData) -> Option<Cow<'_, [Self]>> {
                <$t as Element>::slice(data).map(Cow::Borrowed)
            }
            fn wrap(values: Vec<Self>, _dtype: DType) -> TensorData {
                <$t as Element>::into_data(values)
            }
        }
    )*};
}
element_item!(
    f32,
    f64,
    kvant_tensor::f16,
    kvant_tensor::bf16,
    i8,
    u8,
    i16,
    u16,
    i32,
    u32,
    i64,
    u64,
    bool
);

impl Item for Vec<u8> {
    fn view(data: &TensorData) -> Option<Cow<'_, [Self]>> {
        match data {
            TensorData::String(v) => Some(Cow::Borrowed(v)),
            _ => None,
        }
    }
    fn wrap(values: Vec<Self>, _dtype: DType) -> TensorData {
        TensorData::String(values)
    }
}

/// Packed element types whose elements are `N` whole bytes are moved as `[u8; N]`.
impl<const N: usize> Item for [u8; N]
where
    [u8; N]: Default,
{
    fn view(data: &TensorData) -> Option<Cow<'_, [Self]>> {
        match data {
            TensorData::Packed { dtype, bytes } if dtype.bits() == 8 * N => Some(Cow::Owned(
                bytes
                    .chunks_exact(N)
                    .map(|c| {
                        let mut a = [0u8; N];
                        a.copy_from_slice(c);
                        a
                    })
                    .collect(),
            )),
            _ => None,
        }
    }
    fn wrap(values: Vec<Self>, dtype: DType) -> TensorData {
        TensorData::Packed {
            dtype,
            bytes: values.into_iter().flatten().collect(),
        }
    }
}

/// Runs `$body` with `$T` bound to the [`Item`] type of `$dtype`; sub-byte packed types (int4,
/// float4, int2) run `$fallback`.
macro_rules! dispatch_any {
    ($dtype:expr, $T:ident => $body:expr, _ => $fallback:expr) => {
        match $dtype {
            kvant_tensor::DType::String => {
                type $T = Vec<u8>;
                $body
            }
            d if d.is_packed() && d.bits() == 8 => {
                type $T = [u8; 1];
                $body
            }
            d if d.is_packed() && d.bits() == 64 => {
                type $T = [u8; 8];
                $body
            }
            d if d.is_packed() && d.bits() == 128 => {
                type $T = [u8; 16];
                $body
            }
            other => kvant_tensor::dispatch_typed!(other, $T => $body, _ => $fallback),
        }
    };
}
pub(crate) use dispatch_any;

/// The elements of `t` as `T`.
pub(crate) fn view<T: Item>(t: &Tensor) -> Result<Cow<'_, [T]>, RuntimeError> {
    T::view(t.data()).ok_or_else(|| kernel_err(format!("unexpected element type {}", t.dtype())))
}

/// Builds a tensor from elements of `T`.
pub(crate) fn make<T: Item>(
    shape: Vec<usize>,
    values: Vec<T>,
    dtype: DType,
) -> Result<Tensor, RuntimeError> {
    Ok(Tensor::new(shape, T::wrap(values, dtype))?)
}

/// The error for element types the generic routines cannot move (sub-byte packed types).
pub(crate) fn unsupported_dtype(op: &str, dtype: DType) -> RuntimeError {
    unsupported(format!("{op} on {dtype} tensors"))
}

/// Integer values of an index-like tensor (any integer type).
pub(crate) fn int_values(t: &Tensor, what: &str) -> Result<Vec<i64>, RuntimeError> {
    if !t.dtype().is_int() {
        return Err(kernel_err(format!(
            "{what} must be an integer tensor, got {}",
            t.dtype()
        )));
    }
    Ok(t.to_i64_vec()?)
}

/// Converts an i64 that must be a size or index into `usize`.
pub(crate) fn to_usize(v: i64, what: &str) -> Result<usize, RuntimeError> {
    usize::try_from(v).map_err(|_| kernel_err(format!("{what} {v} is negative")))
}

/// Resolves an index along a dimension of size `dim`, accepting `-dim..dim`.
pub(crate) fn resolve_index(i: i64, dim: usize) -> Result<usize, RuntimeError> {
    let d = dim as i64;
    let r = if i < 0 { i + d } else { i };
    if r < 0 || r >= d {
        return Err(kernel_err(format!(
            "index {i} is out of range for a dimension of size {dim}"
        )));
    }
    Ok(r as usize)
}

/// Resolves an axis of a tensor that must have at least one dimension.
pub(crate) fn axis_of(axis: i64, rank: usize) -> Result<usize, RuntimeError> {
    if rank == 0 {
        return Err(kernel_err("this operator needs an input of rank 1 or more"));
    }
    super::super::normalize_axis(axis, rank)
}

/// The element count of a shape, or an error when it overflows.
pub(crate) fn checked_size(shape: &[usize]) -> Result<usize, RuntimeError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| kernel_err(format!("shape {shape:?} has too many elements")))
}

/// Normalizes a list of axes against `rank`, rejecting duplicates.
pub(crate) fn normalize_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>, RuntimeError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = super::super::normalize_axis(a, rank)?;
        if rank == 0 || out.contains(&n) {
            return Err(kernel_err(format!(
                "axes {axes:?} are repeated or invalid for rank {rank}"
            )));
        }
        out.push(n);
    }
    Ok(out)
}

/// A strided view of a source buffer: element `idx` of the (row-major) output is
/// `src[base + Σ idx_d * strides[d]]`.
#[derive(Debug, Clone)]
pub(crate) struct Strided {
    shape: Vec<usize>,
    strides: Vec<isize>,
    base: isize,
}

impl Strided {
    /// A view; dimensions of size 1 are dropped and dimensions that are contiguous with their
    /// inner neighbour are merged, so that the innermost loop runs as long as possible.
    pub(crate) fn new(shape: &[usize], strides: &[isize], base: isize) -> Strided {
        let mut s: Vec<usize> = Vec::with_capacity(shape.len());
        let mut st: Vec<isize> = Vec::with_capacity(shape.len());
        for (&d, &k) in shape.iter().zip(strides) {
            if d == 1 {
                continue;
            }
            if let (Some(&pd), Some(&pk)) = (s.last(), st.last()) {
                // Outer stride equals inner stride times inner size: one longer dimension.
                if pk == k * d as isize {
                    let n = s.len() - 1;
                    s[n] = pd * d;
                    st[n] = k;
                    continue;
                }
            }
            s.push(d);
            st.push(k);
        }
        Strided {
            shape: s,
            strides: st,
            base,
        }
    }

    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Checks that every offset the view reaches lies in `0..len`.
    fn check(&self, len: usize) -> Result<(), RuntimeError> {
        if self.len() == 0 {
            return Ok(());
        }
        let (mut lo, mut hi) = (self.base, self.base);
        for (&d, &k) in self.shape.iter().zip(&self.strides) {
            let span = k * (d as isize - 1);
            if span < 0 {
                lo += span;
            } else {
                hi += span;
            }
        }
        if lo < 0 || hi >= len as isize {
            return Err(kernel_err(format!(
                "internal: strided read {lo}..={hi} outside a buffer of {len} elements"
            )));
        }
        Ok(())
    }

    /// Fills `dst`, which holds output elements `start..start + dst.len()`.
    fn fill<T: Item>(&self, src: &[T], dst: &mut [T], start: usize) {
        let rank = self.shape.len();
        if rank == 0 {
            if let Some(d) = dst.first_mut() {
                *d = src[self.base as usize].clone();
            }
            return;
        }
        let inner = self.shape[rank - 1];
        let inner_stride = self.strides[rank - 1];
        // Odometer over the outer dimensions, started at `start`.
        let mut idx = vec![0usize; rank - 1];
        let mut rem = start / inner;
        for d in (0..rank - 1).rev() {
            idx[d] = rem % self.shape[d];
            rem /= self.shape[d];
        }
        let mut off: isize = self.base
            + idx
                .iter()
                .zip(&self.strides)
                .map(|(&i, &k)| i as isize * k)
                .sum::<isize>();
        for row in dst.chunks_mut(inner) {
            let o = off as usize;
            match inner_stride {
                1 => row.clone_from_slice(&src[o..o + row.len()]),
                0 => row.fill(src[o].clone()),
                k => {
                    let mut p = off;
                    for d in row.iter_mut() {
                        *d = src[p as usize].clone();
                        p += k;
                    }
                }
            }
            // Advance the odometer by one row.
            for d in (0..rank - 1).rev() {
                idx[d] += 1;
                off += self.strides[d];
                if idx[d] < self.shape[d] {
                    break;
                }
                off -= self.strides[d] * self.shape[d] as isize;
                idx[d] = 0;
            }
        }
    }

    /// Gathers the view into a new row-major vector (in parallel for large outputs).
    pub(crate) fn gather<T: Item>(&self, src: &[T]) -> Result<Vec<T>, RuntimeError> {
        self.check(src.len())?;
        let n = self.len();
        let mut out = vec![T::default(); n];
        if n == 0 {
            return Ok(out);
        }
        let inner = self.shape.last().copied().unwrap_or(1);
        if n >= PAR_MIN {
            // Chunks of whole rows, about 16K elements each.
            let rows = (16_384 / inner).max(1);
            let chunk = rows * inner;
            out.par_chunks_mut(chunk)
                .enumerate()
                .for_each(|(i, c)| self.fill(src, c, i * chunk));
        } else {
            self.fill(src, &mut out, 0);
        }
        Ok(out)
    }
}

/// Row-major strides as `isize`.
pub(crate) fn istrides(shape: &[usize]) -> Vec<isize> {
    kvant_tensor::strides_of(shape)
        .into_iter()
        .map(|s| s as isize)
        .collect()
}

/// Permutes the axes of a row-major array: output dimension `i` is input dimension `perm[i]`.
/// `perm` must be a permutation of `0..shape.len()` and `src.len()` the product of `shape`.
pub(crate) fn transpose<T: Item>(
    src: &[T],
    shape: &[usize],
    perm: &[usize],
) -> Result<Vec<T>, RuntimeError> {
    let strides = istrides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let out_strides: Vec<isize> = perm.iter().map(|&p| strides[p]).collect();
    let view = Strided::new(&out_shape, &out_strides, 0);
    let r = view.shape.len();
    // When the output's last dimension is not contiguous in the input but the one before it is,
    // the work is a batch of 2-D transposes: do them in cache-sized tiles.
    if r >= 2 && view.strides[r - 1] != 1 && view.strides[r - 2] == 1 {
        view.check(src.len())?;
        return Ok(batched_transpose(src, &view));
    }
    view.gather(src)
}

/// Tile edge of the blocked 2-D transpose.
const TILE: usize = 32;

fn batched_transpose<T: Item>(src: &[T], view: &Strided) -> Vec<T> {
    let r = view.shape.len();
    let (rows, cols) = (view.shape[r - 2], view.shape[r - 1]);
    let col_stride = view.strides[r - 1] as usize;
    let plane = rows * cols;
    let n = view.len();
    let mut out = vec![T::default(); n];
    if n == 0 {
        return out;
    }
    let outer = Strided {
        shape: view.shape[..r - 2].to_vec(),
        strides: view.strides[..r - 2].to_vec(),
        base: view.base,
    };
    let plane_base = |p: usize| -> usize {
        let mut rem = p;
        let mut off = outer.base;
        for d in (0..r - 2).rev() {
            off += (rem % outer.shape[d]) as isize * outer.strides[d];
            rem /= outer.shape[d];
        }
        off as usize
    };
    // One band = TILE output rows of one plane. Either the reads or the writes must stride;
    // stride through whichever buffer has the shorter stride (fewer cache-set conflicts).
    let band = |base: usize, row0: usize, dst: &mut [T]| {
        let nrows = dst.len() / cols;
        if col_stride > cols {
            // For a fixed output column the band's source elements are contiguous (the rows
            // have source stride 1): read them as one slice and write down the column.
            for j in 0..cols {
                let s = base + row0 + j * col_stride;
                let column = dst[j..].iter_mut().step_by(cols);
                for (d, v) in column.zip(&src[s..s + nrows]) {
                    *d = v.clone();
                }
            }
        } else {
            // Write each output row in TILE-wide pieces, reading the source with a stride.
            for c0 in (0..cols).step_by(TILE) {
                let c1 = (c0 + TILE).min(cols);
                for (i, row) in dst.chunks_mut(cols).enumerate() {
                    let s = base + row0 + i + c0 * col_stride;
                    let from = src[s..].iter().step_by(col_stride);
                    for (d, v) in row[c0..c1].iter_mut().zip(from) {
                        *d = v.clone();
                    }
                }
            }
        }
    };
    let do_plane = |p: usize, dst: &mut [T], parallel: bool| {
        let base = plane_base(p);
        if parallel {
            dst.par_chunks_mut(TILE * cols)
                .enumerate()
                .for_each(|(b, d)| band(base, b * TILE, d));
        } else {
            for (b, d) in dst.chunks_mut(TILE * cols).enumerate() {
                band(base, b * TILE, d);
            }
        }
    };
    if n >= PAR_MIN {
        let planes = n / plane;
        let per_plane_par = planes < rayon::current_num_threads() * 2;
        out.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(p, d)| do_plane(p, d, per_plane_par));
    } else {
        for (p, d) in out.chunks_mut(plane).enumerate() {
            do_plane(p, d, false);
        }
    }
    out
}

/// Copies rows of `inner` elements from `src` into consecutive output rows: `rows` lists, for
/// each output row, the index of the source row. Row indices must be in range.
pub(crate) fn gather_rows<T: Item>(src: &[T], inner: usize, rows: &[usize]) -> Vec<T> {
    let n = rows.len() * inner;
    if n >= PAR_MIN && inner > 0 {
        // Tasks of whole rows, a few thousand elements each.
        let group = (4096 / inner).max(1);
        let mut out = vec![T::default(); n];
        out.par_chunks_mut(group * inner)
            .zip(rows.par_chunks(group))
            .for_each(|(dst, rs)| {
                for (d, &r) in dst.chunks_mut(inner).zip(rs) {
                    d.clone_from_slice(&src[r * inner..(r + 1) * inner]);
                }
            });
        return out;
    }
    let mut out = Vec::with_capacity(n);
    for &r in rows {
        out.extend_from_slice(&src[r * inner..(r + 1) * inner]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_transpose(src: &[i32], shape: &[usize], perm: &[usize]) -> Vec<i32> {
        let strides = kvant_tensor::strides_of(shape);
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let n: usize = out_shape.iter().product();
        let mut out = Vec::with_capacity(n);
        for flat in 0..n {
            let mut rem = flat;
            let mut off = 0;
            for d in (0..out_shape.len()).rev() {
                off += (rem % out_shape[d]) * strides[perm[d]];
                rem /= out_shape[d];
            }
            out.push(src[off]);
        }
        out
    }

    #[test]
    fn transpose_matches_naive_for_all_paths() {
        let cases: &[(&[usize], &[usize])] = &[
            (&[3, 4], &[1, 0]),
            (&[2, 3, 4], &[0, 2, 1]),
            (&[2, 3, 4], &[2, 1, 0]),
            (&[2, 3, 4, 5], &[0, 2, 3, 1]),
            (&[2, 3, 4, 5], &[0, 3, 1, 2]),
            (&[2, 3, 4, 5], &[1, 0, 2, 3]),
            (&[1, 70, 1, 40], &[3, 2, 1, 0]),
            (&[33, 65], &[1, 0]),
            (&[4, 300, 70], &[0, 2, 1]),
            (&[300, 300], &[1, 0]),
            (&[70, 1000], &[1, 0]),
            (&[3, 40, 1000], &[0, 2, 1]),
        ];
        for (shape, perm) in cases {
            let n: usize = shape.iter().product();
            let src: Vec<i32> = (0..n as i32).collect();
            assert_eq!(
                transpose(&src, shape, perm).unwrap(),
                naive_transpose(&src, shape, perm),
                "{shape:?} {perm:?}"
            );
        }
    }

    #[test]
    fn strided_handles_negative_and_zero_strides() {
        let src: Vec<i32> = (0..6).collect();
        // Reverse the rows of a 2x3 matrix and repeat each element twice.
        let v = Strided::new(&[2, 3, 2], &[-3, 1, 0], 3);
        assert_eq!(
            v.gather(&src).unwrap(),
            vec![3, 3, 4, 4, 5, 5, 0, 0, 1, 1, 2, 2]
        );
        assert!(Strided::new(&[2], &[6], 0).gather(&src).is_err());
    }

    #[test]
    fn packed_bytes_round_trip() {
        let data = TensorData::Packed {
            dtype: DType::F8E4M3FN,
            bytes: vec![1, 2, 3],
        };
        let v = <[u8; 1]>::view(&data).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(<[u8; 1]>::wrap(v.into_owned(), DType::F8E4M3FN), data);
    }
}
