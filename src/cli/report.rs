//! `resnetc report`: parameters, MACs, FLOPs and memory, per layer and in total.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use super::{build, BuildArgs};
use crate::report::{self, plot, table, Report};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Markdown,
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// One spec for a full report; several for a comparison.
    #[arg(required = true)]
    pub specs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Rows to show: 0 totals only, 1 stem/stages/head, 2 blocks, 3 layers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=3))]
    pub depth: u8,
    /// Also draw MACs and parameters per stage (or per block / layer with
    /// --depth 2 / 3) as an SVG bar chart.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub opt: super::OptArgs,
}

pub fn run(args: &ReportArgs) -> ExitCode {
    let opts = args.build.options();
    let mut reports: Vec<Report> = Vec::new();
    for spec in &args.specs {
        let Some((g, sources)) = build(spec, &opts) else {
            return ExitCode::FAILURE;
        };
        let r = report::build(&g, &spec.display().to_string());
        let module = crate::passes::Module {
            graph: g,
            weights: None,
        };
        let Some(p) = super::program(module, &args.opt, &sources) else {
            return ExitCode::FAILURE;
        };
        // What `run` would hold on the default backend.
        let default = &crate::backend::BACKENDS[0];
        let run = match (default.new)(&Default::default()) {
            Ok(b) => super::footprint(b.as_ref(), &p).total(),
            Err(_) => 0,
        };
        reports.push(report::build::with_optimized(
            r,
            p.prepared(),
            args.opt.level,
            (default.name, run),
        ));
    }
    let depth = args.depth as usize;
    let text = match (args.format, reports.as_slice()) {
        (Format::Json, [one]) => json(one),
        (Format::Json, many) => json(&many),
        (Format::Table, [one]) => table::render_table(one, depth),
        (Format::Markdown, [one]) => table::render_markdown(one, depth),
        (Format::Table, many) => table::render_comparison(many, false),
        (Format::Markdown, many) => table::render_comparison(many, true),
        (Format::Csv, many) => {
            let mut s = String::new();
            for (i, r) in many.iter().enumerate() {
                let t = table::render_csv(r, depth);
                // One header for all networks.
                s.push_str(if i == 0 {
                    &t
                } else {
                    t.split_once('\n').map_or("", |x| x.1)
                });
            }
            s
        }
    };
    print!("{text}");
    if let Some(path) = &args.plot {
        let svg = plot::render_svg(&reports[0], depth.min(3));
        if let Err(e) = std::fs::write(path, svg) {
            eprintln!("error: cannot write `{}`: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn json<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_string_pretty(v) {
        Ok(s) => s + "\n",
        Err(e) => format!("{{\"error\": \"{e}\"}}\n"),
    }
}
