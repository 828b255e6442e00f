//! `resnetc run`: a spec, weights and inputs in; logits and top-K classes out.

use std::path::PathBuf;
use std::process::ExitCode;

use super::fail;
use std::time::Instant;

use ndarray::{Array4, ArrayD, Axis, Ix2};

use crate::io::{class_name, image, npy, scores};
use crate::lower::Options;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("data").required(true).args(["input", "image"])))]
pub struct RunArgs {
    pub spec: PathBuf,
    /// Weights: .safetensors with torchvision's state_dict keys, or an ONNX
    /// model whose initializers are bound to the spec by structure.
    #[arg(long)]
    pub weights: PathBuf,
    /// Input batch as .npy, float32 NCHW.
    #[arg(long, value_name = "X.npy")]
    pub input: Option<PathBuf>,
    /// Images (JPEG/PNG), preprocessed as the spec's `input ... { }` says;
    /// without one: resized to 256, centre-cropped to 224, ImageNet-normalized.
    #[arg(long, num_args = 1.., value_name = "FILE")]
    pub image: Vec<PathBuf>,
    /// Write the logits (the values before the final softmax) as .npy; with
    /// --tta, the averaged scores (N x classes), which is what is scored.
    #[arg(long, value_name = "Y.npy")]
    pub output: Option<PathBuf>,
    /// Test-time views of each --image, softmax scores averaged (He et al.
    /// 2015, 3.4): center, ten-crop, multi-scale[=224,256,384,480,640] or
    /// full=S (the whole image, shorter side S, fully convolutional).
    #[arg(long, value_name = "MODE", value_parser = crate::eval::tta::Mode::parse, requires = "image")]
    pub tta: Option<crate::eval::tta::Mode>,
    /// With --tta, add each view's horizontal flip (ten-crop has them).
    #[arg(long, requires = "tta")]
    pub flip: bool,
    /// Print the K most likely classes of each input.
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// On non-finite logits, find the first value that became NaN or
    /// infinite (walks the network in the interpreter).
    #[arg(long)]
    pub check_finite: bool,
    #[command(flatten)]
    pub backend: super::BackendArgs,
    #[command(flatten)]
    pub memory: super::MemoryArgs,
    #[command(flatten)]
    pub opt: super::OptArgs,
}

/// The largest batch a run takes (as `--batch` does).
const MAX_BATCH: usize = 1 << 20;

fn load_inputs(
    args: &RunArgs,
    pp: &crate::ir::preprocess::Preprocess,
) -> Result<(ArrayD<f32>, Vec<String>), String> {
    if let Some(p) = &args.input {
        let x = npy::read(p)?;
        if x.ndim() != 4 {
            return Err(format!(
                "`{}`: expected a 4-d NCHW array, found shape {:?}",
                p.display(),
                x.shape()
            ));
        }
        if x.is_empty() {
            return Err(format!(
                "`{}`: expected an NCHW batch with every dimension at least 1, found shape {:?}",
                p.display(),
                x.shape()
            ));
        }
        if x.shape()[0] > MAX_BATCH {
            return Err(format!(
                "`{}`: a batch of {} images, more than the {MAX_BATCH} a run takes",
                p.display(),
                x.shape()[0]
            ));
        }
        let labels = (0..x.shape()[0])
            .map(|i| format!("{}[{i}]", p.display()))
            .collect();
        return Ok((x, labels));
    }
    let mut images: Vec<Array4<f32>> = Vec::new();
    for p in &args.image {
        images.push(image::load_with(p, pp)?);
    }
    let views: Vec<_> = images.iter().map(|a| a.view()).collect();
    let x = ndarray::concatenate(Axis(0), &views).map_err(|e| e.to_string())?;
    let labels = args.image.iter().map(|p| p.display().to_string()).collect();
    Ok((x.into_dyn(), labels))
}

