/// Errors from loading, saving or querying a model.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid ONNX protobuf.
    #[error("{path}: not a valid ONNX model: {reason}")]
    Decode {
        /// File involved.
        path: String,
        /// What the decoder said.
        reason: String,
    },
    /// The model decodes but is inconsistent (bad tensor, missing graph, wrong attribute).
    #[error("{context}: {reason}")]
    Invalid {
        /// Where: file, graph, node or tensor.
        context: String,
        /// What is wrong.
        reason: String,
    },
}

impl GraphError {
    /// An [`GraphError::Invalid`] with a context and a reason.
    pub fn invalid(context: impl Into<String>, reason: impl Into<String>) -> GraphError {
        GraphError::Invalid {
            context: context.into(),
            reason: reason.into(),
        }
    }
}
