//! Element-wise operators: unary math and activations, numpy-broadcasting binary and variadic
//! operators, comparisons and logic, `Where`, `Cast` / `CastLike` and the quantization operators.
//!
//! The shared machinery lives here: [`Layout`] collapses a broadcast into as few dimensions as
//! possible so that the innermost loop always runs over a contiguous (or constant) run of
//! elements, and [`map_slice`] / [`binary`] split large outputs across rayon workers.

use super::Registry;
use crate::RuntimeError;
use rayon::prelude::*;

mod binary;
mod cast;
mod erf;
mod num;
mod packed;
mod quantize;
mod unary;

/// Outputs with at least this many elements are split across threads.
const PAR_THRESHOLD: usize = 1 << 16;
/// Elements each parallel task handles (large enough to amortize scheduling).
const PAR_CHUNK: usize = 1 << 14;

/// Registers this module's operators.
pub fn register(r: &mut Registry) {
    unary::register(r);
    binary::register(r);
    cast::register(r);
    quantize::register(r);
}

/// Applies `f` to every element of `src`, writing the results to a new vector; large inputs
/// are processed in parallel chunks. `f` gets whole chunks so that it can keep its per-chunk
/// setup (a `match` on the operator) out of the element loop.
fn map_chunks<S, D, F>(src: &[S], f: F) -> Vec<D>
where
    S: Copy + Sync,
    D: Copy + Default + Send,
    F: Fn(&[S], &mut [D]) + Sync,
{
    let mut out = vec![D::default(); src.len()];
    if src.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(PAR_CHUNK)
            .zip(src.par_chunks(PAR_CHUNK))
            .for_each(|(d, s)| f(s, d));
    } else {
        f(src, &mut out);
    }
    out
}

/// Element-wise map of a slice (parallel for large inputs).
fn map_slice<S, D, F>(src: &[S], f: F) -> Vec<D>
where
    S: Copy + Sync,
    D: Copy + Default + Send,
    F: Fn(S) -> D + Sync,
{
    map_chunks(src, |s, d| {
        for (o, &x) in d.iter_mut().zip(s) {
            *o = f(x);
        }
    })
}

/// A broadcast of several inputs to one output shape, with the dimensions collapsed: size-1
/// output dimensions are dropped and neighbours that every input walks contiguously (or holds
/// constant) are merged. The innermost collapsed dimension has stride 0 or 1 in every input.
#[derive(Debug, Clone)]
struct Layout {
    /// The broadcast output shape (uncollapsed).
    out_shape: Vec<usize>,
    /// Collapsed dimensions, outermost first; never empty.
    dims: Vec<usize>,
    /// Per input, its stride for each collapsed dimension.
    strides: Vec<Vec<usize>>,
}

impl Layout {
    /// Plans the broadcast of `shapes`.
    fn new(shapes: &[&[usize]]) -> Result<Layout, RuntimeError> {
        let out_shape = super::broadcast_shape(shapes)?;
        let full: Vec<Vec<usize>> = shapes
            .iter()
            .map(|s| super::broadcast_strides(s, &out_shape))
            .collect();
        let mut dims: Vec<usize> = Vec::new();
        let mut strides: Vec<Vec<usize>> = vec![Vec::new(); shapes.len()];
        for (d, &size) in out_shape.iter().enumerate() {
            if size == 1 {
                continue;
            }
            // Merge into the previous dimension when every input continues contiguously
            // (outer stride == inner stride * inner size; also true for two stride-0 dims).
            let mergeable = !dims.is_empty()
                && full
                    .iter()
                    .zip(&strides)
                    .all(|(f, s)| s.last().copied() == Some(f[d] * size));
            if mergeable {
                if let Some(last) = dims.last_mut() {
                    *last *= size;
                }
                for (f, s) in full.iter().zip(strides.iter_mut()) {
                    if let Some(last) = s.last_mut() {
                        *last = f[d];
                    }
                }
            } else {
                dims.push(size);
                for (f, s) in full.iter().zip(strides.iter_mut()) {
                    s.push(f[d]);
                }
            }
        }
        if dims.is_empty() {
            dims.push(1);
            for s in strides.iter_mut() {
                s.push(0);
            }
        }
        Ok(Layout {
            out_shape,
            dims,
            strides,
        })
    }

    /// Number of output elements.
    fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// Length of the innermost (contiguous) run.
    fn inner(&self) -> usize {
        self.dims.last().copied().unwrap_or(1)
    }

    /// Stride of input `i` along the innermost run (0 or 1).
    fn inner_stride(&self, i: usize) -> usize {
        self.strides[i].last().copied().unwrap_or(0)
    }

