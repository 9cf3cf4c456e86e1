//! Differential tests against ONNX Runtime on real and generated models.
//!
//! For every `X.onnx` in `.cache/models` (the PP-OCR models from the rapidocr wheel) and
//! `.cache/test-models` (the project's generated models) with `X.input.npz` and ONNX Runtime's
//! `X.expected.npz` beside it (made by `scripts/prepare_test_data.sh`), kvant's outputs must
//! match: for float outputs max |err| <= 1e-3 * max |ref| and cosine similarity >= 0.99999,
//! integer and bool outputs exactly. Runs at 1 and 2 threads.

use kvant_graph::load_model;
use kvant_runtime::{Session, SessionOptions};
use kvant_tensor::{npy, DType, Tensor};
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check_output(name: &str, expected: &Tensor, got: &Tensor) -> Result<String, String> {
    if expected.shape() != got.shape() {
        return Err(format!(
            "{name}: shape {:?}, expected {:?}",
            got.shape(),
            expected.shape()
        ));
    }
    if !expected.dtype().is_float() {
        return if expected == got {
            Ok(format!("{name}: exact"))
        } else {
            Err(format!("{name}: {} values differ", expected.dtype()))
        };
    }
    let e = expected.cast(DType::F64).map_err(|e| e.to_string())?;
    let g = got.cast(DType::F64).map_err(|e| e.to_string())?;
    let (e, g) = (
        e.as_slice::<f64>().map_err(|e| e.to_string())?,
        g.as_slice::<f64>().map_err(|e| e.to_string())?,
    );
    let max_ref = e.iter().fold(0f64, |m, v| m.max(v.abs()));
    let max_err = e.iter().zip(g).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    let dot: f64 = e.iter().zip(g).map(|(a, b)| a * b).sum();
    let (ne, ng) = (
        e.iter().map(|a| a * a).sum::<f64>().sqrt(),
        g.iter().map(|b| b * b).sum::<f64>().sqrt(),
    );
    let cos = if ne == 0.0 && ng == 0.0 {
        1.0
    } else {
        dot / (ne * ng).max(f64::MIN_POSITIVE)
    };
    let summary = format!("{name}: max|err| {max_err:.3e}, max|ref| {max_ref:.3e}, cos {cos:.7}");
    if max_err.is_nan() || max_err > 1e-3 * max_ref || cos < 0.99999 {
        Err(summary)
    } else {
        Ok(summary)
    }
}

fn oracle_cases() -> Vec<PathBuf> {
    let mut cases = Vec::new();
    for dir in [".cache/models", ".cache/test-models"] {
        let dir = repo_root().join(dir);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run scripts/prepare_test_data.sh first",
                dir.display()
            )
        });
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "onnx")
                && path.with_extension("expected.npz").exists()
            {
                cases.push(path);
            }
        }
    }
    cases.sort();
    cases
}

#[test]
fn outputs_match_onnx_runtime() {
    let cases = oracle_cases();
    assert!(
        cases.iter().any(|c| c.to_string_lossy().contains("ppocr_rec")),
        "the PP-OCR models with inputs and expected outputs are missing; run scripts/prepare_test_data.sh"
    );
    let mut failures = Vec::new();
    for model_path in &cases {
        let model = load_model(model_path).expect("model loads");
        let feeds = npy::read_npz(&model_path.with_extension("input.npz")).expect("inputs load");
        let expected =
            npy::read_npz(&model_path.with_extension("expected.npz")).expect("outputs load");
        for threads in [1, 2] {
            let label = format!(
                "{} ({threads} thread{})",
                model_path.file_name().unwrap_or_default().to_string_lossy(),
                if threads == 1 { "" } else { "s" }
            );
            let session =
                match Session::with_options(&model, &SessionOptions::with_threads(threads)) {
                    Ok(s) => s,
                    Err(e) => {
                        failures.push(format!("{label}: {e}"));
                        break;
                    }
                };
            let outputs = match session.run(&feeds) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{label}: {e}"));
                    break;
                }
            };
            for (name, want) in &expected {
                match outputs.iter().find(|(n, _)| n == name) {
                    None => failures.push(format!("{label}: output '{name}' missing")),
                    Some((_, got)) => match check_output(name, want, got) {
                        Ok(summary) => println!("ok   {label}: {summary}"),
                        Err(summary) => failures.push(format!("{label}: {summary}")),
                    },
                }
            }
        }
    }
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(
        failures.is_empty(),
        "{} model outputs differ from ONNX Runtime",
        failures.len()
    );
}
