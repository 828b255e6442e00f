//! Agreement with PyTorch: every case in tests/golden/ (made by
//! tests/golden/make.py) runs through the interpreter and must reproduce
//! PyTorch's logits to 1e-4 of the largest logit.

mod common;

use std::path::Path;

use resnetc::backend::interp;
use resnetc::io::npy;
use resnetc::lower::Options;
use resnetc::passes;
use resnetc::weights::{file, init};

const TOLERANCE: f32 = 1e-4;

/// max |a - b| / max |b|
fn relative_error(a: &ndarray::ArrayD<f32>, b: &ndarray::ArrayD<f32>) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// A case's graph, bound weights, input and PyTorch's logits.
fn load_case(
    dir: &Path,
) -> (
    resnetc::ir::Graph,
    resnetc::weights::BoundWeights,
    ndarray::ArrayD<f32>,
    ndarray::ArrayD<f32>,
) {
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let dims: Vec<usize> = serde_json::from_value(case["input"].clone()).unwrap();
    let opts = Options {
        batch: case["batch"].as_u64().unwrap() as usize,
        input: Some([dims[0], dims[1], dims[2]]),
    };
    let g = common::compile_with(&common::root().join(case["spec"].as_str().unwrap()), &opts);
    let weights = match &case["weights"] {
        serde_json::Value::String(f) => file::load(&dir.join(f)).unwrap(),
        w => init::init(
            &g,
            init::InitOptions {
                seed: w["init"]["seed"].as_u64().unwrap(),
                randomize_bn: w["init"]["randomize_bn"].as_bool().unwrap(),
            },
        ),
    };
    let bound = weights.bind(&g, &dir.display().to_string()).unwrap();
    let x = npy::read(&dir.join("input.npy")).unwrap();
    let want = npy::read(&dir.join("logits.npy")).unwrap();
    (g, bound, x, want)
}

/// A case's graph and weights through every pass at -O2.
fn optimized(g: resnetc::ir::Graph, w: resnetc::weights::BoundWeights) -> passes::Prepared {
    let m = passes::Module {
        graph: g,
        weights: Some(w),
    };
    let opts = passes::Options {
        level: 2,
        ..Default::default()
    };
    passes::prepare(m, &opts).unwrap().0
}

/// The error of the unoptimized and of the fully optimized graph.
fn run_case(dir: &Path) -> (f32, f32) {
    let (g, bound, x, want) = load_case(dir);
    let got = interp::run(&g, &bound, x.clone(), &[g.logits()])
        .unwrap()
        .remove(0);
    assert_eq!(got.shape(), want.shape(), "{}", dir.display());
    let m = optimized(g, bound);
    let w = m.weights().unwrap();
    let opt = interp::run(m.graph(), w, x, &[m.graph().logits()])
        .unwrap()
        .remove(0);
    (relative_error(&got, &want), relative_error(&opt, &want))
}

fn cases() -> Vec<std::path::PathBuf> {
    let mut cases: Vec<_> = std::fs::read_dir(common::root().join("tests/golden"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.json").exists())
        .collect();
    cases.sort();
    cases
}

#[test]
fn interpreter_agrees_with_pytorch() {
    let cases = cases();
    assert!(cases.len() >= 9, "golden cases are missing");
    let mut failures = Vec::new();
    for dir in &cases {
        let (plain, optimized) = run_case(dir);
        eprintln!(
            "{:<24} max relative error {plain:.2e} (-O0), {optimized:.2e} (-O2)",
            dir.file_name().unwrap().to_string_lossy()
        );
        for err in [plain, optimized] {
            if err.is_nan() || err > TOLERANCE {
                failures.push(format!("{}: {err:.3e}", dir.display()));
            }
        }
    }
    assert!(failures.is_empty(), "beyond {TOLERANCE}: {failures:?}");
}

/// Image preprocessing against torchvision's Resize(256), CenterCrop(224),
/// ToTensor, Normalize on the same file (decoded by PIL there).
#[test]
fn image_preprocessing_matches_torchvision() {
    for (img, reference, tol) in [
        ("photo.png", "photo_png.npy", 0.05),
        ("photo.jpg", "photo_jpg.npy", 0.1),
    ] {
        let dir = common::root().join("tests/golden/image");
        let got = resnetc::io::image::load(&dir.join(img), 256, 224).unwrap();
        let want = npy::read(&dir.join(reference)).unwrap();
        assert_eq!(&got.shape()[1..], want.shape());
        let n = want.len() as f32;
        let mean_abs = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / n;
        eprintln!("{img}: mean |resnetc - torchvision| = {mean_abs:.4} (normalized units)");
        assert!(mean_abs < tol, "{img}: {mean_abs}");
    }
}

/// `--precision bf16` on the JIT against PyTorch's f32 logits, on every
/// golden input: the same top-1 class, and a logit cosine of at least
/// 0.999. Skipped, saying so, where the CPU lacks AVX512_BF16.
#[test]
fn bf16_keeps_pytorch_top1_on_every_golden_input() {
    if !resnetc::backend::jit::kernels::has_bf16_dot() {
        println!("skipped: this CPU lacks AVX512_BF16 (vdpbf16ps), which --precision bf16 needs");
        return;
    }
    let opts = resnetc::backend::Options {
        precision: Some("bf16".into()),
        ..Default::default()
    };
    let jit = resnetc::backend::by_name("jit", &opts).unwrap();
    for dir in cases() {
        let (g, w, x, want) = load_case(&dir);
        let p = resnetc::backend::Program::lower(optimized(g, w)).unwrap();
        let got = jit.compile(&p).unwrap().run(&x).unwrap();
        let classes = want.shape()[1];
        let (got, want) = (got.as_slice().unwrap(), want.as_slice().unwrap());
        for (i, (a, b)) in got.chunks(classes).zip(want.chunks(classes)).enumerate() {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let cos = dot / (norm(a) * norm(b));
            let top = |v: &[f32]| (0..v.len()).fold(0, |m, j| if v[j] > v[m] { j } else { m });
            eprintln!(
                "{:<24} image {i}: cosine {cos:.6}, top-1 {} (PyTorch {})",
                dir.file_name().unwrap().to_string_lossy(),
                top(a),
                top(b)
            );
            assert!(cos >= 0.999, "{}: image {i}: cosine {cos}", dir.display());
            assert_eq!(top(a), top(b), "{}: image {i}: top-1", dir.display());
        }
    }
}
