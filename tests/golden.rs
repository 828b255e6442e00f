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

/// The error of the unoptimized and of the fully optimized graph.
fn run_case(dir: &Path) -> (f32, f32) {
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
    let got = interp::run(&g, &bound, x.clone(), &[g.logits()])
        .unwrap()
        .remove(0);
    assert_eq!(got.shape(), want.shape(), "{}", dir.display());
    let m = passes::Module {
        graph: g,
        weights: Some(bound),
    };
    let opts = passes::Options {
        level: 2,
        ..Default::default()
    };
    let (m, _) = passes::prepare(m, &opts).unwrap();
    let w = m.weights().unwrap();
    let opt = interp::run(m.graph(), w, x, &[m.graph().logits()])
        .unwrap()
        .remove(0);
    (relative_error(&got, &want), relative_error(&opt, &want))
}

#[test]
fn interpreter_agrees_with_pytorch() {
    let mut cases: Vec<_> = std::fs::read_dir(common::root().join("tests/golden"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("case.json").exists())
        .collect();
    cases.sort();
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
