//! The JIT against the reference interpreter, through the backend
//! interface: every spec and example, every optimization level, every kernel
//! set this machine runs, random conv shapes, NaN and Inf, a panicking task,
//! and the generated code as text.

mod common;

use std::time::{Duration, Instant};

use ndarray::ArrayD;
use proptest::prelude::*;
use resnetc::backend::{self, jit, Executable, Options, Program, Strategy};
use resnetc::ir::{Graph, Stage};
use resnetc::lower::{compile_source, Options as BuildOptions};
use resnetc::syntax::SourceMap;

fn input_for(g: &Graph) -> ArrayD<f32> {
    ArrayD::from_shape_fn(g.input_shape().dims().to_vec(), |d| {
        ((d[0] * 31 + d[1] * 17 + d[2] * 7 + d[3] * 3) % 23) as f32 / 11.0 - 1.0
    })
}

/// max |a - b| / max |b|
fn rel(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter()
        .zip(b.iter())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

/// The kernel sets this machine runs, best first.
fn kernel_sets() -> Vec<&'static str> {
    jit::kernels::available().iter().map(|k| k.name).collect()
}

/// `p` compiled on the JIT with these options.
fn compiled(p: &Program, opts: Options) -> Box<dyn Executable> {
    let b = backend::by_name("jit", &opts).expect("the jit backend");
    b.compile(p).unwrap_or_else(|e| panic!("{e}"))
}

fn with_kernels(kernels: &str, threads: usize) -> Options {
    Options {
        kernels: Some(kernels.into()),
        threads,
        ..Default::default()
    }
}

/// How many of a compiled network's convs run with strategy `s`.
fn convs_with(c: &dyn Executable, s: Strategy) -> usize {
    c.steps()
        .iter()
        .filter(|i| i.op == "conv2d" && i.strategy == s)
        .count()
}

/// Convs that run direct on blocked maps, in f32: the blocked tiles or
/// the slide ones.
fn blocked_f32(c: &dyn Executable) -> usize {
    convs_with(c, Strategy::Blocked) + convs_with(c, Strategy::BlockedSlide)
}

/// Convs that run as Winograd, either tile.
fn winograds(c: &dyn Executable) -> usize {
    convs_with(c, Strategy::Winograd) + convs_with(c, Strategy::WinogradF2)
}

#[test]
fn every_kernel_set_the_host_has_is_tested() {
    let sets = kernel_sets();
    assert!(sets.contains(&"portable"), "{sets:?}");
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        assert!(sets.contains(&"avx2"), "{sets:?}");
    }
    println!("kernel sets run here: {}", sets.join(", "));
}

/// A spec at `batch`, its input cut to 64x64 (ImageNet nets) or `cifar`
/// pixels a side (the others), to keep the tests quick.
fn small(path: &std::path::Path, batch: usize, cifar: usize) -> Graph {
    let full = common::compile(path);
    let size = if full.input_shape().height() >= 224 {
        [3, 64, 64]
    } else {
        [3, cifar, cifar]
    };
    common::compile_with(
        path,
        &BuildOptions {
            batch,
            input: Some(size),
        },
    )
}

/// Every other spec and example (the two halves run in parallel): the JIT
/// at -O2 and -O0 on every kernel set against the interpreter.
fn jit_equals_interpreter_on_half_the_specs(half: usize) {
    for path in common::all_specs().into_iter().skip(half).step_by(2) {
        let g = small(&path, 2, 16);
        let x = input_for(&g);
        let (w, want) = common::finite_run(&g, &x, 5);
        for level in [2, 0] {
            let p = common::program(&g, &w, level);
            for (i, ks) in kernel_sets().into_iter().enumerate() {
                // Two threads, and one on the second set: both team paths.
                let threads = if i == 1 { 1 } else { 2 };
                let got = compiled(&p, with_kernels(ks, threads)).run(&x).unwrap();
                let err = rel(&got, &want);
                assert!(err <= 1e-4, "{} -O{level} {ks}: {err:e}", path.display());
            }
        }
    }
}

#[test]
fn jit_equals_interpreter_on_every_spec_first_half() {
    jit_equals_interpreter_on_half_the_specs(0);
}

#[test]
fn jit_equals_interpreter_on_every_spec_second_half() {
    jit_equals_interpreter_on_half_the_specs(1);
}

