//! The textual IR: a stable listing, one value a line, for people and snapshots.
//!
//! ```text
//! layer1.0.conv1   = conv2d(maxpool) out=64 k=3 s=1 p=1          : 1x64x56x56
//! ```

use std::fmt::Write;

use super::graph::Graph;
use super::op::{Op, Residual};
use super::plan::MemoryPlan;

/// The attributes of an op as `key=value` words.
pub fn attrs(op: &Op) -> String {
    match *op {
        Op::Conv2d {
            out_channels,
            kernel,
            stride,
            padding,
            groups,
            dilation,
            bias,
            residual,
            relu,
            ..
        } => {
            let mut s = format!("out={out_channels} k={kernel} s={stride} p={padding}");
            if dilation != 1 {
                let _ = write!(s, " d={dilation}");
            }
            if groups != 1 {
                let _ = write!(s, " g={groups}");
            }
            if bias {
                s.push_str(" bias");
            }
            match residual {
                Residual::None => {}
                Residual::Add => s.push_str(" +residual"),
                Residual::PadAdd {
                    stride,
                    pad_before,
                    pad_after,
                } => {
                    let _ = write!(s, " +residual(s={stride} pad={pad_before}+{pad_after})");
                }
            }
            if relu {
                s.push_str(" relu");
            }
            s
        }
        Op::ScaleShift { relu: true, .. } => "relu".into(),
        Op::BatchNorm { eps, .. } if eps != super::op::BN_EPS => format!("eps={eps}"),
        Op::MaxPool {
            kernel,
            stride,
            padding,
            ceil,
        }
        | Op::AvgPool {
            kernel,
            stride,
            padding,
            ceil,
        } => format!(
            "k={kernel} s={stride} p={padding}{}",
            if ceil { " ceil" } else { "" }
        ),
        Op::ShortcutPad {
            stride,
            pad_before,
            pad_after,
        } => format!("s={stride} pad={pad_before}+{pad_after}"),
        Op::Linear {
            out_features, bias, ..
        } => {
            if bias {
                format!("out={out_features} bias")
            } else {
                format!("out={out_features}")
            }
        }
        _ => String::new(),
    }
}

/// Render the whole graph.
pub fn render(g: &Graph) -> String {
    render_with(g, None)
}

/// [`render`] with each value's arena offset (and in-place reuse) from `plan`.
pub fn render_planned(g: &Graph, plan: &MemoryPlan) -> String {
    render_with(g, Some(plan))
}

fn render_with(g: &Graph, plan: Option<&MemoryPlan>) -> String {
    let mut rows = Vec::new();
    for (i, n) in g.nodes() {
        let inputs: Vec<&str> = g
            .inputs(i)
            .iter()
            .map(|&j| g.node(j).name.as_str())
            .collect();
        let mut rhs = format!("{}({})", n.op.kind(), inputs.join(", "));
        let a = attrs(&n.op);
        if !a.is_empty() {
            rhs.push(' ');
            rhs.push_str(&a);
        }
        let mut shape = n.shape.to_string();
        if let Some(slot) = plan.and_then(|p| p.slot(i)) {
            shape = format!("{shape:<14} @{}", slot.offset);
            if let Some(d) = slot.inplace_of {
                let _ = write!(shape, " (in place of {})", g.node(d).name);
            }
        }
        rows.push((n.name.as_str(), rhs, shape));
    }
    let name_w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let rhs_w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = String::new();
    let _ = write!(
        out,
        "network {}  # {} -> {}, {} values",
        g.name,
        g.input_shape(),
        g.output_shape(),
        g.len()
    );
    match plan {
        Some(p) => {
            let _ = writeln!(out, ", arena {} bytes", p.arena_bytes);
        }
        None => out.push('\n'),
    }
    for (name, rhs, shape) in rows {
        let line = format!("  {name:name_w$} = {rhs:rhs_w$} : {shape}");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}
