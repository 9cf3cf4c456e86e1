use crate::ir::{Absent, AttrValue, Attribute, Graph, Initializer, Model, Node, ValueInfo};
use crate::{proto, GraphError};
use kvant_tensor::npy::encode_le;
use kvant_tensor::{write_atomic, DType, Tensor, TensorData};
use prost::Message;
use std::path::Path;

/// Protobuf refuses messages of 2 GiB or more; models whose tensors add up to more than this
/// are saved with external data.
const INLINE_LIMIT: usize = 1 << 30;

/// How to save a model.
#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Store tensors of at least this many bytes in a data file beside the model
    /// (`<model file name>.data`). `None`: only when the model would exceed protobuf's 2 GiB.
    pub external_data_threshold: Option<usize>,
}

/// Serializes a model with all tensors inline.
pub fn model_to_bytes(model: &Model) -> Vec<u8> {
    let mut sink = None;
    model_to_proto(model, &mut sink).encode_to_vec()
}

/// Saves a model to a file, switching to external data when it is too large for one protobuf.
pub fn save_model(model: &Model, path: &Path) -> Result<(), GraphError> {
    save_model_with_options(model, path, &SaveOptions::default())
}

/// Saves a model to a file. Files are written under temporary names and renamed into place, so
/// a failure never leaves a half-written model.
pub fn save_model_with_options(
    model: &Model,
    path: &Path,
    options: &SaveOptions,
) -> Result<(), GraphError> {
    let io = |source: kvant_tensor::TensorError| GraphError::Invalid {
        context: path.display().to_string(),
        reason: source.to_string(),
    };
    let threshold = options.external_data_threshold.or_else(|| {
        let total: usize = total_tensor_bytes(&model.graph);
        (total > INLINE_LIMIT).then_some(1024)
    });
    let Some(threshold) = threshold else {
        return write_atomic(path, &model_to_bytes(model)).map_err(io);
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| GraphError::invalid(path.display().to_string(), "not a file path"))?;
    let mut data_name = file_name.to_os_string();
    data_name.push(".data");
    let location = data_name.to_string_lossy().into_owned();
    let mut sink = Some(ExternalSink {
        location,
        threshold,
        bytes: Vec::new(),
    });
    let bytes = model_to_proto(model, &mut sink).encode_to_vec();
    if let Some(sink) = sink {
        write_atomic(&path.with_file_name(&data_name), &sink.bytes).map_err(io)?;
    }
    write_atomic(path, &bytes).map_err(io)
}

fn total_tensor_bytes(graph: &Graph) -> usize {
    let mut total: usize = graph
        .initializers
        .iter()
        .map(|i| i.tensor.byte_size())
        .sum();
    for node in &graph.nodes {
        for a in &node.attributes {
            match &a.value {
                AttrValue::Tensor(t) => total += t.tensor.byte_size(),
                AttrValue::Tensors(ts) => {
                    total += ts.iter().map(|t| t.tensor.byte_size()).sum::<usize>()
                }
                AttrValue::Graph(g) => total += total_tensor_bytes(g),
                AttrValue::Graphs(gs) => total += gs.iter().map(total_tensor_bytes).sum::<usize>(),
                _ => {}
            }
        }
    }
    total
}

/// Collects large tensors into one external data blob while a model is serialized.
struct ExternalSink {
    location: String,
    threshold: usize,
    bytes: Vec<u8>,
}

fn model_to_proto(m: &Model, sink: &mut Option<ExternalSink>) -> proto::ModelProto {
    proto::ModelProto {
        ir_version: int_field(m.ir_version, m.absent, Absent::VERSION),
        opset_import: m
            .opset_import
            .iter()
            .map(|o| proto::OperatorSetIdProto {
                domain: string_field(&o.domain, m.absent, Absent::DOMAIN),
                version: Some(o.version),
            })
            .collect(),
        producer_name: m.producer_name.clone(),
        producer_version: m.producer_version.clone(),
        domain: m.domain.clone(),
        model_version: m.model_version,
        doc_string: m.doc_string.clone(),
        graph: Some(graph_to_proto(&m.graph, sink)),
        metadata_props: m.metadata_props.clone(),
        training_info: m.training_info.clone(),
        functions: m.functions.clone(),
        configuration: m.configuration.clone(),
    }
}

fn value_info_to_proto(v: &ValueInfo) -> proto::ValueInfoProto {
    proto::ValueInfoProto {
        name: string_field(&v.name, v.absent, Absent::NAME),
        r#type: v.ty.clone(),
        doc_string: v.doc_string.clone(),
        metadata_props: v.metadata_props.clone(),
    }
}

