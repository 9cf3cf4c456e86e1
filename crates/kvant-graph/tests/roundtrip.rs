//! Round-trip fidelity: every model kvant loads must save back as the same model.
//!
//! For each model in the fidelity folder (`scripts/make_fidelity_models.py`), the generated
//! test models (`scripts/make_test_models.py`), a sample of the ONNX node tests
//! (`scripts/gen_node_tests.py`) and the PP-OCR models (`scripts/fetch_models.sh`): load, save to a temporary folder, reload and compare the IR,
//! then let `scripts/check_roundtrip.py` compare original and saved file with onnx and ONNX
//! Runtime. Missing folders fail the test with the name of the script that makes them.
//!
//! Locations: `KVANT_FIDELITY_MODELS` (default `.cache/fidelity-models`), `KVANT_NODE_TESTS`
//! (default `.cache/node-tests`; `KVANT_NODE_TESTS_SAMPLE` models, default 200, 0 for all),
//! `KVANT_MODELS` (default `.cache/models`), `KVANT_TEST_MODELS` (default `.cache/test-models`,
//! made by `scripts/make_test_models.py`), `KVANT_PYTHON` (default `.venv/bin/python`).

use kvant_graph::{load_model, model_to_bytes, save_model, save_model_with_options, SaveOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A test data folder from `env` (default `default` under the repo), which must exist.
fn folder(env: &str, default: &str, script: &str) -> PathBuf {
    let dir = std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default));
    assert!(
        dir.is_dir(),
        "{} is missing: create it with `{script}` (or point {env} at it)",
        dir.display()
    );
    dir
}

fn python() -> PathBuf {
    let py = std::env::var_os("KVANT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv/bin/python"));
    assert!(
        py.exists(),
        "{} is missing: create the venv with `bash scripts/setup-python.sh` (or set KVANT_PYTHON)",
        py.display()
    );
    py
}

/// A fresh temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "kvant-roundtrip-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `original`, saves it as `saved`, reloads and compares in Rust. Returns a failure
/// message, or `None`.
fn roundtrip(original: &Path, saved: &Path, options: &SaveOptions) -> Option<String> {
    let model = match load_model(original) {
        Ok(m) => m,
        Err(e) => return Some(format!("load failed: {e}")),
    };
    if let Err(e) = save_model_with_options(&model, saved, options) {
        return Some(format!("{}: save failed: {e}", original.display()));
    }
    let again = match load_model(saved) {
        Ok(m) => m,
        Err(e) => return Some(format!("reload failed: {e}")),
    };
    // NaN initializers make PartialEq fail on identical models; identical bytes settle it.
    if again != model && model_to_bytes(&again) != model_to_bytes(&model) {
        return Some(format!("{}: reloaded IR differs", original.display()));
    }
    None
}

/// Round-trips every model and runs the Python checker on all pairs; panics with a list of
/// the failures.
fn check_models(tag: &str, models: &[PathBuf], options: &SaveOptions) {
    assert!(!models.is_empty(), "no models for {tag}");
    let tmp = TempDir::new(tag);
    let mut failures = Vec::new();
    let mut pairs = Vec::new();
    for (i, original) in models.iter().enumerate() {
        // Each model in its own folder: external data files must not collide.
        let dir = tmp.0.join(i.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let saved = dir.join(original.file_name().unwrap());
        match roundtrip(original, &saved, options) {
            Some(failure) => failures.push(failure),
            None => pairs.push((original.clone(), saved)),
        }
    }
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("scripts/check_roundtrip.py"));
    for (original, saved) in &pairs {
        cmd.arg(original).arg(saved);
    }
    let out = cmd.output().expect("running the Python checker");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let bad: Vec<&str> = stdout
            .lines()
            .filter(|l| !l.starts_with("ort:") && !l.starts_with("note:"))
            .filter(|l| !l.contains(": same model as "))
            .collect();
        failures.push(format!(
            "check_roundtrip.py failed ({}):\n{}\n{}",
            out.status,
            bad.join("\n"),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.contains("Error") || l.contains("error"))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    let same = stdout
        .lines()
        .filter(|l| l.contains(": same model as "))
        .count();
    eprintln!(
        "{tag}: {} models, {same} confirmed by check_roundtrip.py",
        models.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} {tag} models failed the round trip:\n{}",
        failures.len(),
        models.len(),
        failures.join("\n")
    );
    assert_eq!(same, pairs.len(), "the checker did not confirm every model");
}

