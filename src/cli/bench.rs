//! `resnetc bench`: compile to native code and time it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ndarray::ArrayD;

use super::{build, BackendArgs, BuildArgs, OptArgs};
use crate::passes::Module;
use crate::report::group;
use crate::weights::init;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    pub spec: PathBuf,
    /// Timed runs (after 2 warm-up runs).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub iters: u32,
    /// Weights (.safetensors); default: He-initialized, seed 0.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Print JSON for scripts instead of text.
    #[arg(long)]
    pub json: bool,
    /// Time every layer and print where the time goes.
    #[arg(long)]
    pub profile: bool,
    #[command(flatten)]
    pub build: BuildArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub memory: super::MemoryArgs,
    #[command(flatten)]
    pub opt: OptArgs,
}

fn pct(v: &[Duration], p: f64) -> Duration {
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

pub fn run(args: &BenchArgs) -> ExitCode {
    let backend = match args.backend.backend(args.profile) {
        Ok(b) => b,
        Err(code) => return code,
    };
    let start = Instant::now();
    let Some((g, sources)) = build(&args.spec, &args.build.options()) else {
        return ExitCode::FAILURE;
    };
    let weights = match &args.weights {
        Some(p) => match crate::weights::load_for(p, &g) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => init::init(
            &g,
            init::InitOptions {
                seed: 0,
                randomize_bn: true,
            },
        ),
    };
    let load_time = start.elapsed();
    let start = Instant::now();
    let bound = match weights.bind(&g, "weights") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let macs = g.macs();
    let module = Module {
        graph: g,
        weights: Some(bound),
    };
    let mut phases = vec![("bind weights", start.elapsed())];
    let t = Instant::now();
    let Some(program) = super::program(module, &args.opt, &sources) else {
        return ExitCode::FAILURE;
    };
    phases.push(("passes, lowering", t.elapsed()));
    let t = Instant::now();
    if !super::fits(backend.as_ref(), &program, &args.memory) {
        return ExitCode::FAILURE;
    }
    phases.push(("memory check", t.elapsed()));
    let name = program.name.clone();
    let input = program.input.shape.dims().to_vec();
    let Some(mut c) = super::compile_owned(backend.as_ref(), program, &sources) else {
        return ExitCode::FAILURE;
    };
    let compile_time = start.elapsed();
    let info = c.info();
    phases.extend(info.phases.iter().copied());
    let x = ArrayD::from_shape_fn(input.clone(), |d| {
        ((d[1] * 131 + d[2] * 31 + d[3] * 7) % 255) as f32 / 128.0 - 1.0
    });
    let bar = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.iters as u64 + 2)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} runs {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(name.clone());
    let mut times = Vec::new();
    let mut layer_times: Vec<Vec<Duration>> = vec![Vec::new(); c.steps().len()];
    for i in 0..args.iters + 2 {
        let t = Instant::now();
        if let Err(e) = c.run(&x) {
            bar.finish_and_clear();
            super::report(&e, &sources);
            return ExitCode::FAILURE;
        }
        let dt = t.elapsed();
        if i >= 2 {
            times.push(dt);
            if let Some(p) = c.profile() {
                for (acc, d) in layer_times.iter_mut().zip(p) {
                    acc.push(d);
                }
            }
        }
        bar.set_message(format!("{:.1} ms", dt.as_secs_f64() * 1e3));
        bar.inc(1);
    }
    bar.finish_and_clear();
    times.sort();
    let median = pct(&times, 0.5);
    let batch = input[0];
    let flops = 2.0 * macs as f64;
    let gflops = flops / median.as_secs_f64() / 1e9;
    let peak = c.measure_peak().unwrap_or(f64::NAN);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // Each step's median time (empty without --profile).
    let med: Vec<Duration> = layer_times
        .iter_mut()
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.sort();
            v[v.len() / 2]
        })
        .collect();
    // Convs that take bf16 dot products (`--precision bf16`), and of them
    // those on AMX's tiles.
    let with =
        |how: crate::backend::Strategy| c.steps().iter().filter(|s| s.strategy == how).count();
    let amx = with(crate::backend::Strategy::BlockedAmx);
    let bf16 = with(crate::backend::Strategy::BlockedBf16) + amx;
    if args.json {
        let layers: Vec<_> = c
            .steps()
            .iter()
            .zip(&med)
            .map(|(s, d)| {
                serde_json::json!({
                    "name": s.name,
                    "how": s.strategy.name(),
                    "ms": ms(*d),
                    "gflops": s.flops as f64 / d.as_secs_f64().max(1e-9) / 1e9,
                })
            })
            .collect();
        let v = serde_json::json!({
            "network": name,
            "spec": args.spec.display().to_string(),
            "backend": backend.name(),
            "batch": batch,
            "threads": info.threads,
            "opt_level": args.opt.level,
            "microkernel": info.kernels,
            "load_ms": ms(load_time),
            "compile_ms": ms(compile_time),
            "compile_phases_ms": phases
                .iter()
                .map(|(k, d)| (k.to_string(), serde_json::json!(ms(*d))))
                .collect::<serde_json::Map<_, _>>(),
            "latency_ms": {"median": ms(median), "p10": ms(pct(&times, 0.1)), "p90": ms(pct(&times, 0.9))},
            "images_per_s": batch as f64 / median.as_secs_f64(),
            "gflops": gflops,
            "peak_gflops": peak,
            "peak_share": gflops / peak,
            "arena_bytes": info.arena_bytes,
            "store_bytes": info.store.map(|s| s.0),
            "store_moved_bytes": info.store.map(|s| s.1),
            "precision": if bf16 > 0 { "bf16" } else { "f32" },
            "bf16_convs": bf16,
            "amx_convs": amx,
            "layers": layers,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    println!(
        "{name} batch {batch}, {} backend, {} threads, -O{}, {} microkernel",
        backend.name(),
        info.threads,
        args.opt.level,
        info.kernels
    );
    println!("  compile      {:>9.1} ms  (optimize, pack weights, generate code; weights read in {:.1} ms)", ms(compile_time), ms(load_time));
    if args.opt.time_passes {
        let parts: Vec<String> = phases
            .iter()
            .map(|(k, d)| format!("{k} {:.1}", ms(*d)))
            .collect();
        println!("               ms: {}", parts.join(", "));
        if let Some((bytes, moved)) = info.store {
            let mb = |b: usize| b as f64 / (1u64 << 20) as f64;
            println!(
                "               weight store {:.1} MiB, {:.1} MiB of it pages of the tensors freed as they were packed",
                mb(bytes),
                mb(moved)
            );
        }
    }
    println!(
        "  latency      {:>9.2} ms median  (p10 {:.2}, p90 {:.2}; {} runs)",
        ms(median),
        ms(pct(&times, 0.1)),
        ms(pct(&times, 0.9)),
        times.len()
    );
    println!(
        "  throughput   {:>9.1} images/s",
        batch as f64 / median.as_secs_f64()
    );
    println!(
        "  compute      {:>9.1} GFLOP/s  ({} FLOPs of conv and fc; {:.0}% of the {:.0} GFLOP/s FMA peak measured here)",
        gflops,
        group(2 * macs),
        100.0 * gflops / peak,
        peak
    );
    if bf16 > 0 {
        let convs = c.steps().iter().filter(|s| s.op == "conv2d").count();
        let dot = bf16 - amx;
        let how = match (amx, dot) {
            (0, _) => "vdpbf16ps, twice the FMA rate".to_string(),
            (_, 0) => "AMX tiles, tdpbf16ps".to_string(),
            _ => format!("{amx} on AMX tiles, {dot} by vdpbf16ps"),
        };
        println!(
            "  precision    bf16 dot products in {bf16} of {convs} convs ({how}), f32 sums and the rest f32"
        );
    }
    if args.profile {
        let total: Duration = med.iter().sum();
        let mut rows: Vec<(usize, Duration)> = med.iter().copied().enumerate().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1));
        println!(
            "\n  {:<26} {:<14} {:>9} {:>6} {:>9} {:>6}",
            "layer", "how", "ms", "time%", "GFLOP/s", "peak%"
        );
        for (i, d) in rows.iter().take(25) {
            let s = &c.steps()[*i];
            let gf = s.flops as f64 / d.as_secs_f64().max(1e-9) / 1e9;
            println!(
                "  {:<26} {:<14} {:>9.3} {:>5.1}% {:>9.1} {:>5.0}%",
                s.name,
                s.strategy.name(),
                ms(*d),
                100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-9),
                gf,
                100.0 * gf / peak
            );
        }
        println!("  {} steps, {:.2} ms in all", c.steps().len(), ms(total));
        let mut by_how: Vec<(&str, Duration, u64)> = Vec::new();
        for (s, d) in c.steps().iter().zip(&med) {
            let how = s.strategy.name();
            match by_how.iter_mut().find(|x| x.0 == how) {
                Some(x) => {
                    x.1 += *d;
                    x.2 += s.flops;
                }
                None => by_how.push((how, *d, s.flops)),
            }
        }
        by_how.sort_by_key(|x| std::cmp::Reverse(x.1));
        let all_flops: u64 = by_how.iter().map(|x| x.2).sum();
        println!(
            "\n  {:<16} {:>9} {:>6} {:>7} {:>9} {:>6}",
            "by strategy", "ms", "time%", "flops%", "GFLOP/s", "peak%"
        );
        for (how, d, f) in by_how {
            let gf = f as f64 / d.as_secs_f64().max(1e-9) / 1e9;
            println!(
                "  {how:<16} {:>9.2} {:>5.1}% {:>6.1}% {:>9.1} {:>5.0}%",
                ms(d),
                100.0 * d.as_secs_f64() / total.as_secs_f64().max(1e-9),
                100.0 * f as f64 / all_flops.max(1) as f64,
                gf,
                100.0 * gf / peak
            );
        }
    }
    ExitCode::SUCCESS
}
