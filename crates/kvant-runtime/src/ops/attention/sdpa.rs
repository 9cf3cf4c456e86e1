//! `Attention` (opset 23+): scaled dot-product attention with optional mask, KV cache,
//! causal / sliding-window masking, softcap and grouped-query heads.
//!
//! Follows the ONNX reference: Q and K are each scaled by `sqrt(scale)` before their product,
//! softcap is applied before the additive bias, and a query row whose bias is entirely `-inf`
//! yields zero probabilities (and so a zero output row) instead of NaN.

use super::rotary::round_to;
use crate::ops::{attr_err, input, optional_input, BuildContext, Kernel};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Tensor};
use rayon::prelude::*;

struct AttentionKernel {
    is_causal: bool,
    q_num_heads: usize,
    kv_num_heads: usize,
    mode: i64,
    scale: Option<f32>,
    softcap: f32,
    left_window: i64,
    right_window: i64,
    n_outputs: usize,
}

/// Builds an `Attention` kernel.
pub fn build(node: &Node, _ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let int = |name: &str, default: i64| -> Result<i64, RuntimeError> {
        Ok(node.attr_int(name).map_err(attr_err)?.unwrap_or(default))
    };
    let mode = int("qk_matmul_output_mode", 0)?;
    if !(0..=3).contains(&mode) {
        return Err(unsupported(format!("qk_matmul_output_mode {mode}")));
    }
    let q_num_heads = int("q_num_heads", 0)?;
    let kv_num_heads = int("kv_num_heads", 0)?;
    let left_window = int("left_window_size", -1)?;
    let right_window = int("right_window_size", -1)?;
    if q_num_heads < 0 || kv_num_heads < 0 || left_window < -1 || right_window < -1 {
        return Err(kernel_err(
            "head counts must be non-negative and window sizes -1 or non-negative",
        ));
    }
    Ok(Box::new(AttentionKernel {
        is_causal: int("is_causal", 0)? != 0,
        q_num_heads: q_num_heads as usize,
        kv_num_heads: kv_num_heads as usize,
        mode,
        scale: node.attr_float("scale").map_err(attr_err)?,
        softcap: node.attr_float("softcap").map_err(attr_err)?.unwrap_or(0.0),
        left_window,
        right_window,
        n_outputs: node.outputs.len().clamp(1, 4),
    }))
}

/// A tensor widened to f32 in [batch, heads, seq, head_size] order.
struct Heads {
    data: Vec<f32>,
    heads: usize,
    seq: usize,
    size: usize,
}

impl Heads {
    /// Reads a 4-D tensor as is, or a 3-D [batch, seq, heads * size] one split into `heads`.
    fn read(t: &Tensor, batch: usize, heads_3d: usize, what: &str) -> Result<Heads, RuntimeError> {
        let data = t.to_f32_vec()?;
        match *t.shape() {
            [b, h, s, d] if b == batch => Ok(Heads {
                data,
                heads: h,
                seq: s,
                size: d,
            }),
            [b, s, hidden] if b == batch => {
                if heads_3d == 0 || hidden % heads_3d != 0 {
                    return Err(kernel_err(format!(
                        "{what}: hidden size {hidden} is not a multiple of the head count {heads_3d}"
                    )));
                }
                let d = hidden / heads_3d;
                let mut out = vec![0f32; data.len()];
                for bi in 0..b {
                    for si in 0..s {
                        for hi in 0..heads_3d {
                            let src = ((bi * s + si) * heads_3d + hi) * d;
                            let dst = ((bi * heads_3d + hi) * s + si) * d;
                            out[dst..dst + d].copy_from_slice(&data[src..src + d]);
                        }
                    }
                }
                Ok(Heads {
                    data: out,
                    heads: heads_3d,
                    seq: s,
                    size: d,
                })
            }
            _ => Err(kernel_err(format!(
                "{what} has shape {:?}; expected 3-D or 4-D with batch {batch}",
                t.shape()
            ))),
        }
    }

    /// Row `s` of head `h` of batch `b`.
    fn row(&self, b: usize, h: usize, s: usize) -> &[f32] {
        let start = ((b * self.heads + h) * self.seq + s) * self.size;
        &self.data[start..start + self.size]
    }

