//! Recurrent layers: `LSTM`, `GRU` and `RNN`.
//!
//! All three share one driver: the input projection `X · Wᵀ` of every time step is computed
//! up front as a single matrix product (it does not depend on the recurrence), then each step
//! adds `H · Rᵀ`, applies the cell's activations and writes `Y`. Inputs are converted to the
//! internal layout `[seq, batch, ...]` first, so `layout = 1` only costs a transpose on the
//! way in and out. f32 and f64 are computed natively; f16 and bf16 are computed in f32.

use super::{attr_err, input, optional_input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Element, Tensor};
use std::ops::{Add, Mul, Neg, Sub};

/// Registers this module's operators.
pub fn register(r: &mut Registry) {
    r.add("LSTM", build_lstm);
    r.add("GRU", build_gru);
    r.add("RNN", build_rnn);
}

/// The floating-point types the recurrence runs in.
trait Real:
    Element
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Neg<Output = Self>
{
    fn of(v: f32) -> Self;
    fn exp(self) -> Self;
    fn tanh(self) -> Self;
    fn ln(self) -> Self;
    fn abs(self) -> Self;
    fn recip(self) -> Self;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            fn of(v: f32) -> Self {
                v as $t
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            fn recip(self) -> Self {
                <$t>::recip(self)
            }
        }
    };
}
real!(f32);
real!(f64);

/// An activation function of a recurrent cell, with its alpha / beta resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    Sigmoid,
    Tanh,
    Relu,
    Affine(f32, f32),
    LeakyRelu(f32),
    ThresholdedRelu(f32),
    ScaledTanh(f32, f32),
    HardSigmoid(f32, f32),
    Elu(f32),
    Softsign,
    Softplus,
}

/// How many of (alpha, beta) an activation takes, and their defaults (the ONNX operators').
fn act_params(name: &str) -> Option<(usize, f32, f32)> {
    Some(match name {
        "sigmoid" | "tanh" | "relu" | "softsign" | "softplus" => (0, 0.0, 0.0),
        "leakyrelu" => (1, 0.01, 0.0),
        "thresholdedrelu" => (1, 1.0, 0.0),
        "elu" => (1, 1.0, 0.0),
        "affine" => (2, 1.0, 0.0),
        "scaledtanh" => (2, 1.0, 1.0),
        "hardsigmoid" => (2, 0.2, 0.5),
        _ => return None,
    })
}

impl Act {
    fn from_parts(name: &str, alpha: f32, beta: f32) -> Act {
        match name {
            "sigmoid" => Act::Sigmoid,
            "tanh" => Act::Tanh,
            "relu" => Act::Relu,
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            "leakyrelu" => Act::LeakyRelu(alpha),
            "thresholdedrelu" => Act::ThresholdedRelu(alpha),
            "elu" => Act::Elu(alpha),
            "affine" => Act::Affine(alpha, beta),
            "scaledtanh" => Act::ScaledTanh(alpha, beta),
            _ => Act::HardSigmoid(alpha, beta),
        }
    }

