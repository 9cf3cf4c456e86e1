use kvant_graph::GraphError;
use kvant_tensor::TensorError;

/// Errors from planning or running a model.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model itself is malformed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// No kernel exists for an operator.
    #[error("{node}: operator {domain}{op} (opset {opset}) is not supported by kvant")]
    UnsupportedOp {
        /// The node, as [`kvant_graph::Node::describe`] shows it.
        node: String,
        /// Domain prefix (`""` or `"com.microsoft."`).
        domain: String,
        /// Operator type.
        op: String,
        /// Opset version of the node's domain.
        opset: i64,
    },
    /// A supported operator used with a configuration kvant does not implement (an attribute
    /// value, an input type); raised by kernel builders and kernels.
    #[error("{node}: not supported by kvant: {what}")]
    Unsupported {
        /// The node (filled in by the executor when the kernel leaves it empty).
        node: String,
        /// What is not supported.
        what: String,
    },
    /// A node failed while being built or run.
    #[error("{node}: {reason}")]
    Node {
        /// The node, as [`kvant_graph::Node::describe`] shows it.
        node: String,
        /// What went wrong.
        reason: String,
    },
    /// A model input is missing, unknown or of the wrong type or shape.
    #[error("input '{name}': {reason}")]
    Input {
        /// The input name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The graph's structure is inconsistent (a value used before it is produced, ...).
    #[error("graph '{graph}': {reason}")]
    Plan {
        /// Graph name.
        graph: String,
        /// What is wrong.
        reason: String,
    },
    /// A kernel-level failure that is not tied to a node yet (the executor adds the node).
    #[error("{0}")]
    Kernel(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Shorthand for an unsupported-configuration error raised inside a kernel or builder.
pub fn unsupported(what: impl Into<String>) -> RuntimeError {
    RuntimeError::Unsupported {
        node: String::new(),
        what: what.into(),
    }
}

/// Shorthand for a kernel error.
pub fn kernel_err(reason: impl Into<String>) -> RuntimeError {
    RuntimeError::Kernel(reason.into())
}

impl RuntimeError {
    /// Attaches a node to an error that does not name one yet.
    pub fn at_node(self, node: &str) -> RuntimeError {
        match self {
            RuntimeError::Kernel(reason) => RuntimeError::Node {
                node: node.to_string(),
                reason,
            },
            RuntimeError::Tensor(e) => RuntimeError::Node {
                node: node.to_string(),
                reason: e.to_string(),
            },
            RuntimeError::Graph(GraphError::Invalid { reason, .. }) => RuntimeError::Node {
                node: node.to_string(),
                reason,
            },
            RuntimeError::Unsupported { node: n, what } if n.is_empty() => {
                RuntimeError::Unsupported {
                    node: node.to_string(),
                    what,
                }
            }
            other => other,
        }
    }
}
