//! Random generators: `RandomNormal`, `RandomUniform`, their `*Like` forms, and `Bernoulli`.
//!
//! Values come from a xoshiro256** generator. With a `seed` attribute the generator starts
//! from that seed when the kernel is built, so a fresh session reproduces the same sequence;
//! each run continues the sequence (like ONNX Runtime, which also seeds once per kernel).
//! The numbers are not those of numpy or ONNX Runtime: ONNX leaves the generator open.

use super::super::{attr_err, input, BuildContext, Kernel, Registry};
use crate::{kernel_err, unsupported, RuntimeError};
use kvant_graph::Node;
use kvant_tensor::{DType, Tensor};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Registers the random operators.
pub fn register(r: &mut Registry) {
    r.add("RandomNormal", build_random_normal);
    r.add("RandomUniform", build_random_uniform);
    r.add("RandomNormalLike", build_random_normal_like);
    r.add("RandomUniformLike", build_random_uniform_like);
    r.add("Bernoulli", build_bernoulli);
}

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64.
#[derive(Debug, Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 random bits.
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller; one of the pair is dropped for simplicity).
    fn normal(&mut self) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// A seed for generators without a `seed` attribute: distinct per kernel and per process.
fn fresh_seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    time ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn make_rng(node: &Node) -> Result<Mutex<Rng>, RuntimeError> {
    let seed = match node.attr_float("seed").map_err(attr_err)? {
        Some(s) => s.to_bits() as u64,
        None => fresh_seed(),
    };
    Ok(Mutex::new(Rng::new(seed)))
}

/// The distribution a generator draws from.
#[derive(Debug, Clone, Copy)]
enum Dist {
    Normal { mean: f64, scale: f64 },
    Uniform { low: f64, high: f64 },
}

impl Dist {
    fn parse(node: &Node, normal: bool) -> Result<Dist, RuntimeError> {
        let get = |name: &str, default: f32| -> Result<f64, RuntimeError> {
            Ok(node.attr_float(name).map_err(attr_err)?.unwrap_or(default) as f64)
        };
        Ok(if normal {
            Dist::Normal {
                mean: get("mean", 0.0)?,
                scale: get("scale", 1.0)?,
            }
        } else {
            Dist::Uniform {
                low: get("low", 0.0)?,
                high: get("high", 1.0)?,
            }
        })
    }

    fn sample(&self, rng: &mut Rng) -> f64 {
        match *self {
            Dist::Normal { mean, scale } => mean + scale * rng.normal(),
            Dist::Uniform { low, high } => low + (high - low) * rng.uniform(),
        }
    }
}

fn float_dtype(code: i64) -> Result<DType, RuntimeError> {
    let dtype = i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx_code)
        .ok_or_else(|| kernel_err(format!("unknown dtype {code}")))?;
    if !dtype.is_float() {
        return Err(unsupported(format!("random values of type {dtype}")));
    }
    Ok(dtype)
}

/// `RandomNormal` / `RandomUniform` (fixed shape) and their `*Like` forms (input's shape).
struct Generator {
    dist: Dist,
    /// The fixed shape, or `None` to take the input's.
    shape: Option<Vec<usize>>,
    /// The output type, or `None` to take the input's.
    dtype: Option<DType>,
    rng: Mutex<Rng>,
}

fn build_generator(node: &Node, normal: bool, like: bool) -> Result<Box<dyn Kernel>, RuntimeError> {
    let dtype = match node.attr_int("dtype").map_err(attr_err)? {
        Some(code) => Some(float_dtype(code)?),
        None if like => None,
        None => Some(DType::F32),
    };
    let shape = if like {
        None
    } else {
        let dims = node
            .attr_ints("shape")
            .map_err(attr_err)?
            .ok_or_else(|| kernel_err("attribute 'shape' is required"))?;
        Some(
            dims.iter()
                .map(|&d| {
                    usize::try_from(d).map_err(|_| kernel_err(format!("negative dimension {d}")))
                })
                .collect::<Result<_, _>>()?,
        )
    };
    Ok(Box::new(Generator {
        dist: Dist::parse(node, normal)?,
        shape,
        dtype,
        rng: make_rng(node)?,
    }))
}

fn build_random_normal(node: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    build_generator(node, true, false)
}

fn build_random_uniform(node: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    build_generator(node, false, false)
}

fn build_random_normal_like(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    build_generator(node, true, true)
}

fn build_random_uniform_like(
    node: &Node,
    _: &BuildContext,
) -> Result<Box<dyn Kernel>, RuntimeError> {
    build_generator(node, false, true)
}

fn lock(rng: &Mutex<Rng>) -> std::sync::MutexGuard<'_, Rng> {
    // A poisoned lock only means another run panicked mid-draw; the state is still valid.
    rng.lock().unwrap_or_else(|e| e.into_inner())
}

impl Kernel for Generator {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let (shape, dtype) = match (&self.shape, self.dtype) {
            (Some(s), Some(d)) => (s.clone(), d),
            _ => {
                let x = input(inputs, 0)?;
                let d = match self.dtype {
                    Some(d) => d,
                    None if x.dtype().is_float() => x.dtype(),
                    None => {
                        return Err(unsupported(format!(
                            "random values of the input's type {}",
                            x.dtype()
                        )))
                    }
                };
                (x.shape().to_vec(), d)
            }
        };
        let n: usize = shape.iter().product();
        let values: Vec<f64> = {
            let mut rng = lock(&self.rng);
            (0..n).map(|_| self.dist.sample(&mut rng)).collect()
        };
        Ok(vec![Tensor::from_vec(shape, values)?.cast(dtype)?])
    }
}

/// `Bernoulli`: 1 with the input's probability, else 0.
struct Bernoulli {
    dtype: Option<DType>,
    rng: Mutex<Rng>,
}

fn build_bernoulli(node: &Node, _: &BuildContext) -> Result<Box<dyn Kernel>, RuntimeError> {
    let dtype = match node.attr_int("dtype").map_err(attr_err)? {
        Some(code) => {
            let d = i32::try_from(code)
                .ok()
                .and_then(DType::from_onnx_code)
                .ok_or_else(|| kernel_err(format!("unknown dtype {code}")))?;
            if !(d.is_float() || d.is_int() || d == DType::Bool) {
                return Err(unsupported(format!("Bernoulli output type {d}")));
            }
            Some(d)
        }
        None => None,
    };
    Ok(Box::new(Bernoulli {
        dtype,
        rng: make_rng(node)?,
    }))
}

impl Kernel for Bernoulli {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, RuntimeError> {
        let x = input(inputs, 0)?;
        if !x.dtype().is_float() {
            return Err(kernel_err(format!(
                "probabilities must be floating point, got {}",
                x.dtype()
            )));
        }
        let p = x.cast(DType::F64)?.into_vec::<f64>()?;
        let values: Vec<f64> = {
            let mut rng = lock(&self.rng);
            p.iter()
                .map(|&p| if rng.uniform() < p { 1.0 } else { 0.0 })
                .collect()
        };
        let dtype = self.dtype.unwrap_or(x.dtype());
        Ok(vec![
            Tensor::from_vec(x.shape().to_vec(), values)?.cast(dtype)?
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_stays_in_range_and_seed_repeats() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let u = a.uniform();
            assert!((0.0..1.0).contains(&u));
            assert_eq!(u, b.uniform());
        }
    }

    #[test]
    fn normal_has_plausible_moments() {
        let mut r = Rng::new(1);
        let n = 20000;
        let v: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
