//! The memory plan: every value's place in one arena, and the checker that
//! proves no two values live at once share bytes.

use petgraph::stable_graph::NodeIndex;

use super::error::{GraphError, Stage};
use super::graph::Graph;

/// Offsets are multiples of this many bytes (a cache line, and AVX-friendly).
pub const ALIGN: u64 = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub value: NodeIndex,
    pub offset: u64,
    pub bytes: u64,
    /// First and last schedule step the value is live.
    pub start: usize,
    pub end: usize,
    /// The value whose bytes this one overwrites in place: it dies at the
    /// step that writes this one, which reads each element before writing it.
    pub inplace_of: Option<NodeIndex>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// One slot per value, in schedule order.
    pub slots: Vec<Slot>,
    pub arena_bytes: u64,
}

impl MemoryPlan {
    pub fn slot(&self, v: NodeIndex) -> Option<&Slot> {
        self.slots.iter().find(|s| s.value == v)
    }

    /// Bytes of all values, as if none shared memory.
    pub fn sum_bytes(&self) -> u64 {
        self.slots.iter().map(|s| s.bytes).sum()
    }
}

/// No two values live at the same step overlap in the arena, except a value
/// written in place of one that dies at that step; every value has an
/// aligned slot of its own size inside the arena.
pub fn check(g: &Graph, plan: &MemoryPlan) -> Result<(), GraphError> {
    let fail = |msg: String| GraphError::new(Stage::Prepare, msg);
    if plan.slots.len() != g.len() {
        return Err(fail(format!(
            "{} slots for {} values",
            plan.slots.len(),
            g.len()
        )));
    }
    for (s, (i, n)) in plan.slots.iter().zip(g.nodes()) {
        let name = &n.name;
        if s.value != i {
            return Err(fail(format!("slot for `{name}` is out of schedule order")).at(g, i));
        }
        if s.bytes != n.shape.numel() * super::cost::ELEM_BYTES {
            return Err(fail(format!(
                "slot of `{name}` has {} bytes, the value {}",
                s.bytes,
                n.shape.numel() * 4
            ))
            .at(g, i));
        }
        if s.offset % ALIGN != 0 || s.offset + s.bytes > plan.arena_bytes {
            return Err(fail(format!(
                "slot of `{name}` is unaligned or outside the arena"
            ))
            .at(g, i));
        }
    }
    for (a_i, a) in plan.slots.iter().enumerate() {
        for b in &plan.slots[a_i + 1..] {
            let live_together = a.start <= b.end && b.start <= a.end;
            let bytes_overlap = a.offset < b.offset + b.bytes && b.offset < a.offset + a.bytes;
            if !(live_together && bytes_overlap) {
                continue;
            }
            let handoff = (b.inplace_of == Some(a.value) && a.end == b.start)
                || (a.inplace_of == Some(b.value) && b.end == a.start);
            if !handoff {
                return Err(fail(format!(
                    "`{}` (steps {}..={}, bytes {}..{}) and `{}` (steps {}..={}, bytes {}..{}) overlap",
                    g.node(a.value).name,
                    a.start,
                    a.end,
                    a.offset,
                    a.offset + a.bytes,
                    g.node(b.value).name,
                    b.start,
                    b.end,
                    b.offset,
                    b.offset + b.bytes
                ))
                .at(g, b.value));
            }
        }
    }
    Ok(())
}