    /// Prepends a cache (`past`, 4-D) along the sequence axis.
    fn with_past(
        self,
        past: Option<&Tensor>,
        batch: usize,
        what: &str,
    ) -> Result<Heads, RuntimeError> {
        let Some(past) = past else { return Ok(self) };
        let p = past.shape();
        if p.len() != 4 || p[0] != batch || p[1] != self.heads || p[3] != self.size {
            return Err(kernel_err(format!(
                "{what} has shape {p:?}; expected [{batch}, {}, *, {}]",
                self.heads, self.size
            )));
        }
        let pv = past.to_f32_vec()?;
        let (pl, d) = (p[2], self.size);
        let seq = pl + self.seq;
        let mut data = Vec::with_capacity(batch * self.heads * seq * d);
        for bh in 0..batch * self.heads {
            data.extend_from_slice(&pv[bh * pl * d..(bh + 1) * pl * d]);
            data.extend_from_slice(&self.data[bh * self.seq * d..(bh + 1) * self.seq * d]);
        }
        Ok(Heads {
            data,
            heads: self.heads,
            seq,
            size: d,
        })
    }
}

/// The attention mask, widened to an additive f32 bias with right-aligned broadcasting
/// against [batch, q_heads, q_seq, kv_seq].
struct Mask {
    bias: Vec<f32>,
    /// Strides for batch, head and query axes (0 where broadcast).
    strides: [usize; 3],
    /// Length of the mask's last axis; keys beyond it are masked (the spec pads with -inf).
    len: usize,
}

impl Mask {
    fn new(m: &Tensor, target: [usize; 3], kv: usize) -> Result<Mask, RuntimeError> {
        let shape = m.shape();
        let rank = shape.len();
        if rank == 0 || rank > 4 {
            return Err(kernel_err(format!(
                "attn_mask must be 1-D to 4-D, got {shape:?}"
            )));
        }
        let len = shape[rank - 1];
        if len > kv {
            return Err(kernel_err(format!(
                "attn_mask has {len} keys but there are only {kv}"
            )));
        }
        let bias = match m.dtype() {
            DType::Bool => m
                .as_slice::<bool>()?
                .iter()
                .map(|&ok| if ok { 0.0 } else { f32::NEG_INFINITY })
                .collect(),
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 => m.to_f32_vec()?,
            other => return Err(unsupported(format!("attn_mask of type {other}"))),
        };
        let mut strides = [0usize; 3];
        let mut stride = len;
        // Leading mask axes align with the last `rank - 1` of [batch, heads, q_seq].
        for k in (0..rank - 1).rev() {
            let axis = 3 - (rank - 1) + k;
            let d = shape[k];
            if d != 1 && d != target[axis] {
                return Err(kernel_err(format!(
                    "attn_mask shape {shape:?} does not broadcast to {:?}",
                    [target[0], target[1], target[2], kv]
                )));
            }
            if d != 1 {
                strides[axis] = stride;
            }
            stride *= d;
        }
        Ok(Mask { bias, strides, len })
    }
}