/// The fc runs as GEMVs up to batch 8 and as a GEMM past it: ResNet-18 at
/// 32x32 at batches on either side, every set, against the interpreter.
#[test]
fn the_fc_agrees_as_gemvs_and_as_a_gemm() {
    let path = common::root().join("specs/resnet18.rn");
    for (batch, how) in [
        (1, Strategy::Gemv),
        (8, Strategy::Gemv),
        (9, Strategy::Gemm),
    ] {
        let g = common::compile_with(
            &path,
            &BuildOptions {
                batch,
                input: Some([3, 32, 32]),
            },
        );
        let x = input_for(&g);
        let (w, want) = common::finite_run(&g, &x, 5);
        let p = common::program(&g, &w, 2);
        for ks in kernel_sets() {
            let mut c = compiled(&p, with_kernels(ks, 2));
            let fc: Vec<_> = c
                .steps()
                .iter()
                .filter(|i| i.op == "linear")
                .map(|i| i.strategy)
                .collect();
            assert_eq!(fc, [how], "batch {batch} {ks}");
            let err = rel(&c.run(&x).unwrap(), &want);
            assert!(err <= 1e-4, "batch {batch} {ks}: {err:e}");
        }
    }
}

#[test]
fn a_forced_strategy_gives_the_same_result() {
    let g = common::compile_with(
        &common::root().join("specs/resnet50.rn"),
        &BuildOptions {
            batch: 1,
            input: Some([3, 64, 64]),
        },
    );
    let x = input_for(&g);
    let (w, want) = common::finite_run(&g, &x, 5);
    let p = common::program(&g, &w, 2);
    for ks in kernel_sets() {
        for (forced, s) in [
            ("im2col", Strategy::Im2col),
            ("strided-1x1", Strategy::Strided1x1),
            ("direct-1x1", Strategy::Direct1x1),
            ("blocked", Strategy::Blocked),
            ("winograd", Strategy::Winograd),
            ("winograd-f2", Strategy::WinogradF2),
        ] {
            let opts = Options {
                conv_strategy: Some(forced.into()),
                ..with_kernels(ks, 2)
            };
            let mut c = compiled(&p, opts);
            // Forced where eligible: every conv for im2col, every 1x1 for
            // strided-1x1, the stride-1 ones for direct-1x1 (planar maps,
            // the other convs by the rules), all of them for blocked, the
            // 16 stride-1 3x3s for winograd (the paper's net strides on the 1x1).
            let want_used = match forced {
                "strided-1x1" => 36,
                "winograd" | "winograd-f2" => 16,
                // 16 expands, 13 reduces (three have stride 2 here), layer1's projection.
                "direct-1x1" => 30,
                _ => 53,
            };
            assert_eq!(convs_with(c.as_ref(), s), want_used, "{ks} {forced}");
            assert!(rel(&c.run(&x).unwrap(), &want) <= 1e-4, "{ks} {forced}");
        }
    }
}

/// Winograd forced on every spec and example, ResNet-152 included, on the
/// best kernel set, with either tile: within 1e-4 of the interpreter. (The
/// unit tests and the proptest run every set.)
#[test]
fn winograd_equals_interpreter_on_every_spec() {
    let best = kernel_sets()[0];
    for path in common::all_specs() {
        let g = small(&path, 1, 32);
        let x = input_for(&g);
        let (w, want) = common::finite_run(&g, &x, 5);
        let p = common::program(&g, &w, 2);
        for (forced, s) in [
            ("winograd", Strategy::Winograd),
            ("winograd-f2", Strategy::WinogradF2),
        ] {
            let opts = Options {
                conv_strategy: Some(forced.into()),
                ..with_kernels(best, 2)
            };
            let mut c = compiled(&p, opts);
            let err = rel(&c.run(&x).unwrap(), &want);
            let used = convs_with(c.as_ref(), s);
            println!(
                "{} {forced}: {used} Winograd convs, {err:.1e}",
                path.display()
            );
            assert!(err <= 1e-4, "{} {forced}: {err:e}", path.display());
        }
    }
}

/// The cosine of two logit vectors, each row's mean taken out (random
/// weights give every class a common offset, which would flatter it).
fn centred_cosine(a: &[f32], b: &[f32]) -> f64 {
    let centre = |v: &[f32]| {
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        v.iter().map(move |&x| x as f64 - m).collect::<Vec<_>>()
    };
    let (a, b) = (centre(a), centre(b));
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(&a) * norm(&b)).max(1e-300)
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

