//! Legalize for the backends: runs once after the rewrites, at every level.
//!
//! Contract: every `batch_norm` left (all of them at `-O0`, none after
//! `fold-bn`) becomes a `scale_shift` with `s = gamma / sqrt(var + eps)` and
//! shift `beta - mean * s`, computed in f64 as `fold-bn` does. Backends then
//! implement the per-channel affine once and never see `batch_norm`, whose
//! four tensors and epsilon they would each have to fold themselves.

use super::Module;
use crate::ir::{GraphError, Op};

pub fn run(m: &mut Module) -> Result<bool, GraphError> {
    let bns: Vec<_> = m
        .graph
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::BatchNorm { .. }))
        .map(|(i, _)| i)
        .collect();
    for &bn in &bns {
        super::fold_bn::to_scale_shift(m, bn)?;
    }
    Ok(!bns.is_empty())
}
