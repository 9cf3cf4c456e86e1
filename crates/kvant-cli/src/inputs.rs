//! Inputs for runs and benchmarks: read from files or generated from declared shapes.

use crate::error::CliError;
use kvant_graph::{Dim, ValueInfo};
use kvant_tensor::{npy, DType, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Reads named arrays from an `.npz` / `.npy` file.
pub fn read_feeds(path: &Path) -> Result<Vec<(String, Tensor)>, CliError> {
    Ok(npy::read_arrays(path)?)
}

/// Parses `NAME=VALUE` dimension overrides.
pub fn parse_dims(dims: &[String]) -> Result<HashMap<String, usize>, CliError> {
    dims.iter()
        .map(|d| {
            let (name, value) = d
                .split_once('=')
                .ok_or_else(|| CliError::Usage(format!("--dim '{d}': expected NAME=VALUE")))?;
            let value = value
                .parse::<usize>()
                .map_err(|_| CliError::Usage(format!("--dim '{d}': '{value}' is not a size")))?;
            Ok((name.to_string(), value))
        })
        .collect()
}

/// Makes an input of the declared type and shape: symbolic or unknown dimensions take their
/// `--dim` value, else 1 for the first (batch) axis and 224 for the others; floats are
/// deterministic pseudo-random values in [-1, 1), integers 0.
pub fn generate(
    info: &ValueInfo,
    dims: &HashMap<String, usize>,
    seed: u64,
) -> Result<Tensor, CliError> {
    let declared = info.shape().ok_or_else(|| {
        CliError::Usage(format!(
            "input '{}' has no declared shape; give inputs with --input",
            info.name
        ))
    })?;
    let shape: Vec<usize> = declared
        .iter()
        .enumerate()
        .map(|(axis, d)| match d {
            Dim::Fixed(v) if *v > 0 => *v as usize,
            Dim::Symbolic(name) if dims.contains_key(name) => dims[name],
            _ if axis == 0 => 1,
            _ => 224,
        })
        .collect();
    let dtype = info.dtype().unwrap_or(DType::F32);
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            // A 64-bit LCG is plenty for benchmark inputs and keeps runs reproducible.
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let t = Tensor::from_vec(shape.clone(), values)?;
    if dtype.is_float() {
        Ok(t.cast(dtype)?)
    } else {
        Ok(Tensor::zeros(dtype, shape))
    }
}
