use kvant_graph::GraphError;
use kvant_runtime::RuntimeError;
use kvant_tensor::TensorError;

/// Anything that can stop a `kvant` command; shown to the user as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Loading or saving a model failed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// Planning or running failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Reading or writing arrays failed.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// A bad command-line value.
    #[error("{0}")]
    Usage(String),
}
