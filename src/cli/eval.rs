//! `resnetc eval`: top-1 and top-5 error over a labelled image folder, with
//! the paper's test-time views.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::fail;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::eval::{data, ranked, scores, tta, Networks};
use crate::io::image;
use crate::lower::Options;
use crate::weights::load_for;

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The network's spec (.rn).
    pub spec: PathBuf,
    /// Weights (.safetensors or .onnx).
    #[arg(long)]
    pub weights: PathBuf,
    /// An ImageFolder tree (a subfolder per class, sorted names give the
    /// class index), or a folder of images with --labels.
    pub data: PathBuf,
    /// A labels file of `file label` lines, files relative to DATA.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Test-time views: center, ten-crop, multi-scale[=224,256,...] or full=S.
    #[arg(long, value_name = "MODE", default_value = "center", value_parser = tta::Mode::parse)]
    pub tta: tta::Mode,
    /// Add each view's horizontal flip (ten-crop has them already).
    #[arg(long)]
    pub flip: bool,
    /// The K of the predictions file (top-1 and top-5 error are always given).
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// Views the network runs at a time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch: u32,
    /// Score only the first N images (in sorted order).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write every image's top-K to this CSV file.
    #[arg(long, value_name = "FILE.csv")]
    pub predictions: Option<PathBuf>,
    /// Stop at the first unreadable image instead of counting it.
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub backend: super::BackendArgs,
    #[command(flatten)]
    pub memory: super::MemoryArgs,
    #[command(flatten)]
    pub opt: super::OptArgs,
}

type Views = Result<Vec<ndarray::ArrayD<f32>>, String>;

