//! `resnetc compile`: summary on stdout, artifacts in a folder.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::ValueEnum;

use super::{build, optimize, BuildArgs, OptArgs};
use crate::ir::{dot, text, yaml::GraphDoc, Graph};
use crate::passes::Module;
use crate::report::{group, si};
use crate::syntax::SourceMap;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The textual IR, one value a line.
    Ir,
    /// The graph as YAML (round-trips through serde).
    Yaml,
    /// Graphviz DOT.
    Dot,
    /// The cranelift IR of the JIT's generated function.
    Clif,
}

impl Emit {
    fn ext(self) -> &'static str {
        match self {
            Emit::Ir => "ir",
            Emit::Yaml => "yaml",
            Emit::Dot => "dot",
            Emit::Clif => "clif",
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    pub spec: PathBuf,
    /// Folder for the artifacts; `-` prints them to stdout instead.
    #[arg(short, long, default_value = "out")]
    pub output: PathBuf,
    /// Artifacts to write, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "ir")]
    pub emit: Vec<Emit>,
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub opt: OptArgs,
}

pub fn run(args: &CompileArgs) -> ExitCode {
    let start = Instant::now();
    let Some((spec_graph, sources)) = build(&args.spec, &args.build.options()) else {
        return ExitCode::FAILURE;
    };
    let module = Module {
        graph: spec_graph.clone(),
        weights: None,
    };
    let Some(Module { graph: g, .. }) = optimize(module, &args.opt) else {
        return ExitCode::FAILURE;
    };
    let artifacts: Vec<(Emit, String)> = args
        .emit
        .iter()
        .map(|&e| (e, artifact(&g, e, &sources)))
        .collect();
    let elapsed = start.elapsed();
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout {
        for (_, text) in &artifacts {
            print!("{text}");
        }
        return ExitCode::SUCCESS;
    }
    print!("{}", summary(&spec_graph, &args.spec.display().to_string()));
    print!("{}", optimized_line(&spec_graph, &g, args.opt.level));
    if let Err(e) = std::fs::create_dir_all(&args.output) {
        eprintln!("error: cannot create `{}`: {e}", args.output.display());
        return ExitCode::FAILURE;
    }
    for (e, text) in &artifacts {
        let path = args.output.join(format!("{}.{}", g.name, e.ext()));
        if let Err(err) = std::fs::write(&path, text) {
            eprintln!("error: cannot write `{}`: {err}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    println!("compiled in {:.1} ms", elapsed.as_secs_f64() * 1e3);
    ExitCode::SUCCESS
}

fn artifact(g: &Graph, e: Emit, sources: &SourceMap) -> String {
    match e {
        Emit::Ir => text::render(g),
        Emit::Dot => dot::render(g),
        Emit::Yaml => GraphDoc::from_graph(g, Some(sources))
            .to_yaml()
            .unwrap_or_else(|err| format!("# cannot serialize: {err}\n")),
        // Shapes, offsets and code do not depend on weight values: zeros do.
        Emit::Clif => {
            match crate::backend::jit::compile(g, &crate::weights::zeros(g), &Default::default()) {
                Ok(c) => c.clif.clone(),
                Err(e) => format!("; cannot compile: {e}\n"),
            }
        }
    }
}

/// What the optimizer did, in one line.
pub fn optimized_line(before: &Graph, after: &Graph, level: u8) -> String {
    let sum: u64 = after.nodes().map(|(_, n)| n.shape.numel() * 4).sum();
    let arena = after.plan.as_ref().map_or(0, |p| p.arena_bytes);
    format!(
        "  optimized   -O{level}: {} -> {} values, {} parameters; activation arena {} (values sum {})\n",
        before.len(),
        after.len(),
        group(after.trainable_params()),
        crate::report::mib(arena),
        crate::report::mib(sum)
    )
}

/// The few lines a user reads after `compile`.
pub fn summary(g: &Graph, path: &str) -> String {
    let mut s = String::new();
    let bn_stats: u64 = g
        .nodes()
        .flat_map(|(_, n)| n.op.params())
        .filter(|p| !p.kind.trainable())
        .map(|p| p.numel())
        .sum();
    let _ = writeln!(
        s,
        "{} ({path}): depth {}, {} values, {} -> {}",
        g.name,
        g.depth(),
        g.len(),
        g.input_shape(),
        g.output_shape()
    );
    for st in &g.stages {
        let _ = writeln!(
            s,
            "  {:<10} {:<12} x{:<4} -> {}",
            st.name,
            st.block,
            st.blocks,
            g.node(st.output).shape
        );
    }
    let _ = writeln!(
        s,
        "  parameters  {:>15}  trainable (+{} BN running statistics)",
        group(g.trainable_params()),
        group(bn_stats)
    );
    let macs = g.macs();
    let _ = writeln!(
        s,
        "  MACs        {:>15}  multiply-adds of conv and fc ({})",
        group(macs),
        si(macs)
    );
    s
}
