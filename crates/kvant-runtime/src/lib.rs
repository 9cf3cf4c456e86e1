//! kvant's executor: turns a [`kvant_graph::Model`] into a [`Plan`] (kernels chosen and
//! configured once, buffers freed after their last use) and runs it in a [`Session`] on a
//! rayon thread pool. A [`ValueHook`] sees every value a run produces, by name, and may replace
//! it: that is how observers calibrate and how fake-quantization is simulated.

mod error;
mod hook;
pub mod ops;
mod plan;
mod session;

pub use error::{kernel_err, unsupported, RuntimeError};
pub use hook::{NoHook, ValueHook};
pub use plan::{free_variables, Plan, StepTime};
pub use session::{format_dims, ProfiledRun, Session, SessionOptions};
