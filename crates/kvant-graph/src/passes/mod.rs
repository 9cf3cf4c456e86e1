//! Graph rewrites: functions `&mut Model -> report` that each do one thing and can be tested
//! alone. Passes never change what a model computes beyond float rounding.

mod constants;
mod dead_code;
mod fold_batch_norm;
mod fold_conv_affine;
mod fuse_hard_swish;

pub use constants::ConstantTable;
pub use dead_code::remove_dead_code;
pub use fold_batch_norm::fold_batch_norm;
pub use fold_conv_affine::fold_conv_affine;
pub use fuse_hard_swish::fuse_hard_swish;

use crate::Model;

/// What a pass changed, in words a user can read (one entry per rewrite).
pub type PassReport = Vec<String>;

/// The rewrites that speed up inference without changing results beyond float rounding:
/// BatchNormalization and constant per-channel Mul / Add folded into the preceding Conv,
/// decomposed hard-swish fused into one
/// `HardSwish`, then unused nodes and initializers dropped. The result is for kvant's
/// executor (it may use operators newer than the model's opset), not for export.
pub fn optimize_for_inference(model: &mut Model) -> PassReport {
    let mut report = fold_batch_norm(model);
    report.extend(fold_conv_affine(model));
    report.extend(fuse_hard_swish(model));
    report.extend(remove_dead_code(model));
    report
}
