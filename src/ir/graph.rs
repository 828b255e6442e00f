//! The graph: a petgraph DAG of ops, one value per node, plus a schedule.

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::error::{GraphError, Stage};
use super::op::Op;
use super::shape::Shape;
use crate::syntax::Span;

/// One op and the value it produces.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Hierarchical stable name, `layer2.0.conv1`: also the state_dict prefix.
    pub name: String,
    pub op: Op,
    pub shape: Shape,
    /// The `.rn` text this node came from.
    pub span: Span,
    /// For nodes made inside a block: the stage statement that instantiated it.
    pub origin: Option<Span>,
}

/// A stage of the network as the spec declared it (for reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageInfo {
    pub name: String,
    pub block: String,
    pub blocks: usize,
    pub span: Span,
    /// The stage's last value.
    pub output: NodeIndex,
}

#[derive(Clone, Debug)]
pub struct Graph {
    pub name: String,
    pub g: StableDiGraph<Node, usize>,
    /// Execution order: every node after its inputs.
    pub order: Vec<NodeIndex>,
    pub input: NodeIndex,
    pub output: NodeIndex,
    pub stages: Vec<StageInfo>,
    /// The spec's `input ... { }` section, if it has one.
    pub preprocess: Option<super::preprocess::Preprocess>,
}

impl Graph {
    pub fn new(name: impl Into<String>, input: Node) -> Graph {
        let mut g = StableDiGraph::new();
        let idx = g.add_node(input);
        Graph {
            name: name.into(),
            g,
            order: vec![idx],
            input: idx,
            output: idx,
            stages: Vec::new(),
            preprocess: None,
        }
    }

    /// Append a node reading `inputs` (in order) and schedule it last.
    pub fn push(&mut self, node: Node, inputs: &[NodeIndex]) -> NodeIndex {
        let idx = self.g.add_node(node);
        for (slot, &i) in inputs.iter().enumerate() {
            self.g.add_edge(i, idx, slot);
        }
        self.order.push(idx);
        self.output = idx;
        idx
    }

    pub fn node(&self, i: NodeIndex) -> &Node {
        &self.g[i]
    }

    pub fn node_mut(&mut self, i: NodeIndex) -> &mut Node {
        &mut self.g[i]
    }

    /// Make every reader of `old` read `new` instead (same argument slots).
    pub fn replace_uses(&mut self, old: NodeIndex, new: NodeIndex) {
        let uses: Vec<(NodeIndex, usize)> = self
            .g
            .edges_directed(old, Direction::Outgoing)
            .map(|e| (e.target(), *e.weight()))
            .collect();
        for (t, slot) in uses {
            if let Some(e) = self.g.find_edge(old, t) {
                self.g.remove_edge(e);
            }
            self.g.add_edge(new, t, slot);
        }
        if self.output == old {
            self.output = new;
        }
    }

    /// Set a node's inputs, in argument order.
    pub fn set_inputs(&mut self, i: NodeIndex, inputs: &[NodeIndex]) {
        let old: Vec<_> = self
            .g
            .edges_directed(i, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        for (slot, &j) in inputs.iter().enumerate() {
            self.g.add_edge(j, i, slot);
        }
    }

    /// Remove a node nobody reads any more.
    pub fn remove(&mut self, i: NodeIndex) {
        self.g.remove_node(i);
        self.order.retain(|&j| j != i);
    }

    /// The inputs of a node, in argument order.
    pub fn inputs(&self, i: NodeIndex) -> Vec<NodeIndex> {
        let mut e: Vec<(usize, NodeIndex)> = self
            .g
            .edges_directed(i, Direction::Incoming)
            .map(|e| (*e.weight(), e.source()))
            .collect();
        e.sort();
        e.into_iter().map(|(_, s)| s).collect()
    }

    /// Nodes that read this one.
    pub fn users(&self, i: NodeIndex) -> Vec<NodeIndex> {
        let mut u: Vec<NodeIndex> = self.g.neighbors_directed(i, Direction::Outgoing).collect();
        u.sort();
        u.dedup();
        u
    }

    /// Nodes in execution order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeIndex, &Node)> {
        self.order.iter().map(move |&i| (i, &self.g[i]))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn find(&self, name: &str) -> Option<NodeIndex> {
        self.order.iter().copied().find(|&i| self.g[i].name == name)
    }

    /// The logits: the input of a final softmax, else the output. Backends
    /// run the network up to here; scores are the caller's business.
    pub fn logits(&self) -> NodeIndex {
        match self.g[self.output].op {
            Op::Softmax => self
                .inputs(self.output)
                .first()
                .copied()
                .unwrap_or(self.output),
            _ => self.output,
        }
    }

    pub fn output_shape(&self) -> &Shape {
        &self.g[self.output].shape
    }

    pub fn input_shape(&self) -> &Shape {
        &self.g[self.input].shape
    }

    /// Trainable parameters, as torchvision counts them.
    pub fn trainable_params(&self) -> u64 {
        self.nodes().map(|(_, n)| n.op.trainable_params()).sum()
    }

    /// Conv and fc layers on the main path: the "50" of ResNet-50. Shortcut
    /// projections are not counted, as in the paper.
    pub fn depth(&self) -> usize {
        self.nodes()
            .filter(|(_, n)| n.op.is_weighted_layer() && !n.name.contains(".downsample."))
            .count()
    }

    /// Multiply-adds of conv and fc layers.
    pub fn macs(&self) -> u64 {
        self.nodes()
            .fold(0u64, |acc, (_, n)| acc.saturating_add(n.op.macs(&n.shape)))
    }

    /// Every node's inputs come earlier in the schedule and shapes follow the op rules.
    pub fn check(&self) -> Result<(), GraphError> {
        let fail = |i: NodeIndex, msg: String| GraphError::new(Stage::Prepare, msg).at(self, i);
        let mut seen = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for (i, n) in self.nodes() {
            if !names.insert(n.name.as_str()) {
                return Err(fail(i, "two values have this name".into()));
            }
            let inputs = self.inputs(i);
            for j in &inputs {
                if !seen.contains(j) {
                    return Err(fail(
                        i,
                        format!("reads `{}` before it is computed", self.g[*j].name),
                    ));
                }
            }
            if i != self.input {
                let shapes: Vec<&Shape> = inputs.iter().map(|&j| &self.g[j].shape).collect();
                match n.op.infer(&shapes) {
                    Ok(s) if s == n.shape => {}
                    Ok(s) => {
                        return Err(fail(
                            i,
                            format!("has shape {} but its op gives {s}", n.shape),
                        ))
                    }
                    Err(e) => {
                        return Err(fail(
                            i,
                            format!("expected {}, found {}", e.expected, e.found),
                        ))
                    }
                }
            }
            seen.insert(i);
        }
        if self.order.len() != self.g.node_count() {
            return Err(GraphError::new(
                Stage::Prepare,
                "some nodes are not scheduled",
            ));
        }
        Ok(())
    }
}
