//! Malformed input: truncated, corrupted, empty or hostile ONNX files must give one
//! [`GraphError`] naming the file, never a panic or an allocation sized by a length field.

use kvant_graph::proto::{self, tensor_proto::DataLocation, StringStringEntryProto};
use kvant_graph::{load_model, load_model_bytes, model_to_bytes, GraphError};
use prost::Message;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ppocr(name: &str) -> PathBuf {
    let dir = std::env::var_os("KVANT_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache/models"));
    let path = dir.join(format!("{name}.onnx"));
    assert!(
        path.is_file(),
        "{} is missing: fetch it with `bash scripts/fetch_models.sh`",
        path.display()
    );
    path
}

/// A fresh temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("kvant-robustness-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The error must be a single message that names the file.
fn assert_names(err: &GraphError, name: &str) {
    let msg = err.to_string();
    assert!(msg.contains(name), "error does not name {name}: {msg}");
    assert!(!msg.contains('\n'), "error spans several lines: {msg}");
}

/// Loads bytes; if they load, saving and reloading must reproduce the same bytes.
fn load_or_error(bytes: &[u8], name: &str) -> Result<(), GraphError> {
    let model = load_model_bytes(bytes, None, name)?;
    let saved = model_to_bytes(&model);
    let again = load_model_bytes(&saved, None, name).expect("a saved model reloads");
    assert_eq!(model_to_bytes(&again), saved);
    Ok(())
}

