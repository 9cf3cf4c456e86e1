use crate::ir::{
    Absent, AttrValue, Attribute, Graph, Initializer, Model, Node, OpsetImport, ValueInfo,
};
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

impl<'a> Source<'a> {
    /// The same model folder with a more specific name for messages (`file: node 'x' (Conv)`).
    fn within<'b>(&self, name: &'b str) -> Source<'b>
    where
        'a: 'b,
    {
        Source {
            name,
            base_dir: self.base_dir,
        }
    }
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
    let mut functions = p.functions;
    for f in &mut functions {
        let context = format!(
            "{}: function '{}'",
            src.name,
            f.name.as_deref().unwrap_or("")
        );
        let fsrc = src.within(&context);
        for n in &mut f.node {
            internalize_node(n, &fsrc)?;
        }
        for a in &mut f.attribute_proto {
            internalize_attribute(a, &fsrc)?;
        }
    }
    let mut training_info = p.training_info;
    for t in &mut training_info {
        for g in [&mut t.initialization, &mut t.algorithm]
            .into_iter()
            .flatten()
        {
            internalize_graph(g, src)?;
        }
    }
    // Only the default domain can be written without a domain field (absent means "").
    let default_domain_absent = p.opset_import.iter().any(|o| o.domain.is_none());
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
        training_info,
        functions,
        configuration: p.configuration,
        absent: Absent::default()
            .with(Absent::VERSION, p.ir_version.is_none())
            .with(Absent::DOMAIN, default_domain_absent),
    })
}

fn value_info(v: proto::ValueInfoProto) -> ValueInfo {
    ValueInfo {
        absent: Absent::default().with(Absent::NAME, v.name.is_none()),
        name: v.name.unwrap_or_default(),
        ty: v.r#type,
        doc_string: v.doc_string,
        metadata_props: v.metadata_props,
    }
}

fn graph_from_proto(g: proto::GraphProto, src: &Source) -> Result<Graph, GraphError> {
    let absent = Absent::default().with(Absent::NAME, g.name.is_none());
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
    let mut sparse_initializers = g.sparse_initializer;
    for s in &mut sparse_initializers {
        internalize_sparse(s, src)?;
    }
    Ok(Graph {
        name,
        nodes,
        inputs: g.input.into_iter().map(value_info).collect(),
        outputs: g.output.into_iter().map(value_info).collect(),
        value_info: g.value_info.into_iter().map(value_info).collect(),
        initializers,
        sparse_initializers,
        doc_string: g.doc_string,
        quantization_annotation: g.quantization_annotation,
        metadata_props: g.metadata_props,
        absent,
    })
}

fn initializer(t: proto::TensorProto, src: &Source) -> Result<Initializer, GraphError> {
    let tensor = decode_tensor(&t, src)?;
    Ok(Initializer {
        absent: Absent::default().with(Absent::NAME, t.name.is_none()),
        name: t.name.unwrap_or_default(),
        tensor,
        doc_string: t.doc_string,
        metadata_props: t.metadata_props,
    })
}

fn node_from_proto(n: proto::NodeProto, src: &Source) -> Result<Node, GraphError> {
    let absent = Absent::default()
        .with(Absent::NAME, n.name.is_none())
        .with(Absent::DOMAIN, n.domain.is_none())
        .with(Absent::OP_TYPE, n.op_type.is_none());
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
        absent,
    };
    // Errors inside attributes (bad tensors, nested subgraphs) name the file and the node.
    let context = format!("{}: {}", src.name, node.describe());
    let nsrc = src.within(&context);
    for a in n.attribute {
        node.attributes.push(attribute_from_proto(a, &nsrc)?);
    }
    Ok(node)
}

