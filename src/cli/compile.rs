//! `resnetc compile`: summary on stdout, artifacts in a folder.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use super::{build, BuildArgs, OptArgs};
use crate::backend::{self, ListingFile, Program};
use crate::ir::{dot, text, yaml::GraphDoc, Graph};
use crate::passes::Module;
use crate::report::{group, si};
use crate::syntax::SourceMap;
use crate::weights::init;

/// The artifacts of the graph itself; every backend with a listing adds its own.
const GRAPH_ARTIFACTS: &[&str] = &["ir", "yaml", "dot"];

fn emit_names() -> Vec<&'static str> {
    let mut v: Vec<&str> = GRAPH_ARTIFACTS.to_vec();
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
    /// DOT, or a backend's generated source (clif: the JIT's cranelift IR;
    /// cuda: the network's CUDA, its host launcher and packed weights).
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
    /// Weights (.safetensors) for listings that carry them (`--emit cuda`
    /// writes them packed); default: He-initialized, seed 0.
    #[arg(long)]
    pub weights: Option<PathBuf>,
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
    // Listings that carry weights get them (a user's, or seed 0's).
    let wants_weights = args
        .emit
        .iter()
        .any(|e| backend::emitting(e).is_some_and(|b| b.listing_weights));
    let weights = if wants_weights || args.weights.is_some() {
        let w = match &args.weights {
            Some(p) => match crate::weights::load_for(p, &spec_graph) {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            },
            None => {
                eprintln!("note: no --weights: the packed weights are He-initialized (seed 0)");
                init::init(&spec_graph, Default::default())
            }
        };
        let source = args
            .weights
            .as_ref()
            .map_or("init".to_string(), |p| p.display().to_string());
        match w.bind(&spec_graph, &source) {
            Ok(b) => Some(b),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let module = Module {
        graph: spec_graph.clone(),
        weights,
    };
    let Some(program) = super::program(module, &args.opt, &sources) else {
        return ExitCode::FAILURE;
    };
    let mut files: Vec<ListingFile> = Vec::new();
    for e in &args.emit {
        match artifact(&program, e, args, &sources) {
            Ok(f) => files.extend(f),
            Err(code) => return code,
        }
    }
    let elapsed = start.elapsed();
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout {
        for f in &files {
            if let Some(text) = f.as_text() {
                print!("{text}");
            }
        }
        return ExitCode::SUCCESS;
    }
    print!("{}", summary(&spec_graph, &args.spec.display().to_string()));
    print!("{}", optimized_line(&spec_graph, &program, args.opt.level));
    if let Err(e) = std::fs::create_dir_all(&args.output) {
        eprintln!("error: cannot create `{}`: {e}", args.output.display());
        return ExitCode::FAILURE;
    }
    for f in &files {
        let path = args.output.join(&f.name);
        if let Err(err) = std::fs::write(&path, &f.bytes) {
            eprintln!("error: cannot write `{}`: {err}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    println!("compiled in {:.1} ms", elapsed.as_secs_f64() * 1e3);
    ExitCode::SUCCESS
}

/// One artifact's files, by its `--emit` name.
fn artifact(
    p: &Program,
    e: &str,
    args: &CompileArgs,
    sources: &SourceMap,
) -> Result<Vec<ListingFile>, ExitCode> {
    let g = p.prepared().graph();
    let graph = match e {
        "ir" => Some(text::render_planned(g, p.prepared().plan())),
        "dot" => Some(dot::render(g)),
        "yaml" => Some(
            GraphDoc::from_graph(g, Some(sources))
                .to_yaml()
                .unwrap_or_else(|err| format!("# cannot serialize: {err}\n")),
        ),
        _ => None,
    };
    if let Some(text) = graph {
        return Ok(vec![ListingFile::text(format!("{}.{e}", g.name), text)]);
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
        Ok(Some(l)) => Ok(l.files),
        Ok(None) => Ok(Vec::new()),
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
