//! `LRN`: local response normalization across channels.
//!
//! For input `[N, C, D1, ..., Dk]`, every element is divided by
//! `(bias + alpha / size * square_sum) ^ beta`, where `square_sum` adds the squares of the
//! same position in channels `c - floor((size - 1) / 2) ..= c + ceil((size - 1) / 2)`,
//! clipped to the existing channels.

use crate::ops::{attr_err, input, BuildContext, Kernel};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Tensor};

/// A configured `LRN` node.
struct LrnKernel {
    size: usize,
    alpha: f64,
    beta: f64,
    bias: f64,
}

/// Builds an `LRN` kernel.
pub fn build(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let size = node
        .attr_int("size")
        .map_err(attr_err)?
        .ok_or_else(|| kernel_err("LRN needs the 'size' attribute"))?;
    let size = usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .ok_or_else(|| kernel_err(format!("LRN size must be positive, got {size}")))?;
    let f = |name: &str, default: f32| -> Result<f64, RuntimeError> {
        Ok(node.attr_float(name).map_err(attr_err)?.unwrap_or(default) as f64)
    };
    Ok(Box::new(LrnKernel {
        size,
        alpha: f("alpha", 1e-4)?,
        beta: f("beta", 0.75)?,
        bias: f("bias", 1.0)?,
    }))
}

impl Kernel for LrnKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let dtype = x.dtype();
        if !matches!(dtype, DType::F32 | DType::F64 | DType::F16) {
            return Err(unsupported(format!("LRN on {dtype}")));
        }
        let shape = x.shape();
        if shape.len() < 2 {
            return Err(kernel_err(format!(
                "LRN input must be at least [N, C], got {shape:?}"
            )));
        }
        let (n, c) = (shape[0], shape[1]);
        let inner: usize = shape[2..].iter().product();
        let data = x.cast(DType::F64)?.into_vec::<f64>()?;
        if data.len() != n * c * inner {
            return Err(kernel_err("LRN input data does not match its shape"));
        }
        // The window is asymmetric for even sizes: more channels after than before.
        let before = (self.size - 1) / 2;
        let after = self.size / 2;
        let scale = self.alpha / self.size as f64;
        let mut out = vec![0.0f64; data.len()];
        for b in 0..n {
            let plane = &data[b * c * inner..(b + 1) * c * inner];
            let out_plane = &mut out[b * c * inner..(b + 1) * c * inner];
            for ch in 0..c {
                let lo = ch.saturating_sub(before);
                let hi = (ch + after).min(c - 1);
                for i in 0..inner {
                    let sq: f64 = (lo..=hi)
                        .map(|k| {
                            let v = plane[k * inner + i];
                            v * v
                        })
                        .sum();
                    let idx = ch * inner + i;
                    out_plane[idx] = plane[idx] / (self.bias + scale * sq).powf(self.beta);
                }
            }
        }
        let y = Tensor::from_vec(shape.to_vec(), out)?.cast(dtype)?;
        Ok(vec![y])
    }
}
