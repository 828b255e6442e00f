//! `resnetc compile`: summary on stdout, artifacts in a folder.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::{build, BuildArgs, OptArgs};
use crate::backend::{self, Program};
use crate::ir::{dot, text, yaml::GraphDoc, Graph};
use crate::passes::Module;
use crate::report::{group, si};
use crate::syntax::SourceMap;

/// The artifacts of the graph itself; every backend with a listing adds its own.
const GRAPH_ARTIFACTS: &[(&str, &str)] = &[("ir", "ir"), ("yaml", "yaml"), ("dot", "dot")];

fn emit_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = GRAPH_ARTIFACTS.iter().map(|a| a.0).collect();
    v.extend(backend::BACKENDS.iter().filter_map(|e| e.emits));
    v
}

#[derive(clap::Args, Debug)]
pub struct CompileArgs {
    pub spec: PathBuf,
    /// Folder for the artifacts; `-` prints them to stdout instead.
    #[arg(short, long, default_value = "out")]
    pub output: PathBuf,
    /// Artifacts to write, comma-separated: the textual IR, YAML, Graphviz
    /// DOT, or a backend's generated source (clif: the JIT's cranelift IR).
    #[arg(long, value_delimiter = ',', default_value = "ir", value_parser = clap::builder::PossibleValuesParser::new(emit_names()))]
    pub emit: Vec<String>,
    /// The kernel set a listing is generated for (jit: avx512, avx2,
    /// portable; default: the best this machine runs).
    #[arg(long, value_name = "NAME")]
    pub kernels: Option<String>,
    /// The precision a listing is generated for (f32; tf32, bf16 where the
    /// backend has them).
    #[arg(long, value_name = "NAME")]
    pub precision: Option<String>,
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
    let Some(program) = super::program(module, &args.opt, &sources) else {
        return ExitCode::FAILURE;
    };
    let mut artifacts: Vec<(String, &str, String)> = Vec::new();
    for e in &args.emit {
        match artifact(&program, e, args, &sources) {
            Ok(Some(a)) => artifacts.push(a),
            Ok(None) => {}
            Err(code) => return code,
        }
    }
    let elapsed = start.elapsed();
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout {
        for (_, _, text) in &artifacts {
            print!("{text}");
        }
        return ExitCode::SUCCESS;
    }
    let g = program.prepared().graph();
    print!("{}", summary(&spec_graph, &args.spec.display().to_string()));
    print!("{}", optimized_line(&spec_graph, &program, args.opt.level));
    if let Err(e) = std::fs::create_dir_all(&args.output) {
        eprintln!("error: cannot create `{}`: {e}", args.output.display());
        return ExitCode::FAILURE;
    }
    for (_, ext, text) in &artifacts {
        let path = args.output.join(format!("{}.{ext}", g.name));
        if let Err(err) = std::fs::write(&path, text) {
            eprintln!("error: cannot write `{}`: {err}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    println!("compiled in {:.1} ms", elapsed.as_secs_f64() * 1e3);
    ExitCode::SUCCESS
}

/// One artifact: its `--emit` name, file extension and text.
fn artifact(
    p: &Program,
    e: &str,
    args: &CompileArgs,
    sources: &SourceMap,
) -> Result<Option<(String, &'static str, String)>, ExitCode> {
    let g = p.prepared().graph();
    let graph = match e {
        "ir" => Some(("ir", text::render_planned(g, p.prepared().plan()))),
        "dot" => Some(("dot", dot::render(g))),
        "yaml" => Some((
            "yaml",
            GraphDoc::from_graph(g, Some(sources))
                .to_yaml()
                .unwrap_or_else(|err| format!("# cannot serialize: {err}\n")),
        )),
        _ => None,
    };
    if let Some((ext, text)) = graph {
        return Ok(Some((e.to_string(), ext, text)));
    }
    let Some(entry) = backend::emitting(e) else {
        eprintln!(
            "error: no artifact `{e}`: expected one of {}",
            emit_names().join(", ")
        );
        return Err(ExitCode::from(2));
    };
    let opts = backend::Options {
        kernels: args.kernels.clone(),
        precision: args.precision.clone(),
        ..Default::default()
    };
    let b = (entry.new)(&opts).map_err(|err| {
        eprintln!("error: {err}");
        ExitCode::from(2)
    })?;
    match b.listing(p) {
        Ok(Some(l)) => Ok(Some((e.to_string(), l.ext, l.text))),
        Ok(None) => Ok(None),
        Err(backend::Refusal(why)) => {
            for err in &why {
                super::report(err, sources);
            }
            Err(ExitCode::FAILURE)
        }
    }
}

/// What the optimizer did, in one line.
pub fn optimized_line(before: &Graph, p: &Program, level: u8) -> String {
    let after = p.prepared().graph();
    let sum: u64 = after.nodes().map(|(_, n)| n.shape.numel() * 4).sum();
    let arena = p.arena_bytes;
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