pub fn run(args: &EvalArgs) -> ExitCode {
    let backend = match args.backend.backend(false) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let Some((g, _)) = super::build(&args.spec, &Options::default()) else {
        return ExitCode::FAILURE;
    };
    let pp = g.preprocess.clone().unwrap_or_default();
    let classes = g.output_shape().dims().last().copied().unwrap_or(0);
    let weights = match load_for(&args.weights, &g) {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let (mut samples, names) = match data::samples(&args.data, args.labels.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if let Some(n) = args.limit {
        samples.truncate(n);
    }
    if samples.is_empty() {
        return fail(format!("`{}`: no images to score", args.data.display()));
    }
    if let Some(s) = samples.iter().find(|s| s.label >= classes) {
        return fail(format!(
            "`{}` has label {}, but `{}` has {classes} classes",
            s.path.display(),
            s.label,
            g.name
        ));
    }
    let mut nets = Networks::new(
        &args.spec,
        weights,
        backend.as_ref(),
        args.opt.options(),
        args.batch as usize,
    );
    if let Some(l) = args.memory.max_memory {
        nets.limit = l;
    }
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(samples.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:40}] {pos}/{len} images, {per_sec}, eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} {}", g.name, args.tta.name()));
    let k = args.top.max(5).min(classes);
    let start = Instant::now();
    let (mut scored, mut failed, mut top1, mut top5) = (0usize, 0usize, 0usize, 0usize);
    let mut rows: Vec<String> = Vec::new();
    let mut error: Option<String> = None;
    // Decoding and resizing on worker threads beside the network, which
    // has the cores it was compiled for; images come back in order.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1);
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let chunk = (args.batch as usize).max(1);
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Views)>(4 * chunk);
    std::thread::scope(|sc| {
        for _ in 0..workers {
            let (tx, next, stop, samples, pp) = (tx.clone(), &next, &stop, &samples, &pp);
            let (mode, flip) = (&args.tta, args.flip);
            sc.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= samples.len() || stop.load(Ordering::Relaxed) {
                    break;
                }
                let p = &samples[i].path;
                let v = image::read(p).and_then(|img| {
                    tta::views(&img, mode, flip, pp)
                        .map_err(|e| format!("image `{}`: {e}", p.display()))
                });
                if tx.send((i, v)).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        let mut ready: BTreeMap<usize, Views> = BTreeMap::new();
        let mut want = 0;
        // Images waiting for the network: their indices and their views.
        let mut pending: (Vec<usize>, Vec<Vec<ndarray::ArrayD<f32>>>) = Default::default();
        let mut flush = |pending: &mut (Vec<usize>, Vec<Vec<ndarray::ArrayD<f32>>>),
                         nets: &mut Networks|
         -> Result<(), String> {
            if pending.0.is_empty() {
                return Ok(());
            }
            let s = scores(nets, &pending.1)?;
            for (i, sc) in pending.0.iter().zip(s) {
                let label = samples[*i].label;
                let r = ranked(&sc);
                scored += 1;
                top1 += usize::from(r[0] == label);
                top5 += usize::from(r.iter().take(5).any(|&c| c == label));
                let top: Vec<String> = r
                    .iter()
                    .take(k)
                    .map(|&c| format!("{c},{:.6}", sc[c]))
                    .collect();
                rows.push(format!(
                    "{},{label},{}",
                    csv(&samples[*i].path),
                    top.join(",")
                ));
            }
            bar.inc(pending.0.len() as u64);
            pending.0.clear();
            pending.1.clear();
            Ok(())
        };
        for (i, v) in rx.iter() {
            ready.insert(i, v);
            while let Some(v) = ready.remove(&want) {
                want += 1;
                match v {
                    Ok(views) => {
                        pending.0.push(want - 1);
                        pending.1.push(views);
                    }
                    Err(e) => {
                        failed += 1;
                        bar.inc(1);
                        if args.strict {
                            error = Some(format!("{e} (--strict)"));
                        } else {
                            bar.suspend(|| eprintln!("warning: {e}; counted as failed"));
                        }
                    }
                }
                if error.is_none() && pending.0.len() >= chunk {
                    if let Err(e) = flush(&mut pending, &mut nets) {
                        error = Some(e);
                    }
                }
                if error.is_some() {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
            }
            if error.is_some() {
                break;
            }
        }
        if error.is_none() {
            if let Err(e) = flush(&mut pending, &mut nets) {
                error = Some(e);
            }
        }
        // Let the workers see the stop and end.
        stop.store(true, Ordering::Relaxed);
        drop(rx);
    });
    bar.finish_and_clear();
    if let Some(e) = error {
        return fail(e);
    }
    let secs = start.elapsed().as_secs_f64();
    let err = |hits: usize| {
        if scored == 0 {
            f64::NAN
        } else {
            1.0 - hits as f64 / scored as f64
        }
    };
    if let Some(p) = &args.predictions {
        let mut header = "path,label".to_string();
        for r in 1..=k {
            header.push_str(&format!(",class{r},score{r}"));
        }
        let body = std::iter::once(header)
            .chain(rows)
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        if let Err(e) = std::fs::write(p, body) {
            return fail(format!("`{}`: {e}", p.display()));
        }
    }
    let summary = serde_json::json!({
        "network": g.name,
        "data": args.data.display().to_string(),
        "tta": args.tta.name(),
        "flip": args.flip,
        "images": scored,
        "failed": failed,
        "top1_error": err(top1),
        "top5_error": err(top5),
        "images_per_second": scored as f64 / secs.max(1e-9),
        "seconds": secs,
        "networks_compiled": nets.compiled,
        "classes": names.len().max(classes),
    });
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{} on {} ({}{}): {scored} images scored, {failed} unreadable{}",
            g.name,
            args.data.display(),
            args.tta.name(),
            if args.flip { " + flips" } else { "" },
            if failed > 0 {
                " (counted out, see the warnings above)"
            } else {
                ""
            }
        );
        let _ = writeln!(out, "  top-1 error  {:>7.2}%", 100.0 * err(top1));
        let _ = writeln!(out, "  top-5 error  {:>7.2}%", 100.0 * err(top5));
        let _ = writeln!(
            out,
            "  {:.1} images/s over {secs:.1} s; {} network{} compiled",
            scored as f64 / secs.max(1e-9),
            nets.compiled,
            if nets.compiled == 1 { "" } else { "s" }
        );
    }
    ExitCode::SUCCESS
}

/// A path as one CSV field.
fn csv(p: &std::path::Path) -> String {
    let s = p.display().to_string();
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
