//! A safe, bounds-checked front end to the `gemm` crate's strided matrix product.

use crate::{kernel_err, RuntimeError};

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
        Mat { data, rs: cols, cs: 1 }
    }

    /// Whether every element of a `rows x cols` view lies inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let last = (rows - 1)
            .checked_mul(self.rs)
            .and_then(|r| (cols - 1).checked_mul(self.cs).and_then(|c| r.checked_add(c)));
        matches!(last, Some(l) if l < self.data.len())
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
    if m == 0 || n == 0 {
        return Ok(());
    }
    let dst_fits = (m == 1 || dst_rs >= n)
        && (m - 1)
            .checked_mul(dst_rs)
            .and_then(|r| r.checked_add(n))
            .is_some_and(|end| end <= dst.len());
    if !dst_fits || !a.fits(m, k) || !b.fits(k, n) {
        return Err(kernel_err(format!(
            "internal error: matrix product {m}x{k} * {k}x{n} does not fit its buffers"
        )));
    }
    if k == 0 {
        // An empty sum: nothing to add; `gemm` is not asked to handle this corner.
        if !accumulate {
            for row in dst.chunks_mut(dst_rs.max(n)).take(m) {
                row.iter_mut().take(n).for_each(|v| *v = T::ZERO);
            }
        }
        return Ok(());
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the checks above guarantee that every element the product reads
    // (`a`: rows < m, cols < k; `b`: rows < k, cols < n) and writes (`dst`: rows < m,
    // cols < n, rows not overlapping since dst_rs >= n) lies inside the borrowed slices; `dst`
    // is borrowed mutably so it cannot alias `a` or `b`. `T` is f32 or f64 (the trait is
    // only implemented for those), which `gemm` supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
            Mat { data: &at, rs: 1, cs: m },
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
        assert!(gemm(m, n, k, &mut dst[1..], n, false, Mat::row_major(&a, k), Mat::row_major(&b, n), 1.0, 1).is_err());
    }
}
