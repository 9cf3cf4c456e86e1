use crate::proto;
use crate::GraphError;
use kvant_tensor::{DType, Tensor};

/// Which optional scalar fields of a protobuf message were absent from the file.
///
/// ONNX is proto2, where an absent field and a field set to its default value (`""`, `0`) are
/// different encodings. The IR stores such fields as plain values, so this set records the
/// absent ones and saving writes them back absent; a round trip then reproduces the file's
/// messages exactly. Objects kvant creates have an empty set: every field is written, and a
/// field that was absent but has since been given a non-default value is written too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Absent(u8);

impl Absent {
    /// The `name` field (node, graph, value info, tensor).
    pub const NAME: Absent = Absent(1);
    /// The `domain` field (node; for a model, that of its default-domain opset import).
    pub const DOMAIN: Absent = Absent(1 << 1);
    /// The `op_type` field (node).
    pub const OP_TYPE: Absent = Absent(1 << 2);
    /// The `ir_version` field (model).
    pub const VERSION: Absent = Absent(1 << 3);

    /// Whether `field` is marked absent.
    pub fn contains(self, field: Absent) -> bool {
        self.0 & field.0 == field.0
    }

    /// Marks `field` absent when `absent` is true.
    pub fn with(self, field: Absent, absent: bool) -> Absent {
        if absent {
            Absent(self.0 | field.0)
        } else {
            self
        }
    }
}

/// An opset a model imports: a domain (empty for the default ONNX domain) and its version.
#[derive(Debug, Clone, PartialEq)]
pub struct OpsetImport {
    /// Operator domain; `""` is `ai.onnx`.
    pub domain: String,
    /// Opset version.
    pub version: i64,
}

impl OpsetImport {
    /// An opset import.
    pub fn new(domain: impl Into<String>, version: i64) -> OpsetImport {
        OpsetImport {
            domain: domain.into(),
            version,
        }
    }
}

/// A model: one main graph plus model-wide metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Model {
    /// ONNX IR version.
    pub ir_version: i64,
    /// Imported opsets.
    pub opset_import: Vec<OpsetImport>,
    /// Producer name.
    pub producer_name: Option<String>,
    /// Producer version.
    pub producer_version: Option<String>,
    /// Model domain.
    pub domain: Option<String>,
    /// Model version.
    pub model_version: Option<i64>,
    /// Documentation.
    pub doc_string: Option<String>,
    /// The main graph.
    pub graph: Graph,
    /// Key/value metadata.
    pub metadata_props: Vec<proto::StringStringEntryProto>,
    /// Training information, kept as stored.
    pub training_info: Vec<proto::TrainingInfoProto>,
    /// Model-local functions, kept as stored.
    pub functions: Vec<proto::FunctionProto>,
    /// Device configurations, kept as stored.
    pub configuration: Vec<proto::DeviceConfigurationProto>,
    /// Fields absent from the file: [`Absent::VERSION`] for `ir_version`, [`Absent::DOMAIN`]
    /// when the default-domain opset import had no `domain` field (`make_model`'s default).
    pub absent: Absent,
}

impl Model {
    /// The imported version of an operator domain (`""` and `"ai.onnx"` are the same domain).
    pub fn opset_version(&self, domain: &str) -> Option<i64> {
        let wanted = normalize_domain(domain);
        self.opset_import
            .iter()
            .find(|o| normalize_domain(&o.domain) == wanted)
            .map(|o| o.version)
    }
}

/// Maps `ai.onnx` to `""`, the two names of the default domain.
pub(crate) fn normalize_domain(domain: &str) -> &str {
    if domain == "ai.onnx" {
        ""
    } else {
        domain
    }
}

/// A named tensor stored in a graph (initializer) or an attribute, with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    /// The value name.
    pub name: String,
    /// The data.
    pub tensor: Tensor,
    /// Documentation.
    pub doc_string: Option<String>,
    /// Key/value metadata.
    pub metadata_props: Vec<proto::StringStringEntryProto>,
    /// Fields absent from the file ([`Absent::NAME`]).
    pub absent: Absent,
}

impl Initializer {
    /// An initializer with no metadata.
    pub fn new(name: impl Into<String>, tensor: Tensor) -> Initializer {
        Initializer {
            name: name.into(),
            tensor,
            doc_string: None,
            metadata_props: Vec::new(),
            absent: Absent::default(),
        }
    }
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named symbolic size (`batch`, `seq` ...).
    Symbolic(String),
    /// No information.
    Unknown,
}

