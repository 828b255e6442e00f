//! The paper's test-time protocol and `resnetc eval`: views against
//! torchvision's (tests/golden/tta.py), networks at any input size on every
//! backend, one compile per input shape, and exact counts over a generated
//! labelled folder with corrupt files.

mod common;

use std::path::Path;
use std::process::Command;

use resnetc::backend;
use resnetc::eval::{scores, tta, Networks};
use resnetc::io::{image, npy};
use resnetc::weights::init;

fn resnet18_weights() -> resnetc::weights::Weights {
    let g = common::compile(&common::root().join("specs/resnet18.rn"));
    init::init(
        &g,
        init::InitOptions {
            seed: 11,
            randomize_bn: true,
        },
    )
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Ten-crop, multi-scale and flipped full-image scores equal torchvision's
/// pipelines on the same network, within the resize filter's difference
/// (resnetc's --image is measured at a mean of 0.01 normalized units).
#[test]
fn test_time_views_match_torchvision() {
    let b = backend::by_name("jit", &Default::default()).unwrap();
    let spec = common::root().join("specs/resnet18.rn");
    let img = image::read(&common::root().join("tests/golden/image/photo.png")).unwrap();
    let pp = Default::default();
    for (mode, flip, golden) in [
        (tta::Mode::TenCrop, false, "ten_crop"),
        (tta::Mode::MultiScale(vec![224, 256]), false, "multi_scale"),
        (tta::Mode::Full(160), true, "full_flip"),
    ] {
        let views = tta::views(&img, &mode, flip, &pp).unwrap();
        let mut nets = Networks::new(
            &spec,
            resnet18_weights(),
            b.as_ref(),
            Default::default(),
            10,
        );
        let got = scores(&mut nets, &[views]).unwrap().remove(0);
        let want =
            npy::read(&common::root().join(format!("tests/golden/tta/{golden}.npy"))).unwrap();
        let want = want.as_slice().unwrap();
        let err = max_abs(&got, want);
        let peak = want.iter().fold(0.0f32, |m, &v| m.max(v));
        println!("{golden}: max |resnetc - torchvision| {err:.2e} (largest score {peak:.3e})");
        assert!(
            (got.iter().sum::<f32>() - 1.0).abs() < 1e-4,
            "scores sum to 1"
        );
        assert!(
            err <= 0.02 * peak,
            "{golden}: {err:e} against a largest score of {peak:e}"
        );
        let top = |v: &[f32]| resnetc::eval::ranked(v)[0];
        assert_eq!(top(&got), top(want), "{golden}: top-1");
    }
}

/// Identical non-square input tensors give the same logits on every
/// backend this machine runs (the CUDA one is checked emulated in
/// tests/cuda.rs).
#[test]
fn non_square_inputs_agree_on_every_backend() {
    let spec = common::root().join("specs/resnet18.rn");
    for (h, w) in [(96, 128), (120, 160)] {
        let x = ndarray::ArrayD::from_shape_fn(vec![2, 3, h, w], |d| {
            ((d[0] * 3 + d[1] * 131 + d[2] * 31 + d[3] * 17) % 97) as f32 / 48.0 - 1.0
        });
        let mut got = Vec::new();
        for name in ["interp", "jit"] {
            let b = backend::by_name(name, &Default::default()).unwrap();
            let mut nets =
                Networks::new(&spec, resnet18_weights(), b.as_ref(), Default::default(), 2);
            got.push(nets.logits(&x).unwrap());
        }
        let scale = got[0].iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = max_abs(got[1].as_slice().unwrap(), got[0].as_slice().unwrap()) / scale;
        assert!(err <= 1e-4, "3x{h}x{w}: jit vs interp {err:e}");
    }
}

fn resnetc(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A network that predicts an image's dominant colour, a folder whose
/// errors are known, three corrupt files and three image sizes.
fn colour_folder(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("colour.rn"),
        "network colour {\n  input 3x8x8 { resize = 8  crop = 8 }\n  head {\n    avgpool: global_avg_pool\n    flatten\n    fc: fc(3)\n    softmax\n  }\n}\n",
    )
    .unwrap();
    // fc = 10 x identity: the class is the channel with the largest mean.
    let mut w = resnetc::weights::Weights::default();
    let eye = ndarray::Array2::<f32>::eye(3) * 10.0;
    w.insert("fc.weight".into(), eye.into_dyn());
    w.insert("fc.bias".into(), ndarray::ArrayD::zeros(vec![3]));
    resnetc::weights::file::save(&w, &dir.join("colour.safetensors")).unwrap();
    let colours = [
        ("a_red", [255u8, 0, 0]),
        ("b_green", [0, 255, 0]),
        ("c_blue", [0, 0, 255]),
    ];
    for (c, (name, rgb)) in colours.iter().enumerate() {
        let d = dir.join("data").join(name);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..10u32 {
            // The first two of each class have the next class's colour.
            let col = if i < 2 { colours[(c + 1) % 3].1 } else { *rgb };
            let (w, h) = [(8, 8), (12, 8), (8, 16)][i as usize % 3];
            let img = ::image::RgbImage::from_pixel(w, h, ::image::Rgb(col));
            img.save(d.join(format!("{i:02}.png"))).unwrap();
        }
        std::fs::write(d.join("corrupt.jpg"), b"\xff\xd8\xff not a jpeg").unwrap();
        std::fs::write(d.join("notes.txt"), b"not an image: ignored").unwrap();
    }
}

#[test]
fn eval_counts_a_folder_exactly_and_compiles_once_per_shape() {
    let dir = std::env::temp_dir().join(format!("resnetc-eval-{}", std::process::id()));
    colour_folder(&dir);
    let args = [
        "eval",
        "colour.rn",
        "--weights",
        "colour.safetensors",
        "data",
        "--json",
    ];
    let (code, out, err) = resnetc(&args, &dir);
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["images"], 30, "{out}");
    assert_eq!(j["failed"], 3, "{out}");
    assert!(
        (j["top1_error"].as_f64().unwrap() - 0.2).abs() < 1e-12,
        "{out}"
    );
    assert_eq!(j["top5_error"].as_f64().unwrap(), 0.0, "{out}");
    assert_eq!(j["networks_compiled"], 1, "center crops: one shape");
    assert_eq!(err.matches("corrupt.jpg").count(), 3, "each named: {err}");
    // The whole image at shorter side 8: three sizes, three networks.
    let (code, out, err) = resnetc(
        &[&args[..], &["--tta", "full=8", "--predictions", "p.csv"]].concat(),
        &dir,
    );
    assert_eq!(code, 0, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["networks_compiled"], 3, "{out}");
    assert!(
        (j["top1_error"].as_f64().unwrap() - 0.2).abs() < 1e-12,
        "{out}"
    );
    let csv = std::fs::read_to_string(dir.join("p.csv")).unwrap();
    assert_eq!(csv.lines().count(), 31, "a header and a row an image");
    assert!(csv.contains("data/a_red/00.png,0,1,"), "{csv}");
    // --limit, a labels file, --strict.
    std::fs::write(dir.join("labels.txt"), "a_red/05.png 0\nb_green/05.png 2\n").unwrap();
    let (code, out, _) = resnetc(&[&args[..], &["--labels", "labels.txt"]].concat(), &dir);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (j["images"].as_u64(), j["top1_error"].as_f64()),
        (Some(2), Some(0.5))
    );
    let (code, _, err) = resnetc(&[&args[..], &["--strict"]].concat(), &dir);
    assert_eq!(
        code, 1,
        "--strict stops at the first unreadable image: {err}"
    );
    assert!(err.contains("corrupt.jpg"), "{err}");
    let (code, _, _) = resnetc(&[&args[..], &["--tta", "sideways"]].concat(), &dir);
    assert_eq!(code, 2, "a bad mode is a usage error");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_with_ten_crop_writes_averaged_scores() {
    let dir = std::env::temp_dir().join(format!("resnetc-tta-{}", std::process::id()));
    colour_folder(&dir);
    let (code, out, err) = resnetc(
        &[
            "run",
            "colour.rn",
            "--weights",
            "colour.safetensors",
            "--image",
            "data/b_green/03.png",
            "data/c_blue/04.png",
            "--tta",
            "ten-crop",
            "--output",
            "s.npy",
            "--top",
            "1",
        ],
        &dir,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("10 views each"), "{err}");
    let s = npy::read(&dir.join("s.npy")).unwrap();
    assert_eq!(s.shape(), &[2, 3]);
    for row in s.outer_iter() {
        assert!((row.sum() - 1.0).abs() < 1e-5, "averaged softmax scores");
    }
    assert!(out.contains("b_green"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