fn attribute_from_proto(a: proto::AttributeProto, src: &Source) -> Result<Attribute, GraphError> {
    use proto::attribute_proto::AttributeType as T;
    let name = a.name.clone().unwrap_or_default();
    let declared = a.r#type.and_then(|t| T::try_from(t).ok());
    let missing = || GraphError::invalid(src.name, format!("attribute '{name}' has no value"));
    let value = if a.ref_attr_name.is_some() {
        AttrValue::Reference(a.r#type.unwrap_or(0))
    } else {
        // Old files may omit `type`; then the one populated field decides.
        let kind = match declared {
            Some(t) if t != T::Undefined => t,
            _ => infer_attr_type(&a).ok_or_else(missing)?,
        };
        match kind {
            T::Float => AttrValue::Float(a.f.ok_or_else(missing)?),
            T::Int => AttrValue::Int(a.i.ok_or_else(missing)?),
            T::String => AttrValue::String(a.s.ok_or_else(missing)?),
            T::Tensor => AttrValue::Tensor(initializer(a.t.ok_or_else(missing)?, src)?),
            T::Graph => AttrValue::Graph(graph_from_proto(a.g.ok_or_else(missing)?, src)?),
            T::SparseTensor => {
                let mut s = a.sparse_tensor.ok_or_else(missing)?;
                internalize_sparse(&mut s, src)?;
                AttrValue::SparseTensor(s)
            }
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
            T::SparseTensors => {
                let mut v = a.sparse_tensors;
                for s in &mut v {
                    internalize_sparse(s, src)?;
                }
                AttrValue::SparseTensors(v)
            }
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

/// Parts of a model that kvant keeps as protobuf (functions, training info, sparse tensors)
/// may still point at external data. Their data is read in and stored inline, since the data
/// file is not copied when the model is saved elsewhere.
fn internalize_graph(g: &mut proto::GraphProto, src: &Source) -> Result<(), GraphError> {
    for t in &mut g.initializer {
        internalize_tensor(t, src)?;
    }
    for s in &mut g.sparse_initializer {
        internalize_sparse(s, src)?;
    }
    for n in &mut g.node {
        internalize_node(n, src)?;
    }
    Ok(())
}

fn internalize_node(n: &mut proto::NodeProto, src: &Source) -> Result<(), GraphError> {
    for a in &mut n.attribute {
        internalize_attribute(a, src)?;
    }
    Ok(())
}

fn internalize_attribute(a: &mut proto::AttributeProto, src: &Source) -> Result<(), GraphError> {
    for t in a.t.iter_mut().chain(a.tensors.iter_mut()) {
        internalize_tensor(t, src)?;
    }
    for s in a
        .sparse_tensor
        .iter_mut()
        .chain(a.sparse_tensors.iter_mut())
    {
        internalize_sparse(s, src)?;
    }
    for g in a.g.iter_mut().chain(a.graphs.iter_mut()) {
        internalize_graph(g, src)?;
    }
    Ok(())
}

fn internalize_sparse(s: &mut proto::SparseTensorProto, src: &Source) -> Result<(), GraphError> {
    for t in s.values.iter_mut().chain(s.indices.iter_mut()) {
        internalize_tensor(t, src)?;
    }
    Ok(())
}

fn internalize_tensor(t: &mut proto::TensorProto, src: &Source) -> Result<(), GraphError> {
    if !is_external(t) {
        return Ok(());
    }
    let name = t.name.as_deref().unwrap_or("");
    let context = || format!("{}: tensor '{name}'", src.name);
    // The expected size is checked when kvant knows the type; otherwise the entry decides.
    let need = match DType::from_onnx_code(t.data_type.unwrap_or(0)) {
        Some(dtype) => Some(byte_size(t, dtype).map_err(|r| GraphError::invalid(context(), r))?),
        None => None,
    };
    let bytes = read_external(t, src, need)
        .map_err(|reason| GraphError::invalid(context(), format!("external data: {reason}")))?;
    t.raw_data = Some(bytes);
    t.external_data.clear();
    t.data_location = None;
    Ok(())
}

fn is_external(t: &proto::TensorProto) -> bool {
    t.data_location == Some(proto::tensor_proto::DataLocation::External as i32)
}

/// The storage bytes of a tensor's declared shape, with every product checked: a hostile
/// file can declare dims like `[1 << 40, 1 << 40]` with no data, and nothing may be allocated
/// from them before the data is known to match.
fn byte_size(t: &proto::TensorProto, dtype: DType) -> Result<usize, String> {
    let overflow = || format!("dimensions {:?} overflow", t.dims);
    let mut n: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| format!("negative dimension {d}"))?;
        n = n.checked_mul(d).ok_or_else(overflow)?;
    }
    // Tensor::new computes the packed size as n * bits too: that product must fit as well.
    let bits = n.checked_mul(dtype.bits()).ok_or_else(overflow)?;
    Ok(bits.div_ceil(8))
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
    let need = byte_size(t, dtype).map_err(|r| GraphError::invalid(context(), r))?;
    let shape: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    let data = if dtype == DType::String {
        TensorData::String(t.string_data.clone())
    } else if is_external(t) {
        let bytes = read_external(t, src, Some(need))
            .map_err(|reason| GraphError::invalid(context(), format!("external data: {reason}")))?;
        decode_le(dtype, &bytes)
    } else if let Some(raw) = &t.raw_data {
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
    // Tensor::new checks that typed fields hold exactly as many elements as the shape needs.
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
        DType::BF16 => TensorData::BF16(i32s.iter().map(|&v| bf16::from_bits(v as u16)).collect()),
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

/// Reads a tensor's external data. `need` is the byte count the shape requires, when known.
/// Offset and length are checked against the data file's size before anything is allocated.
fn read_external(
    t: &proto::TensorProto,
    src: &Source,
    need: Option<usize>,
) -> Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .and_then(|e| e.value.clone())
    };
    let location = entry("location").ok_or("no 'location' entry")?;
    let rel = PathBuf::from(&location);
    if location.is_empty()
        || rel.is_absolute()
        || rel.components().any(|c| {
            !matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
    {
        return Err(format!("location '{location}' leaves the model's folder"));
    }
    let base = src
        .base_dir
        .ok_or("the model was loaded from memory, so its folder is unknown")?;
    let path = base.join(rel);
    let shown = |e: std::io::Error| format!("{}: {e}", path.display());
    let parse = |key: &str| -> Result<Option<u64>, String> {
        entry(key)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("bad '{key}' value '{v}'"))
            })
            .transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let mut file = std::fs::File::open(&path).map_err(shown)?;
    let size = file.metadata().map_err(shown)?.len();
    if offset > size {
        return Err(format!(
            "offset {offset} is past the end of {} ({size} bytes)",
            path.display()
        ));
    }
    // Like onnx, an absent length means "to the end of the file".
    let length = parse("length")?.unwrap_or(size - offset);
    if length > size - offset {
        return Err(format!(
            "offset {offset} + length {length} is past the end of {} ({size} bytes)",
            path.display()
        ));
    }
    if let Some(need) = need {
        if length != need as u64 {
            return Err(format!(
                "length {length} does not match the {need} bytes the shape needs"
            ));
        }
    }
    let length = usize::try_from(length).map_err(|_| format!("length {length} is too large"))?;
    file.seek(SeekFrom::Start(offset)).map_err(shown)?;
    let mut bytes = vec![0; length];
    file.read_exact(&mut bytes)
        .map_err(|e| format!("{}: {e} (offset {offset}, length {length})", path.display()))?;
    Ok(bytes)
}
