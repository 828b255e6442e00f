//! Weight files: init round-trips, and every kind of bad file is a clear error.

mod common;

use std::process::Command;

use resnetc::weights::{file, init, WeightError};

fn graph(spec: &str) -> resnetc::ir::Graph {
    common::compile(&common::root().join(spec))
}

fn r20_weights() -> resnetc::weights::Weights {
    init::init(
        &graph("specs/cifar/resnet20.rn"),
        init::InitOptions {
            seed: 1,
            randomize_bn: true,
        },
    )
}

#[test]
fn init_is_deterministic_and_he_scaled() {
    let g = graph("specs/resnet18.rn");
    let a = init::init(
        &g,
        init::InitOptions {
            seed: 7,
            randomize_bn: false,
        },
    );
    let b = init::init(
        &g,
        init::InitOptions {
            seed: 7,
            randomize_bn: false,
        },
    );
    let c = init::init(
        &g,
        init::InitOptions {
            seed: 8,
            randomize_bn: false,
        },
    );
    assert_eq!(a.get("conv1.weight"), b.get("conv1.weight"));
    assert_ne!(a.get("conv1.weight"), c.get("conv1.weight"));
    // Kaiming normal, fan-out: std = sqrt(2 / (out * k * k)).
    let w = a.get("layer3.0.conv1.weight").unwrap();
    let n = w.len() as f32;
    let std = (w.iter().map(|v| v * v).sum::<f32>() / n).sqrt();
    let want = (2.0f32 / (256.0 * 9.0)).sqrt();
    assert!((std / want - 1.0).abs() < 0.02, "{std} vs {want}");
    assert_eq!(
        a.get("bn1.weight")
            .unwrap()
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![1.0; 64]
    );
    assert_eq!(a.get("bn1.running_var").unwrap().sum(), 64.0);
    let bound = 1.0 / 512f32.sqrt();
    assert!(a.get("fc.weight").unwrap().iter().all(|v| v.abs() <= bound));
    assert_eq!(a.len(), 102);
}

/// The generator is specified bit for bit (tests/golden/make.py reproduces it).
#[test]
fn init_matches_the_numpy_implementation() {
    let w = init::init(
        &graph("specs/resnet18.rn"),
        init::InitOptions {
            seed: 1,
            randomize_bn: true,
        },
    );
    let bits = |k: &str| -> Vec<u32> {
        w.get(k)
            .unwrap()
            .iter()
            .take(3)
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits("conv1.weight"), [0xbb6ab6bf, 0xbc2deffa, 0xbbc5f176]);
    assert_eq!(bits("fc.bias"), [0xbc589897, 0xbd0cd687, 0xbbb33213]);
}

#[test]
fn safetensors_round_trip() {
    let w = r20_weights();
    let bytes = file::to_bytes(&w).unwrap();
    let back = file::from_bytes(&bytes, "mem").unwrap();
    assert_eq!(back.len(), w.len());
    for (k, t) in w.iter() {
        assert_eq!(back.get(k), Some(t), "{k}");
    }
    back.bind(&graph("specs/cifar/resnet20.rn"), "mem").unwrap();
}

