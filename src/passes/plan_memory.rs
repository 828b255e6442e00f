//! Memory planning: one arena for all activations.
//!
//! Contract: [`plan`] gives a slot (offset, size, live steps) for every
//! value, such that no two values live at one step share bytes, except an
//! elementwise result written over an input that dies at that very step
//! (relu, scale-shift, add, or a conv's residual: the epilogue reads each
//! element before it writes it). Offsets come from greedy-by-size packing:
//! largest buffer first, each at the lowest aligned offset free for its
//! whole lifetime. The schedule itself is left as it is. At `-O2` a conv's
//! inputs keep their bytes through a scale-shift of its output right
//! after it, so that a backend may make it in the conv's epilogue.

use petgraph::stable_graph::NodeIndex;

use crate::ir::liveness;
use crate::ir::op::Residual;
use crate::ir::plan::{MemoryPlan, Slot, ALIGN};
use crate::ir::{Graph, Op};

/// The inputs whose buffer the op may overwrite.
fn inplace_candidates(g: &Graph, i: NodeIndex) -> Vec<NodeIndex> {
    let ins = g.inputs(i);
    match g.node(i).op {
        Op::Relu | Op::ScaleShift { .. } => ins,
        Op::Add => ins,
        Op::Conv2d {
            residual: Residual::Add,
            ..
        } => ins.into_iter().skip(1).collect(),
        _ => Vec::new(),
    }
}

/// `fused`: the conv epilogues may make a scale-shift after them (`-O2`).
pub fn plan(g: &Graph, fused: bool) -> MemoryPlan {
    let iv = liveness::intervals(g);
    let index: std::collections::HashMap<NodeIndex, usize> =
        iv.iter().enumerate().map(|(k, v)| (v.value, k)).collect();
    // Buffers: a value starts its own, or continues the one of an input it
    // overwrites. buffer[k] = the buffer of value k.
    let mut buffer: Vec<usize> = (0..iv.len()).collect();
    let mut inplace: Vec<Option<NodeIndex>> = vec![None; iv.len()];
    let mut taken = vec![false; iv.len()];
    for (k, v) in iv.iter().enumerate() {
        for u in inplace_candidates(g, v.value) {
            let ku = index[&u];
            let donor = &iv[ku];
            if u != g.input && !taken[ku] && donor.end == v.start && donor.bytes == v.bytes {
                buffer[k] = buffer[ku];
                inplace[k] = Some(u);
                taken[ku] = true;
                break;
            }
        }
    }
    // Each buffer's lifetime and size.
    let mut span: std::collections::BTreeMap<usize, (usize, usize, u64)> = Default::default();
    for (k, v) in iv.iter().enumerate() {
        let e = span.entry(buffer[k]).or_insert((v.start, v.end, 0));
        e.0 = e.0.min(v.start);
        e.1 = e.1.max(v.end);
        e.2 = e.2.max(v.bytes);
    }
    // A scale-shift right after the conv it reads may be made by the conv's
    // epilogue as a second output (the JIT does): the conv's inputs then
    // stay put through it, so that the two never share bytes.
    for (p, pair) in g.order.windows(2).enumerate().filter(|_| fused) {
        let (conv, next) = (pair[0], pair[1]);
        if matches!(g.node(conv).op, Op::Conv2d { .. })
            && matches!(g.node(next).op, Op::ScaleShift { .. })
            && g.inputs(next) == [conv]
        {
            for u in g.inputs(conv) {
                if let Some(e) = span.get_mut(&buffer[index[&u]]) {
                    e.1 = e.1.max(p + 1);
                }
            }
        }
    }
    let mut order: Vec<(usize, (usize, usize, u64))> = span.into_iter().collect();
    order.sort_by(|a, b| b.1 .2.cmp(&a.1 .2).then(a.1 .0.cmp(&b.1 .0)));
    let mut placed: Vec<(usize, usize, u64, u64)> = Vec::new(); // start, end, offset, bytes
    let mut offset_of = std::collections::HashMap::new();
    let mut arena = 0u64;
    for (b, (start, end, bytes)) in order {
        let mut busy: Vec<(u64, u64)> = placed
            .iter()
            .filter(|p| p.0 <= end && start <= p.1)
            .map(|p| (p.2, p.2 + p.3))
            .collect();
        busy.sort();
        let mut offset = 0u64;
        for (lo, hi) in busy {
            if offset + bytes <= lo {
                break;
            }
            offset = offset.max(hi.div_ceil(ALIGN) * ALIGN);
        }
        placed.push((start, end, offset, bytes));
        offset_of.insert(b, offset);
        arena = arena.max(offset + bytes);
    }
    let slots = iv
        .iter()
        .enumerate()
        .map(|(k, v)| Slot {
            value: v.value,
            offset: offset_of[&buffer[k]],
            bytes: v.bytes,
            start: v.start,
            end: v.end,
            inplace_of: inplace[k],
        })
        .collect();
    MemoryPlan {
        slots,
        arena_bytes: arena.div_ceil(ALIGN) * ALIGN,
    }
}
