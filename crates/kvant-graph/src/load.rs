use crate::ir::{AttrValue, Attribute, Graph, Initializer, Model, Node, OpsetImport, ValueInfo};
use crate::{proto, GraphError};
use kvant_tensor::npy::decode_le;
use kvant_tensor::{bf16, f16, DType, Tensor, TensorData};
use prost::Message;
use std::path::{Path, PathBuf};

/// Where a model came from: its name for messages and the folder external data is relative to.
struct Source<'a> {
    name: &'a str,
    base_dir: Option<&'a Path>,
}

/// Loads an ONNX model file, resolving external data relative to the file's folder.
pub fn load_model(path: &Path) -> Result<Model, GraphError> {
    let bytes = std::fs::read(path).map_err(|source| GraphError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_model_bytes(&bytes, Some(&base), &path.display().to_string())
}

/// Decodes an ONNX model from bytes. `base_dir` resolves external data (none: external data is
/// an error); `name` is used in messages.
pub fn load_model_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    name: &str,
) -> Result<Model, GraphError> {
    let proto = proto::ModelProto::decode(bytes).map_err(|e| GraphError::Decode {
        path: name.to_string(),
        reason: e.to_string(),
    })?;
    let src = Source { name, base_dir };
    model_from_proto(proto, &src)
}

/// Decodes a serialized `TensorProto` file (as the ONNX node tests store inputs and outputs).
pub fn load_tensor_proto(path: &Path) -> Result<(String, Tensor), GraphError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| GraphError::Io {
        path: shown.clone(),
        source,
    })?;
    let proto = proto::TensorProto::decode(bytes.as_slice()).map_err(|e| GraphError::Decode {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let name = proto.name.clone().unwrap_or_default();
    let src = Source {
        name: &shown,
        base_dir: path.parent(),
    };
    Ok((name, decode_tensor(&proto, &src)?))
}

fn model_from_proto(p: proto::ModelProto, src: &Source) -> Result<Model, GraphError> {
    let graph = p
        .graph
        .ok_or_else(|| GraphError::invalid(src.name, "the model has no graph"))?;
    Ok(Model {
        ir_version: p.ir_version.unwrap_or(0),
        opset_import: p
            .opset_import
            .into_iter()
            .map(|o| OpsetImport {
                domain: o.domain.unwrap_or_default(),
                version: o.version.unwrap_or(0),
            })
            .collect(),
        producer_name: p.producer_name,
        producer_version: p.producer_version,
        domain: p.domain,
        model_version: p.model_version,
        doc_string: p.doc_string,
        graph: graph_from_proto(graph, src)?,
        metadata_props: p.metadata_props,
        training_info: p.training_info,
        functions: p.functions,
        configuration: p.configuration,
    })
}

fn value_info(v: proto::ValueInfoProto) -> ValueInfo {
    ValueInfo {
        name: v.name.unwrap_or_default(),
        ty: v.r#type,
        doc_string: v.doc_string,
        metadata_props: v.metadata_props,
    }
}

fn graph_from_proto(g: proto::GraphProto, src: &Source) -> Result<Graph, GraphError> {
    let name = g.name.unwrap_or_default();
    let initializers = g
        .initializer
        .into_iter()
        .map(|t| initializer(t, src))
        .collect::<Result<Vec<_>, _>>()?;
    let nodes = g
        .node
        .into_iter()
        .map(|n| node_from_proto(n, src))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Graph {
        name,
        nodes,
        inputs: g.input.into_iter().map(value_info).collect(),
        outputs: g.output.into_iter().map(value_info).collect(),
        value_info: g.value_info.into_iter().map(value_info).collect(),
        initializers,
        sparse_initializers: g.sparse_initializer,
        doc_string: g.doc_string,
        quantization_annotation: g.quantization_annotation,
        metadata_props: g.metadata_props,
    })
}

fn initializer(t: proto::TensorProto, src: &Source) -> Result<Initializer, GraphError> {
    let tensor = decode_tensor(&t, src)?;
    Ok(Initializer {
        name: t.name.unwrap_or_default(),
        tensor,
        doc_string: t.doc_string,
        metadata_props: t.metadata_props,
    })
}

