//! Dead-code removal.
//!
//! Contract: every value the output does not depend on is removed (with its
//! weights); the input stays, as the graph's interface.

use std::collections::HashSet;

use super::Module;

pub fn run(m: &mut Module) -> Result<bool, crate::ir::GraphError> {
    let g = &m.graph;
    let mut live = HashSet::from([g.output, g.input]);
    let mut stack = vec![g.output];
    while let Some(i) = stack.pop() {
        for j in g.inputs(i) {
            if live.insert(j) {
                stack.push(j);
            }
        }
    }
    let dead: Vec<_> = g
        .order
        .iter()
        .copied()
        .filter(|i| !live.contains(i))
        .collect();
    for &i in dead.iter().rev() {
        let name = m.graph.node(i).name.clone();
        if let Some(w) = &mut m.weights {
            for p in m.graph.node(i).op.params() {
                w.take(&format!("{name}.{}", p.suffix));
            }
        }
        m.graph.remove(i);
    }
    Ok(!dead.is_empty())
}
