//! The command line as a user meets it: exit codes, output and artifacts.

mod common;

use std::process::Command;

fn resnetc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .args(args)
        .current_dir(common::root())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_passes_on_every_spec() {
    let specs: Vec<String> = common::all_specs()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut args = vec!["check"];
    args.extend(specs.iter().map(String::as_str));
    let (code, out, err) = resnetc(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok")).count(),
        specs.len()
    );
}

#[test]
fn check_fails_with_location_and_nonzero_exit() {
    let (code, _, err) = resnetc(&[
        "check",
        "specs/resnet18.rn",
        "tests/diagnostics/unknown_op.rn",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("tests/diagnostics/unknown_op.rn:5:10"),
        "{err}"
    );
    assert!(err.contains("did you mean `basic`?"), "{err}");
    assert!(err.contains("1 of 2 specs failed"), "{err}");
}

#[test]
fn compile_writes_artifacts_and_prints_a_summary() {
    let dir = std::env::temp_dir().join(format!("resnetc-cli-{}", std::process::id()));
    let d = dir.display().to_string();
    let (code, out, err) = resnetc(&[
        "compile",
        "specs/resnet152.rn",
        "-o",
        &d,
        "--emit",
        "ir,yaml,dot",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("depth 152"), "{out}");
    assert!(out.contains("60,192,808"), "{out}");
    assert!(out.contains("11,282,415,616"), "{out}");
    for ext in ["ir", "yaml", "dot"] {
        let p = dir.join(format!("resnet152.{ext}"));
        assert!(
            std::fs::metadata(&p).unwrap().len() > 1000,
            "{}",
            p.display()
        );
    }
    let yaml = std::fs::read_to_string(dir.join("resnet152.yaml")).unwrap();
    assert!(
        yaml.contains("source: specs/resnet152.rn:"),
        "spans reach the YAML"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compile_to_stdout_with_batch_and_input() {
    let (code, out, err) = resnetc(&[
        "compile",
        "specs/cifar/resnet20.rn",
        "-o",
        "-",
        "--batch",
        "8",
        "--input",
        "3x64x64",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("network resnet20  # 8x3x64x64 -> 8x10"),
        "{out}"
    );
}

#[test]
fn bad_flags_are_errors() {
    let (code, _, err) = resnetc(&["compile", "specs/resnet18.rn", "--input", "3x224"]);
    assert_eq!(code, 2);
    assert!(err.contains("expected CxHxW"), "{err}");
    let (code, _, err) = resnetc(&["compile", "specs/resnet18.rn", "--batch", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = resnetc(&["compile", "specs/nope.rn"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read spec `specs/nope.rn`"), "{err}");
}

#[test]
fn init_then_run_on_images_prints_top5_with_names() {
    let dir = std::env::temp_dir().join(format!("resnetc-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = dir.join("r18.safetensors");
    let w = w.to_str().unwrap();
    let (code, out, err) = resnetc(&["init", "specs/resnet18.rn", "-o", w, "--seed", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("102 tensors"), "{out}");
    let y = dir.join("y.npy");
    let (code, out, err) = resnetc(&[
        "run",
        "specs/resnet18.rn",
        "--weights",
        w,
        "--image",
        "tests/golden/image/photo.jpg",
        "tests/golden/image/photo.png",
        "--output",
        y.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    // Two images, a header line and five classes each, with ImageNet names.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 12, "{out}");
    assert_eq!(lines[0], "tests/golden/image/photo.jpg");
    assert!(lines[1].contains('%'), "{out}");
    let names = resnetc::io::IMAGENET_CLASSES;
    assert!(
        lines[1..6]
            .iter()
            .all(|l| names.lines().any(|n| l.ends_with(n))),
        "{out}"
    );
    let logits = resnetc::io::npy::read(&y).unwrap();
    assert_eq!(logits.shape(), &[2, 1000]);
    // Missing image: a clear error, nothing run.
    let (code, _, err) = resnetc(&[
        "run",
        "specs/resnet18.rn",
        "--weights",
        w,
        "--image",
        "nope.jpg",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read image `nope.jpg`"), "{err}");
    // Neither --input nor --image.
    let (code, _, err) = resnetc(&["run", "specs/resnet18.rn", "--weights", w]);
    assert_eq!(code, 2, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `resnetc` with extra environment variables.
fn resnetc_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(common::root())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_backend_runs_by_name_and_bad_choices_are_usage_errors() {
    let dir = std::env::temp_dir().join(format!("resnetc-backends-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = dir.join("r20.safetensors");
    let w = w.to_str().unwrap();
    let (code, _, err) = resnetc(&["init", "specs/cifar/resnet20.rn", "-o", w]);
    assert_eq!(code, 0, "{err}");
    let x = dir.join("x.npy");
    let input = ndarray::ArrayD::from_shape_fn(vec![2, 3, 32, 32], |d| (d[3] % 7) as f32 / 7.0);
    resnetc::io::npy::write(&x, &input).unwrap();
    let x = x.to_str().unwrap();
    let mut tops = Vec::new();
    for b in resnetc::backend::names() {
        let (code, out, err) = resnetc(&[
            "run",
            "specs/cifar/resnet20.rn",
            "--weights",
            w,
            "--input",
            x,
            "--backend",
            b,
            "--top",
            "1",
        ]);
        if b == "cuda" && resnetc::backend::cuda::device::available().is_err() {
            // No GPU here: a clean error that says what is missing.
            assert_eq!(code, 1, "{err}");
            assert!(err.contains("backend `cuda`: no "), "{err}");
            continue;
        }
        assert_eq!(code, 0, "{b}: {err}");
        assert!(err.contains(&format!("({b} backend)")), "{err}");
        tops.push(out);
    }
    assert!(tops.windows(2).all(|t| t[0] == t[1]), "{tops:?}");
    let run = |extra: &[&str]| {
        let mut a = vec![
            "run",
            "specs/cifar/resnet20.rn",
            "--weights",
            w,
            "--input",
            x,
        ];
        a.extend_from_slice(extra);
        resnetc(&a)
    };
    // bf16: the same top-1 as f32 where the CPU has AVX512_BF16, and
    // `bench` says how many convs took it; elsewhere a usage error naming it.
    let (code, out, err) = run(&["--precision", "bf16", "--top", "1"]);
    if resnetc::backend::jit::kernels::has_bf16_dot() {
        assert_eq!(code, 0, "{err}");
        // The classes, not their probabilities (bf16 moves those a little).
        let classes = |o: &str| -> Vec<String> {
            o.lines()
                .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
                .collect()
        };
        assert_eq!(classes(&out), classes(&tops[0]), "{out}");
        let (code, out, err) = resnetc(&[
            "bench",
            "specs/cifar/resnet20.rn",
            "--precision",
            "bf16",
            "--iters",
            "1",
        ]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("bf16 dot products in 19 of 19 convs"), "{out}");
    } else {
        println!("bf16 runs skipped: this CPU lacks AVX512_BF16");
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("AVX512_BF16"), "{err}");
    }
    let (code, _, err) = run(&["--backend", "tpu"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["--kernels", "neon"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no kernel set `neon`"), "{err}");
    let (code, _, err) = run(&["--conv-strategy", "fft"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("no conv strategy `fft`: expected one of blocked"),
        "{err}"
    );
    // A kernel task that panics: an error at the value, exit 1, no hang.
    let (code, _, err) = resnetc_env(
        &[
            "run",
            "specs/cifar/resnet20.rn",
            "--weights",
            w,
            "--input",
            x,
        ],
        &[("RESNETC_TEST_FAULT", "layer2.1.conv1")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("run (jit): `layer2.1.conv1`: a kernel panicked"),
        "{err}"
    );
    assert!(err.contains("specs/cifar/resnet20.rn:"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn clif_is_emitted_without_weights() {
    let (code, out, err) = resnetc(&[
        "compile",
        "specs/resnet50.rn",
        "--emit",
        "clif",
        "--kernels",
        "avx2",
        "-o",
        "-",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("; resnet50: 57 steps, kernel set avx2, channel-blocked maps"),
        "{out}"
    );
    assert!(out.contains("function u0:0(i64, i64) system_v"), "{out}");
}

/// An `.npy` file from a header text and raw data.
fn npy_file(path: &std::path::Path, header: &str, data: &[u8]) {
    let mut h = header.to_string();
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(h.len() as u16).to_le_bytes());
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(data);
    std::fs::write(path, v).unwrap();
}

/// Whatever is wrong with what a user gives, the exit code is 1 (what was
/// given) or 2 (how it was asked), with a message, never a panic or a signal.
#[test]
fn exit_codes_are_one_for_bad_input_and_two_for_bad_usage() {
    let dir = std::env::temp_dir().join(format!("resnetc-exits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = |f: &str| dir.join(f).display().to_string();
    let w = p("w.safetensors");
    assert_eq!(resnetc(&["init", "specs/cifar/resnet20.rn", "-o", &w]).0, 0);
    npy_file(
        &dir.join("empty.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (2147483648, 7, 2, 0), }",
        &[],
    );
    npy_file(
        &dir.join("short.npy"),
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 32, 32), }",
        &[0; 64],
    );
    npy_file(
        &dir.join("ints.npy"),
        "{'descr': '<i8', 'fortran_order': False, 'shape': (1,), }",
        &[0; 8],
    );
    std::fs::write(dir.join("junk.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(
        dir.join("bad.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage",
    )
    .unwrap();
    let run = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["run", "specs/cifar/resnet20.rn", "--weights", &w]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            run(&["--input", &p("empty.npy")]),
            1,
            "every dimension at least 1",
        ),
        (
            run(&["--input", &p("short.npy")]),
            1,
            "needs 12288 bytes of data, found 64",
        ),
        (run(&["--input", &p("ints.npy")]), 1, "'<i8'"),
        (run(&["--input", &p("nope.npy")]), 1, "cannot read"),
        (run(&["--image", &p("junk.png")]), 1, "cannot read image"),
        (
            vec![
                "run".into(),
                "specs/cifar/resnet20.rn".into(),
                "--weights".into(),
                p("bad.safetensors"),
                "--image".into(),
                "tests/golden/image/photo.png".into(),
            ],
            1,
            "not a readable safetensors",
        ),
        (
            vec![
                "run".into(),
                "specs/resnet18.rn".into(),
                "--weights".into(),
                w.clone(),
                "--image".into(),
                "tests/golden/image/photo.png".into(),
            ],
            1,
            "do not fit network",
        ),
        (
            vec!["check".into(), "tests/diagnostics/unknown_op.rn".into()],
            1,
            "unknown_op.rn:5:10",
        ),
        (
            vec![
                "bench".into(),
                "specs/cifar/resnet20.rn".into(),
                "--batch".into(),
                "100000".into(),
                // 13.4 GiB: refused on a machine with less free; pin the
                // budget so the test does not depend on this one's.
                "--max-memory".into(),
                "8G".into(),
            ],
            1,
            "the largest batch that fits is",
        ),
        (
            vec![
                "bench".into(),
                "specs/cifar/resnet20.rn".into(),
                "--input".into(),
                "3x60000x60000".into(),
            ],
            1,
            "",
        ),
        (
            run(&["--input", &p("empty.npy"), "--max-memory", "lots"]),
            2,
            "expected a size",
        ),
        (
            run(&["--input", &p("empty.npy"), "--frobnicate"]),
            2,
            "unexpected argument",
        ),
        (
            vec![
                "bench".into(),
                "specs/cifar/resnet20.rn".into(),
                "--batch".into(),
                "0".into(),
            ],
            2,
            "",
        ),
        (
            vec![
                "compile".into(),
                "specs/cifar/resnet20.rn".into(),
                "--emit".into(),
                "cuda".into(),
                "--precision".into(),
                "fp4".into(),
                "-o".into(),
                p("o"),
            ],
            2,
            "no precision `fp4`",
        ),
    ];
    for (args, want, says) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = resnetc(&a);
        assert_eq!(code, want, "{a:?}: {err}");
        assert!(err.contains(says), "{a:?}: {err}");
        assert!(!err.contains("panicked"), "{a:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_finite_logits_are_warned_of_and_traced_to_their_value() {
    let dir = std::env::temp_dir().join(format!("resnetc-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let g = common::compile(&common::root().join("specs/cifar/resnet20.rn"));
    let mut w = resnetc::weights::init::init(&g, Default::default());
    let key = "layer2.1.conv1.weight";
    let mut t = w.get(key).unwrap().clone();
    t[[3, 2, 1, 1]] = f32::NAN;
    w.insert(key.into(), t);
    let wp = dir.join("nan.safetensors");
    resnetc::weights::file::save(&w, &wp).unwrap();
    let wp = wp.display().to_string();
    let run = [
        "run",
        "specs/cifar/resnet20.rn",
        "--weights",
        &wp,
        "--image",
        "tests/golden/image/photo.png",
        "--top",
        "1",
    ];
    let (code, _, err) = resnetc(&run);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning: 10 of 10 logits are not finite"),
        "{err}"
    );
    assert!(err.contains("--check-finite"), "{err}");
    let mut traced = run.to_vec();
    traced.push("--check-finite");
    let (code, _, err) = resnetc(&traced);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("`layer2.1.conv1`: the first value to become non-finite"),
        "{err}"
    );
    assert!(
        err.contains("<prelude>:10"),
        "points at the block's conv1: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `resnetc compile ... -o - | head -1`: the reader leaves early; resnetc
/// ends quietly with 0, not with a panic and 101.
#[test]
fn a_closed_pipe_ends_quietly() {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_resnetc"))
        // 500 KB of IR and YAML: far past what a pipe buffers.
        .args([
            "compile",
            "specs/cifar/resnet1202.rn",
            "-o",
            "-",
            "--emit",
            "ir,yaml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("network resnet1202"), "{first}");
    // The pipe's read end is dropped here.
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