pub fn run(args: &RunArgs) -> ExitCode {
    let backend = match args.backend.backend(false) {
        Ok(b) => b,
        Err(code) => return code,
    };
    // Images are preprocessed as the spec says (torchvision's ImageNet
    // transform where it says nothing).
    let pp = if args.image.is_empty() {
        Default::default()
    } else {
        let Some((g, _)) = super::build(&args.spec, &Options::default()) else {
            return ExitCode::FAILURE;
        };
        if let Some(mode) = &args.tta {
            return run_tta(args, mode, backend.as_ref(), &g);
        }
        g.preprocess.unwrap_or_default()
    };
    let (x, labels) = match load_inputs(args, &pp) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let s = x.shape();
    // The graph is compiled for this batch and size (the nets are fully
    // convolutional up to the global pool).
    let opts = Options {
        batch: s[0],
        input: Some([s[1], s[2], s[3]]),
    };
    let Some((g, sources)) = super::build(&args.spec, &opts) else {
        return ExitCode::FAILURE;
    };
    let weights = match crate::weights::load_for(&args.weights, &g) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let bound = match weights.bind(&g, &args.weights.display().to_string()) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let module = crate::passes::Module {
        graph: g,
        weights: Some(bound),
    };
    let Some(program) = super::program(module, &args.opt, &sources) else {
        return ExitCode::FAILURE;
    };
    if !super::fits(backend.as_ref(), &program, &args.memory) {
        return ExitCode::FAILURE;
    }
    let start = Instant::now();
    // Without --check-finite nothing reads the weights after compiling: the
    // backend may free each one as it packs it.
    let name = program.name.clone();
    let (exe, program) = if args.check_finite {
        let exe = super::compile_on(backend.as_ref(), &program, &sources);
        (exe, Some(program))
    } else {
        (
            super::compile_owned(backend.as_ref(), program, &sources),
            None,
        )
    };
    let Some(mut exe) = exe else {
        return ExitCode::FAILURE;
    };
    let logits = match exe.run(&x) {
        Ok(v) => v,
        Err(e) => {
            super::report(&e, &sources);
            return ExitCode::FAILURE;
        }
    };
    let elapsed = start.elapsed();
    let bad = logits.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        eprintln!(
            "warning: {bad} of {} logits are not finite (NaN or infinite)",
            logits.len()
        );
        if let Some(program) = &program {
            super::finite::explain(program, &x, &sources);
        } else {
            eprintln!("  hint: --check-finite finds the first value that became non-finite");
        }
    }
    if let Some(out) = &args.output {
        if let Err(e) = npy::write(out, &logits) {
            return fail(e);
        }
    }
    eprintln!(
        "{}: {} inputs in {:.1} ms ({} backend)",
        name,
        labels.len(),
        elapsed.as_secs_f64() * 1e3,
        backend.name()
    );
    if let (Ok(l2), true) = (logits.view().into_dimensionality::<Ix2>(), args.top > 0) {
        let probs = scores::softmax(l2);
        let classes = probs.shape()[1];
        for (row, label) in probs.outer_iter().zip(&labels) {
            println!("{label}");
            let row: Vec<f32> = row.to_vec();
            for c in scores::top_k(&row, args.top) {
                println!(
                    "  {:>6.2}%  {:>4}  {}",
                    row[c] * 100.0,
                    c,
                    class_name(c, classes)
                );
            }
        }
    }
    ExitCode::SUCCESS
}

/// `run --image ... --tta MODE`: each image's views through the network
/// for their size (compiled once per shape), softmax scores averaged.
fn run_tta(
    args: &RunArgs,
    mode: &crate::eval::tta::Mode,
    backend: &dyn crate::backend::Backend,
    g: &crate::ir::Graph,
) -> ExitCode {
    use crate::eval::{scores as avg_scores, tta, Networks};
    let pp = &g.preprocess.clone().unwrap_or_default();
    let weights = match crate::weights::load_for(&args.weights, g) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let mut views = Vec::new();
    for p in &args.image {
        match image::read(p).and_then(|img| {
            tta::views(&img, mode, args.flip, pp)
                .map_err(|e| format!("image `{}`: {e}", p.display()))
        }) {
            Ok(v) => views.push(v),
            Err(e) => return fail(e),
        }
    }
    let per_image = views.first().map_or(1, Vec::len);
    // One call a shape: the batch is the most views any one shape has.
    let mut count: std::collections::HashMap<&[usize], usize> = Default::default();
    for v in views.iter().flatten() {
        *count.entry(v.shape()).or_default() += 1;
    }
    let batch = count.values().copied().max().unwrap_or(1).min(64);
    let mut nets = Networks::new(&args.spec, weights, backend, args.opt.options(), batch);
    if let Some(l) = args.memory.max_memory {
        nets.limit = l;
    }
    let start = Instant::now();
    let s = match avg_scores(&mut nets, &views) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let classes = s.first().map_or(0, Vec::len);
    eprintln!(
        "{}: {} images, {} views each ({}{}), {} network{} compiled, {:.1} ms ({} backend)",
        g.name,
        args.image.len(),
        per_image,
        mode.name(),
        if args.flip { " + flips" } else { "" },
        nets.compiled,
        if nets.compiled == 1 { "" } else { "s" },
        start.elapsed().as_secs_f64() * 1e3,
        backend.name()
    );
    if let Some(out) = &args.output {
        let flat: Vec<f32> = s.iter().flatten().copied().collect();
        let a = match ArrayD::from_shape_vec(vec![s.len(), classes], flat) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        if let Err(e) = npy::write(out, &a) {
            return fail(e);
        }
    }
    for (row, p) in s.iter().zip(&args.image) {
        println!("{}", p.display());
        for c in scores::top_k(row, args.top) {
            println!(
                "  {:>6.2}%  {:>4}  {}",
                row[c] * 100.0,
                c,
                class_name(c, classes)
            );
        }
    }
    ExitCode::SUCCESS
}