fn onnx_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    files
}

fn fidelity_models() -> Vec<PathBuf> {
    let dir = folder(
        "KVANT_FIDELITY_MODELS",
        ".cache/fidelity-models",
        "python scripts/make_fidelity_models.py .cache/fidelity-models",
    );
    onnx_files(&dir)
}

fn ppocr_models() -> Vec<PathBuf> {
    let dir = folder(
        "KVANT_MODELS",
        ".cache/models",
        "bash scripts/fetch_models.sh",
    );
    let models: Vec<PathBuf> = ["ppocr_det", "ppocr_rec", "ppocr_cls"]
        .iter()
        .map(|n| dir.join(format!("{n}.onnx")))
        .collect();
    for m in &models {
        assert!(
            m.is_file(),
            "{} is missing: fetch it with `bash scripts/fetch_models.sh`",
            m.display()
        );
    }
    models
}

/// About 200 node-test models (`KVANT_NODE_TESTS_SAMPLE`, 0 for all), spread evenly over
/// the sorted case list.
fn node_test_sample() -> Vec<PathBuf> {
    let dir = folder(
        "KVANT_NODE_TESTS",
        ".cache/node-tests",
        "python scripts/gen_node_tests.py .cache/node-tests",
    );
    let mut all: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path().join("model.onnx"))
        .filter(|p| p.is_file())
        .collect();
    all.sort();
    let wanted = std::env::var("KVANT_NODE_TESTS_SAMPLE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(200);
    // 0 (no division possible) means every case.
    let step = all.len().checked_div(wanted).map_or(1, |s| s.max(1));
    all.into_iter().step_by(step).collect()
}

#[test]
fn fidelity_models_round_trip() {
    let models = fidelity_models();
    let names: Vec<_> = models
        .iter()
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for wanted in [
        "kitchen_sink",
        "function",
        "control_flow",
        "external_data",
        "typed_fields",
        "low_precision",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted}.onnx is missing from the fidelity folder: rerun scripts/make_fidelity_models.py"
        );
    }
    check_models("fidelity", &models, &SaveOptions::default());
}

#[test]
fn fidelity_models_round_trip_with_external_data() {
    let options = SaveOptions {
        external_data_threshold: Some(16),
    };
    check_models("fidelity-external", &fidelity_models(), &options);
}

#[test]
fn node_tests_round_trip() {
    check_models("node-tests", &node_test_sample(), &SaveOptions::default());
}

#[test]
fn ppocr_round_trip() {
    check_models("ppocr", &ppocr_models(), &SaveOptions::default());
}

#[test]
fn ppocr_round_trip_with_external_data() {
    let options = SaveOptions {
        external_data_threshold: Some(1024),
    };
    let models = ppocr_models();
    check_models("ppocr-external", &models, &options);

    // The data really went to the data file, aligned and with checked entries.
    let tmp = TempDir::new("ppocr-ext-layout");
    let saved = tmp.0.join("det.onnx");
    let model = load_model(&models[0]).unwrap();
    save_model_with_options(&model, &saved, &options).unwrap();
    let data = tmp.0.join("det.onnx.data");
    let model_size = std::fs::metadata(&saved).unwrap().len();
    let data_size = std::fs::metadata(&data).unwrap().len();
    assert!(data_size > model_size * 10, "{model_size} vs {data_size}");
    assert_eq!(load_model(&saved).unwrap(), model);

    // Saving inline again (default options) gives one self-contained file.
    let inline = tmp.0.join("inline.onnx");
    save_model(&load_model(&saved).unwrap(), &inline).unwrap();
    assert!(!tmp.0.join("inline.onnx.data").exists());
    assert_eq!(load_model(&inline).unwrap(), model);
}

#[test]
fn generated_test_models_round_trip() {
    let dir = folder(
        "KVANT_TEST_MODELS",
        ".cache/test-models",
        "python scripts/make_test_models.py .cache/test-models",
    );
    check_models("test-models", &onnx_files(&dir), &SaveOptions::default());
}