/// A declared graph input, output or intermediate value: a name and an ONNX type.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueInfo {
    /// The value name.
    pub name: String,
    /// The declared type (tensor, sequence, optional, map, sparse), as stored.
    pub ty: Option<proto::TypeProto>,
    /// Documentation.
    pub doc_string: Option<String>,
    /// Key/value metadata.
    pub metadata_props: Vec<proto::StringStringEntryProto>,
    /// Fields absent from the file ([`Absent::NAME`]).
    pub absent: Absent,
}

impl ValueInfo {
    /// A tensor value with an element type and a shape.
    pub fn tensor(name: impl Into<String>, dtype: DType, shape: &[Dim]) -> ValueInfo {
        let dims = shape
            .iter()
            .map(|d| proto::tensor_shape_proto::Dimension {
                denotation: None,
                value: match d {
                    Dim::Fixed(v) => {
                        Some(proto::tensor_shape_proto::dimension::Value::DimValue(*v))
                    }
                    Dim::Symbolic(s) => Some(
                        proto::tensor_shape_proto::dimension::Value::DimParam(s.clone()),
                    ),
                    Dim::Unknown => None,
                },
            })
            .collect();
        ValueInfo {
            name: name.into(),
            ty: Some(proto::TypeProto {
                denotation: None,
                value: Some(proto::type_proto::Value::TensorType(
                    proto::type_proto::Tensor {
                        elem_type: Some(dtype.onnx_code()),
                        shape: Some(proto::TensorShapeProto { dim: dims }),
                    },
                )),
            }),
            doc_string: None,
            metadata_props: Vec::new(),
            absent: Absent::default(),
        }
    }

    /// Whether the declared type is a plain tensor (or undeclared).
    pub fn is_tensor(&self) -> bool {
        matches!(
            self.ty.as_ref().and_then(|t| t.value.as_ref()),
            None | Some(proto::type_proto::Value::TensorType(_))
        )
    }

    /// The element type of a tensor value, when declared and known to kvant.
    pub fn dtype(&self) -> Option<DType> {
        match self.ty.as_ref()?.value.as_ref()? {
            proto::type_proto::Value::TensorType(t) => DType::from_onnx_code(t.elem_type?),
            _ => None,
        }
    }

    /// The declared shape of a tensor value; `None` when the rank is unknown.
    pub fn shape(&self) -> Option<Vec<Dim>> {
        match self.ty.as_ref()?.value.as_ref()? {
            proto::type_proto::Value::TensorType(t) => Some(
                t.shape
                    .as_ref()?
                    .dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(proto::tensor_shape_proto::dimension::Value::DimValue(v)) => {
                            Dim::Fixed(*v)
                        }
                        Some(proto::tensor_shape_proto::dimension::Value::DimParam(s)) => {
                            Dim::Symbolic(s.clone())
                        }
                        None => Dim::Unknown,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// An attribute value.
// Graph attributes are held inline: boxing them would change the public variants, and
// attributes are few per node, so the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// FLOAT.
    Float(f32),
    /// INT.
    Int(i64),
    /// STRING (bytes).
    String(Vec<u8>),
    /// TENSOR.
    Tensor(Initializer),
    /// GRAPH (a subgraph of If / Loop / Scan).
    Graph(Graph),
    /// SPARSE_TENSOR, as stored.
    SparseTensor(proto::SparseTensorProto),
    /// TYPE_PROTO, as stored.
    TypeProto(proto::TypeProto),
    /// FLOATS.
    Floats(Vec<f32>),
    /// INTS.
    Ints(Vec<i64>),
    /// STRINGS.
    Strings(Vec<Vec<u8>>),
    /// TENSORS.
    Tensors(Vec<Initializer>),
    /// GRAPHS.
    Graphs(Vec<Graph>),
    /// SPARSE_TENSORS, as stored.
    SparseTensors(Vec<proto::SparseTensorProto>),
    /// TYPE_PROTOS, as stored.
    TypeProtos(Vec<proto::TypeProto>),
    /// A reference to a function attribute (`ref_attr_name`) with no value of its own; the
    /// number is the declared ONNX attribute type.
    Reference(i32),
}

impl AttrValue {
    /// ONNX's name of the attribute type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            AttrValue::Float(_) => "float",
            AttrValue::Int(_) => "int",
            AttrValue::String(_) => "string",
            AttrValue::Tensor(_) => "tensor",
            AttrValue::Graph(_) => "graph",
            AttrValue::SparseTensor(_) => "sparse tensor",
            AttrValue::TypeProto(_) => "type",
            AttrValue::Floats(_) => "floats",
            AttrValue::Ints(_) => "ints",
            AttrValue::Strings(_) => "strings",
            AttrValue::Tensors(_) => "tensors",
            AttrValue::Graphs(_) => "graphs",
            AttrValue::SparseTensors(_) => "sparse tensors",
            AttrValue::TypeProtos(_) => "types",
            AttrValue::Reference(_) => "reference",
        }
    }
}

/// A named attribute of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    /// Attribute name.
    pub name: String,
    /// The value.
    pub value: AttrValue,
    /// Name of the function attribute this one refers to, inside function bodies.
    pub ref_attr_name: Option<String>,
    /// Documentation.
    pub doc_string: Option<String>,
}