/// `--precision bf16` on every spec and example (small inputs, two
/// images, He-initialized): each image's top-1 class is the interpreter's
/// (f32), or one of its top two where they are within bf16's rounding of
/// each other, and its logits' cosine to them at least 0.999; every conv on
/// blocked maps, the stem's too, runs bf16 tiles (AMX's where the CPU has
/// them). Skipped, saying so, without AVX512_BF16. (The golden test holds
/// real images to PyTorch's top-1 without exception.)
#[test]
fn bf16_agrees_with_f32_on_every_spec() {
    if !jit::kernels::has_bf16_dot() {
        println!("skipped: this CPU lacks AVX512_BF16 (vdpbf16ps), which --precision bf16 needs");
        return;
    }
    let mut worst = 1.0f64;
    for path in common::all_specs() {
        let g = small(&path, 2, 32);
        let x = input_for(&g);
        let (w, want) = common::finite_run(&g, &x, 5);
        let p = common::program(&g, &w, 2);
        let opts = Options {
            precision: Some("bf16".into()),
            ..with_kernels("avx512", 2)
        };
        let mut c = compiled(&p, opts);
        let got = c.run(&x).unwrap();
        let bf16 = convs_with(c.as_ref(), Strategy::BlockedBf16)
            + convs_with(c.as_ref(), Strategy::BlockedAmx);
        let blocked = blocked_f32(c.as_ref());
        let classes = want.shape()[1];
        let (got, want) = (got.as_slice().unwrap(), want.as_slice().unwrap());
        for i in 0..2 {
            let (a, b) = (
                &got[i * classes..][..classes],
                &want[i * classes..][..classes],
            );
            let cos = centred_cosine(a, b);
            worst = worst.min(cos);
            println!(
                "{} image {i}: cosine {cos:.6}, {bf16} bf16 convs, {blocked} f32",
                path.display()
            );
            assert!(cos >= 0.999, "{}: cosine {cos}", path.display());
            // Top-1 must match unless f32's top two are closer than bf16's
            // rounding (8 bits: 0.4% of a logit), where either may lead.
            let mut top: Vec<(f32, usize)> = b.iter().copied().zip(0..).collect();
            top.sort_by(|x, y| y.0.total_cmp(&x.0));
            let tie = top[0].0 - top[1].0 <= 4e-3 * top[0].0.abs();
            let allowed: &[usize] = if tie {
                &[top[0].1, top[1].1]
            } else {
                &[top[0].1]
            };
            if tie {
                println!("  a near tie: f32's top two {:?}", &top[..2]);
            }
            assert!(
                allowed.contains(&argmax(a)),
                "{}: top-1 {} against f32's top two {:?}",
                path.display(),
                argmax(a),
                &top[..2]
            );
        }
        // On blocked maps, every conv is bf16, the stem (planar input) too.
        assert!(
            bf16 == 0 || blocked == 0,
            "{}: {blocked} f32 convs",
            path.display()
        );
    }
    println!("worst centred cosine {worst:.6}");
}

#[test]
fn an_unknown_option_is_refused_with_the_choices() {
    let bad = |o: Options| {
        backend::by_name("jit", &o)
            .err()
            .expect("refused")
            .to_string()
    };
    let e = bad(Options {
        conv_strategy: Some("fft".into()),
        ..Default::default()
    });
    assert!(
        e.contains("no conv strategy `fft`") && e.contains("winograd"),
        "{e}"
    );
    // bf16 names what it would need: AVX512_BF16, and the set with its tiles.
    if jit::kernels::has_bf16_dot() {
        let e = bad(Options {
            precision: Some("bf16".into()),
            ..with_kernels("avx2", 0)
        });
        assert!(e.contains("`avx2` has no bf16 kernels"), "{e}");
    } else {
        let e = bad(Options {
            precision: Some("bf16".into()),
            ..Default::default()
        });
        assert!(e.contains("AVX512_BF16") && e.contains("runs f32"), "{e}");
    }
    let e = bad(Options {
        precision: Some("fp8".into()),
        ..Default::default()
    });
    assert!(e.contains("`fp8`") && e.contains("f32 or bf16"), "{e}");
    let e = bad(Options {
        kernels: Some("neon".into()),
        ..Default::default()
    });
    assert!(
        e.contains("no kernel set `neon`") && e.contains("portable"),
        "{e}"
    );
    let e = backend::by_name("tpu", &Options::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("no backend `tpu`") && e.contains("jit, interp"),
        "{e}"
    );
}

