//! Kernels: see the module list in [`crate::ops`].

use super::Registry;

/// Registers this module's operators.
pub fn register(_r: &mut Registry) {}