fn graph_to_proto(g: &Graph, sink: &mut Option<ExternalSink>) -> proto::GraphProto {
    proto::GraphProto {
        node: g.nodes.iter().map(|n| node_to_proto(n, sink)).collect(),
        name: string_field(&g.name, g.absent, Absent::NAME),
        initializer: g
            .initializers
            .iter()
            .map(|i| initializer_to_proto(i, sink))
            .collect(),
        sparse_initializer: g.sparse_initializers.clone(),
        doc_string: g.doc_string.clone(),
        input: g.inputs.iter().map(value_info_to_proto).collect(),
        output: g.outputs.iter().map(value_info_to_proto).collect(),
        value_info: g.value_info.iter().map(value_info_to_proto).collect(),
        quantization_annotation: g.quantization_annotation.clone(),
        metadata_props: g.metadata_props.clone(),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A string field as the file had it: absent when it was absent and is still empty.
fn string_field(value: &str, absent: Absent, field: Absent) -> Option<String> {
    if absent.contains(field) && value.is_empty() {
        None
    } else {
        Some(value.to_string())
    }
}

/// An integer field as the file had it: absent when it was absent and is still zero.
fn int_field(value: i64, absent: Absent, field: Absent) -> Option<i64> {
    (!(absent.contains(field) && value == 0)).then_some(value)
}

fn node_to_proto(n: &Node, sink: &mut Option<ExternalSink>) -> proto::NodeProto {
    proto::NodeProto {
        input: n.inputs.clone(),
        output: n.outputs.clone(),
        name: string_field(&n.name, n.absent, Absent::NAME),
        op_type: string_field(&n.op_type, n.absent, Absent::OP_TYPE),
        domain: string_field(&n.domain, n.absent, Absent::DOMAIN),
        overload: n.overload.clone(),
        attribute: n
            .attributes
            .iter()
            .map(|a| attribute_to_proto(a, sink))
            .collect(),
        doc_string: n.doc_string.clone(),
        metadata_props: n.metadata_props.clone(),
        device_configurations: n.device_configurations.clone(),
    }
}

fn attribute_to_proto(a: &Attribute, sink: &mut Option<ExternalSink>) -> proto::AttributeProto {
    use proto::attribute_proto::AttributeType as T;
    let mut p = proto::AttributeProto {
        name: Some(a.name.clone()),
        ref_attr_name: a.ref_attr_name.clone(),
        doc_string: a.doc_string.clone(),
        ..Default::default()
    };
    let kind = match &a.value {
        AttrValue::Float(v) => {
            p.f = Some(*v);
            T::Float
        }
        AttrValue::Int(v) => {
            p.i = Some(*v);
            T::Int
        }
        AttrValue::String(v) => {
            p.s = Some(v.clone());
            T::String
        }
        AttrValue::Tensor(t) => {
            p.t = Some(initializer_to_proto(t, sink));
            T::Tensor
        }
        AttrValue::Graph(g) => {
            p.g = Some(graph_to_proto(g, sink));
            T::Graph
        }
        AttrValue::SparseTensor(s) => {
            p.sparse_tensor = Some(s.clone());
            T::SparseTensor
        }
        AttrValue::TypeProto(t) => {
            p.tp = Some(t.clone());
            T::TypeProto
        }
        AttrValue::Floats(v) => {
            p.floats = v.clone();
            T::Floats
        }
        AttrValue::Ints(v) => {
            p.ints = v.clone();
            T::Ints
        }
        AttrValue::Strings(v) => {
            p.strings = v.clone();
            T::Strings
        }
        AttrValue::Tensors(v) => {
            p.tensors = v.iter().map(|t| initializer_to_proto(t, sink)).collect();
            T::Tensors
        }
        AttrValue::Graphs(v) => {
            p.graphs = v.iter().map(|g| graph_to_proto(g, sink)).collect();
            T::Graphs
        }
        AttrValue::SparseTensors(v) => {
            p.sparse_tensors = v.clone();
            T::SparseTensors
        }
        AttrValue::TypeProtos(v) => {
            p.type_protos = v.clone();
            T::TypeProtos
        }
        AttrValue::Reference(code) => {
            p.r#type = Some(*code);
            return p;
        }
    };
    p.r#type = Some(kind as i32);
    p
}

fn initializer_to_proto(i: &Initializer, sink: &mut Option<ExternalSink>) -> proto::TensorProto {
    let mut p = tensor_to_proto(&i.name, &i.tensor);
    p.name = string_field(&i.name, i.absent, Absent::NAME);
    p.doc_string = i.doc_string.clone();
    p.metadata_props = i.metadata_props.clone();
    if let (Some(sink), Some(raw)) = (sink.as_mut(), p.raw_data.as_ref()) {
        if raw.len() >= sink.threshold {
            // Align each tensor to 4 KiB so that the data file can be memory-mapped.
            let offset = sink.bytes.len().div_ceil(4096) * 4096;
            sink.bytes.resize(offset, 0);
            sink.bytes.extend_from_slice(raw);
            let entry = |k: &str, v: String| proto::StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v),
            };
            p.external_data = vec![
                entry("location", sink.location.clone()),
                entry("offset", offset.to_string()),
                entry("length", raw.len().to_string()),
            ];
            p.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
            p.raw_data = None;
        }
    }
    p
}

/// Encodes a tensor as a `TensorProto` (data in `raw_data`, strings in `string_data`).
pub fn tensor_to_proto(name: &str, t: &Tensor) -> proto::TensorProto {
    let mut p = proto::TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: Some(t.dtype().onnx_code()),
        name: non_empty(name),
        ..Default::default()
    };
    match t.data() {
        TensorData::String(v) => p.string_data = v.clone(),
        data => p.raw_data = Some(encode_le(data)),
    }
    debug_assert!(t.dtype() != DType::String || p.raw_data.is_none());
    p
}
