//! Graph rewrites: functions `&mut Model -> report` that each do one thing and can be tested
//! alone. Passes never change what a model computes beyond float rounding.

mod constants;
mod dead_code;
mod fold_batch_norm;

pub use constants::ConstantTable;
pub use dead_code::remove_dead_code;
pub use fold_batch_norm::fold_batch_norm;

use crate::Model;

/// What a pass changed, in words a user can read (one entry per rewrite).
pub type PassReport = Vec<String>;

/// The rewrites that speed up inference without changing results beyond float rounding:
/// BatchNormalization folded into the preceding Conv, then unused nodes and initializers
/// dropped.
pub fn optimize_for_inference(model: &mut Model) -> PassReport {
    let mut report = fold_batch_norm(model);
    report.extend(remove_dead_code(model));
    report
}
