//! Fuse ReLU into the epilogue of the conv or scale-shift that feeds it.
//!
//! Contract: `relu(x)` where x is a conv or scale-shift without a ReLU of its
//! own, read by nothing else, sets x's ReLU flag; for a conv with a residual
//! the epilogue is `relu(conv + bias + residual)`, the order of the paper's
//! blocks. A ReLU on a value read elsewhere stays.

use super::Module;
use crate::ir::Op;

pub fn run(m: &mut Module) -> Result<bool, crate::ir::GraphError> {
    let mut changed = false;
    let relus: Vec<_> = m
        .graph
        .nodes()
        .filter(|(_, n)| n.op == Op::Relu)
        .map(|(i, _)| i)
        .collect();
    for r in relus {
        let x = m.graph.inputs(r)[0];
        if m.graph.users(x) != [r] {
            continue;
        }
        match &mut m.graph.node_mut(x).op {
            Op::Conv2d { relu, .. } | Op::ScaleShift { relu, .. } if !*relu => *relu = true,
            _ => continue,
        }
        m.graph.replace_uses(r, x);
        m.graph.remove(r);
        changed = true;
    }
    Ok(changed)
}