#[test]
fn blocked_maps_are_chosen_by_their_rule() {
    let rule = |path: &str, level: u8| {
        let m = common::optimized(&common::root().join(path), level);
        jit::strategy::blocked_layout(&Program::lower(m).unwrap())
    };
    for spec in [
        "specs/resnet18.rn",
        "specs/resnet50_v1_5.rn",
        "specs/resnet152.rn",
        // Dilated 3x3s (2 and 4) run direct on blocked maps too.
        "examples/resnet50_dilated.rn",
    ] {
        assert_eq!(rule(spec, 2), Ok(()), "{spec}");
    }
    // Option A's zero-padded shortcut, fused into the conv, runs blocked
    // (the residual is built blocked first).
    assert_eq!(rule("specs/cifar/resnet20.rn", 2), Ok(()));
    assert_eq!(rule("specs/resnet34_a.rn", 2), Ok(()));
    // Unfused batch norms run blocked as scale-shifts: every BN of a
    // pre-activation net, and every BN at -O0.
    assert_eq!(rule("examples/preact_resnet164.rn", 2), Ok(()));
    assert_eq!(rule("specs/resnet50.rn", 0), Ok(()));
    // Grouped convs whose every block of 16 outputs reads whole blocks of
    // inputs run blocked: all of ResNeXt 32x4d's (4 to 32 channels a group).
    assert_eq!(rule("examples/resnext50_32x4d.rn", 2), Ok(()));
    // An unfused option A shortcut runs planar; so does a grouping where a
    // block of outputs reads half a block of inputs (4 in, 8 out a group).
    let why = rule("specs/cifar/resnet20.rn", 1).unwrap_err();
    assert!(why.contains("shortcut_pad"), "{why}");
    let src = tiny_spec(32, 6, 6, 64, 3, 1, 1, 8, "B").replace(
        "  stage layer1",
        "  stem { conv0: conv(32, 1) }\n  stage layer1",
    );
    let mut sources = SourceMap::new();
    let g = compile_source("t.rn", &src, &BuildOptions::default(), &mut sources)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let p = Program::lower(common::prepare(g, None, 2)).unwrap();
    let why = jit::strategy::blocked_layout(&p).unwrap_err();
    assert!(
        why.contains("layer1.0.conv1") && why.contains("grouped"),
        "{why}"
    );
}

#[test]
fn a_projection_stride_is_found_from_either_side() {
    // 1x2 -> 1x1: the height alone says stride 1, the width says 2.
    let src = tiny_spec(3, 1, 2, 16, 3, 2, 1, 1, "B");
    let mut sources = SourceMap::new();
    let g = compile_source("t.rn", &src, &BuildOptions::default(), &mut sources)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
    let strides: Vec<usize> = g
        .order
        .iter()
        .filter(|&&i| g.node(i).name.ends_with("downsample.0"))
        .map(|&i| match g.node(i).op {
            resnetc::ir::Op::Conv2d { stride, .. } => stride,
            _ => 0,
        })
        .collect();
    assert_eq!(strides, vec![2]);
}

/// The JIT's CLIF for a spec at a level, for the AVX-512 set (a listing
/// runs nothing, so any machine can make it).
fn clif(spec: &str, level: u8) -> String {
    let m = common::optimized(&common::root().join(spec), level);
    let p = Program::lower(m).unwrap();
    let opts = Options {
        kernels: Some("avx512".into()),
        ..Default::default()
    };
    let b = backend::by_name("jit", &opts).unwrap();
    b.listing(&p)
        .unwrap()
        .expect("the jit lists its code")
        .text()
        .to_string()
}

#[test]
fn clif_is_emitted_without_weights_and_reads_like_the_network() {
    let text = clif("specs/cifar/resnet20.rn", 2);
    // On blocked maps, 19 convs, the global pool and the fc call kernels.
    // With the AVX-512 set: the 32x32 and 16x16 stages' stride-1 3x3s
    // direct (16 channels: `WINOGRAD_MIN_CHANNELS`; 32: the slide tiles,
    // under `WINOGRAD_SLIDE_F4_TILES`), the 8x8 stage's Winograd F(2x2)
    // (4 F(4x4) tiles, under the set's `f4_min_tiles`), the strided ones
    // direct.
    let body = &text[text.find("function ").unwrap()..];
    assert_eq!(body.matches("call fn").count(), 21, "{text}");
    for (kernel, conv) in [
        ("rt_conv_blocked", "layer1.0.conv1"),
        ("rt_conv_blocked", "layer2.0.conv2"),
        ("rt_conv_blocked", "layer2.1.conv2"),
        ("rt_conv_blocked", "layer2.0.conv1"),
        ("rt_conv_winograd F(2x2)", "layer3.2.conv2"),
        ("rt_conv_blocked", "layer3.0.conv1"),
    ] {
        let line = format!("{kernel} descriptor of `{conv}`");
        assert!(text.contains(&line), "{line}: {text}");
    }
    // Unfused (-O0), the scale-shifts are generated f32x4 loops.
    let o0 = clif("specs/cifar/resnet20.rn", 0);
    assert!(o0.contains("f32x4"), "{o0}");
    // Names and table slots, no addresses: the same text every time.
    assert_eq!(text, clif("specs/cifar/resnet20.rn", 2));
}