fn node_from_proto(n: proto::NodeProto, src: &Source) -> Result<Node, GraphError> {
    let mut node = Node {
        name: n.name.unwrap_or_default(),
        op_type: n.op_type.unwrap_or_default(),
        domain: n.domain.unwrap_or_default(),
        inputs: n.input,
        outputs: n.output,
        attributes: Vec::with_capacity(n.attribute.len()),
        doc_string: n.doc_string,
        overload: n.overload,
        metadata_props: n.metadata_props,
        device_configurations: n.device_configurations,
    };
    for a in n.attribute {
        let attr = attribute_from_proto(a, src).map_err(|e| match e {
            GraphError::Invalid { reason, .. } => GraphError::invalid(node.describe(), reason),
            other => other,
        })?;
        node.attributes.push(attr);
    }
    Ok(node)
}

fn attribute_from_proto(a: proto::AttributeProto, src: &Source) -> Result<Attribute, GraphError> {
    use proto::attribute_proto::AttributeType as T;
    let name = a.name.clone().unwrap_or_default();
    let declared = a.r#type.and_then(|t| T::try_from(t).ok());
    let value = if a.ref_attr_name.is_some() {
        AttrValue::Reference(a.r#type.unwrap_or(0))
    } else {
        // Old files may omit `type`; then the one populated field decides.
        let kind = match declared {
            Some(t) if t != T::Undefined => t,
            _ => infer_attr_type(&a).ok_or_else(|| {
                GraphError::invalid(src.name, format!("attribute '{name}' has no value"))
            })?,
        };
        let missing = || GraphError::invalid(src.name, format!("attribute '{name}' has no value"));
        match kind {
            T::Float => AttrValue::Float(a.f.ok_or_else(missing)?),
            T::Int => AttrValue::Int(a.i.ok_or_else(missing)?),
            T::String => AttrValue::String(a.s.ok_or_else(missing)?),
            T::Tensor => AttrValue::Tensor(initializer(a.t.ok_or_else(missing)?, src)?),
            T::Graph => AttrValue::Graph(graph_from_proto(a.g.ok_or_else(missing)?, src)?),
            T::SparseTensor => AttrValue::SparseTensor(a.sparse_tensor.ok_or_else(missing)?),
            T::TypeProto => AttrValue::TypeProto(a.tp.ok_or_else(missing)?),
            T::Floats => AttrValue::Floats(a.floats),
            T::Ints => AttrValue::Ints(a.ints),
            T::Strings => AttrValue::Strings(a.strings),
            T::Tensors => AttrValue::Tensors(
                a.tensors
                    .into_iter()
                    .map(|t| initializer(t, src))
                    .collect::<Result<_, _>>()?,
            ),
            T::Graphs => AttrValue::Graphs(
                a.graphs
                    .into_iter()
                    .map(|g| graph_from_proto(g, src))
                    .collect::<Result<_, _>>()?,
            ),
            T::SparseTensors => AttrValue::SparseTensors(a.sparse_tensors),
            T::TypeProtos => AttrValue::TypeProtos(a.type_protos),
            T::Undefined => return Err(missing()),
        }
    };
    Ok(Attribute {
        name,
        value,
        ref_attr_name: a.ref_attr_name,
        doc_string: a.doc_string,
    })
}

fn infer_attr_type(a: &proto::AttributeProto) -> Option<proto::attribute_proto::AttributeType> {
    use proto::attribute_proto::AttributeType as T;
    Some(if a.f.is_some() {
        T::Float
    } else if a.i.is_some() {
        T::Int
    } else if a.s.is_some() {
        T::String
    } else if a.t.is_some() {
        T::Tensor
    } else if a.g.is_some() {
        T::Graph
    } else if !a.floats.is_empty() {
        T::Floats
    } else if !a.ints.is_empty() {
        T::Ints
    } else if !a.strings.is_empty() {
        T::Strings
    } else if !a.tensors.is_empty() {
        T::Tensors
    } else if !a.graphs.is_empty() {
        T::Graphs
    } else {
        return None;
    })
}

/// Decodes a `TensorProto` that holds its data inline (raw or typed fields).
pub fn tensor_from_proto(t: &proto::TensorProto) -> Result<Tensor, GraphError> {
    decode_tensor(
        t,
        &Source {
            name: "tensor",
            base_dir: None,
        },
    )
}

fn decode_tensor(t: &proto::TensorProto, src: &Source) -> Result<Tensor, GraphError> {
    let name = t.name.as_deref().unwrap_or("");
    let context = || format!("{}: tensor '{name}'", src.name);
    let code = t.data_type.unwrap_or(0);
    let dtype = DType::from_onnx_code(code)
        .ok_or_else(|| GraphError::invalid(context(), format!("unknown data type {code}")))?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(GraphError::invalid(context(), format!("negative dimension {d}")));
        }
        shape.push(d as usize);
    }
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| GraphError::invalid(context(), "dimensions overflow"))?;
    let external = t.data_location == Some(proto::tensor_proto::DataLocation::External as i32);
    let data = if dtype == DType::String {
        TensorData::String(t.string_data.clone())
    } else if external {
        let bytes = read_external(t, src, dtype.storage_bytes(n)).map_err(|reason| {
            GraphError::invalid(context(), format!("external data: {reason}"))
        })?;
        decode_le(dtype, &bytes)
    } else if let Some(raw) = &t.raw_data {
        let need = dtype.storage_bytes(n);
        if raw.len() != need {
            return Err(GraphError::invalid(
                context(),
                format!(
                    "raw_data has {} bytes, shape {shape:?} of {dtype} needs {need}",
                    raw.len()
                ),
            ));
        }
        decode_le(dtype, raw)
    } else {
        typed_fields(t, dtype)
    };
    Tensor::new(shape, data).map_err(|e| GraphError::invalid(context(), e.to_string()))
}