    #[inline]
    fn apply<T: Real>(self, x: T) -> T {
        let zero = T::of(0.0);
        let one = T::of(1.0);
        match self {
            Act::Sigmoid => {
                // Written so that exp never overflows: both branches take exp of a
                // non-positive number.
                if x >= zero {
                    (one + (-x).exp()).recip()
                } else {
                    let e = x.exp();
                    e * (one + e).recip()
                }
            }
            Act::Tanh => x.tanh(),
            Act::Relu => {
                if x > zero {
                    x
                } else {
                    zero
                }
            }
            Act::Affine(a, b) => T::of(a) * x + T::of(b),
            Act::LeakyRelu(a) => {
                if x >= zero {
                    x
                } else {
                    T::of(a) * x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x > T::of(a) {
                    x
                } else {
                    zero
                }
            }
            Act::ScaledTanh(a, b) => T::of(a) * (T::of(b) * x).tanh(),
            Act::HardSigmoid(a, b) => {
                let v = T::of(a) * x + T::of(b);
                if v < zero {
                    zero
                } else if v > one {
                    one
                } else {
                    v
                }
            }
            Act::Elu(a) => {
                if x >= zero {
                    x
                } else {
                    T::of(a) * (x.exp() - one)
                }
            }
            Act::Softsign => x * (one + x.abs()).recip(),
            Act::Softplus => {
                // log(1 + e^x) = max(x, 0) + log(1 + e^-|x|), stable for large |x|.
                let m = if x > zero { x } else { zero };
                m + (one + (-x.abs()).exp()).ln()
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell {
    Lstm { input_forget: bool },
    Gru { linear_before_reset: bool },
    Rnn,
}

impl Cell {
    /// Gates stacked in W / R (LSTM: i o f c, GRU: z r h, RNN: one).
    fn gates(self) -> usize {
        match self {
            Cell::Lstm { .. } => 4,
            Cell::Gru { .. } => 3,
            Cell::Rnn => 1,
        }
    }

    /// Activations per direction (LSTM: f g h, GRU: f g, RNN: f).
    fn activations(self) -> usize {
        match self {
            Cell::Lstm { .. } => 3,
            Cell::Gru { .. } => 2,
            Cell::Rnn => 1,
        }
    }

    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Cell::Lstm { .. } => &["sigmoid", "tanh", "tanh"],
            Cell::Gru { .. } => &["sigmoid", "tanh"],
            Cell::Rnn => &["tanh"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

/// A configured recurrent layer.
#[derive(Debug)]
struct Recurrent {
    cell: Cell,
    direction: Direction,
    hidden_size: Option<usize>,
    /// `cell.activations()` entries per direction, forward first.
    acts: Vec<Act>,
    clip: Option<f32>,
    batch_first: bool,
}

fn build_lstm(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let input_forget = node
        .attr_int("input_forget")
        .map_err(attr_err)?
        .unwrap_or(0)
        != 0;
    build(node, ctx, Cell::Lstm { input_forget })
}

fn build_gru(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let lbr = node
        .attr_int("linear_before_reset")
        .map_err(attr_err)?
        .unwrap_or(0)
        != 0;
    build(
        node,
        ctx,
        Cell::Gru {
            linear_before_reset: lbr,
        },
    )
}

fn build_rnn(node: &Node, ctx: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    build(node, ctx, Cell::Rnn)
}

fn build(node: &Node, ctx: &BuildContext, cell: Cell) -> Result<Box<dyn Kernel>, RuntimeError> {
    Ok(Box::new(parse(node, ctx, cell)?))
}

/// Reads and checks a recurrent node's attributes.
fn parse(node: &Node, ctx: &BuildContext, cell: Cell) -> Result<Recurrent, RuntimeError> {
    let direction = match node
        .attr_string("direction")
        .map_err(attr_err)?
        .as_deref()
        .unwrap_or("forward")
    {
        "forward" => Direction::Forward,
        "reverse" => Direction::Reverse,
        "bidirectional" => Direction::Bidirectional,
        other => return Err(kernel_err(format!("unknown direction '{other}'"))),
    };
    let num_dirs = if direction == Direction::Bidirectional {
        2
    } else {
        1
    };
    let hidden_size = match node.attr_int("hidden_size").map_err(attr_err)? {
        Some(h) if h <= 0 => return Err(kernel_err(format!("hidden_size {h} must be positive"))),
        Some(h) => Some(h as usize),
        None => None,
    };
    // `layout` exists from opset 14 on; older models are always sequence-first.
    let layout = if ctx.opset >= 14 {
        node.attr_int("layout").map_err(attr_err)?.unwrap_or(0)
    } else {
        0
    };
    if layout != 0 && layout != 1 {
        return Err(kernel_err(format!("layout must be 0 or 1, got {layout}")));
    }
    let clip = node.attr_float("clip").map_err(attr_err)?;
    if let Some(c) = clip {
        if c.is_nan() || c < 0.0 {
            return Err(kernel_err(format!("clip must be non-negative, got {c}")));
        }
    }

    let per_dir = cell.activations();
    let names: Vec<String> = match node.attr_strings("activations").map_err(attr_err)? {
        Some(list) => list.iter().map(|s| s.to_ascii_lowercase()).collect(),
        None => {
            let d = cell.default_activations();
            (0..num_dirs)
                .flat_map(|_| d.iter().map(|s| s.to_string()))
                .collect()
        }
    };
    // A bidirectional layer given one direction's list uses it for both directions.
    let names = if names.len() == per_dir && num_dirs == 2 {
        names.iter().chain(names.iter()).cloned().collect()
    } else {
        names
    };
    if names.len() != per_dir * num_dirs {
        return Err(kernel_err(format!(
            "expected {} activations, got {}",
            per_dir * num_dirs,
            names.len()
        )));
    }
    // alpha / beta values are consumed in order by the activations that take them.
    let alphas = node.attr_floats("activation_alpha").map_err(attr_err)?;
    let betas = node.attr_floats("activation_beta").map_err(attr_err)?;
    let mut alphas = alphas.unwrap_or(&[]).iter();
    let mut betas = betas.unwrap_or(&[]).iter();
    let mut acts = Vec::with_capacity(names.len());
    for name in &names {
        let (count, da, db) =
            act_params(name).ok_or_else(|| unsupported(format!("activation '{name}'")))?;
        let alpha = if count >= 1 {
            alphas.next().copied().unwrap_or(da)
        } else {
            da
        };
        let beta = if count >= 2 {
            betas.next().copied().unwrap_or(db)
        } else {
            db
        };
        acts.push(Act::from_parts(name, alpha, beta));
    }

    Ok(Recurrent {
        cell,
        direction,
        hidden_size,
        acts,
        clip,
        batch_first: layout == 1,
    })
}

/// Swaps the first two axes of a rank-3 (or higher) row-major array.
fn swap01<T: Copy>(data: &[T], d0: usize, d1: usize, inner: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(data.len());
    for j in 0..d1 {
        for i in 0..d0 {
            let at = (i * d1 + j) * inner;
            out.extend_from_slice(&data[at..at + inner]);
        }
    }
    out
}

/// `out (m×n) = a (m×k) · bᵀ`, with `b` stored row-major as n×k.
fn matmul_bt<T: Real>(a: &[T], m: usize, k: usize, b: &[T], n: usize, out: &mut [T]) {
    debug_assert!(a.len() >= m * k && b.len() >= n * k && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(T::of(0.0));
        return;
    }
    // SAFETY: the slices hold at least m·k, n·k and m·n elements (checked by the callers'
    // shape validation, asserted above in debug builds), and the strides below address
    // exactly those ranges: a row-major (rs = k, cs = 1), bᵀ read through b's rows
    // (element (kk, j) at j·k + kk), out row-major (rs = n, cs = 1). `T` is f32 or f64,
    // both of which gemm implements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            T::of(0.0),
            T::of(1.0),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The inputs of one run, converted to `T` and to sequence-first layout.
struct Inputs<T> {
    x: Vec<T>,
    w: Vec<T>,
    r: Vec<T>,
    b: Option<Vec<T>>,
    lens: Option<Vec<usize>>,
    h0: Option<Vec<T>>,
    c0: Option<Vec<T>>,
    p: Option<Vec<T>>,
}

/// Sizes of one run.
#[derive(Clone, Copy)]
struct Dims {
    seq: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    dirs: usize,
}

fn to_vec<T: Real>(t: &Tensor) -> Result<Vec<T>, RuntimeError> {
    Ok(t.cast(T::DTYPE)?.into_vec::<T>()?)
}

fn check_shape(what: &str, t: &Tensor, expected: &[usize]) -> Result<(), RuntimeError> {
    if t.shape() != expected {
        return Err(kernel_err(format!(
            "{what} has shape {:?}, expected {expected:?}",
            t.shape()
        )));
    }
    Ok(())
}

impl Recurrent {
    fn num_dirs(&self) -> usize {
        if self.direction == Direction::Bidirectional {
            2
        } else {
            1
        }
    }

    /// Validates shapes and converts every input to `T` in sequence-first layout.
    fn gather<T: Real>(
        &self,
        inputs: &[Option<&Tensor>],
    ) -> Result<(Inputs<T>, Dims), RuntimeError> {
        let x = input(inputs, 0)?;
        let w = input(inputs, 1)?;
        let r = input(inputs, 2)?;
        if x.rank() != 3 || w.rank() != 3 || r.rank() != 3 {
            return Err(kernel_err(format!(
                "X, W and R must have rank 3, got shapes {:?}, {:?}, {:?}",
                x.shape(),
                w.shape(),
                r.shape()
            )));
        }
        let (seq, batch) = if self.batch_first {
            (x.shape()[1], x.shape()[0])
        } else {
            (x.shape()[0], x.shape()[1])
        };
        let input_size = x.shape()[2];
        let dirs = self.num_dirs();
        let hidden = r.shape()[2];
        if let Some(h) = self.hidden_size {
            if h != hidden {
                return Err(kernel_err(format!(
                    "hidden_size is {h} but R has shape {:?}",
                    r.shape()
                )));
            }
        }
        let g = self.cell.gates();
        check_shape("W", w, &[dirs, g * hidden, input_size])?;
        check_shape("R", r, &[dirs, g * hidden, hidden])?;
        let state_shape = if self.batch_first {
            [batch, dirs, hidden]
        } else {
            [dirs, batch, hidden]
        };

        let mut xv = to_vec::<T>(x)?;
        if self.batch_first {
            xv = swap01(&xv, batch, seq, input_size);
        }
        let b = match optional_input(inputs, 3) {
            Some(b) => {
                check_shape("B", b, &[dirs, 2 * g * hidden])?;
                Some(to_vec::<T>(b)?)
            }
            None => None,
        };
        let lens = match optional_input(inputs, 4) {
            Some(l) => {
                check_shape("sequence_lens", l, &[batch])?;
                let v = l.to_i64_vec()?;
                let mut out = Vec::with_capacity(v.len());
                for len in v {
                    if len < 0 || len as usize > seq {
                        return Err(kernel_err(format!(
                            "sequence length {len} is outside [0, {seq}]"
                        )));
                    }
                    out.push(len as usize);
                }
                Some(out)
            }
            None => None,
        };
        let state = |i: usize, what: &str| -> Result<Option<Vec<T>>, RuntimeError> {
            match optional_input(inputs, i) {
                Some(t) => {
                    check_shape(what, t, &state_shape)?;
                    let v = to_vec::<T>(t)?;
                    Ok(Some(if self.batch_first {
                        swap01(&v, batch, dirs, hidden)
                    } else {
                        v
                    }))
                }
                None => Ok(None),
            }
        };
        let h0 = state(5, "initial_h")?;
        let (c0, p) = if matches!(self.cell, Cell::Lstm { .. }) {
            let c0 = state(6, "initial_c")?;
            let p = match optional_input(inputs, 7) {
                Some(p) => {
                    check_shape("P", p, &[dirs, 3 * hidden])?;
                    Some(to_vec::<T>(p)?)
                }
                None => None,
            };
            (c0, p)
        } else {
            (None, None)
        };
        Ok((
            Inputs {
                x: xv,
                w: to_vec::<T>(w)?,
                r: to_vec::<T>(r)?,
                b,
                lens,
                h0,
                c0,
                p,
            },
            Dims {
                seq,
                batch,
                input: input_size,
                hidden,
                dirs,
            },
        ))
    }

    /// Runs the layer in `T`; returns Y `[seq, dirs, batch, hidden]`, Y_h and Y_c
    /// `[dirs, batch, hidden]` (sequence-first). The two directions of a bidirectional
    /// layer are independent and run in parallel.
    fn compute<T: Real>(&self, inp: &Inputs<T>, d: Dims) -> (Vec<T>, Vec<T>, Vec<T>) {
        let Dims {
            seq,
            batch,
            hidden: h,
            dirs,
            ..
        } = d;
        let per_dir: Vec<(Vec<T>, Vec<T>, Vec<T>)> = if dirs == 2 {
            let (f, b) = rayon::join(
                || self.compute_dir(inp, d, 0),
                || self.compute_dir(inp, d, 1),
            );
            vec![f, b]
        } else {
            vec![self.compute_dir(inp, d, 0)]
        };
        let zero = T::of(0.0);
        let mut y = vec![zero; seq * dirs * batch * h];
        let mut y_h = Vec::with_capacity(dirs * batch * h);
        let mut y_c = Vec::with_capacity(dirs * batch * h);
        for (dir, (yd, hd, cd)) in per_dir.into_iter().enumerate() {
            for t in 0..seq {
                let at = (t * dirs + dir) * batch * h;
                y[at..at + batch * h].copy_from_slice(&yd[t * batch * h..(t + 1) * batch * h]);
            }
            y_h.extend_from_slice(&hd);
            y_c.extend_from_slice(&cd);
        }
        (y, y_h, y_c)
    }

    /// Runs one direction; returns its Y `[seq, batch, hidden]` and final H and C
    /// `[batch, hidden]`.
    fn compute_dir<T: Real>(
        &self,
        inp: &Inputs<T>,
        d: Dims,
        dir: usize,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        let Dims {
            seq,
            batch,
            input: isz,
            hidden: h,
            ..
        } = d;
        let g = self.cell.gates();
        let gh = g * h;
        let zero = T::of(0.0);
        let one = T::of(1.0);
        let mut y = vec![zero; seq * batch * h];
        let clip = self.clip.map(T::of);
        let clamp = |v: T| match clip {
            Some(c) if v > c => c,
            Some(c) if v < -c => -c,
            _ => v,
        };
        let na = self.cell.activations();

        let reverse = self.direction == Direction::Reverse || dir == 1;
        let acts = &self.acts[dir * na..(dir + 1) * na];
        let w = &inp.w[dir * gh * isz..(dir + 1) * gh * isz];
        let r = &inp.r[dir * gh * h..(dir + 1) * gh * h];
        // The input projection of all steps at once: [seq·batch, gates·hidden].
        let mut xw = vec![zero; seq * batch * gh];
        matmul_bt(&inp.x, seq * batch, isz, w, gh, &mut xw);
        // Fold the biases that sit outside any gate product into the projection. GRU
        // with linear_before_reset keeps the recurrent bias of the h gate apart, since
        // the reset gate multiplies it.
        let mut rbh = vec![zero; h];
        if let Some(b) = &inp.b {
            let b = &b[dir * 2 * gh..(dir + 1) * 2 * gh];
            let mut bias: Vec<T> = (0..gh).map(|j| b[j] + b[gh + j]).collect();
            if let Cell::Gru {
                linear_before_reset: true,
            } = self.cell
            {
                for j in 0..h {
                    rbh[j] = b[gh + 2 * h + j];
                    bias[2 * h + j] = b[2 * h + j];
                }
            }
            for row in xw.chunks_exact_mut(gh) {
                for (v, &bv) in row.iter_mut().zip(&bias) {
                    *v = *v + bv;
                }
            }
        }
        let (pi, po, pf) = match &inp.p {
            Some(p) => {
                let p = &p[dir * 3 * h..(dir + 1) * 3 * h];
                (&p[..h], &p[h..2 * h], &p[2 * h..])
            }
            None => (&[][..], &[][..], &[][..]),
        };
        let mut hs = match &inp.h0 {
            Some(v) => v[dir * batch * h..(dir + 1) * batch * h].to_vec(),
            None => vec![zero; batch * h],
        };
        let mut cs = match &inp.c0 {
            Some(v) => v[dir * batch * h..(dir + 1) * batch * h].to_vec(),
            None => vec![zero; batch * h],
        };
        let mut hr = vec![zero; batch * gh];
        // GRU without linear_before_reset needs (r ⊙ H) · R_hᵀ, a second product.
        let mut rh = vec![zero; batch * h];
        let mut gated = vec![zero; batch * h];
        let mut zs = vec![zero; batch * h];
        let gru_plain = matches!(
            self.cell,
            Cell::Gru {
                linear_before_reset: false
            }
        );
        // Gates whose recurrent product is plain H · Rᵀ (all but GRU's plain h gate).
        let direct = if gru_plain { 2 * h } else { gh };
        let mut partial = vec![zero; if gru_plain { batch * direct } else { 0 }];

        for step in 0..seq {
            let t = if reverse { seq - 1 - step } else { step };
            let active = |b: usize| inp.lens.as_ref().is_none_or(|l| t < l[b]);
            if gru_plain {
                matmul_bt(&hs, batch, h, &r[..direct * h], direct, &mut partial);
                for b in 0..batch {
                    hr[b * gh..b * gh + direct]
                        .copy_from_slice(&partial[b * direct..(b + 1) * direct]);
                }
            } else {
                matmul_bt(&hs, batch, h, r, gh, &mut hr);
            }
            let base = t * batch * gh;
            match self.cell {
                Cell::Rnn => {
                    for b in (0..batch).filter(|&b| active(b)) {
                        for j in 0..h {
                            let v = xw[base + b * gh + j] + hr[b * gh + j];
                            hs[b * h + j] = acts[0].apply(clamp(v));
                        }
                    }
                }
                Cell::Lstm { input_forget } => {
                    for b in (0..batch).filter(|&b| active(b)) {
                        let gx = &xw[base + b * gh..base + (b + 1) * gh];
                        let gr = &hr[b * gh..(b + 1) * gh];
                        for j in 0..h {
                            let c_prev = cs[b * h + j];
                            let peep = |p: &[T], c: T| if p.is_empty() { zero } else { p[j] * c };
                            let i_g = acts[0].apply(clamp(gx[j] + gr[j] + peep(pi, c_prev)));
                            let f_g = if input_forget {
                                one - i_g
                            } else {
                                acts[0]
                                    .apply(clamp(gx[2 * h + j] + gr[2 * h + j] + peep(pf, c_prev)))
                            };
                            let c_g = acts[1].apply(clamp(gx[3 * h + j] + gr[3 * h + j]));
                            let c = f_g * c_prev + i_g * c_g;
                            let o_g = acts[0].apply(clamp(gx[h + j] + gr[h + j] + peep(po, c)));
                            cs[b * h + j] = c;
                            hs[b * h + j] = o_g * acts[2].apply(c);
                        }
                    }
                }
                Cell::Gru {
                    linear_before_reset,
                } => {
                    // z and r first: the candidate needs r.
                    for b in 0..batch {
                        let gx = &xw[base + b * gh..base + (b + 1) * gh];
                        let gr = &hr[b * gh..(b + 1) * gh];
                        for j in 0..h {
                            zs[b * h + j] = acts[0].apply(clamp(gx[j] + gr[j]));
                            let rg = acts[0].apply(clamp(gx[h + j] + gr[h + j]));
                            gated[b * h + j] = if linear_before_reset {
                                rg
                            } else {
                                rg * hs[b * h + j]
                            };
                        }
                    }
                    if !linear_before_reset {
                        matmul_bt(&gated, batch, h, &r[2 * h * h..], h, &mut rh);
                    }
                    for b in (0..batch).filter(|&b| active(b)) {
                        let gx = &xw[base + b * gh..base + (b + 1) * gh];
                        for j in 0..h {
                            let rec = if linear_before_reset {
                                gated[b * h + j] * (hr[b * gh + 2 * h + j] + rbh[j])
                            } else {
                                rh[b * h + j]
                            };
                            let cand = acts[1].apply(clamp(gx[2 * h + j] + rec));
                            let z = zs[b * h + j];
                            hs[b * h + j] = (one - z) * cand + z * hs[b * h + j];
                        }
                    }
                }
            }
            for b in (0..batch).filter(|&b| active(b)) {
                let at = (t * batch + b) * h;
                y[at..at + h].copy_from_slice(&hs[b * h..(b + 1) * h]);
            }
        }
        (y, hs, cs)
    }

    fn run_typed<T: Real>(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (inp, d) = self.gather::<T>(inputs)?;
        let (y, y_h, y_c) = self.compute(&inp, d);
        let Dims {
            seq,
            batch,
            hidden,
            dirs,
            ..
        } = d;
        let (y, y_shape, state_shape, y_h, y_c) = if self.batch_first {
            // Y goes from [seq, dirs, batch, hidden] to [batch, seq, dirs, hidden].
            let mut yb = Vec::with_capacity(y.len());
            for b in 0..batch {
                for t in 0..seq {
                    for dir in 0..dirs {
                        let at = ((t * dirs + dir) * batch + b) * hidden;
                        yb.extend_from_slice(&y[at..at + hidden]);
                    }
                }
            }
            (
                yb,
                vec![batch, seq, dirs, hidden],
                vec![batch, dirs, hidden],
                swap01(&y_h, dirs, batch, hidden),
                swap01(&y_c, dirs, batch, hidden),
            )
        } else {
            (
                y,
                vec![seq, dirs, batch, hidden],
                vec![dirs, batch, hidden],
                y_h,
                y_c,
            )
        };
        Ok(vec![
            Tensor::from_vec(y_shape, y)?,
            Tensor::from_vec(state_shape.clone(), y_h)?,
            Tensor::from_vec(state_shape, y_c)?,
        ])
    }
}

impl Kernel for Recurrent {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let dtype = input(inputs, 0)?.dtype();
        let mut out = match dtype {
            DType::F32 | DType::F16 | DType::BF16 => self.run_typed::<f32>(inputs)?,
            DType::F64 => self.run_typed::<f64>(inputs)?,
            other => return Err(unsupported(format!("{other} inputs"))),
        };
        if dtype != DType::F32 && dtype != DType::F64 {
            out = out
                .iter()
                .map(|t| t.cast(dtype))
                .collect::<Result<_, _>>()?;
        }
        if !matches!(self.cell, Cell::Lstm { .. }) {
            out.truncate(2);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvant_graph::{AttrValue, Attribute};
    use std::collections::HashMap;

    fn kernel(op: &str, attrs: Vec<Attribute>) -> Box<dyn Kernel> {
        let mut node = Node::new(op, "n", vec![], vec![]);
        node.attributes = attrs;
        let constants = HashMap::new();
        let ctx = BuildContext {
            opset: 14,
            implicit_inputs: &[],
            constants: &constants,
            opsets: &[],
        };
        let build = match op {
            "LSTM" => build_lstm,
            "GRU" => build_gru,
            _ => build_rnn,
        };
        build(&node, &ctx).expect("build")
    }

    fn t(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).expect("tensor")
    }

    /// One-unit RNN, hand-computed: h1 = tanh(x1), h2 = tanh(x2 + 0.5·h1). In reverse with
    /// sequence lengths, the second batch entry (length 1) only sees its first step and its
    /// padded Y entries stay zero.
    #[test]
    fn rnn_matches_hand_computation_with_reverse_and_lengths() {
        let k = kernel(
            "RNN",
            vec![Attribute::new(
                "direction",
                AttrValue::String(b"reverse".to_vec()),
            )],
        );
        // X [seq 2, batch 2, input 1]
        let x = t(&[2, 2, 1], &[1.0, 3.0, 2.0, 4.0]);
        let w = t(&[1, 1, 1], &[1.0]);
        let r = t(&[1, 1, 1], &[0.5]);
        let lens = Tensor::from_vec(vec![2], vec![2i32, 1]).expect("tensor");
        let out = k
            .run(&[Some(&x), Some(&w), Some(&r), None, Some(&lens)])
            .expect("run");
        let y = out[0].as_slice::<f32>().expect("f32");
        // Batch 0, reverse: step t=1 first (x=2), then t=0 (x=1).
        let h_t1 = 2f32.tanh();
        let h_t0 = (1.0 + 0.5 * h_t1).tanh();
        // Batch 1, length 1: only t=0 (x=3).
        let b1 = 3f32.tanh();
        let expected = [h_t0, b1, h_t1, 0.0];
        for (g, e) in y.iter().zip(expected) {
            assert!((g - e).abs() < 1e-6, "{y:?} vs {expected:?}");
        }
        assert_eq!(out[1].shape(), &[1, 2, 1]);
        let yh = out[1].as_slice::<f32>().expect("f32");
        assert!((yh[0] - h_t0).abs() < 1e-6 && (yh[1] - b1).abs() < 1e-6);
    }

    /// f64 runs natively and agrees with f32; f16 is computed in f32 and cast back.
    #[test]
    fn gru_f64_and_f16_agree_with_f32() {
        let k = kernel(
            "GRU",
            vec![Attribute::new("linear_before_reset", AttrValue::Int(1))],
        );
        let (seq, batch, input, hidden) = (3, 2, 2, 2);
        let gen = |n: usize, s: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i as f32 * 0.37 + s).sin()) * 0.8)
                .collect()
        };
        let x = t(&[seq, batch, input], &gen(seq * batch * input, 0.1));
        let w = t(&[1, 3 * hidden, input], &gen(3 * hidden * input, 0.2));
        let r = t(&[1, 3 * hidden, hidden], &gen(3 * hidden * hidden, 0.3));
        let b = t(&[1, 6 * hidden], &gen(6 * hidden, 0.4));
        let f32_out = k
            .run(&[Some(&x), Some(&w), Some(&r), Some(&b)])
            .expect("run");
        for dtype in [DType::F64, DType::F16] {
            let cast = |t: &Tensor| t.cast(dtype).expect("cast");
            let (x, w, r, b) = (cast(&x), cast(&w), cast(&r), cast(&b));
            let out = k
                .run(&[Some(&x), Some(&w), Some(&r), Some(&b)])
                .expect("run");
            assert_eq!(out.len(), 2);
            assert_eq!(out[0].dtype(), dtype);
            let got = out[0].to_f32_vec().expect("f32");
            let want = f32_out[0].to_f32_vec().expect("f32");
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() < 1e-2, "{dtype}: {got:?} vs {want:?}");
            }
        }
    }

    /// alpha / beta values go, in order, only to the activations that take them; a
    /// bidirectional layer keeps consuming them in its second direction.
    #[test]
    fn activation_parameters_are_consumed_in_order() {
        let mut node = Node::new("LSTM", "n", vec![], vec![]);
        let names = ["HardSigmoid", "Tanh", "LeakyRelu", "Elu", "Affine", "Relu"];
        node.attributes = vec![
            Attribute::new("direction", AttrValue::String(b"bidirectional".to_vec())),
            Attribute::new(
                "activations",
                AttrValue::Strings(names.iter().map(|n| n.as_bytes().to_vec()).collect()),
            ),
            Attribute::new("activation_alpha", AttrValue::Floats(vec![0.3, 0.05, 2.0])),
            Attribute::new("activation_beta", AttrValue::Floats(vec![0.4])),
        ];
        let constants = HashMap::new();
        let ctx = BuildContext {
            opset: 14,
            implicit_inputs: &[],
            constants: &constants,
            opsets: &[],
        };
        let layer = parse(
            &node,
            &ctx,
            Cell::Lstm {
                input_forget: false,
            },
        )
        .expect("parse");
        assert_eq!(
            layer.acts,
            vec![
                Act::HardSigmoid(0.3, 0.4),
                Act::Tanh,
                Act::LeakyRelu(0.05),
                Act::Elu(2.0),
                // Out of values: the operator's defaults.
                Act::Affine(1.0, 0.0),
                Act::Relu,
            ]
        );
    }

    #[test]
    fn activations_are_numerically_safe() {
        let elu = Act::Elu(2.0).apply(-1.0f32);
        assert!((elu - 2.0 * ((-1f32).exp() - 1.0)).abs() < 1e-6);
        assert!((Act::HardSigmoid(0.3, 0.4).apply(1.0f32) - 0.7).abs() < 1e-6);
        assert_eq!(Act::HardSigmoid(0.3, 0.4).apply(10.0f32), 1.0);
        assert_eq!(Act::Softplus.apply(100.0f64), 100.0);
        assert!(Act::Sigmoid.apply(-800.0f32).abs() < 1e-30);
        assert_eq!(Act::Sigmoid.apply(800.0f32), 1.0);
    }
}