#[test]
fn clif_snapshots() {
    for (spec, name) in [
        ("specs/cifar/resnet20.rn", "resnet20"),
        ("specs/resnet50.rn", "resnet50"),
    ] {
        for level in [0, 2] {
            insta::assert_snapshot!(format!("clif_{name}_O{level}"), clif(spec, level));
        }
    }
}

/// A conv + bias + residual + ReLU block whose input holds NaN and both
/// infinities, on every path: blocked maps (16 channels) and planar maps
/// (option A's padded residual, 8 channels), on every kernel set.
#[test]
fn nan_and_inf_follow_pytorch_on_every_path() {
    let block = "block b(planes, stride = 1) {
  conv1: conv(planes, 3, stride = stride, pad = 1)
  bn1: bn
  relu
  conv2: conv(planes, 3, pad = 1)
  bn2: bn
  add shortcut
  relu
}";
    for (channels, shortcut, path) in [(16, "B", Strategy::Blocked), (8, "A", Strategy::Im2col)] {
        let src = format!(
            "{block}\nnetwork t {{\n  input 3x9x9\n  shortcut {shortcut}\n  stem {{ conv1: conv({channels}, 3, pad = 1) bn1: bn relu }}\n  stage layer1: b({channels}) x 1\n  stage layer2: b({}) x 1 stride 2\n  head {{ max_pool(2) global_avg_pool flatten fc: fc(4) }}\n}}",
            2 * channels
        );
        let mut sources = SourceMap::new();
        let g = compile_source("t.rn", &src, &BuildOptions::default(), &mut sources)
            .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)));
        let mut x = input_for(&g);
        x[[0, 0, 1, 1]] = f32::NAN;
        x[[0, 1, 7, 7]] = f32::INFINITY;
        x[[0, 2, 4, 0]] = f32::NEG_INFINITY;
        let w = resnetc::weights::init::init(
            &g,
            resnetc::weights::init::InitOptions {
                seed: 3,
                randomize_bn: true,
            },
        );
        let b = w.clone().bind(&g, "init").unwrap();
        // The oracle's map after the stem, and its logits.
        let stem = g.find("relu").unwrap();
        let want = resnetc::backend::interp::run(&g, &b, x.clone(), &[stem, g.logits()]).unwrap();
        // PyTorch's semantics: a NaN in a window is NaN after the conv and
        // the ReLU (not 0), and NaN reaches the logits through the pools.
        assert!(want[0][[0, 0, 1, 1]].is_nan(), "relu(NaN) is NaN");
        assert!(want[1].iter().all(|v| v.is_nan()), "{}", want[1]);
        for level in [2, 0] {
            let p = common::program(&g, &w, level);
            for ks in kernel_sets() {
                let mut c = compiled(&p, with_kernels(ks, 2));
                if level == 2 {
                    assert!(convs_with(c.as_ref(), path) > 0, "{ks} {path:?}");
                }
                let got = c.run(&x).unwrap();
                assert!(
                    got.iter().all(|v| v.is_nan()),
                    "-O{level} {ks} {path:?}: {got}"
                );
            }
        }
        // bf16 (AMX's tiles where the CPU has them) keeps NaN too.
        if path == Strategy::Blocked && jit::kernels::has_bf16_dot() {
            let opts = Options {
                precision: Some("bf16".into()),
                ..with_kernels("avx512", 2)
            };
            let got = compiled(&common::program(&g, &w, 2), opts).run(&x).unwrap();
            assert!(got.iter().all(|v| v.is_nan()), "bf16: {got}");
        }
        // Infinities alone: each sum meets one infinite input per tap, or
        // infinities of both signs, so NaN and +-inf come out the same in
        // any summation order: they must match the oracle's exactly.
        let mut inf = input_for(&g);
        inf[[0, 1, 7, 7]] = f32::INFINITY;
        inf[[0, 2, 0, 3]] = f32::NEG_INFINITY;
        let want = resnetc::backend::interp::run(&g, &b, inf.clone(), &[g.logits()]).unwrap();
        let class = |v: f32| {
            (
                v.is_nan(),
                v.is_infinite() && v > 0.0,
                v.is_infinite() && v < 0.0,
            )
        };
        for level in [2, 0] {
            let p = common::program(&g, &w, level);
            for ks in kernel_sets() {
                let got = compiled(&p, with_kernels(ks, 2)).run(&inf).unwrap();
                for (a, e) in got.iter().zip(want[0].iter()) {
                    assert_eq!(class(*a), class(*e), "-O{level} {ks} {path:?}: {a} vs {e}");
                    if e.is_finite() {
                        assert!((a - e).abs() <= 1e-4 * e.abs().max(1.0), "{a} vs {e}");
                    }
                }
            }
        }
    }
}

