//! Backends run a graph with bound weights. `interp` is the reference: plain
//! kernels with PyTorch's eval-mode semantics, the oracle for faster backends.

pub mod interp;
pub mod jit;

use std::fmt;

/// Why a run could not happen (shapes the graph was not compiled for, or a
/// graph the backend does not support).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError(pub String);

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}