#[test]
fn truncated_ppocr_models_fail_cleanly() {
    let tmp = TempDir::new("truncated");
    for name in ["ppocr_cls", "ppocr_det"] {
        let bytes = std::fs::read(ppocr(name)).unwrap();
        let n = bytes.len();
        for cut in [
            1,
            2,
            10,
            100,
            n / 10,
            n / 3,
            n / 2,
            2 * n / 3,
            9 * n / 10,
            n - 1,
        ] {
            let path = tmp.0.join(format!("{name}-cut{cut}.onnx"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = load_model(&path).expect_err("a truncated model must not load");
            assert_names(&err, &path.display().to_string());
        }
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn byte_flips_never_panic() {
    let original = std::fs::read(ppocr("ppocr_cls")).unwrap();
    // Flips in the first kilobytes hit structure (lengths, tags) rather than weight bytes.
    let structural = original.len().min(4096);
    let mut rng = Rng(0x006b_7661_6e74);
    let (mut loaded, mut failed) = (0, 0);
    for round in 0..300 {
        let mut bytes = original.clone();
        let flips = 1 + rng.below(4);
        for _ in 0..flips {
            let at = if round % 2 == 0 {
                rng.below(structural)
            } else {
                rng.below(bytes.len())
            };
            bytes[at] ^= 1 << rng.below(8);
        }
        match load_or_error(&bytes, "flipped.onnx") {
            Ok(()) => loaded += 1,
            Err(e) => {
                assert_names(&e, "flipped.onnx");
                failed += 1;
            }
        }
    }
    assert!(failed > 0 && loaded > 0, "loaded {loaded}, failed {failed}");
}

#[test]
fn empty_and_text_files_fail_cleanly() {
    let tmp = TempDir::new("text");
    let empty = tmp.0.join("empty.onnx");
    std::fs::write(&empty, b"").unwrap();
    let err = load_model(&empty).unwrap_err();
    assert_names(&err, "empty.onnx");
    assert!(err.to_string().contains("no graph"), "{err}");

    let text = tmp.0.join("readme.onnx");
    std::fs::write(&text, "This is not a model.\nIt is a text file.\n").unwrap();
    assert_names(&load_model(&text).unwrap_err(), "readme.onnx");

    let missing = tmp.0.join("missing.onnx");
    assert_names(&load_model(&missing).unwrap_err(), "missing.onnx");
    assert_names(
        &load_model(&tmp.0).unwrap_err(),
        &tmp.0.display().to_string(),
    );
}

/// A model whose graph holds one initializer.
fn model_with(tensor: proto::TensorProto) -> proto::ModelProto {
    proto::ModelProto {
        ir_version: Some(8),
        opset_import: vec![proto::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(proto::GraphProto {
            name: Some("g".into()),
            initializer: vec![tensor],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tensor(dtype: i32, dims: Vec<i64>) -> proto::TensorProto {
    proto::TensorProto {
        name: Some("huge".into()),
        data_type: Some(dtype),
        dims,
        ..Default::default()
    }
}

fn external(mut t: proto::TensorProto, entries: &[(&str, &str)]) -> proto::TensorProto {
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = entries
        .iter()
        .map(|(k, v)| StringStringEntryProto {
            key: Some(k.to_string()),
            value: Some(v.to_string()),
        })
        .collect();
    t
}

/// Loads a model file (so external data resolves) and returns the error message.
fn load_error(dir: &Path, model: proto::ModelProto) -> String {
    let path = dir.join("hostile.onnx");
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    let err = load_model(&path).expect_err("a hostile model must not load");
    assert_names(&err, "hostile.onnx");
    assert!(err.to_string().contains("huge"), "{err}");
    err.to_string()
}

#[test]
fn huge_dims_are_rejected_before_allocating() {
    let tmp = TempDir::new("dims");
    const F32: i32 = 1;
    const I4: i32 = 22;
    // No data at all for 2^40 floats (4 TiB): typed fields, raw_data, external.
    let msg = load_error(&tmp.0, model_with(tensor(F32, vec![1 << 40])));
    assert!(
        msg.contains("length") || msg.contains("1099511627776"),
        "{msg}"
    );
    let mut raw = tensor(F32, vec![1 << 40]);
    raw.raw_data = Some(vec![0; 16]);
    assert!(load_error(&tmp.0, model_with(raw)).contains("raw_data has 16 bytes"));
    std::fs::write(tmp.0.join("w.bin"), [0u8; 64]).unwrap();
    let ext = external(tensor(F32, vec![1 << 40]), &[("location", "w.bin")]);
    assert!(load_error(&tmp.0, model_with(ext)).contains("does not match"));
    let ext = external(
        tensor(F32, vec![1 << 40]),
        &[("location", "w.bin"), ("length", "4398046511104")],
    );
    assert!(load_error(&tmp.0, model_with(ext)).contains("past the end"));

    // Products that overflow usize, in elements and in bits of a packed type.
    let msg = load_error(&tmp.0, model_with(tensor(F32, vec![1 << 40, 1 << 40])));
    assert!(msg.contains("overflow"), "{msg}");
    let msg = load_error(&tmp.0, model_with(tensor(I4, vec![1 << 62, 3])));
    assert!(msg.contains("overflow"), "{msg}");
    let msg = load_error(&tmp.0, model_with(tensor(F32, vec![4, -1])));
    assert!(msg.contains("negative"), "{msg}");
}

#[test]
fn external_data_is_checked_against_the_file() {
    let tmp = TempDir::new("external");
    std::fs::write(tmp.0.join("w.bin"), [0u8; 64]).unwrap();
    let t = || tensor(1, vec![4]);
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[("location", "w.bin"), ("offset", "100")], "past the end"),
        (
            &[("location", "w.bin"), ("offset", "56"), ("length", "16")],
            "past the end",
        ),
        (
            &[
                ("location", "w.bin"),
                ("offset", "18446744073709551615"),
                ("length", "16"),
            ],
            "past the end",
        ),
        (
            &[("location", "../w.bin"), ("length", "16")],
            "leaves the model's folder",
        ),
        (
            &[("location", "/etc/passwd"), ("length", "16")],
            "leaves the model's folder",
        ),
        (&[("location", "w.bin"), ("offset", "-3")], "bad 'offset'"),
    ];
    for (entries, expected) in cases {
        let msg = load_error(&tmp.0, model_with(external(t(), entries)));
        assert!(msg.contains(expected), "{entries:?}: {msg}");
    }
    // In range: loads, and the absent length means "to the end of the file" as in onnx.
    let ok = external(t(), &[("location", "w.bin"), ("offset", "48")]);
    let path = tmp.0.join("ok.onnx");
    std::fs::write(&path, model_with(ok).encode_to_vec()).unwrap();
    let model = load_model(&path).unwrap();
    assert_eq!(model.graph.initializers[0].tensor.shape(), &[4]);
    // From memory there is no folder to resolve against.
    let ext = external(t(), &[("location", "w.bin")]);
    let err = load_model_bytes(&model_with(ext).encode_to_vec(), None, "mem.onnx").unwrap_err();
    assert_names(&err, "mem.onnx");
}

#[test]
fn errors_inside_nodes_name_file_and_node() {
    let mut bad = tensor(1, vec![3]);
    bad.raw_data = Some(vec![0; 5]);
    let node = proto::NodeProto {
        name: Some("const".into()),
        op_type: Some("Constant".into()),
        output: vec!["c".into()],
        attribute: vec![proto::AttributeProto {
            name: Some("value".into()),
            r#type: Some(proto::attribute_proto::AttributeType::Tensor as i32),
            t: Some(bad),
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut model = model_with(tensor(1, vec![0]));
    model.graph.as_mut().unwrap().node.push(node);
    let err = load_model_bytes(&model.encode_to_vec(), None, "nodes.onnx").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("nodes.onnx") && msg.contains("'const'"),
        "{msg}"
    );
    assert!(msg.contains("raw_data has 5 bytes"), "{msg}");
}

#[test]
fn deeply_nested_messages_are_refused() {
    // A chain of graphs in graph attributes, deeper than prost's recursion limit.
    let mut g = proto::GraphProto::default();
    for _ in 0..200 {
        g = proto::GraphProto {
            node: vec![proto::NodeProto {
                op_type: Some("If".into()),
                attribute: vec![proto::AttributeProto {
                    name: Some("then_branch".into()),
                    r#type: Some(proto::attribute_proto::AttributeType::Graph as i32),
                    g: Some(g),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
    }
    let model = proto::ModelProto {
        graph: Some(g),
        ..Default::default()
    };
    let bytes = model.encode_to_vec();
    assert_names(
        &load_model_bytes(&bytes, None, "deep.onnx").unwrap_err(),
        "deep.onnx",
    );
}