#[test]
fn a_panicking_task_is_an_error_not_a_hang() {
    let g = common::compile_with(
        &common::root().join("specs/resnet18.rn"),
        &BuildOptions {
            batch: 1,
            input: Some([3, 32, 32]),
        },
    );
    let x = input_for(&g);
    let w = resnetc::weights::init::init(&g, Default::default());
    let p = common::program(&g, &w, 2);
    for ks in kernel_sets() {
        let opts = Options {
            fault: Some("layer2.0.conv1".into()),
            ..with_kernels(ks, 2)
        };
        let mut c = compiled(&p, opts);
        let start = Instant::now();
        let err = c.run(&x).unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{ks}: took {:?}",
            start.elapsed()
        );
        assert_eq!(err.stage, Stage::Run("jit"));
        assert_eq!(
            err.at.as_ref().map(|a| a.value.as_str()),
            Some("layer2.0.conv1")
        );
        assert!(
            err.to_string()
                .contains("a kernel panicked: an injected fault"),
            "{err}"
        );
        // The team survives: the same network runs again, and fails again.
        assert!(c.run(&x).is_err());
    }
}

/// A kernel set, a network compiled on it, and its error.
type Run = (&'static str, Box<dyn Executable>, f32);

/// `src` at `batch` on every kernel set (`strategy` forced), each run
/// once: the set, the network and its error against the interpreter;
/// `None` if the spec does not compile (a shape that does not fit).
fn on_every_set(src: &str, batch: usize, strategy: Option<&str>) -> Option<Vec<Run>> {
    let mut sources = SourceMap::new();
    let g = compile_source(
        "t.rn",
        src,
        &BuildOptions { batch, input: None },
        &mut sources,
    )
    .ok()?;
    let x = input_for(&g);
    let (wts, want) = common::finite_run(&g, &x, 5);
    let prog = common::program(&g, &wts, 2);
    let runs = kernel_sets()
        .into_iter()
        .map(|ks| {
            let opts = Options {
                conv_strategy: strategy.map(Into::into),
                ..with_kernels(ks, 2)
            };
            let mut c = compiled(&prog, opts);
            let err = rel(&c.run(&x).unwrap(), &want);
            (ks, c, err)
        })
        .collect();
    Some(runs)
}

#[allow(clippy::too_many_arguments)]
fn tiny_spec(
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    s: usize,
    p: usize,
    groups: usize,
    shortcut: &str,
) -> String {
    format!(
        "block b(planes, stride = 1) {{
  conv1: conv(planes, {k}, stride = stride, pad = {p}, groups = {groups})
  bn1: bn
  relu
  conv2: conv(planes, 1)
  bn2: bn
  add shortcut
  relu
}}
network t {{
  input {cin}x{h}x{w}
  shortcut {shortcut}
  stage layer1: b({cout}) x 2 stride {s}
}}"
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Random conv shapes (kernel, stride, padding, channels, groups, batch)
    /// with a residual block around them, through the JIT at -O2 and -O0,
    /// on every kernel set.
    #[test]
    fn random_convs_agree(
        g_idx in 0usize..3, cin_g in 1usize..5, cout_g in 1usize..5, k in 1usize..6, s in 1usize..3,
        p in 0usize..3, h in 3usize..12, w in 3usize..12, batch in 1usize..3,
        shortcut in prop::sample::select(vec!["B", "C", "A", "none"]), level in prop::sample::select(vec![0u8, 2]),
    ) {
        let groups = [1, 2, 4][g_idx];
        let (cin, cout) = (cin_g * groups, cout_g * groups.max(2));
        let src = tiny_spec(cin, h, w, cout, k, s, p, groups, shortcut);
        let mut sources = SourceMap::new();
        let Ok(g) = compile_source("t.rn", &src, &BuildOptions { batch, input: None }, &mut sources) else {
            // Shapes that do not fit (kernel larger than the padded input, option A narrowing).
            return Ok(());
        };
        let x = input_for(&g);
        let (wts, want) = common::finite_run(&g, &x, 5);
        let prog = common::program(&g, &wts, level);
        for ks in kernel_sets() {
            let got = compiled(&prog, with_kernels(ks, 2)).run(&x).unwrap();
            prop_assert!(rel(&got, &want) <= 1e-4, "{} {}: {:e}", src, ks, rel(&got, &want));
        }
    }

    /// The same on channel-blocked maps: multiples of 16 channels, the
    /// first conv reading the planar input (as a stem does) or blocked
    /// maps, maps down to 1 x 1, taps 1 to 3 pixels apart, channels in 1
    /// to 16 groups, every tile variant of every set.
    #[test]
    fn random_blocked_convs_agree(
        cin in prop::sample::select(vec![3usize, 16, 32]), cout_b in 1usize..6,
        k in prop::sample::select(vec![1usize, 3, 5, 7]), s in 1usize..3, h in 1usize..12,
        w in 1usize..12, batch in 1usize..3, shortcut in prop::sample::select(vec!["B", "C", "none"]),
        d in prop::sample::select(vec![1usize, 1, 2, 3]),
        groups in prop::sample::select(vec![1usize, 1, 2, 4, 8, 16]),
    ) {
        // Groups divide both convs' channels (and the planar input stays ungrouped).
        let cout = 16 * cout_b;
        let groups = if cin == 3 || cout % groups != 0 { 1 } else { groups };
        // "Same" padding, so that a projection shortcut fits every shape.
        let p = d * (k / 2);
        // With a head: a network whose output is a map runs planar.
        // Grouped, a stem first: a grouped conv reads a blocked map, not the planar input.
        let stem = if groups > 1 { format!("stem {{ conv0: conv({cin}, 1) }}\n  ") } else { String::new() };
        let src = tiny_spec(cin, h, w, cout, k, s, p, groups, shortcut).replace(
            &format!("groups = {groups})"),
            &format!("groups = {groups}, dilation = {d})"),
        ).replace("  stage layer1", &format!("  {stem}stage layer1")).replace(
            &format!("stride {s}\n}}"),
            &format!("stride {s}\n  head {{\n    max_pool(3, stride = 2, pad = 1)\n    global_avg_pool\n    flatten\n    fc(10)\n  }}\n}}"),
        );
        let mut sources = SourceMap::new();
        let Ok(g) = compile_source("t.rn", &src, &BuildOptions { batch, input: None }, &mut sources) else {
            // A projection that no 1x1 stride fits (odd sizes at stride 2).
            return Ok(());
        };
        let x = input_for(&g);
        let (wts, want) = common::finite_run(&g, &x, 5);
        let prog = common::program(&g, &wts, 2);
        // Blocked, unless the first block's identity shortcut adds the
        // planar input itself.
        let same_shape = cin == 16 * cout_b && (s == 1 || (h == 1 && w == 1));
        let identity_input = shortcut == "B" && same_shape && groups == 1;
        // And unless a grouping leaves a block of outputs part of a block of inputs.
        let spans = |c: usize| {
            let g = jit::blocked::Geom {
                c, h: 8, w: 8, o: cout, kernel: k, stride: 1, pad: p, dilation: d, groups,
                oh: 8, ow: 8, input: jit::blocked::Input::Blocked,
            };
            jit::blocked::span(&g).is_some()
        };
        let planar = identity_input || !(spans(cin) && spans(cout));
        for ks in kernel_sets() {
            let mut c = compiled(&prog, with_kernels(ks, 2));
            if !planar {
                let convs = c.steps().iter().filter(|i| i.op == "conv2d").count();
                let on_blocked = blocked_f32(c.as_ref()) + winograds(c.as_ref());
                prop_assert_eq!(on_blocked, convs, "{}: {}", src, ks);
            }
            let got = c.run(&x).unwrap();
            prop_assert!(rel(&got, &want) <= 1e-4, "{} {}: {:e}", src, ks, rel(&got, &want));
        }
    }

    /// Winograd forced on random stride-1 3x3 convs on blocked maps: maps
    /// smaller than a tile and not a multiple of 4, pads 0 to 2 (a dilated
    /// conv's: `d` times that), taps 1 to 3 pixels apart, 1 to 3 images
    /// (their tiles share each GEMM), with a residual block around.
    #[test]
    fn random_winograd_convs_agree(
        cin in prop::sample::select(vec![3usize, 16, 32]), cout_b in 1usize..5, p in 0usize..3,
        d in prop::sample::select(vec![1usize, 1, 2, 3]),
        h in 1usize..14, w in 1usize..14, batch in 1usize..4,
        shortcut in prop::sample::select(vec!["B", "C", "none"]),
        (forced, strategy) in prop::sample::select(vec![
            ("winograd", Strategy::Winograd),
            ("winograd-f2", Strategy::WinogradF2),
        ]),
    ) {
        let src = tiny_spec(cin, h, w, 16 * cout_b, 3, 1, d * p, 1, shortcut).replace(
            "stride 1\n}",
            "stride 1\n  head {\n    global_avg_pool\n    flatten\n    fc(10)\n  }\n}",
        ).replace("groups = 1)", &format!("groups = 1, dilation = {d})"));
        // None: a 3x3 conv larger than its padded input.
        for (ks, c, err) in on_every_set(&src, batch, Some(forced)).unwrap_or_default() {
            // On blocked maps (not when an identity shortcut adds the planar
            // input), every 3x3 but the first, which reads the planar input.
            let wino = convs_with(c.as_ref(), strategy);
            let blocked = wino + blocked_f32(c.as_ref()) > 0;
            prop_assert!(!blocked || wino >= 1, "{}: {}", src, ks);
            prop_assert!(err <= 1e-4, "{} {}: {:e}", src, ks, err);
        }
    }

    /// Option A on blocked maps: a stem, then a stage whose first block
    /// pads its shortcut (more channels, a stride), as the paper's CIFAR
    /// nets do; every conv blocked or Winograd, the residual built blocked.
    #[test]
    fn random_option_a_blocks_agree(
        c1 in prop::sample::select(vec![16usize, 32]), extra in prop::sample::select(vec![0usize, 16, 32, 48]),
        s in 1usize..3, h in 2usize..12, w in 2usize..12, batch in 1usize..4,
    ) {
        let c2 = c1 + extra;
        let src = format!(
            "network t {{\n  input 3x{h}x{w}\n  shortcut A\n  stem {{\n    conv1: conv({c1}, 3, pad = 1)\n    bn1: bn\n    relu\n  }}\n  stage layer1: basic({c1}) x 1\n  stage layer2: basic({c2}) x 2 stride {s}\n  head {{\n    global_avg_pool\n    flatten\n    fc(10)\n  }}\n}}"
        );
        // Every such net compiles (option A pads odd sizes up).
        let runs = on_every_set(&src, batch, None);
        prop_assert!(runs.is_some(), "{}", src);
        for (ks, c, err) in runs.unwrap_or_default() {
            let convs = c.steps().iter().filter(|i| i.op == "conv2d").count();
            let on_blocked = blocked_f32(c.as_ref()) + winograds(c.as_ref());
            prop_assert_eq!(on_blocked, convs, "{}: {}", src, ks);
            prop_assert!(err <= 1e-4, "{} {}: {:e}", src, ks, err);
        }
    }
}