fn mismatch(w: resnetc::weights::Weights) -> String {
    match w.bind(&graph("specs/cifar/resnet20.rn"), "w.safetensors") {
        Ok(_) => panic!("bound"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_problem_is_listed_at_once() {
    let mut w = r20_weights();
    // One missing, one unexpected, one of the wrong shape.
    let mut kept = resnetc::weights::Weights::default();
    for (k, t) in w.iter() {
        if k == "fc.bias" {
            continue;
        }
        if k == "fc.weight" {
            kept.insert(k.clone(), ndarray::ArrayD::zeros(vec![100, 64]));
            continue;
        }
        kept.insert(k.clone(), t.clone());
    }
    kept.insert("head.weight".into(), ndarray::ArrayD::zeros(vec![3]));
    w = kept;
    let msg = mismatch(w);
    assert!(msg.contains("do not fit network `resnet20`"), "{msg}");
    assert!(msg.contains("missing (1):\n    fc.bias [10]"), "{msg}");
    assert!(
        msg.contains("unexpected (1):\n    head.weight [3]"),
        "{msg}"
    );
    assert!(
        msg.contains("fc.weight: expected [10, 64], found [100, 64]"),
        "{msg}"
    );
    assert!(msg.lines().count() < 25, "fits a screen");
}

/// A safetensors file with one tensor in a dtype we do not compute in.
fn with_int_tensor() -> Vec<u8> {
    let w = r20_weights();
    let mut raw: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = w
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.shape().to_vec(),
                t.iter().flat_map(|v| v.to_le_bytes()).collect(),
                safetensors::Dtype::F32,
            )
        })
        .collect();
    for r in &mut raw {
        if r.0 == "conv1.weight" {
            r.3 = safetensors::Dtype::I32;
        }
    }
    raw.push((
        "bn1.num_batches_tracked".into(),
        vec![],
        7i64.to_le_bytes().to_vec(),
        safetensors::Dtype::I64,
    ));
    let views: Vec<(&str, safetensors::tensor::TensorView)> = raw
        .iter()
        .map(|(k, s, b, d)| {
            (
                k.as_str(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn wrong_dtype_is_named_and_batch_counters_are_ignored() {
    let w = file::from_bytes(&with_int_tensor(), "w.safetensors").unwrap();
    let msg = mismatch(w);
    assert!(
        msg.contains("wrong dtype (1):\n    conv1.weight: expected F32, F16 or BF16, found I32"),
        "{msg}"
    );
    assert!(!msg.contains("missing"), "{msg}");
    assert!(!msg.contains("num_batches_tracked"), "{msg}");
}

#[test]
fn half_precision_files_load() {
    let w = r20_weights();
    for dtype in [safetensors::Dtype::F16, safetensors::Dtype::BF16] {
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> = w
            .iter()
            .map(|(k, t)| {
                let bytes = t
                    .iter()
                    .flat_map(|&v| match dtype {
                        safetensors::Dtype::F16 => half::f16::from_f32(v).to_le_bytes(),
                        _ => half::bf16::from_f32(v).to_le_bytes(),
                    })
                    .collect();
                (k.clone(), t.shape().to_vec(), bytes)
            })
            .collect();
        let views: Vec<_> = raw
            .iter()
            .map(|(k, s, b)| {
                (
                    k.as_str(),
                    safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap(),
                )
            })
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        let back = file::from_bytes(&bytes, "half").unwrap();
        let a = w.get("layer2.0.conv1.weight").unwrap();
        let b = back.get("layer2.0.conv1.weight").unwrap();
        let tol = if dtype == safetensors::Dtype::F16 {
            1e-3
        } else {
            1e-2
        };
        for (x, y) in a.iter().zip(b.iter()) {
            assert!(
                (x - y).abs() <= tol * (1.0 + x.abs()),
                "{dtype:?}: {x} vs {y}"
            );
        }
        back.bind(&graph("specs/cifar/resnet20.rn"), "half")
            .unwrap();
    }
}

#[test]
fn truncated_and_foreign_files_are_errors() {
    let bytes = file::to_bytes(&r20_weights()).unwrap();
    for (what, data) in [
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("header only", bytes[..40].to_vec()),
        ("empty", Vec::new()),
        ("text", b"not a safetensors file at all".to_vec()),
    ] {
        match file::from_bytes(&data, "w.safetensors") {
            Err(WeightError::Corrupt { reason, .. }) => assert!(!reason.is_empty(), "{what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(matches!(
        file::load(std::path::Path::new("no/such.safetensors")),
        Err(WeightError::Io { .. })
    ));
}

/// The same failures through the CLI: one screen, non-zero exit.
#[test]
fn cli_rejects_bad_weights() {
    let dir = std::env::temp_dir().join(format!("resnetc-weights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let x = dir.join("x.npy");
    resnetc::io::npy::write(&x, &ndarray::ArrayD::zeros(vec![1, 3, 32, 32])).unwrap();
    let good = dir.join("good.safetensors");
    file::save(&r20_weights(), &good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            bytes[..bytes.len() - 100].to_vec(),
            "is not a readable safetensors file",
        ),
        (
            "foreign",
            b"GIF89a".to_vec(),
            "is not a readable safetensors file",
        ),
        ("dtype", with_int_tensor(), "wrong dtype (1)"),
    ];
    for (name, data, expect) in cases {
        let p = dir.join(format!("{name}.safetensors"));
        std::fs::write(&p, data).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_resnetc"))
            .current_dir(common::root())
            .args(["run", "specs/cifar/resnet20.rn", "--weights"])
            .arg(&p)
            .arg("--input")
            .arg(&x)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(expect), "{name}: {err}");
        assert!(err.lines().count() < 25, "{name}: {err}");
    }
    // Weights of another network: a resnet32 file for resnet20.
    let other = dir.join("r32.safetensors");
    file::save(
        &init::init(
            &graph("specs/cifar/resnet32.rn"),
            init::InitOptions::default(),
        ),
        &other,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .current_dir(common::root())
        .args(["run", "specs/cifar/resnet20.rn", "--weights"])
        .arg(&other)
        .arg("--input")
        .arg(&x)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("unexpected (60)"), "{err}");
    assert!(err.contains("... and 52 more"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
