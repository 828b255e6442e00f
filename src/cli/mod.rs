//! The `resnetc` command line.

mod bench;
mod compile;
mod eval;
mod export;
mod finite;
mod init;
mod report;
pub mod run;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::backend::{self, Backend, Executable, Program, Refusal};
use crate::ir::{Graph, GraphError};
use crate::lower::{compile_file, Options};
use crate::passes;
use crate::syntax::SourceMap;

#[derive(Parser, Debug)]
#[command(
    name = "resnetc",
    version,
    about = "A declarative compiler for residual networks"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every command that builds a graph.
#[derive(clap::Args, Debug, Clone)]
pub struct BuildArgs {
    /// Batch size of the compiled graph.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub batch: u32,
    /// Input size as CxHxW, overriding the spec's `input`.
    #[arg(long, value_name = "CxHxW", value_parser = parse_dims)]
    pub input: Option<[usize; 3]>,
}

impl BuildArgs {
    pub fn options(&self) -> Options {
        Options {
            batch: self.batch as usize,
            input: self.input,
        }
    }
}

/// Optimizer flags shared by compile, run, bench and report.
#[derive(clap::Args, Debug, Clone)]
pub struct OptArgs {
    /// 0: plan memory only; 1: fold BN, remove dead code and identities;
    /// 2: also fuse residual adds and ReLUs into conv epilogues.
    #[arg(long = "opt-level", short = 'O', default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub level: u8,
    /// Print the IR after this pass (repeatable); see --print-after-all.
    #[arg(long, value_name = "PASS", value_parser = clap::builder::PossibleValuesParser::new(passes::pass_names()))]
    pub print_after: Vec<String>,
    /// Print the IR after every pass.
    #[arg(long)]
    pub print_after_all: bool,
    /// Print how long each pass took.
    #[arg(long)]
    pub time_passes: bool,
}

impl OptArgs {
    pub fn options(&self) -> passes::Options {
        passes::Options {
            level: self.level,
            print_after: self.print_after.clone(),
            print_after_all: self.print_after_all,
            time_passes: self.time_passes,
        }
    }
}

/// Prepare a module for the backends (optimize, legalize, plan memory) and
/// lower it to a program, printing what --print-after and --time-passes ask
/// for to stderr; errors are rendered against the spec.
pub fn program(m: passes::Module, opt: &OptArgs, sources: &SourceMap) -> Option<Program> {
    let prepared = match passes::prepare(m, &opt.options()) {
        Ok((p, log)) => {
            eprint!("{}", log.printed);
            if opt.time_passes {
                eprint!("{}", log.timing());
            }
            p
        }
        Err(e) => {
            report(&e, sources);
            return None;
        }
    };
    match Program::lower(prepared) {
        Ok(p) => Some(p),
        Err(e) => {
            report(&e, sources);
            None
        }
    }
}

/// A user error (bad input, a refusal): printed, exit 1.
fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

/// Print an error after lowering with its spec location.
pub fn report(e: &GraphError, sources: &SourceMap) {
    eprint!("{}", e.diagnostic().render(sources, colour()));
}

/// Backend flags shared by run, bench and compile.
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// The backend to run on.
    #[arg(long, default_value = "jit", value_parser = clap::builder::PossibleValuesParser::new(backend::names()))]
    pub backend: String,
    /// Worker threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Force a conv strategy where it is eligible (jit: blocked, winograd,
    /// winograd-f2, direct-1x1, strided-1x1, im2col; experiments).
    #[arg(long, value_name = "NAME")]
    pub conv_strategy: Option<String>,
    /// The kernel set (jit: avx512, avx2, portable; default: the best this
    /// machine runs).
    #[arg(long, value_name = "NAME")]
    pub kernels: Option<String>,
    /// Arithmetic precision: f32 (every backend) and, where a backend has
    /// them, tf32 or bf16 (jit: convs on blocked maps, bf16 weights and
    /// inputs summed in f32; needs AVX512_BF16, and runs on AMX's tiles
    /// where the CPU has them).
    #[arg(long, value_name = "NAME")]
    pub precision: Option<String>,
}

impl BackendArgs {
    pub fn options(&self, profile: bool) -> backend::Options {
        backend::Options {
            threads: self.threads,
            conv_strategy: self.conv_strategy.clone(),
            kernels: self.kernels.clone(),
            precision: self.precision.clone(),
            profile,
            fault: std::env::var("RESNETC_TEST_FAULT").ok(),
        }
    }

    /// The backend these flags name, or a usage error (exit 2).
    pub fn backend(&self, profile: bool) -> Result<Box<dyn Backend>, ExitCode> {
        backend::by_name(&self.backend, &self.options(profile)).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(2)
        })
    }
}

/// `--max-memory`, for the commands that run a network.
#[derive(clap::Args, Debug, Clone)]
pub struct MemoryArgs {
    /// The most host memory a run may take (8G, 512M...); `none` lifts the
    /// check. Default: what this machine has available (MemAvailable, and
    /// the cgroup's limit).
    #[arg(long, value_name = "SIZE", value_parser = parse_limit)]
    pub max_memory: Option<backend::memory::Limit>,
}