/// A pre-activation net's BN and ReLU of each block's input (a
/// scale-shift: it does not fold) is made by the conv that makes the
/// input, as a second output of its epilogue: no scale-shift step is left
/// on blocked maps, the scale-shifts' outputs do not share bytes with the
/// convs' inputs, and the logits equal those of the interpreter.
#[test]
fn a_preactivation_is_made_by_the_conv_before_it() {
    let path = common::root().join("examples/preact_resnet164.rn");
    let g = small(&path, 2, 16);
    let x = input_for(&g);
    let (w, want) = common::finite_run(&g, &x, 5);
    let p = common::program(&g, &w, 2);
    let shifts = p.steps.iter().filter(|s| s.op == "scale_shift").count();
    // 53 blocks' bn1 and the head's bn (the first block's folds into the stem).
    assert_eq!(shifts, 54);
    for ks in kernel_sets() {
        let mut c = compiled(&p, with_kernels(ks, 2));
        let left: Vec<_> = c
            .steps()
            .iter()
            .filter(|i| i.op == "scale_shift")
            .map(|i| i.name.clone())
            .collect();
        assert!(left.is_empty(), "{ks}: {left:?}");
        let err = rel(&c.run(&x).unwrap(), &want);
        assert!(err <= 1e-4, "{ks}: {err:e}");
    }
}
