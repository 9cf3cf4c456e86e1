//! A safe, bounds-checked front end to the `gemm` crate's strided matrix product.

use crate::{kernel_err, RuntimeError};
use std::marker::PhantomData;

/// Element types the `gemm` crate multiplies natively.
pub(crate) trait GemmElem: Copy + Send + Sync + Default + PartialEq + 'static {
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// Value from f32 (attributes such as `alpha` are f32).
    fn from_f32(v: f32) -> Self;
    /// `a * b + c`.
    fn mul_add(a: Self, b: Self, c: Self) -> Self;
}

impl GemmElem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        a * b + c
    }
}

impl GemmElem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn from_f32(v: f32) -> Self {
        v as f64
    }
    #[inline(always)]
    fn mul_add(a: Self, b: Self, c: Self) -> Self {
        a * b + c
    }
}

/// A read-only strided matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    /// The elements.
    pub data: &'a [T],
    /// Row stride in elements.
    pub rs: usize,
    /// Column stride in elements.
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major matrix with `cols` columns.
    pub fn row_major(data: &'a [T], cols: usize) -> Self {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// Whether every element of a `rows x cols` view lies inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let last = (rows - 1).checked_mul(self.rs).and_then(|r| {
            (cols - 1)
                .checked_mul(self.cs)
                .and_then(|c| r.checked_add(c))
        });
        matches!(last, Some(l) if l < self.data.len())
    }
}

/// A mutable buffer that several tasks write at once, each to its own elements (e.g. column
/// blocks of one output matrix, which `chunks_mut` cannot hand out).
pub(crate) struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a SharedMut only hands out access through `gemm_block`, whose contract requires
// that concurrent callers write disjoint elements; the buffer itself is borrowed mutably for
// the SharedMut's lifetime, so nothing else touches it.
unsafe impl<T: Send> Send for SharedMut<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    /// Wraps a buffer for the duration of its mutable borrow.
    pub fn new(buf: &'a mut [T]) -> Self {
        SharedMut {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _borrow: PhantomData,
        }
    }
}

/// `dst[m x n] = (accumulate ? dst : 0) + alpha * a[m x k] * b[k x n]`, where `dst` is
/// row-major with row stride `dst_rs` (columns contiguous). `threads > 1` lets `gemm` split the
/// work over the current rayon pool.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm<T: GemmElem>(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    alpha: T,
    threads: usize,
) -> Result<(), RuntimeError> {
    let init = if accumulate { Init::Keep } else { Init::Zero };
    let shared = SharedMut::new(dst);
    // SAFETY: `shared` wraps an exclusive borrow and is used by this call only.
    unsafe { gemm_block(&shared, 0, m, n, k, dst_rs, init, a, b, alpha, threads) }
}

/// What a product block starts from.
#[derive(Clone, Copy)]
pub(crate) enum Init<'a, T> {
    /// Zero: the block is overwritten.
    Zero,
    /// The block's current contents (accumulate).
    Keep,
    /// `values[i]` in every element of row `i` (a per-row bias).
    Rows(&'a [T]),
}

/// The product of [`gemm`] into the `m x n` block of `dst` that starts at element `offset`
/// (row stride `dst_rs`), starting from `init`.
///
/// # Safety
///
/// No other thread may read or write the block's elements while this runs (different calls
/// on the same `SharedMut` must use disjoint blocks).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_block<T: GemmElem>(
    dst: &SharedMut<'_, T>,
    offset: usize,
    m: usize,
    n: usize,
    k: usize,
    dst_rs: usize,
    init: Init<'_, T>,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
    alpha: T,
    threads: usize,
) -> Result<(), RuntimeError> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    let dst_fits = (m == 1 || dst_rs >= n)
        && (m - 1)
            .checked_mul(dst_rs)
            .and_then(|r| r.checked_add(n))
            .and_then(|r| r.checked_add(offset))
            .is_some_and(|end| end <= dst.len);
    let init_fits = match init {
        Init::Rows(v) => v.len() >= m,
        _ => true,
    };
    if !dst_fits || !init_fits || !a.fits(m, k) || !b.fits(k, n) {
        return Err(kernel_err(format!(
            "internal error: matrix product {m}x{k} * {k}x{n} does not fit its buffers"
        )));
    }
    // SAFETY: the block lies inside the buffer (checked above).
    let base = unsafe { dst.ptr.add(offset) };
    let fill_rows = |value: &dyn Fn(usize) -> T| {
        for i in 0..m {
            let v = value(i);
            for j in 0..n {
                // SAFETY: i < m, j < n: inside the checked block, which the caller owns.
                unsafe { base.add(i * dst_rs + j).write(v) };
            }
        }
    };
    let accumulate = match init {
        Init::Zero => {
            if k == 0 {
                fill_rows(&|_| T::ZERO);
            }
            false
        }
        Init::Keep => true,
        Init::Rows(values) => {
            fill_rows(&|i| values[i]);
            true
        }
    };
    if k == 0 {
        // An empty sum adds nothing; `gemm` is not asked to handle this corner.
        return Ok(());
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the checks above guarantee that every element the product reads
    // (`a`: rows < m, cols < k; `b`: rows < k, cols < n) and writes (the dst block, rows not
    // overlapping since dst_rs >= n) lies inside its buffer; the caller guarantees nobody
    // else touches the block, and `a` / `b` are shared borrows that cannot alias the
    // mutably borrowed destination. `T` is f32 or f64 (the only GemmElem types), which
    // `gemm` supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            base,
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            // `gemm` computes dst = alpha_g * dst + beta_g * a * b.
            T::ONE,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_product_matches_naive() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 1.0).collect();
        // a read transposed: stored as k x m.
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let mut dst = vec![1.0f32; m * n];
        gemm(
            m,
            n,
            k,
            &mut dst,
            n,
            true,
            Mat {
                data: &at,
                rs: 1,
                cs: m,
            },
            Mat::row_major(&b, n),
            2.0,
            1,
        )
        .unwrap();
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                assert!((dst[i * n + j] - (1.0 + 2.0 * s)).abs() < 1e-4);
            }
        }
        assert!(gemm(
            m,
            n,
            k,
            &mut dst[1..],
            n,
            false,
            Mat::row_major(&a, k),
            Mat::row_major(&b, n),
            1.0,
            1
        )
        .is_err());
    }
}
