//! ONNX out and in. Without Python: every spec and example exports, and the
//! exported initializers bind back to the spec by structure and give the
//! same logits; a model of another network is refused with every mismatch
//! listed. With onnxruntime (RESNETC_PYTHON, set by .ci/run): the exported
//! models pass onnx.checker's full check and onnxruntime's logits equal
//! resnetc's (tests/onnx/check.py).

mod common;

use std::path::Path;
use std::process::Command;

use resnetc::backend::interp;
use resnetc::lower::{compile_file, Options};
use resnetc::onnx::export::{export, ExportOptions};
use resnetc::onnx::import::weights_for;
use resnetc::passes;
use resnetc::syntax::SourceMap;
use resnetc::weights::init;

/// 32x32 for every net: ImageNet nets still reach layer4 (at 1x1), and
/// binding does not depend on the size.
fn small(_path: &Path) -> Options {
    Options {
        batch: 2,
        input: Some([3, 32, 32]),
    }
}

/// The model's bytes for `path` (BN folded unless `keep_bn`) and the
/// interpreter's logits on `x` with the same weights.
fn exported(
    path: &Path,
    keep_bn: bool,
    seed: u64,
) -> (Vec<u8>, resnetc::ir::Graph, resnetc::weights::Weights) {
    let mut sources = SourceMap::new();
    let g = compile_file(path, &small(path), &mut sources).expect("compiles");
    let w = init::init(
        &g,
        init::InitOptions {
            seed,
            randomize_bn: true,
        },
    );
    let bound = w.clone().bind(&g, "init").expect("binds");
    let rewrites = if keep_bn { vec![] } else { passes::rewrites(1) };
    let m = passes::Module {
        graph: g.clone(),
        weights: Some(bound),
    };
    let (m, _) = passes::rewrite(m, &rewrites, &passes::Options::default()).expect("rewrites");
    let opts = ExportOptions {
        opset: 17,
        batch: None,
        metadata: vec![],
    };
    let bytes = export(&m.graph, m.weights.as_ref().unwrap(), &sources, &opts).expect("exports");
    (bytes, g, w)
}

fn input(g: &resnetc::ir::Graph) -> ndarray::ArrayD<f32> {
    ndarray::ArrayD::from_shape_fn(g.input_shape().dims().to_vec(), |d| {
        ((d[0] * 7 + d[1] * 131 + d[2] * 31 + d[3] * 17) % 97) as f32 / 48.0 - 1.0
    })
}

fn rel(a: &ndarray::ArrayD<f32>, b: &ndarray::ArrayD<f32>) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// Export with BN folded and kept, bind the file back to the spec (its BN
/// now an identity carrying the conv's bias, or the model's BN), and run.
#[test]
fn exported_weights_bind_back_by_structure_on_every_spec() {
    // ResNet-1202 is ResNet-20's structure 200 times over (and its random BN
    // statistics overflow): tests/onnx/check.py exports it.
    for path in common::all_specs()
        .into_iter()
        .filter(|p| !p.ends_with("resnet1202.rn"))
    {
        // Kept BN on a few (its matching is the same for every spec).
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        let kept = matches!(stem, "resnet20" | "resnet50_v1_5" | "preact_resnet164");
        for keep_bn in [false, true].into_iter().filter(|&k| !k || kept) {
            let (bytes, g, w) = exported(&path, keep_bn, 3);
            let x = input(&g);
            let want = interp::run(&g, &w.bind(&g, "init").unwrap(), x.clone(), &[g.logits()])
                .unwrap()
                .remove(0);
            let back = weights_for(&bytes, "model.onnx", &g)
                .unwrap_or_else(|e| panic!("{} (keep_bn {keep_bn}): {e}", path.display()));
            let bound = back.bind(&g, "model.onnx").unwrap();
            let got = interp::run(&g, &bound, x, &[g.logits()]).unwrap().remove(0);
            let err = rel(&got, &want);
            assert!(err <= 1e-4, "{} keep_bn {keep_bn}: {err:e}", path.display());
        }
    }
}

