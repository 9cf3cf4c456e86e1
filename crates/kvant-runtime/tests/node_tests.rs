//! The ONNX backend node tests, run against kvant's executor.
//!
//! The cases are written by `scripts/gen_node_tests.py` (from the definitions in the onnx wheel)
//! into `$KVANT_NODE_TESTS` (default: `.cache/node-tests` at the repository root). Each case is
//! counted as pass, fail or unsupported (an operator or configuration kvant reports as not
//! supported). The test fails on any failure (a wrong result, an error that is not "unsupported",
//! a panic) and when fewer cases pass than `$KVANT_NODE_MIN_PASS` (default in `MIN_PASS`).
//! `$KVANT_NODE_FILTER` restricts the run to case names containing that text.
//! A per-operator table is written to `target/node-tests-report.md`.

use kvant_graph::{load_model, load_tensor_proto};
use kvant_runtime::{RuntimeError, Session, SessionOptions};
use kvant_tensor::{DType, Tensor};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Cases that must pass at least (raise it as kernels land; CI fails below it).
const MIN_PASS: usize = 1725;

#[derive(Debug)]
enum Outcome {
    Pass,
    Fail(String),
    Unsupported(String),
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cases_dir() -> PathBuf {
    std::env::var_os("KVANT_NODE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/node-tests"))
}

/// Tolerances of one case (the manifest records the ONNX test's own; default rtol 1e-3,
/// atol 1e-7).
#[derive(Clone, Copy)]
struct Tolerance {
    rtol: f64,
    atol: f64,
}

/// Compares one output against the reference with the case's tolerances (exact for integers,
/// bools and strings; NaN equals NaN).
fn compare(name: &str, expected: &Tensor, got: &Tensor, tol: Tolerance) -> Result<(), String> {
    if expected.shape() != got.shape() {
        return Err(format!(
            "output '{name}': shape {:?}, expected {:?}",
            got.shape(),
            expected.shape()
        ));
    }
    if expected.dtype() != got.dtype() {
        return Err(format!(
            "output '{name}': type {}, expected {}",
            got.dtype(),
            expected.dtype()
        ));
    }
    if expected.dtype().is_float() {
        let e = expected.cast(DType::F64).map_err(|e| e.to_string())?;
        let g = got.cast(DType::F64).map_err(|e| e.to_string())?;
        let (e, g) = (
            e.as_slice::<f64>().map_err(|e| e.to_string())?,
            g.as_slice::<f64>().map_err(|e| e.to_string())?,
        );
        for (i, (&a, &b)) in e.iter().zip(g).enumerate() {
            let same = (a.is_nan() && b.is_nan())
                || a == b
                || (a - b).abs() <= tol.atol + tol.rtol * a.abs();
            if !same {
                return Err(format!("output '{name}'[{i}]: got {b}, expected {a}"));
            }
        }
        Ok(())
    } else if expected != got {
        Err(format!("output '{name}': values differ"))
    } else {
        Ok(())
    }
}

/// Operators whose outputs are random: their cases are checked for shape, type and value range
/// only (the expected values come from one particular generator).
const RANDOM_OPS: &[&str] = &[
    "Bernoulli",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
];

/// Checks a random output: same shape and type, and for Bernoulli-like outputs only 0/1.
fn compare_random(name: &str, expected: &Tensor, got: &Tensor) -> Result<(), String> {
    if expected.shape() != got.shape() || expected.dtype() != got.dtype() {
        return Err(format!(
            "output '{name}': {} {:?}, expected {} {:?}",
            got.dtype(),
            got.shape(),
            expected.dtype(),
            expected.shape()
        ));
    }
    let binary = |t: &Tensor| {
        t.to_f32_vec()
            .map(|v| v.iter().all(|&x| x == 0.0 || x == 1.0))
            .unwrap_or(false)
    };
    if binary(expected) && !binary(got) {
        return Err(format!("output '{name}': values other than 0 and 1"));
    }
    Ok(())
}

