//! Remove ops that return their input.
//!
//! Contract: 1x1 pooling with stride 1 and no padding, a global pool of a
//! 1x1 map, an option A shortcut with stride 1 and no padding, and a ReLU of
//! a value that is already non-negative (a ReLU or an op with a fused ReLU)
//! are replaced by their input. Each rewrite keeps values bit for bit.

use super::Module;
use crate::ir::Op;

fn is_identity(m: &Module, i: petgraph::stable_graph::NodeIndex) -> bool {
    let g = &m.graph;
    let n = g.node(i);
    let Some(&x) = g.inputs(i).first() else {
        return false;
    };
    let xs = &g.node(x).shape;
    match n.op {
        Op::MaxPool {
            kernel: 1,
            stride: 1,
            padding: 0,
            ..
        }
        | Op::AvgPool {
            kernel: 1,
            stride: 1,
            padding: 0,
            ..
        }
        | Op::ShortcutPad {
            stride: 1,
            pad_before: 0,
            pad_after: 0,
        } => true,
        Op::GlobalAvgPool => xs.height() == 1 && xs.width() == 1,
        Op::Relu => matches!(
            g.node(x).op,
            Op::Relu | Op::Conv2d { relu: true, .. } | Op::ScaleShift { relu: true, .. }
        ),
        _ => false,
    }
}

pub fn run(m: &mut Module) -> Result<bool, crate::ir::GraphError> {
    let found: Vec<_> = m
        .graph
        .order
        .iter()
        .copied()
        .filter(|&i| is_identity(m, i))
        .collect();
    for &i in &found {
        let x = m.graph.inputs(i)[0];
        m.graph.replace_uses(i, x);
        m.graph.remove(i);
    }
    Ok(!found.is_empty())
}
