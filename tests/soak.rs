//! Long runs: a compiled network run thousands of times in one process
//! keeps its resident memory flat (under 1 MiB of growth after warm-up),
//! on every backend this machine has. Slow, so ignored by default:
//!
//!     cargo test --release --test soak -- --ignored --nocapture --test-threads=1
//!
//! (one test at a time: they read the process's resident memory)

mod common;

use ndarray::ArrayD;
use resnetc::backend::{self, Options};
use resnetc::lower::Options as BuildOptions;

/// Resident bytes of this process, from /proc/self/statm.
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn soak(spec: &str, runs: usize, backends: &[&str]) {
    let g = common::compile_with(&common::root().join(spec), &BuildOptions::default());
    let w = resnetc::weights::init::init(&g, Default::default());
    let p = common::program(&g, &w, 2);
    let x = ArrayD::from_shape_fn(p.input.shape.dims().to_vec(), |d| {
        ((d[1] * 31 + d[2] * 7 + d[3]) % 17) as f32 / 8.0 - 1.0
    });
    for &name in backends {
        let b = backend::by_name(name, &Options::default()).unwrap();
        if !b.check(&p).is_empty() {
            println!("{spec} on {name}: not on this machine");
            continue;
        }
        let mut exe = b.compile(&p).unwrap();
        let warm = (runs / 10).max(10);
        let start = std::time::Instant::now();
        let mut first = None;
        for i in 0..runs {
            exe.run(&x).unwrap();
            if i + 1 == warm {
                first = Some(rss());
            }
        }
        let (before, after) = (first.unwrap_or(0), rss());
        let growth = after as i64 - before as i64;
        println!(
            "{spec} on {name}: {runs} runs in {:.1} s; resident {:.1} MiB after {warm}, {:.1} MiB at the end: {:+} KiB",
            start.elapsed().as_secs_f64(),
            before as f64 / (1 << 20) as f64,
            after as f64 / (1 << 20) as f64,
            growth / 1024
        );
        assert!(growth < 1 << 20, "{spec} on {name} grew by {growth} bytes");
    }
}

#[test]
#[ignore]
fn resnet20_ten_thousand_runs() {
    soak(
        "specs/cifar/resnet20.rn",
        10_000,
        &["jit", "interp", "cuda"],
    );
}

#[test]
#[ignore]
fn resnet50_five_hundred_runs() {
    soak("specs/resnet50_v1_5.rn", 500, &["jit", "interp", "cuda"]);
}