fn parse_limit(s: &str) -> Result<backend::memory::Limit, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(backend::memory::Limit::Unchecked);
    }
    backend::memory::parse_size(s).map(backend::memory::Limit::Bytes)
}

/// What running `p` on `b` takes, with the caller's input and logits.
pub fn footprint(b: &dyn Backend, p: &Program) -> backend::memory::Footprint {
    let mut f = b.footprint(p);
    f.add("input", 4 * p.input.len() as u64, true);
    f.add("logits", 4 * p.output.len() as u64, true);
    f
}

/// Refuse to compile `p` on `b` if it will not fit in memory; the error
/// gives the figure and the largest batch that fits.
pub fn fits(b: &dyn Backend, p: &Program, mem: &MemoryArgs) -> bool {
    let f = footprint(b, p);
    let limit = mem.max_memory.unwrap_or(backend::memory::Limit::Available);
    match backend::memory::check(&f, p.input.shape.batch(), &p.name, limit) {
        Ok(()) => true,
        Err(e) => {
            eprint!("{}", e.diagnostic().render(&SourceMap::new(), colour()));
            false
        }
    }
}

/// Compile `p` on `b`, rendering every reason it refuses against the spec.
pub fn compile_on(
    b: &dyn Backend,
    p: &Program,
    sources: &SourceMap,
) -> Option<Box<dyn Executable>> {
    refused(b.compile(p), sources)
}

/// [`compile_on`], `p` given up: its weights are freed as they are packed.
pub fn compile_owned(
    b: &dyn Backend,
    p: Program,
    sources: &SourceMap,
) -> Option<Box<dyn Executable>> {
    refused(b.compile_owned(p), sources)
}

fn refused(
    r: Result<Box<dyn Executable>, Refusal>,
    sources: &SourceMap,
) -> Option<Box<dyn Executable>> {
    match r {
        Ok(e) => Some(e),
        Err(Refusal(why)) => {
            for e in &why {
                report(e, sources);
            }
            None
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Parse, check and lower specs; report every error found.
    Check {
        #[arg(required = true)]
        specs: Vec<PathBuf>,
        #[command(flatten)]
        build: BuildArgs,
    },
    /// Compile a spec: print a summary and write the requested artifacts.
    Compile(compile::CompileArgs),
    /// Parameters, MACs, FLOPs and memory: per layer, per stage and in total.
    Report(report::ReportArgs),
    /// Write deterministic He-initialized weights for a spec.
    Init(init::InitArgs),
    /// Run a spec on weights and inputs (.npy or images).
    Run(run::RunArgs),
    /// Compile to native code and time it: latency, images/s, GFLOP/s.
    Bench(bench::BenchArgs),
    /// Top-1 and top-5 error over a labelled image folder, with test-time views.
    Eval(eval::EvalArgs),
    /// Write a spec and its weights as an ONNX model (or a Triton repository).
    Export(export::ExportArgs),
    /// Bind an ONNX model's weights to a spec and write them as .safetensors.
    Convert(export::ConvertArgs),
}

fn parse_dims(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<&str> = s.split(['x', 'X']).collect();
    let bad = || format!("expected CxHxW such as 3x224x224, found `{s}`");
    if parts.len() != 3 {
        return Err(bad());
    }
    let mut out = [0usize; 3];
    for (o, p) in out.iter_mut().zip(&parts) {
        *o = p.trim().parse().map_err(|_| bad())?;
        if *o == 0 {
            return Err(format!("every dimension must be at least 1, found `{s}`"));
        }
    }
    Ok(out)
}

/// Whether to colour diagnostics: only on a terminal, and never under NO_COLOR.
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Compile a spec, printing its diagnostics to stderr on failure.
pub fn build(path: &Path, opts: &Options) -> Option<(Graph, SourceMap)> {
    let mut sources = SourceMap::new();
    match compile_file(path, opts, &mut sources) {
        Ok(g) => Some((g, sources)),
        Err(diags) => {
            eprint!("{}", diags.render(&sources, colour()));
            let n = diags.len();
            eprintln!(
                "error: {} failed with {n} error{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            None
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { specs, build: b } => check(&specs, &b.options()),
        Command::Compile(args) => compile::run(&args),
        Command::Report(args) => report::run(&args),
        Command::Init(args) => init::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Convert(args) => export::convert(&args),
    }
}

fn check(specs: &[PathBuf], opts: &Options) -> ExitCode {
    let mut failed = 0;
    for p in specs {
        match build(p, opts) {
            Some((g, _)) => println!(
                "ok    {:<34} {:<18} depth {:>4}  {:>12} params  -> {}",
                p.display().to_string(),
                g.name,
                g.depth(),
                crate::report::group(g.trainable_params()),
                g.output_shape()
            ),
            None => failed += 1,
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} specs failed", specs.len());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