/// Data stored in the typed repeated fields (`float_data`, `int32_data` ...).
fn typed_fields(t: &proto::TensorProto, dtype: DType) -> TensorData {
    let i32s = &t.int32_data;
    match dtype {
        DType::F32 => TensorData::F32(t.float_data.clone()),
        DType::F64 => TensorData::F64(t.double_data.clone()),
        DType::I64 => TensorData::I64(t.int64_data.clone()),
        DType::I32 => TensorData::I32(i32s.clone()),
        DType::I16 => TensorData::I16(i32s.iter().map(|&v| v as i16).collect()),
        DType::I8 => TensorData::I8(i32s.iter().map(|&v| v as i8).collect()),
        DType::U16 => TensorData::U16(i32s.iter().map(|&v| v as u16).collect()),
        DType::U8 => TensorData::U8(i32s.iter().map(|&v| v as u8).collect()),
        DType::Bool => TensorData::Bool(i32s.iter().map(|&v| v != 0).collect()),
        DType::F16 => TensorData::F16(i32s.iter().map(|&v| f16::from_bits(v as u16)).collect()),
        DType::BF16 => {
            TensorData::BF16(i32s.iter().map(|&v| bf16::from_bits(v as u16)).collect())
        }
        DType::U32 => TensorData::U32(t.uint64_data.iter().map(|&v| v as u32).collect()),
        DType::U64 => TensorData::U64(t.uint64_data.clone()),
        DType::Complex64 => TensorData::Packed {
            dtype,
            bytes: t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
        DType::Complex128 => TensorData::Packed {
            dtype,
            bytes: t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
        DType::String => TensorData::String(t.string_data.clone()),
        // float8 / 4-bit / 2-bit types: one int32 per stored byte.
        other => TensorData::Packed {
            dtype: other,
            bytes: i32s.iter().map(|&v| v as u8).collect(),
        },
    }
}

fn read_external(t: &proto::TensorProto, src: &Source, need: usize) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let location = entry("location").ok_or("no 'location' entry")?;
    let rel = PathBuf::from(&location);
    if rel.is_absolute() || rel.components().any(|c| c == std::path::Component::ParentDir) {
        return Err(format!("location '{location}' leaves the model's folder"));
    }
    let base = src
        .base_dir
        .ok_or("the model was loaded from memory, so its folder is unknown")?;
    let path = base.join(rel);
    let parse = |key: &str| -> Result<u64, String> {
        entry(key)
            .map(|v| v.parse::<u64>().map_err(|_| format!("bad '{key}' value {v}")))
            .transpose()
            .map(|v| v.unwrap_or(0))
    };
    let offset = parse("offset")?;
    let length = match entry("length") {
        Some(_) => parse("length")? as usize,
        None => need,
    };
    if length != need {
        return Err(format!("length {length} does not match the {need} bytes the shape needs"));
    }
    let mut file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = vec![0; length];
    file.read_exact(&mut bytes)
        .map_err(|e| format!("{}: {e} (offset {offset}, length {length})", path.display()))?;
    Ok(bytes)
}
