//! `kvant run`.

use crate::error::CliError;
use crate::inputs::read_feeds;
use kvant_graph::load_model;
use kvant_runtime::{Session, SessionOptions};
use kvant_tensor::npy::write_npz;
use std::path::Path;

/// Runs a model once and prints (and optionally saves) its outputs.
pub fn run(
    model_path: &Path,
    input: &Path,
    output: Option<&Path>,
    threads: usize,
) -> Result<(), CliError> {
    let model = load_model(model_path)?;
    let feeds = read_feeds(input)?;
    let session = Session::with_options(&model, &SessionOptions::with_threads(threads))?;
    let outputs = session.run(&feeds)?;
    for (name, t) in &outputs {
        let stats = match t.to_f32_vec() {
            Ok(v) if !v.is_empty() => {
                let min = v.iter().copied().fold(f32::INFINITY, f32::min);
                let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
                format!("min {min:.6} max {max:.6} mean {mean:.6}")
            }
            _ => String::new(),
        };
        println!(
            "{name:<30} {:<5} {:?} {stats}",
            t.dtype().to_string(),
            t.shape()
        );
    }
    if let Some(path) = output {
        write_npz(path, &outputs)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