impl Attribute {
    /// An attribute without documentation or reference.
    pub fn new(name: impl Into<String>, value: AttrValue) -> Attribute {
        Attribute {
            name: name.into(),
            value,
            ref_attr_name: None,
            doc_string: None,
        }
    }
}

/// One operator application.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// Node name (may be empty in the file; kvant's own passes name their nodes).
    pub name: String,
    /// Operator type (`Conv`, `MatMul` ...).
    pub op_type: String,
    /// Operator domain (`""` for ONNX).
    pub domain: String,
    /// Input value names; `""` marks an omitted optional input.
    pub inputs: Vec<String>,
    /// Output value names; `""` marks an omitted optional output.
    pub outputs: Vec<String>,
    /// Attributes, in file order.
    pub attributes: Vec<Attribute>,
    /// Documentation.
    pub doc_string: Option<String>,
    /// Function overload identifier.
    pub overload: Option<String>,
    /// Key/value metadata.
    pub metadata_props: Vec<proto::StringStringEntryProto>,
    /// Device configurations, as stored.
    pub device_configurations: Vec<proto::NodeDeviceConfigurationProto>,
    /// Fields absent from the file ([`Absent::NAME`], [`Absent::DOMAIN`], [`Absent::OP_TYPE`]).
    pub absent: Absent,
}

