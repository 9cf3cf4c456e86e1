use crate::DType;

/// Errors from tensor construction, conversion and file I/O.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    /// The number of elements does not match the shape.
    #[error("shape {shape:?} needs {expected} elements but the data has {actual}")]
    LengthMismatch {
        /// The shape asked for.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements given.
        actual: usize,
    },
    /// The tensor holds another element type than the one asked for.
    #[error("expected a tensor of {expected}, got {actual}")]
    WrongDType {
        /// The type asked for.
        expected: DType,
        /// The tensor's type.
        actual: DType,
    },
    /// An operation that this element type does not support.
    #[error("{op} is not supported for {dtype} tensors")]
    Unsupported {
        /// What was attempted.
        op: String,
        /// The element type.
        dtype: DType,
    },
    /// A malformed `.npy` / `.npz` file or an unknown NumPy type.
    #[error("{path}: {reason}")]
    Format {
        /// File (or member) that is wrong.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// File involved.
        path: String,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
}
