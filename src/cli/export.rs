//! `resnetc export`: a spec and its weights as an ONNX model (or a Triton
//! model repository); `resnetc convert`: an ONNX model's weights, bound to a
//! spec, as .safetensors.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::fail;

use crate::lower::Options;
use crate::onnx::export::{export, ExportOptions, OPSETS};
use crate::passes::{self, Module};
use crate::weights::{file, init, load_for};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("out").required(true).args(["output", "triton"])))]
pub struct ExportArgs {
    /// The network's spec (.rn).
    pub spec: PathBuf,
    /// Weights (.safetensors or .onnx); default: He-initialized, seed 0.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The ONNX file to write.
    #[arg(short, long, value_name = "FILE.onnx")]
    pub output: Option<PathBuf>,
    /// Write a Triton model repository instead: DIR/NAME/1/model.onnx and
    /// DIR/NAME/config.pbtxt with dynamic batching.
    #[arg(long, value_name = "DIR", conflicts_with = "batch")]
    pub triton: Option<PathBuf>,
    /// The ONNX opset to write.
    #[arg(long, default_value_t = 17, value_parser = clap::value_parser!(i64).range(*OPSETS.start()..=*OPSETS.end()))]
    pub opset: i64,
    /// A fixed batch size; default: a dynamic `batch_size`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub batch: Option<u32>,
    /// Input size as CxHxW, overriding the spec's `input`.
    #[arg(long, value_name = "CxHxW", value_parser = super::parse_dims)]
    pub input: Option<[usize; 3]>,
    /// Keep BatchNormalization nodes instead of folding them into the convs.
    #[arg(long)]
    pub keep_bn: bool,
    /// Largest batch Triton may form (with --triton).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_batch: u32,
}

pub fn run(args: &ExportArgs) -> ExitCode {
    let opts = Options {
        batch: args.batch.unwrap_or(1) as usize,
        input: args.input,
    };
    let Some((g, sources)) = super::build(&args.spec, &opts) else {
        return ExitCode::FAILURE;
    };
    let weights = match &args.weights {
        Some(p) => match load_for(p, &g) {
            Ok(w) => w,
            Err(e) => return fail(e),
        },
        None => {
            eprintln!("note: no --weights: exporting He-initialized weights (seed 0)");
            init::init(&g, Default::default())
        }
    };
    let source = args
        .weights
        .as_ref()
        .map_or("init".to_string(), |p| p.display().to_string());
    let bound = match weights.bind(&g, &source) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    // Level 1's rewrites fold BN and drop identities; nothing is fused, so
    // every ONNX node is one IR value.
    let rewrites = if args.keep_bn {
        Vec::new()
    } else {
        passes::rewrites(1)
    };
    let m = Module {
        graph: g,
        weights: Some(bound),
    };
    let m = match passes::rewrite(m, &rewrites, &passes::Options::default()) {
        Ok((m, _)) => m,
        Err(e) => {
            super::report(&e, &sources);
            return ExitCode::FAILURE;
        }
    };
    let Some(w) = m.weights.as_ref() else {
        return fail("internal error: the weights were lost in the passes");
    };
    let mut metadata = vec![("spec".to_string(), args.spec.display().to_string())];
    // The spec's preprocessing (torchvision's ImageNet transform where it
    // has none), for whoever serves the model.
    let pp = m.graph.preprocess.clone().unwrap_or_default();
    metadata.push(("preprocess".into(), pp.to_json()));
    let eopts = ExportOptions {
        opset: args.opset,
        batch: args.batch.map(|b| b as usize),
        metadata,
    };
    let bytes = match export(&m.graph, w, &sources, &eopts) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let g = &m.graph;
    let path = match &args.triton {
        Some(dir) => {
            let model_dir = dir.join(&g.name);
            let version = model_dir.join("1");
            if let Err(e) = std::fs::create_dir_all(&version) {
                return fail(format!("`{}`: {e}", version.display()));
            }
            let config = triton_config(g, args.max_batch);
            let cfg = model_dir.join("config.pbtxt");
            if let Err(e) = std::fs::write(&cfg, config) {
                return fail(format!("`{}`: {e}", cfg.display()));
            }
            version.join("model.onnx")
        }
        None => match &args.output {
            Some(p) => p.clone(),
            None => return fail("no output: give -o FILE.onnx or --triton DIR"),
        },
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(parent) {
            return fail(format!("`{}`: {e}", parent.display()));
        }
    }
    if let Err(e) = std::fs::write(&path, &bytes) {
        return fail(format!("`{}`: {e}", path.display()));
    }
    let nodes = g.len() - 1;
    println!(
        "wrote {} ({:.1} MiB, opset {}, {} batch, BN {}; {} IR values)",
        path.display(),
        bytes.len() as f64 / (1 << 20) as f64,
        args.opset,
        args.batch
            .map_or("dynamic".to_string(), |b| format!("fixed {b}")),
        if args.keep_bn { "kept" } else { "folded" },
        nodes
    );
    if let Some(dir) = &args.triton {
        println!(
            "serve it: tritonserver --model-repository {} (model `{}`, input `input`, output `logits`)",
            dir.display(),
            g.name
        );
    }
    ExitCode::SUCCESS
}

/// Triton's model configuration: the ONNX runtime backend, batch as the
/// leading (dynamic) dimension, requests batched on the server.
fn triton_config(g: &crate::ir::Graph, max_batch: u32) -> String {
    let x = g.node(g.input).shape.dims()[1..].to_vec();
    let y = g.node(g.logits()).shape.dims()[1..].to_vec();
    let dims = |d: &[usize]| {
        d.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "# Written by resnetc export --triton.\n\
         name: \"{name}\"\n\
         platform: \"onnxruntime_onnx\"\n\
         max_batch_size: {max_batch}\n\
         input [\n  {{\n    name: \"input\"\n    data_type: TYPE_FP32\n    dims: [ {x} ]\n  }}\n]\n\
         output [\n  {{\n    name: \"logits\"\n    data_type: TYPE_FP32\n    dims: [ {y} ]\n  }}\n]\n\
         dynamic_batching {{ }}\n",
        name = g.name,
        x = dims(&x),
        y = dims(&y),
    )
}

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// The ONNX model whose weights to take.
    pub model: PathBuf,
    /// The spec to bind them to (by structure).
    #[arg(long)]
    pub spec: PathBuf,
    /// The .safetensors file to write.
    #[arg(short, long, value_name = "W.safetensors")]
    pub output: PathBuf,
    /// Input size as CxHxW, overriding the spec's `input`.
    #[arg(long, value_name = "CxHxW", value_parser = super::parse_dims)]
    pub input: Option<[usize; 3]>,
}

pub fn convert(args: &ConvertArgs) -> ExitCode {
    let opts = Options {
        batch: 1,
        input: args.input,
    };
    let Some((g, _)) = super::build(&args.spec, &opts) else {
        return ExitCode::FAILURE;
    };
    let w = match load_for(&args.model, &g) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    // Bind first: what is written is exactly what the spec takes.
    let bound = match w.bind(&g, &args.model.display().to_string()) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    if let Err(e) = file::save(bound.weights(), &args.output) {
        return fail(format!("`{}`: {e}", args.output.display()));
    }
    println!(
        "wrote {} ({} tensors for `{}`, bound from {})",
        args.output.display(),
        bound.weights().len(),
        g.name,
        Path::new(&args.model).display()
    );
    ExitCode::SUCCESS
}