/// ResNet-18's model bound to ResNet-34's spec: refused, with the missing
/// layers listed (not just the first).
#[test]
fn another_networks_model_is_refused_with_every_mismatch() {
    let root = common::root();
    let (bytes, _, _) = exported(&root.join("specs/resnet18.rn"), false, 1);
    let g34 = common::compile_with(
        &root.join("specs/resnet34.rn"),
        &small(&root.join("specs/resnet34.rn")),
    );
    let e = weights_for(&bytes, "r18.onnx", &g34).unwrap_err();
    assert!(e.contains("does not fit `resnet34`"), "{e}");
    assert!(e.matches("\n  ").count() >= 2, "one line per problem: {e}");
    assert!(e.contains("layer"), "{e}");
    // Not a model at all.
    let e = weights_for(b"not a protobuf at all", "junk.onnx", &g34).unwrap_err();
    assert!(e.contains("junk.onnx"), "{e}");
}

/// onnx.checker and onnxruntime on every spec's export (a script, since
/// both are Python): skipped with a reason when no such Python is set up.
#[test]
fn onnxruntime_agrees_with_resnetc_on_every_spec() {
    let Some(python) = std::env::var_os("RESNETC_PYTHON") else {
        println!("skipped: RESNETC_PYTHON is not set (.ci/run sets it to a venv with onnx and onnxruntime)");
        return;
    };
    let ok = Command::new(&python)
        .args(["-c", "import onnx, onnxruntime"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("skipped: {python:?} cannot import onnx and onnxruntime");
        return;
    }
    let out = Command::new(&python)
        .arg(common::root().join("tests/onnx/check.py"))
        .arg(env!("CARGO_BIN_EXE_resnetc"))
        .current_dir(common::root())
        .output()
        .expect("runs python");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tests/onnx/check.py failed");
    assert!(text.contains("specs and examples agree"), "{text}");
}

/// `export --triton DIR`: a model repository Triton serves as it is.
#[test]
fn triton_repository_has_the_model_and_a_dynamic_batching_config() {
    let dir = std::env::temp_dir().join(format!("resnetc-triton-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .args(["export", "specs/cifar/resnet20.rn", "--triton"])
        .arg(&dir)
        .current_dir(common::root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model = std::fs::read(dir.join("resnet20/1/model.onnx")).unwrap();
    let config = std::fs::read_to_string(dir.join("resnet20/config.pbtxt")).unwrap();
    assert!(
        config.contains("platform: \"onnxruntime_onnx\""),
        "{config}"
    );
    assert!(config.contains("max_batch_size: 64"), "{config}");
    assert!(config.contains("dims: [ 3, 32, 32 ]"), "{config}");
    assert!(config.contains("dims: [ 10 ]"), "{config}");
    assert!(config.contains("dynamic_batching"), "{config}");
    // The model is the plain export, with a dynamic batch.
    let g = common::compile(&common::root().join("specs/cifar/resnet20.rn"));
    let w = weights_for(&model, "model.onnx", &g).expect("binds back");
    assert_eq!(
        w.len(),
        19 + 19 * 4 + 2,
        "19 convs, 19 BNs (4 tensors each), fc"
    );
    // --batch fixes the batch, which Triton's batching cannot use.
    let out = Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .args([
            "export",
            "specs/cifar/resnet20.rn",
            "--batch",
            "2",
            "--triton",
        ])
        .arg(&dir)
        .current_dir(common::root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A model nobody here wrote: PyTorch's exporter on the CIFAR ResNet-20
/// golden case (tests/golden/onnx_models.py), its option A shortcuts as
/// Slice / Shape / Gather / Concat / Pad nodes and BN folded into the convs.
/// Bound by structure, it reproduces PyTorch's logits.
#[test]
fn a_pytorch_exported_model_binds_by_structure() {
    let dir = common::root().join("tests/golden/cifar_resnet20");
    let x = resnetc::io::npy::read(&dir.join("input.npy")).unwrap();
    let want = resnetc::io::npy::read(&dir.join("logits.npy")).unwrap();
    let opts = Options {
        batch: x.shape()[0],
        input: Some([3, 32, 32]),
    };
    let g = common::compile_with(&common::root().join("specs/cifar/resnet20.rn"), &opts);
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let w = weights_for(&bytes, "model.onnx", &g).unwrap_or_else(|e| panic!("{e}"));
    let bound = w.bind(&g, "model.onnx").unwrap();
    let got = interp::run(&g, &bound, x, &[g.logits()]).unwrap().remove(0);
    let err = rel(&got, &want);
    assert!(err <= 1e-4, "{err:e}");
}
