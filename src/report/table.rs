//! Reports as text: an aligned table for terminals, CSV, and Markdown.

use std::fmt::Write;

use super::build::{Group, Report};
use super::{group, mib, si};

/// One row of the layer table.
pub struct Row {
    pub indent: usize,
    pub name: String,
    pub what: String,
    pub output: String,
    pub params: u64,
    pub macs: u64,
    pub flops: u64,
}

fn shape(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

fn group_row(gr: &Group, indent: usize) -> Row {
    let what = match &gr.block {
        Some(b) => format!("{b} x{}", gr.blocks),
        None if indent > 0 => gr.label.clone(),
        None => String::new(),
    };
    let name = if gr.label != gr.name && gr.block.is_some() {
        format!("{} ({})", gr.name, gr.label)
    } else {
        gr.name.clone()
    };
    Row {
        indent,
        name,
        what,
        output: shape(&gr.output),
        params: gr.cost.params,
        macs: gr.cost.macs,
        flops: gr.cost.flops,
    }
}

/// Rows down to `depth`: 1 groups, 2 blocks, 3 layers.
pub fn rows(r: &Report, depth: usize) -> Vec<Row> {
    let mut out = Vec::new();
    if depth == 0 {
        return out;
    }
    let layer_row = |l: &super::build::Layer, indent| Row {
        indent,
        name: l.name.clone(),
        what: l.op.clone(),
        output: shape(&l.output),
        params: l.cost.params,
        macs: l.cost.macs,
        flops: l.cost.flops,
    };
    for gr in &r.groups {
        out.push(group_row(gr, 0));
        if depth < 2 {
            continue;
        }
        if gr.block.is_none() {
            for l in r.layers.iter().filter(|l| l.group == gr.name) {
                out.push(layer_row(l, 1));
            }
            continue;
        }
        for b in r
            .blocks
            .iter()
            .filter(|b| b.name.split('.').next() == Some(&gr.name))
        {
            out.push(group_row(b, 1));
            if depth < 3 {
                continue;
            }
            for l in r
                .layers
                .iter()
                .filter(|l| l.block.as_deref() == Some(&b.name))
            {
                out.push(layer_row(l, 2));
            }
        }
    }
    out
}

fn share(part: u64, total: u64) -> String {
    if total == 0 {
        "-".into()
    } else {
        format!("{:.1}%", part as f64 * 100.0 / total as f64)
    }
}

/// The aligned table (fits 100 columns) and the totals.
pub fn render_table(r: &Report, depth: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} ({})  input {}  depth {}",
        r.network,
        r.spec,
        shape(&r.input),
        r.depth
    );
    let rows = rows(r, depth);
    if !rows.is_empty() {
        let mut cells: Vec<[String; 6]> = vec![[
            "name".into(),
            "op".into(),
            "output".into(),
            "params".into(),
            "MACs".into(),
            "MACs%".into(),
        ]];
        for x in &rows {
            cells.push([
                format!("{}{}", "  ".repeat(x.indent), x.name),
                x.what.clone(),
                x.output.clone(),
                group(x.params),
                group(x.macs),
                share(x.macs, r.totals.macs),
            ]);
        }
        cells.push([
            "total".into(),
            String::new(),
            shape(&r.output),
            group(r.totals.params),
            group(r.totals.macs),
            share(r.totals.macs, r.totals.macs),
        ]);
        s.push_str(&align(&cells, 2));
        s.push('\n');
    }
    s.push_str(&render_totals(r));
    s
}

