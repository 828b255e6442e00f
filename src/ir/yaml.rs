//! The graph as YAML: a plain document that round-trips through serde.

use serde::{Deserialize, Serialize};

use super::graph::{Graph, Node, StageInfo};
use super::op::Op;
use super::shape::Shape;
use crate::syntax::{SourceMap, Span};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphDoc {
    pub network: String,
    pub input: Shape,
    pub output: Shape,
    pub nodes: Vec<NodeDoc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDoc {
    pub name: String,
    #[serde(flatten)]
    pub op: Op,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    pub shape: Shape,
    /// `file:line:col` of the spec text the node came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

impl GraphDoc {
    pub fn from_graph(g: &Graph, sources: Option<&SourceMap>) -> GraphDoc {
        let nodes = g
            .nodes()
            .map(|(i, n)| NodeDoc {
                name: n.name.clone(),
                op: n.op.clone(),
                inputs: g
                    .inputs(i)
                    .iter()
                    .map(|&j| g.node(j).name.clone())
                    .collect(),
                shape: n.shape.clone(),
                source: sources.map(|s| s.locate(n.span)),
            })
            .collect();
        GraphDoc {
            network: g.name.clone(),
            input: g.input_shape().clone(),
            output: g.output_shape().clone(),
            nodes,
        }
    }

    /// Rebuild a graph (spans are lost: they point into files we no longer have).
    pub fn to_graph(&self) -> Result<Graph, String> {
        let mut nodes = self.nodes.iter();
        let first = nodes.next().ok_or("the document has no nodes")?;
        if first.op != Op::Input {
            return Err(format!("the first node `{}` is not the input", first.name));
        }
        let mut g = Graph::new(&self.network, plain_node(first));
        let mut by_name = std::collections::HashMap::new();
        by_name.insert(first.name.clone(), g.input);
        for n in nodes {
            let inputs = n
                .inputs
                .iter()
                .map(|i| {
                    by_name
                        .get(i)
                        .copied()
                        .ok_or_else(|| format!("`{}` reads unknown value `{i}`", n.name))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let idx = g.push(plain_node(n), &inputs);
            by_name.insert(n.name.clone(), idx);
        }
        g.stages = Vec::<StageInfo>::new();
        g.check().map_err(|e| e.to_string())?;
        Ok(g)
    }

    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(self)
    }

    pub fn from_yaml(text: &str) -> Result<GraphDoc, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }
}

fn plain_node(n: &NodeDoc) -> Node {
    Node {
        name: n.name.clone(),
        op: n.op.clone(),
        shape: n.shape.clone(),
        span: Span::default(),
        origin: None,
    }
}