    /// Calls `f(row_offsets, out_row)` for every innermost run of `out`, where `row_offsets[i]`
    /// is where input `i`'s data for that run starts. Rows are split across threads when the
    /// output is large.
    fn for_each_row<O, F>(&self, out: &mut [O], f: F)
    where
        O: Send,
        F: Fn(&[usize], &mut [O]) + Sync,
    {
        let inner = self.inner();
        if inner == 0 || out.is_empty() {
            return;
        }
        let run_rows = |first_row: usize, chunk: &mut [O]| {
            let outer = &self.dims[..self.dims.len() - 1];
            // Odometer over the outer dimensions, started at `first_row`.
            let mut index = vec![0usize; outer.len()];
            let mut rem = first_row;
            for (k, &d) in outer.iter().enumerate().rev() {
                index[k] = rem % d;
                rem /= d;
            }
            let mut offsets: Vec<usize> = self
                .strides
                .iter()
                .map(|s| index.iter().zip(s).map(|(i, st)| i * st).sum())
                .collect();
            for row in chunk.chunks_mut(inner) {
                f(&offsets, row);
                for k in (0..outer.len()).rev() {
                    index[k] += 1;
                    for (off, s) in offsets.iter_mut().zip(&self.strides) {
                        *off += s[k];
                    }
                    if index[k] < outer[k] {
                        break;
                    }
                    for (off, s) in offsets.iter_mut().zip(&self.strides) {
                        *off -= s[k] * outer[k];
                    }
                    index[k] = 0;
                }
            }
        };
        if out.len() >= PAR_THRESHOLD {
            let rows_per_task = (PAR_CHUNK / inner).max(1);
            out.par_chunks_mut(rows_per_task * inner)
                .enumerate()
                .for_each(|(t, chunk)| run_rows(t * rows_per_task, chunk));
        } else {
            run_rows(0, out);
        }
    }
}

/// Broadcasting binary map: `f(a, b)` for every element of the broadcast of the two inputs.
/// Returns the output shape and values.
fn binary<A, B, O, F>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    f: F,
) -> Result<(Vec<usize>, Vec<O>), RuntimeError>
where
    A: Copy + Sync,
    B: Copy + Sync,
    O: Copy + Default + Send,
    F: Fn(A, B) -> O + Sync,
{
    let layout = Layout::new(&[a_shape, b_shape])?;
    let mut out = vec![O::default(); layout.len()];
    let (sa, sb) = (layout.inner_stride(0), layout.inner_stride(1));
    let n = layout.inner();
    // The four inner-loop shapes; each is a simple zip the compiler can vectorize.
    layout.for_each_row(&mut out, |off, row| {
        let (oa, ob) = (off[0], off[1]);
        match (sa, sb) {
            (1, 1) => {
                for ((o, &x), &y) in row.iter_mut().zip(&a[oa..oa + n]).zip(&b[ob..ob + n]) {
                    *o = f(x, y);
                }
            }
            (1, _) => {
                let y = b[ob];
                for (o, &x) in row.iter_mut().zip(&a[oa..oa + n]) {
                    *o = f(x, y);
                }
            }
            (_, 1) => {
                let x = a[oa];
                for (o, &y) in row.iter_mut().zip(&b[ob..ob + n]) {
                    *o = f(x, y);
                }
            }
            _ => row.fill(f(a[oa], b[ob])),
        }
    });
    Ok((layout.out_shape, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_collapses_bias_broadcast() {
        let l = Layout::new(&[&[2, 3, 4, 5], &[4, 1]]).unwrap();
        assert_eq!(l.out_shape, vec![2, 3, 4, 5]);
        assert_eq!(l.dims, vec![6, 4, 5]);
        assert_eq!(l.strides[0], vec![20, 5, 1]);
        assert_eq!(l.strides[1], vec![0, 1, 0]);
        let same = Layout::new(&[&[2, 3], &[2, 3]]).unwrap();
        assert_eq!(same.dims, vec![6]);
        let scalar = Layout::new(&[&[], &[]]).unwrap();
        assert_eq!(scalar.dims, vec![1]);
    }

    #[test]
    fn binary_broadcasts_like_numpy() {
        let a: Vec<i32> = (0..6).collect();
        let b = vec![10, 20, 30];
        let (shape, out) = binary(&a, &[2, 3], &b, &[3], |x, y| x + y).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(out, vec![10, 21, 32, 13, 24, 35]);
        let (shape, out) = binary(&[1, 2], &[2, 1], &b, &[1, 3], |x: i32, y| x * y).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(out, vec![10, 20, 30, 20, 40, 60]);
    }

    #[test]
    fn binary_parallel_matches_serial() {
        let n = 3 * PAR_THRESHOLD;
        let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..3).map(|i| i as f32 * 1000.0).collect();
        let (_, out) = binary(&a, &[n / 3, 3], &b, &[3], |x, y| x + y).unwrap();
        for (i, v) in out.iter().enumerate() {
            assert_eq!(*v, i as f32 + (i % 3) as f32 * 1000.0);
        }
        let c: Vec<f32> = (0..n / 3).map(|i| i as f32).collect();
        let (_, out) = binary(&a, &[n / 3, 3], &c, &[n / 3, 1], |x, y| x - y).unwrap();
        for (i, v) in out.iter().enumerate() {
            assert_eq!(*v, i as f32 - (i / 3) as f32);
        }
    }
}