/// The totals block: MACs and FLOPs labelled, what is usually left out, memory.
pub fn render_totals(r: &Report) -> String {
    let t = &r.totals;
    let k = &t.flops_by_kind;
    let mut s = String::new();
    let mut line = |label: &str, n: u64, note: String| {
        let _ = writeln!(
            s,
            "{}",
            format!("{label:<34} {:>17}  {note}", group(n)).trim_end()
        );
    };
    line(
        "MACs (multiply-adds, conv + fc)",
        t.macs,
        format!("{}  = the paper's \"FLOPs\"", si(t.macs)),
    );
    line("FLOPs (all arithmetic)", t.flops, si(t.flops));
    line("  conv + fc (2 x MACs)", k.conv_fc, String::new());
    line("  bias adds", k.bias, String::new());
    line("  batch norm (scale + shift)", k.batch_norm, String::new());
    line("  ReLU", k.relu, String::new());
    line("  residual adds", k.add, String::new());
    line("  pooling", k.pool, String::new());
    line("  softmax", k.softmax, String::new());
    line("parameters (trainable)", t.params, si(t.params));
    line(
        "  BN running statistics",
        t.bn_running_stats,
        "not trainable".into(),
    );
    line(
        "  after BN folding",
        t.params_bn_folded,
        "conv bias replaces BN".into(),
    );
    line("weights (f32)", t.weight_bytes, mib(t.weight_bytes));
    line(
        "activations, sum of all values",
        t.activation_bytes_sum,
        mib(t.activation_bytes_sum),
    );
    line(
        "activations, peak live",
        t.peak_activation_bytes,
        format!("{} at {}", mib(t.peak_activation_bytes), t.peak_at),
    );
    if let Some(o) = &r.optimized {
        let _ = writeln!(
            s,
            "\noptimized (-O{}): {} -> {} values",
            o.opt_level, o.values_before, o.values
        );
        let mut row = |label: &str, before: u64, after: u64, unit: fn(u64) -> String| {
            let _ = writeln!(
                s,
                "  {label:<32} {:>17} -> {:>17}  {}",
                group(before),
                group(after),
                unit(after)
            );
        };
        row("parameters", t.params, o.params, si);
        row(
            "BN running statistics",
            t.bn_running_stats,
            o.bn_running_stats,
            si,
        );
        row("MACs", t.macs, o.macs, si);
        row("FLOPs", t.flops, o.flops, si);
        row(
            "activations, sum of all values",
            t.activation_bytes_sum,
            o.activation_bytes_sum,
            mib,
        );
        row(
            "activations, peak live",
            t.peak_activation_bytes,
            o.peak_activation_bytes,
            mib,
        );
        row(
            "activation arena (planned)",
            t.activation_bytes_sum,
            o.arena_bytes,
            mib,
        );
        let _ = writeln!(
            s,
            "  {:<32} {:>17}    {:>17}  {} ({} backend)",
            "memory to run",
            "",
            group(o.run_bytes),
            mib(o.run_bytes),
            o.run_backend
        );
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// One line per row (at the chosen depth), then a `total` line.
pub fn render_csv(r: &Report, depth: usize) -> String {
    let mut s = String::from("network,level,name,op,output,params,macs,flops\n");
    let depth = depth.max(1);
    for x in rows(r, depth) {
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{}",
            csv_field(&r.network),
            x.indent,
            csv_field(&x.name),
            csv_field(&x.what),
            x.output,
            x.params,
            x.macs,
            x.flops
        );
    }
    let _ = writeln!(
        s,
        "{},total,total,,{},{},{},{}",
        csv_field(&r.network),
        shape(&r.output),
        r.totals.params,
        r.totals.macs,
        r.totals.flops
    );
    s
}

pub fn render_markdown(r: &Report, depth: usize) -> String {
    let mut s = format!("### {} (`{}`)\n\n", r.network, r.spec);
    let rows = rows(r, depth);
    if !rows.is_empty() {
        s.push_str(
            "| name | op | output | params | MACs | MACs % |\n|---|---|---|---:|---:|---:|\n",
        );
        for x in &rows {
            let _ = writeln!(
                s,
                "| {}{} | {} | {} | {} | {} | {} |",
                "&nbsp;&nbsp;".repeat(x.indent),
                x.name,
                x.what,
                x.output,
                group(x.params),
                group(x.macs),
                share(x.macs, r.totals.macs)
            );
        }
        let _ = writeln!(
            s,
            "| **total** | | {} | {} | {} | 100.0% |\n",
            shape(&r.output),
            group(r.totals.params),
            group(r.totals.macs)
        );
    }
    s.push_str("```\n");
    s.push_str(&render_totals(r));
    s.push_str("```\n");
    s
}

/// Several networks side by side, one row each.
pub fn render_comparison(reports: &[Report], markdown: bool) -> String {
    let head = ["network", "depth", "params", "MACs", "FLOPs", "peak act."];
    let rows: Vec<[String; 6]> = reports
        .iter()
        .map(|r| {
            [
                r.network.clone(),
                r.depth.to_string(),
                group(r.totals.params),
                group(r.totals.macs),
                group(r.totals.flops),
                mib(r.totals.peak_activation_bytes),
            ]
        })
        .collect();
    let mut s = String::new();
    if markdown {
        let _ = writeln!(s, "| {} |", head.join(" | "));
        s.push_str("|---|---:|---:|---:|---:|---:|\n");
        for r in &rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        return s;
    }
    let mut cells = vec![head.map(String::from)];
    cells.extend(rows);
    s.push_str(&align(&cells, 1));
    s
}

/// Lines of cells, each column as wide as its widest cell (so tables stay
/// narrow); the first `left` columns align left, the rest right.
fn align(cells: &[[String; 6]], left: usize) -> String {
    let w: Vec<usize> = (0..6)
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for c in cells {
        let mut line = String::new();
        for (i, cell) in c.iter().enumerate() {
            let pad = " ".repeat(w[i] - cell.chars().count());
            if i > 0 {
                line.push_str("  ");
            }
            if i < left {
                line.push_str(cell);
                line.push_str(&pad);
            } else {
                line.push_str(&pad);
                line.push_str(cell);
            }
        }
        let _ = writeln!(s, "{}", line.trim_end());
    }
    s
}