fn run_case(dir: &Path, tol: Tolerance, random: bool) -> Outcome {
    let model = match load_model(&dir.join("model.onnx")) {
        Ok(m) => m,
        Err(e) => return Outcome::Unsupported(format!("load: {e}")),
    };
    let session = match Session::with_options(&model, &SessionOptions::with_threads(1)) {
        Ok(s) => s,
        Err(e @ (RuntimeError::UnsupportedOp { .. } | RuntimeError::Unsupported { .. })) => {
            return Outcome::Unsupported(e.to_string())
        }
        Err(e) => return Outcome::Fail(format!("plan: {e}")),
    };
    let input_names: Vec<String> = session.plan().inputs().map(|i| i.name.clone()).collect();
    let output_names: Vec<String> = session.plan().output_names().map(String::from).collect();
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    for set in sets {
        let mut feeds = Vec::new();
        for (i, name) in input_names.iter().enumerate() {
            match load_tensor_proto(&set.join(format!("input_{i}.pb"))) {
                Ok((_, t)) => feeds.push((name.clone(), t)),
                Err(e) => return Outcome::Unsupported(format!("input {i}: {e}")),
            }
        }
        let outputs = match session.run(&feeds) {
            Ok(o) => o,
            Err(e @ (RuntimeError::UnsupportedOp { .. } | RuntimeError::Unsupported { .. })) => {
                return Outcome::Unsupported(e.to_string())
            }
            Err(e) => return Outcome::Fail(format!("run: {e}")),
        };
        for (i, name) in output_names.iter().enumerate() {
            let expected = match load_tensor_proto(&set.join(format!("output_{i}.pb"))) {
                Ok((_, t)) => t,
                Err(e) => return Outcome::Unsupported(format!("output {i}: {e}")),
            };
            let checked = if random {
                compare_random(name, &expected, &outputs[i].1)
            } else {
                compare(name, &expected, &outputs[i].1, tol)
            };
            if let Err(reason) = checked {
                return Outcome::Fail(reason);
            }
        }
    }
    Outcome::Pass
}

#[test]
fn onnx_node_tests() {
    let dir = cases_dir();
    let manifest_path = dir.join("manifest.json");
    let manifest: serde_json::Value = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => serde_json::from_str(&text).expect("manifest.json is valid JSON"),
        Err(e) => panic!(
            "{}: {e}; generate the cases with scripts/gen_node_tests.py",
            manifest_path.display()
        ),
    };
    let filter = std::env::var("KVANT_NODE_FILTER").unwrap_or_default();
    let min_pass = std::env::var("KVANT_NODE_MIN_PASS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if filter.is_empty() { MIN_PASS } else { 0 });
    let cases = manifest["cases"]
        .as_array()
        .expect("manifest has a case list");

    // op -> (pass, fail, unsupported)
    let mut per_op: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut unsupported = Vec::new();
    let (mut pass, mut tensor_cases) = (0, 0);
    // Quiet the default panic printer: panics are caught and reported as failures.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        if !name.contains(&filter) || case["kind"] != "tensor" {
            continue;
        }
        tensor_cases += 1;
        let case_dir = dir.join(case["dir"].as_str().unwrap_or(name));
        let tol = Tolerance {
            rtol: case["rtol"].as_f64().unwrap_or(1e-3),
            atol: case["atol"].as_f64().unwrap_or(1e-7),
        };
        let random = case["ops"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|op| RANDOM_OPS.contains(&op.as_str().unwrap_or("")));
        let outcome = catch_unwind(AssertUnwindSafe(|| run_case(&case_dir, tol, random)))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Outcome::Fail(format!("PANIC: {msg}"))
            });
        let slot = match &outcome {
            Outcome::Pass => 0,
            Outcome::Fail(_) => 1,
            Outcome::Unsupported(_) => 2,
        };
        for op in case["ops"].as_array().into_iter().flatten() {
            per_op
                .entry(op.as_str().unwrap_or("?").to_string())
                .or_default()[slot] += 1;
        }
        match outcome {
            Outcome::Pass => pass += 1,
            Outcome::Fail(reason) => failures.push(format!("{name}: {reason}")),
            Outcome::Unsupported(reason) => unsupported.push(format!("{name}: {reason}")),
        }
    }
    std::panic::set_hook(default_hook);

    let mut report = String::from("| op | pass | fail | unsupported |\n|---|---|---|---|\n");
    for (op, [p, f, u]) in &per_op {
        report.push_str(&format!("| {op} | {p} | {f} | {u} |\n"));
    }
    report.push_str(&format!(
        "\n{pass} passed, {} failed, {} unsupported, of {tensor_cases} tensor-only cases\n",
        failures.len(),
        unsupported.len()
    ));
    let report_path = repo_root().join("target/node-tests-report.md");
    let _ = std::fs::write(&report_path, &report);
    if std::env::var_os("KVANT_NODE_VERBOSE").is_some() {
        for u in &unsupported {
            println!("unsupported: {u}");
        }
    }
    for f in &failures {
        println!("FAILED {f}");
    }
    println!(
        "node tests: {pass} passed, {} failed, {} unsupported, of {tensor_cases} tensor-only cases (report: {})",
        failures.len(),
        unsupported.len(),
        report_path.display()
    );
    assert!(
        failures.is_empty(),
        "{} node test cases failed",
        failures.len()
    );
    assert!(
        pass >= min_pass,
        "only {pass} node test cases passed, expected at least {min_pass}"
    );
}