macro_rules! attr_getter {
    ($(#[$doc:meta])* $fn:ident, $variant:ident, $ret:ty, |$v:ident| $conv:expr) => {
        $(#[$doc])*
        pub fn $fn(&self, name: &str) -> Result<Option<$ret>, GraphError> {
            match self.attr(name) {
                None => Ok(None),
                Some(AttrValue::$variant($v)) => Ok(Some($conv)),
                Some(other) => Err(self.attr_type_error(name, stringify!($variant), other)),
            }
        }
    };
}

impl Node {
    /// A node in the default domain.
    pub fn new(
        op_type: impl Into<String>,
        name: impl Into<String>,
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Node {
        Node {
            name: name.into(),
            op_type: op_type.into(),
            inputs,
            outputs,
            ..Node::default()
        }
    }

    /// How the node is shown in messages: `node 'name' (Op)`.
    pub fn describe(&self) -> String {
        if self.name.is_empty() {
            format!(
                "node {} (output '{}')",
                self.op_type,
                self.outputs.first().map(String::as_str).unwrap_or("")
            )
        } else {
            format!("node '{}' ({})", self.name, self.op_type)
        }
    }

    /// The raw value of an attribute.
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }

    fn attr_type_error(&self, name: &str, wanted: &str, got: &AttrValue) -> GraphError {
        GraphError::invalid(
            self.describe(),
            format!(
                "attribute '{name}' should be {}, but is {}",
                wanted.to_ascii_lowercase(),
                got.type_name()
            ),
        )
    }

    attr_getter!(
        /// An INT attribute.
        attr_int, Int, i64, |v| *v);
    attr_getter!(
        /// A FLOAT attribute.
        attr_float, Float, f32, |v| *v);
    attr_getter!(
        /// An INTS attribute.
        attr_ints, Ints, &[i64], |v| v.as_slice());
    attr_getter!(
        /// A FLOATS attribute.
        attr_floats, Floats, &[f32], |v| v.as_slice());
    attr_getter!(
        /// A TENSOR attribute.
        attr_tensor, Tensor, &Tensor, |v| &v.tensor);
    attr_getter!(
        /// A GRAPH attribute.
        attr_graph, Graph, &Graph, |v| v);

    /// A STRING attribute, as UTF-8 text.
    pub fn attr_string(&self, name: &str) -> Result<Option<String>, GraphError> {
        match self.attr(name) {
            None => Ok(None),
            Some(AttrValue::String(s)) => Ok(Some(String::from_utf8_lossy(s).into_owned())),
            Some(other) => Err(self.attr_type_error(name, "string", other)),
        }
    }

    /// A STRINGS attribute, as UTF-8 texts.
    pub fn attr_strings(&self, name: &str) -> Result<Option<Vec<String>>, GraphError> {
        match self.attr(name) {
            None => Ok(None),
            Some(AttrValue::Strings(s)) => Ok(Some(
                s.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect(),
            )),
            Some(other) => Err(self.attr_type_error(name, "strings", other)),
        }
    }

    /// Names of the node's present (non-empty) inputs.
    pub fn present_inputs(&self) -> impl Iterator<Item = &str> {
        self.inputs
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The subgraphs held in the node's attributes.
    pub fn subgraphs(&self) -> Vec<&Graph> {
        let mut out = Vec::new();
        for a in &self.attributes {
            match &a.value {
                AttrValue::Graph(g) => out.push(g),
                AttrValue::Graphs(gs) => out.extend(gs.iter()),
                _ => {}
            }
        }
        out
    }
}

/// A computation graph: nodes in topological order, declared inputs/outputs, initializers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Graph {
    /// Graph name.
    pub name: String,
    /// Nodes, in the file's (topological) order.
    pub nodes: Vec<Node>,
    /// Declared inputs (in old models these include initializers).
    pub inputs: Vec<ValueInfo>,
    /// Declared outputs.
    pub outputs: Vec<ValueInfo>,
    /// Declared types of intermediate values.
    pub value_info: Vec<ValueInfo>,
    /// Constant tensors.
    pub initializers: Vec<Initializer>,
    /// Sparse initializers, as stored.
    pub sparse_initializers: Vec<proto::SparseTensorProto>,
    /// Documentation.
    pub doc_string: Option<String>,
    /// Quantization annotations, as stored.
    pub quantization_annotation: Vec<proto::TensorAnnotation>,
    /// Key/value metadata.
    pub metadata_props: Vec<proto::StringStringEntryProto>,
    /// Fields absent from the file ([`Absent::NAME`]).
    pub absent: Absent,
}

impl Graph {
    /// The initializer of a value, if it has one.
    pub fn initializer(&self, name: &str) -> Option<&Initializer> {
        self.initializers.iter().find(|i| i.name == name)
    }

    /// Graph inputs that are not initializers: what a caller must feed.
    pub fn runtime_inputs(&self) -> Vec<&ValueInfo> {
        let init: std::collections::HashSet<&str> =
            self.initializers.iter().map(|i| i.name.as_str()).collect();
        self.inputs
            .iter()
            .filter(|i| !init.contains(i.name.as_str()))
            .collect()
    }

    /// Names this graph reads but does not define (its outer-scope references, including those
    /// of nested subgraphs), in first-use order.
    pub fn free_variables(&self) -> Vec<String> {
        let mut defined: std::collections::HashSet<&str> =
            self.inputs.iter().map(|v| v.name.as_str()).collect();
        defined.extend(self.initializers.iter().map(|i| i.name.as_str()));
        let mut seen = std::collections::HashSet::new();
        let mut free = Vec::new();
        let mut note = |name: &str, defined: &std::collections::HashSet<&str>| {
            if !name.is_empty() && !defined.contains(name) && seen.insert(name.to_string()) {
                free.push(name.to_string());
            }
        };
        for node in &self.nodes {
            for name in node.present_inputs() {
                note(name, &defined);
            }
            for sub in node.subgraphs() {
                for name in sub.free_variables() {
                    note(&name, &defined);
                }
            }
            defined.extend(node.outputs.iter().map(String::as_str));
        }
        for out in &self.outputs {
            note(&out.name, &defined);
        }
        free
    }

    /// Calls `f` on every node of this graph and of all nested subgraphs.
    pub fn visit_nodes<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        for node in &self.nodes {
            f(node);
            for g in node.subgraphs() {
                g.visit_nodes(f);
            }
        }
    }
}
