//! Fuse residual adds into the epilogue of a conv.
//!
//! Contract: `add(a, b)` where one operand is a conv with no residual or ReLU
//! yet, read by nothing else, and scheduled after the other operand, becomes
//! that conv with the other operand as its residual. If the other operand is
//! an option A `shortcut_pad` read only by this add, the conv reads the pad's
//! input through the same stride and zero-padding and the pad disappears: the
//! padded tensor is never built. Of two eligible convs (a projection
//! shortcut), the later one takes the add, so nothing needs rescheduling.

use super::{positions, Module};
use crate::ir::op::Residual;
use crate::ir::Op;

pub fn run(m: &mut Module) -> Result<bool, crate::ir::GraphError> {
    let mut changed = false;
    let adds: Vec<_> = m
        .graph
        .nodes()
        .filter(|(_, n)| n.op == Op::Add)
        .map(|(i, _)| i)
        .collect();
    for add in adds {
        let pos = positions(&m.graph);
        let ins = m.graph.inputs(add);
        let [a, b] = ins[..] else { continue };
        let eligible = |c| {
            m.graph.users(c) == [add]
                && matches!(
                    m.graph.node(c).op,
                    Op::Conv2d {
                        residual: Residual::None,
                        relu: false,
                        ..
                    }
                )
        };
        // The residual a conv would read for `other`: an option A pad read only
        // by this add is folded into the read, so its input is what is read.
        let read_of = |other| match m.graph.node(other).op {
            Op::ShortcutPad {
                stride,
                pad_before,
                pad_after,
            } if m.graph.users(other) == [add] => {
                let src = m.graph.inputs(other)[0];
                (
                    Residual::PadAdd {
                        stride,
                        pad_before,
                        pad_after,
                    },
                    src,
                    Some(other),
                )
            }
            _ => (Residual::Add, other, None),
        };
        // The later-scheduled eligible conv whose residual is ready before it.
        let mut best: Option<(_, (Residual, _, _))> = None;
        for (conv, other) in [(a, b), (b, a)] {
            let r = read_of(other);
            if eligible(conv)
                && pos[&r.1] < pos[&conv]
                && best.is_none_or(|(c, _)| pos[&conv] > pos[&c])
            {
                best = Some((conv, r));
            }
        }
        let Some((conv, (residual, read, pad))) = best else {
            continue;
        };
        let x = m.graph.inputs(conv)[0];
        if let Op::Conv2d { residual: r, .. } = &mut m.graph.node_mut(conv).op {
            *r = residual;
        }
        m.graph.set_inputs(conv, &[x, read]);
        m.graph.replace_uses(add, conv);
        m.graph.remove(add);
        if let Some(p) = pad {
            m.graph.remove(p);
        }
        changed = true;
    }
    Ok(changed)
}
