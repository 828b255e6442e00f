//! Liveness of every value over the schedule, and the peak of live bytes.
//!
//! A value is live from the step that writes it to the last step that reads
//! it, both included; the graph's input is live from step 0 and its output to
//! the end. No value shares memory with another (that is the memory planner's
//! job), so the peak is what a plain allocator must hold at once.

use petgraph::stable_graph::NodeIndex;

use super::cost::ELEM_BYTES;
use super::graph::Graph;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    pub value: NodeIndex,
    /// First and last step (positions in the schedule) the value is live.
    pub start: usize,
    pub end: usize,
    pub bytes: u64,
}

/// One interval per value, in schedule order.
pub fn intervals(g: &Graph) -> Vec<Interval> {
    let pos: std::collections::HashMap<NodeIndex, usize> =
        g.order.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let last = g.order.len().saturating_sub(1);
    g.order
        .iter()
        .enumerate()
        .map(|(p, &i)| {
            let end = if i == g.output {
                last
            } else {
                g.users(i)
                    .iter()
                    .filter_map(|u| pos.get(u))
                    .copied()
                    .max()
                    .unwrap_or(p)
            };
            Interval {
                value: i,
                start: p,
                end,
                bytes: g.node(i).shape.numel() * ELEM_BYTES,
            }
        })
        .collect()
}

/// The largest number of bytes live at one step, and that step.
pub fn peak(g: &Graph) -> (u64, usize) {
    let n = g.order.len();
    // Sweep: +bytes where a value starts, -bytes after it ends.
    let mut delta = vec![0i128; n + 1];
    for iv in intervals(g) {
        delta[iv.start] += iv.bytes as i128;
        delta[iv.end + 1] -= iv.bytes as i128;
    }
    let mut live = 0i128;
    let mut best = (0u64, 0usize);
    for (step, d) in delta.iter().take(n).enumerate() {
        live += d;
        if live as u64 > best.0 {
            best = (live as u64, step);
        }
    }
    best
}
