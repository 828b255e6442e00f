//! A bar chart of MACs and parameters per stage, block or layer, as SVG.

use std::fmt::Write;

use super::build::Report;
use super::si;

struct Bar {
    name: String,
    macs: u64,
    params: u64,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The bars for a depth: 0-1 groups, 2 blocks (and stem, head), 3 conv and fc layers.
fn bars(r: &Report, depth: usize) -> Vec<Bar> {
    let bar = |name: &str, macs, params| Bar {
        name: name.to_string(),
        macs,
        params,
    };
    match depth {
        0 | 1 => r
            .groups
            .iter()
            .map(|g| {
                let name = if g.block.is_some() {
                    format!("{} ({})", g.name, g.label)
                } else {
                    g.name.clone()
                };
                bar(&name, g.cost.macs, g.cost.params)
            })
            .collect(),
        2 => r
            .groups
            .iter()
            .flat_map(|g| {
                let inner: Vec<Bar> = r
                    .blocks
                    .iter()
                    .filter(|b| b.name.split('.').next() == Some(&g.name))
                    .map(|b| bar(&b.name, b.cost.macs, b.cost.params))
                    .collect();
                if inner.is_empty() {
                    vec![bar(&g.name, g.cost.macs, g.cost.params)]
                } else {
                    inner
                }
            })
            .collect(),
        _ => r
            .layers
            .iter()
            .filter(|l| l.cost.macs > 0)
            .map(|l| bar(&l.name, l.cost.macs, l.cost.params))
            .collect(),
    }
}

pub fn render_svg(r: &Report, depth: usize) -> String {
    let bars = bars(r, depth);
    let row = 20.0;
    let label_w = 190.0;
    let panel_w = 330.0;
    let gap = 60.0;
    let top = 64.0;
    let width = label_w + 2.0 * (panel_w + gap) + 20.0;
    let height = top + row * bars.len() as f64 + 30.0;
    let max_macs = bars.iter().map(|b| b.macs).max().unwrap_or(1).max(1) as f64;
    let max_params = bars.iter().map(|b| b.params).max().unwrap_or(1).max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">{} — MACs {} · params {}</text>"#,
        escape(&r.network),
        si(r.totals.macs),
        si(r.totals.params)
    );
    let x_macs = label_w;
    let x_params = label_w + panel_w + gap;
    for (x, title) in [
        (x_macs, "multiply-adds (conv + fc)"),
        (x_params, "parameters (trainable)"),
    ] {
        let _ = writeln!(
            s,
            r##"<text x="{x}" y="{}" font-weight="bold" fill="#333">{title}</text>"##,
            top - 12.0
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#222">{}</text>"##,
            label_w - 8.0,
            y + 13.0,
            escape(&b.name)
        );
        for (x, v, max, colour) in [
            (x_macs, b.macs, max_macs, "#4878a8"),
            (x_params, b.params, max_params, "#e08a3c"),
        ] {
            let w = (v as f64 / max * panel_w).max(if v > 0 { 1.0 } else { 0.0 });
            let _ = writeln!(
                s,
                r##"<rect x="{x}" y="{}" width="{w:.1}" height="{}" fill="{colour}"/><text x="{:.1}" y="{}" fill="#444" font-size="11">{}</text>"##,
                y + 3.0,
                row - 6.0,
                x + w + 4.0,
                y + 13.0,
                si(v)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