impl Kernel for AttentionKernel {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let q_t = input(inputs, 0)?;
        let k_t = input(inputs, 1)?;
        let v_t = input(inputs, 2)?;
        let dtype = q_t.dtype();
        if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(unsupported(format!("Attention on {dtype}")));
        }
        let past_key = optional_input(inputs, 4);
        let past_value = optional_input(inputs, 5);
        for (t, what) in [
            (Some(k_t), "K"),
            (Some(v_t), "V"),
            (past_key, "past_key"),
            (past_value, "past_value"),
        ] {
            if let Some(t) = t {
                if t.dtype() != dtype {
                    return Err(kernel_err(format!(
                        "{what} is {} but Q is {dtype}",
                        t.dtype()
                    )));
                }
            }
        }
        if past_key.is_some() != past_value.is_some() {
            return Err(kernel_err("past_key and past_value must be given together"));
        }
        let rank = q_t.rank();
        if k_t.rank() != rank || v_t.rank() != rank {
            return Err(kernel_err("Q, K and V must have the same rank"));
        }
        let batch = q_t.shape().first().copied().unwrap_or(0);
        let q = Heads::read(q_t, batch, self.q_num_heads, "Q")?;
        let past_len = past_key
            .map(|p| p.shape().get(2).copied().unwrap_or(0))
            .unwrap_or(0);
        let k = Heads::read(k_t, batch, self.kv_num_heads, "K")?
            .with_past(past_key, batch, "past_key")?;
        let v = Heads::read(v_t, batch, self.kv_num_heads, "V")?.with_past(
            past_value,
            batch,
            "past_value",
        )?;
        if k.size != q.size || k.heads != v.heads || k.seq != v.seq {
            return Err(kernel_err(format!(
                "inconsistent Q/K/V: Q head size {}, K heads {} x {}, V heads {} with {} keys vs {}",
                q.size, k.heads, k.size, v.heads, v.seq, k.seq
            )));
        }
        if k.heads == 0 || q.heads % k.heads != 0 {
            return Err(kernel_err(format!(
                "{} query heads are not a multiple of {} key/value heads",
                q.heads, k.heads
            )));
        }
        let (hq, s, t, dv) = (q.heads, q.seq, k.seq, v.size);
        let group = hq / k.heads;

        let mask = optional_input(inputs, 3)
            .map(|m| Mask::new(m, [batch, hq, s], t))
            .transpose()?;
        let nonpad = match optional_input(inputs, 6) {
            None => None,
            Some(n) => {
                if past_key.is_some() {
                    return Err(kernel_err(
                        "nonpad_kv_seqlen cannot be combined with past_key",
                    ));
                }
                let v = n.to_i64_vec()?;
                if v.len() != batch {
                    return Err(kernel_err(format!(
                        "nonpad_kv_seqlen has {} values for batch {batch}",
                        v.len()
                    )));
                }
                Some(v)
            }
        };

        // sqrt(scale) is rounded to the input type, as the reference applies it to Q and K
        // separately in that type.
        let scale = self
            .scale
            .map(f64::from)
            .unwrap_or_else(|| 1.0 / (q.size as f64).sqrt());
        let sqrt_scale = round_to(dtype, scale.sqrt() as f32);
        let softcap = self.softcap;
        let neg = f32::NEG_INFINITY;
        let windowed = self.left_window >= 0 || self.right_window >= 0;
        // bf16 is computed like the reference does it in that type: every elementwise step
        // and each dot product rounded to bf16, sums accumulated one rounded add at a time.
        let emulate = dtype == DType::BF16;
        let r = |x: f32| if emulate { round_to(dtype, x) } else { x };

        let rows: Vec<(Vec<f32>, Vec<f32>)> = (0..batch * hq)
            .into_par_iter()
            .map(|bh| {
                let (b, h) = (bh / hq, bh % hq);
                let kh = h / group;
                // Causal / window frontier: key j is "at or before" query i iff j <= i + offset.
                let offset: i64 = match &nonpad {
                    Some(n) if past_key.is_none() => n[b] - s as i64,
                    _ => past_len as i64,
                };
                let mut y = vec![0f32; s * dv];
                let mut qk_out = vec![0f32; s * t];
                let mut bias = vec![0f32; t];
                let mut scores = vec![0f32; t];
                let mut ks = vec![0f32; q.size];
                for i in 0..s {
                    for (j, bj) in bias.iter_mut().enumerate() {
                        let mut val = 0f32;
                        if let Some(m) = &mask {
                            val = if j < m.len {
                                let idx =
                                    b * m.strides[0] + h * m.strides[1] + i * m.strides[2] + j;
                                m.bias.get(idx).copied().unwrap_or(neg)
                            } else {
                                neg
                            };
                        }
                        let ij = i as i64 + offset - j as i64;
                        if self.is_causal && ij < 0 {
                            val += neg;
                        }
                        if windowed
                            && ((self.left_window >= 0 && ij > self.left_window)
                                || (self.right_window >= 0 && -ij > self.right_window))
                        {
                            val += neg;
                        }
                        if let Some(n) = &nonpad {
                            if j as i64 >= n[b] {
                                val += neg;
                            }
                        }
                        *bj = val;
                    }
                    let qs: Vec<f32> = q.row(b, h, i).iter().map(|&x| r(x * sqrt_scale)).collect();
                    for (j, sc) in scores.iter_mut().enumerate() {
                        for (kd, &x) in ks.iter_mut().zip(k.row(b, kh, j)) {
                            *kd = r(x * sqrt_scale);
                        }
                        let mut dot = r(qs.iter().zip(&ks).map(|(a, b)| a * b).sum());
                        if softcap > 0.0 {
                            dot = r(r(r(dot / softcap).tanh()) * softcap);
                        }
                        *sc = dot;
                    }
                    let qk_row = &mut qk_out[i * t..(i + 1) * t];
                    if self.mode <= 1 {
                        qk_row.copy_from_slice(&scores);
                    }
                    for (sc, bj) in scores.iter_mut().zip(&bias) {
                        *sc = r(*sc + bj);
                    }
                    if self.mode == 2 {
                        qk_row.copy_from_slice(&scores);
                    }
                    softmax(&mut scores, &r);
                    // Rows with no attendable key get zero probabilities, decided on the bias
                    // so NaN logits cannot leak through.
                    if bias.iter().all(|&x| x == neg) {
                        scores.iter_mut().for_each(|p| *p = 0.0);
                    }
                    if self.mode == 3 {
                        qk_row.copy_from_slice(&scores);
                    }
                    let y_row = &mut y[i * dv..(i + 1) * dv];
                    for (j, &p) in scores.iter().enumerate() {
                        for (o, &x) in y_row.iter_mut().zip(v.row(b, kh, j)) {
                            *o += p * x;
                        }
                    }
                    y_row.iter_mut().for_each(|o| *o = r(*o));
                }
                (y, qk_out)
            })
            .collect();

        let mut y = Vec::with_capacity(batch * hq * s * dv);
        let mut qk = Vec::with_capacity(batch * hq * s * t);
        for (yr, qr) in &rows {
            y.extend_from_slice(yr);
            qk.extend_from_slice(qr);
        }
        let y = if rank == 3 {
            // [batch, heads, seq, dv] -> [batch, seq, heads * dv]
            let mut out = vec![0f32; y.len()];
            for b in 0..batch {
                for h in 0..hq {
                    for i in 0..s {
                        let src = ((b * hq + h) * s + i) * dv;
                        let dst = ((b * s + i) * hq + h) * dv;
                        out[dst..dst + dv].copy_from_slice(&y[src..src + dv]);
                    }
                }
            }
            Tensor::from_vec(vec![batch, s, hq * dv], out)?
        } else {
            Tensor::from_vec(vec![batch, hq, s, dv], y)?
        };
        let mut outs = vec![y.cast(dtype)?];
        if self.n_outputs > 1 {
            outs.push(Tensor::from_vec(vec![batch, k.heads, t, k.size], k.data)?.cast(dtype)?);
        }
        if self.n_outputs > 2 {
            outs.push(Tensor::from_vec(vec![batch, v.heads, t, dv], v.data)?.cast(dtype)?);
        }
        if self.n_outputs > 3 {
            outs.push(Tensor::from_vec(vec![batch, hq, s, t], qk)?.cast(dtype)?);
        }
        Ok(outs)
    }
}

/// In-place softmax of one row. NaN propagates; an all `-inf` row becomes all zeros.
/// `r` rounds each intermediate to the emulated precision (identity for f32).
fn softmax(row: &mut [f32], r: &impl Fn(f32) -> f32) {
    let mut max = f32::NEG_INFINITY;
    for &x in row.iter() {
        if x.is_nan() {
            max = f32::NAN;
            break;
        }
        max = max.max(x);
    }
    // A row of only -inf has no valid maximum; shifting by 0 turns it into zeros below.
    let shift = if max == f32::NEG_INFINITY { 0.0 } else { max };
    let mut sum = 0f32;
    for x in row.iter_mut() {
        *x = r(r(*x - shift).exp());
        sum = r(sum + *x);
    }
    let sum = if sum == 0.0 { 1.0 } else { sum };
    row.iter_mut().for_each(|x| *x = r(*x / sum));
}
