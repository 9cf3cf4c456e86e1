//! `RotaryEmbedding` (opset 23): rotates pairs of features of each head by position-dependent
//! angles given as cos / sin caches.

use crate::ops::{attr_err, input, optional_input, BuildContext, Kernel};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Tensor};

struct RotaryKernel {
    interleaved: bool,
    rotary_dim: usize,
    num_heads: usize,
}

/// Builds a `RotaryEmbedding` kernel.
pub fn build(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let interleaved = node.attr_int("interleaved").map_err(attr_err)?.unwrap_or(0) != 0;
    let rotary_dim = node
        .attr_int("rotary_embedding_dim")
        .map_err(attr_err)?
        .unwrap_or(0);
    let num_heads = node.attr_int("num_heads").map_err(attr_err)?.unwrap_or(0);
    if rotary_dim < 0 || num_heads < 0 {
        return Err(kernel_err(
            "rotary_embedding_dim and num_heads must not be negative",
        ));
    }
    Ok(Box::new(RotaryKernel {
        interleaved,
        rotary_dim: rotary_dim as usize,
        num_heads: num_heads as usize,
    }))
}

/// Rounds an f32 to the precision of `dtype`, so that half-precision inputs see the same
/// per-operation rounding as a computation carried out in that type.
pub(super) fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F16 => half::f16::from_f32(x).to_f32(),
        DType::BF16 => half::bf16::from_f32(x).to_f32(),
        _ => x,
    }
}

impl Kernel for RotaryKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        let cos = input(inputs, 1)?;
        let sin = input(inputs, 2)?;
        let pos = optional_input(inputs, 3);
        let dtype = x.dtype();
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(unsupported(format!("RotaryEmbedding on {dtype}")));
        }
        // Logical layout [batch, seq, heads, head_size]; `four_d` inputs are stored as
        // [batch, heads, seq, head_size] instead.
        let shape = x.shape();
        let (b, s, h, hd, four_d) = match *shape {
            [b, h, s, hd] => (b, s, h, hd, true),
            [b, s, hidden] => {
                if self.num_heads == 0 || hidden % self.num_heads != 0 {
                    return Err(kernel_err(format!(
                        "3-D input needs num_heads dividing the hidden size {hidden} (num_heads = {})",
                        self.num_heads
                    )));
                }
                (b, s, self.num_heads, hidden / self.num_heads, false)
            }
            _ => {
                return Err(kernel_err(format!(
                    "input must be 3-D or 4-D, got shape {shape:?}"
                )))
            }
        };
        let rd = if self.rotary_dim == 0 {
            hd
        } else {
            self.rotary_dim
        };
        if rd > hd || rd % 2 != 0 {
            return Err(kernel_err(format!(
                "rotary_embedding_dim {rd} must be even and at most the head size {hd}"
            )));
        }
        let half_rd = rd / 2;
        let cos_v = cos.to_f32_vec()?;
        let sin_v = sin.to_f32_vec()?;
        if cos.shape() != sin.shape() {
            return Err(kernel_err("cos_cache and sin_cache shapes differ"));
        }
        if cos.shape().last().copied() != Some(half_rd) {
            return Err(kernel_err(format!(
                "last dimension of the caches {:?} must be rotary_embedding_dim / 2 = {half_rd}",
                cos.shape()
            )));
        }
        // Row of the caches for each (batch, position).
        let rows: Vec<usize> = match pos {
            Some(p) => {
                if p.shape() != [b, s] {
                    return Err(kernel_err(format!(
                        "position_ids shape {:?} must be [{b}, {s}]",
                        p.shape()
                    )));
                }
                let max_pos = cos.shape().first().copied().unwrap_or(0);
                if cos.rank() != 2 {
                    return Err(kernel_err("with position_ids the caches must be 2-D"));
                }
                p.to_i64_vec()?
                    .into_iter()
                    .map(|id| {
                        usize::try_from(id)
                            .ok()
                            .filter(|&i| i < max_pos)
                            .ok_or_else(|| {
                                kernel_err(format!(
                                    "position id {id} is outside the caches (length {max_pos})"
                                ))
                            })
                    })
                    .collect::<Result<_, _>>()?
            }
            None => {
                if cos.shape() != [b, s, half_rd] {
                    return Err(kernel_err(format!(
                        "without position_ids the caches must be [{b}, {s}, {half_rd}], got {:?}",
                        cos.shape()
                    )));
                }
                (0..b * s).collect()
            }
        };
        let data = x.to_f32_vec()?;
        let mut out = data.clone();
        let r = |v: f32| round_to(dtype, v);
        for bi in 0..b {
            for si in 0..s {
                let row = rows[bi * s + si] * half_rd;
                let (c, sn) = (&cos_v[row..row + half_rd], &sin_v[row..row + half_rd]);
                for hi in 0..h {
                    let base = if four_d {
                        ((bi * h + hi) * s + si) * hd
                    } else {
                        ((bi * s + si) * h + hi) * hd
                    };
                    let src = &data[base..base + rd];
                    let dst = &mut out[base..base + rd];
                    for k in 0..half_rd {
                        // Interleaved pairs are (2k, 2k+1); otherwise the two halves pair up.
                        let (i1, i2) = if self.interleaved {
                            (2 * k, 2 * k + 1)
                        } else {
                            (k, k + half_rd)
                        };
                        let (x1, x2) = (src[i1], src[i2]);
                        dst[i1] = r(r(c[k] * x1) - r(sn[k] * x2));
                        dst[i2] = r(r(sn[k] * x1) + r(c[k] * x2));
                    }
                }
            }
        }
        let y = Tensor::from_vec(shape.to_vec(), out)?.cast(dtype)?;
        Ok(vec![y])
    }
}
