//! Graphviz output: one box a value, blocks grouped in clusters.

use std::fmt::Write;

use super::graph::Graph;
use super::text::attrs;

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The block a node belongs to (`layer2.0`), if any.
fn block_of(name: &str) -> Option<&str> {
    let mut parts = name.splitn(3, '.');
    let (a, b) = (parts.next()?, parts.next()?);
    parts.next()?;
    b.parse::<usize>().ok()?;
    Some(&name[..a.len() + 1 + b.len()])
}

pub fn render(g: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&g.name));
    out.push_str(
        "  rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=10];\n",
    );
    let mut current: Option<&str> = None;
    for (i, n) in g.nodes() {
        let block = block_of(&n.name);
        if block != current {
            if current.is_some() {
                out.push_str("  }\n");
            }
            if let Some(b) = block {
                let _ = writeln!(
                    out,
                    "  subgraph \"cluster_{}\" {{\n    label=\"{}\"; style=dashed;",
                    escape(b),
                    escape(b)
                );
            }
            current = block;
        }
        let indent = if block.is_some() { "    " } else { "  " };
        let a = attrs(&n.op);
        let what = if a.is_empty() {
            n.op.kind().to_string()
        } else {
            format!("{} {a}", n.op.kind())
        };
        let _ = writeln!(
            out,
            "{indent}n{} [label=\"{}\\n{}\\n{}\"];",
            i.index(),
            escape(&n.name),
            escape(&what),
            n.shape
        );
    }
    if current.is_some() {
        out.push_str("  }\n");
    }
    for &i in &g.order {
        for j in g.inputs(i) {
            let _ = writeln!(out, "  n{} -> n{};", j.index(), i.index());
        }
    }
    out.push_str("}\n");
    out
}
