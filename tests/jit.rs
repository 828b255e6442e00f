//! The JIT against the reference interpreter: every spec and example, every
//! optimization level, and random conv shapes through the generated kernels.

mod common;

use ndarray::ArrayD;
use proptest::prelude::*;
use resnetc::backend::jit;
use resnetc::ir::Graph;
use resnetc::lower::{compile_source, Options};
use resnetc::passes::{self, Module};
use resnetc::syntax::SourceMap;
use resnetc::weights::Weights;

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

fn jit_run(g: &Graph, w: &Weights, x: &ArrayD<f32>, level: u8, threads: usize) -> ArrayD<f32> {
    let m = Module {
        graph: g.clone(),
        weights: Some(w.clone().bind(g, "init").unwrap()),
    };
    let (m, _) = passes::optimize(
        m,
        &passes::Options {
            level,
            ..Default::default()
        },
    )
    .unwrap();
    let opts = jit::JitOptions {
        threads,
        ..Default::default()
    };
    let mut c = jit::compile(&m.graph, m.weights.as_ref().unwrap(), &opts).unwrap();
    c.run(x).unwrap()
}

#[test]
fn jit_equals_interpreter_on_every_spec() {
    for path in common::all_specs() {
        let full = common::compile(&path);
        let size = if full.input_shape().height() >= 224 {
            [3, 64, 64]
        } else {
            [3, 16, 16]
        };
        let g = common::compile_with(
            &path,
            &Options {
                batch: 2,
                input: Some(size),
            },
        );
        let x = input_for(&g);
        let (w, want) = common::finite_run(&g, &x, 5);
        for (level, threads) in [(2, 2), (0, 1)] {
            let got = jit_run(&g, &w, &x, level, threads);
            let err = rel(&got, &want);
            assert!(err <= 1e-4, "{} -O{level}: {err:e}", path.display());
        }
    }
}

#[test]
fn a_forced_strategy_gives_the_same_result() {
    let g = common::compile_with(
        &common::root().join("specs/resnet50.rn"),
        &Options {
            batch: 1,
            input: Some([3, 64, 64]),
        },
    );
    let x = input_for(&g);
    let (w, want) = common::finite_run(&g, &x, 5);
    let m = Module {
        graph: g.clone(),
        weights: Some(w.bind(&g, "init").unwrap()),
    };
    let (m, _) = passes::optimize(
        m,
        &passes::Options {
            level: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let blocked = jit::blocked::supported();
    for forced in [
        jit::ConvStrategy::Im2col,
        jit::ConvStrategy::Strided1x1,
        jit::ConvStrategy::Direct1x1,
        jit::ConvStrategy::Blocked,
    ] {
        let opts = jit::JitOptions {
            threads: 2,
            conv_strategy: Some(forced),
            ..Default::default()
        };
        let mut c = jit::compile(&m.graph, m.weights.as_ref().unwrap(), &opts).unwrap();
        // Forced where eligible: every conv for im2col, every 1x1 for
        // strided-1x1, the stride-1 ones for direct-1x1 (planar maps, the
        // other convs by the rules), all for blocked where AVX-512 runs.
        let used = c
            .strategies
            .iter()
            .filter(|(_, s)| *s == forced.name())
            .count();
        let want_used = match forced {
            jit::ConvStrategy::Im2col => c.strategies.len(),
            jit::ConvStrategy::Strided1x1 => 36,
            // 16 expands, 13 reduces (three have stride 2 here), layer1's projection.
            jit::ConvStrategy::Direct1x1 => 30,
            jit::ConvStrategy::Blocked if blocked => c.strategies.len(),
            jit::ConvStrategy::Blocked => 0,
        };
        assert_eq!(used, want_used, "{forced:?}");
        assert!(rel(&c.run(&x).unwrap(), &want) <= 1e-4, "{forced:?}");
    }
}

#[test]
fn blocked_maps_are_chosen_by_their_rule() {
    let optimized = |path: &str, level: u8| common::optimized(&common::root().join(path), level);
    let rule =
        |g: &Graph| jit::strategy::blocked_layout(g, resnetc::backend::interp::logits_node(g));
    if !jit::blocked::supported() {
        assert!(rule(&optimized("specs/resnet50.rn", 2)).is_err());
        return;
    }
    for spec in [
        "specs/resnet18.rn",
        "specs/resnet50_v1_5.rn",
        "specs/resnet152.rn",
    ] {
        assert_eq!(rule(&optimized(spec, 2)), Ok(()), "{spec}");
    }
    // Unfused batch norms, and option A's zero-padded shortcut, run planar.
    let why = rule(&optimized("specs/resnet50.rn", 0)).unwrap_err();
    assert!(
        why.contains("batch_norm") || why.contains("planar"),
        "{why}"
    );
    let why = rule(&optimized("specs/cifar/resnet20.rn", 2)).unwrap_err();
    assert!(why.contains("option A"), "{why}");
}

#[test]
fn a_projection_stride_is_found_from_either_side() {
    // 1x2 -> 1x1: the height alone says stride 1, the width says 2.
    let src = tiny_spec(3, 1, 2, 16, 3, 2, 1, 1, "B");
    let mut sources = SourceMap::new();
    let g = compile_source("t.rn", &src, &Options::default(), &mut sources)
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

#[test]
fn clif_is_emitted_and_reads_like_the_network() {
    let g = common::compile(&common::root().join("specs/cifar/resnet20.rn"));
    let m = Module {
        graph: g,
        weights: None,
    };
    let (m, _) = passes::optimize(
        m,
        &passes::Options {
            level: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let c = jit::compile(
        &m.graph,
        &resnetc::weights::zeros(&m.graph),
        &Default::default(),
    )
    .unwrap();
    // 19 convs and the fc call kernels; the global pool is a generated f32x4 loop.
    assert_eq!(c.clif.matches("call fn").count(), 20, "{}", c.clif);
    assert!(c.clif.contains("f32x4"), "{}", c.clif);
    assert!(c.clif.starts_with("function "), "{}", c.clif);
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
    /// with a residual block around them, through the JIT at -O2 and -O0.
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
        let Ok(g) = compile_source("t.rn", &src, &Options { batch, input: None }, &mut sources) else {
            // Shapes that do not fit (kernel larger than the padded input, option A narrowing).
            return Ok(());
        };
        let x = input_for(&g);
        let (wts, want) = common::finite_run(&g, &x, 5);
        let got = jit_run(&g, &wts, &x, level, 2);
        prop_assert!(rel(&got, &want) <= 1e-4, "{}: {:e}", src, rel(&got, &want));
    }

    /// The same on channel-blocked maps: multiples of 16 channels, no
    /// groups, the first conv reading the planar input (as a stem does) or
    /// blocked maps, maps down to 1 x 1, every kernel variant; every conv
    /// must run blocked where AVX-512 does.
    #[test]
    fn random_blocked_convs_agree(
        cin in prop::sample::select(vec![3usize, 16, 32]), cout_b in 1usize..6,
        k in prop::sample::select(vec![1usize, 3, 5, 7]), s in 1usize..3, h in 1usize..12,
        w in 1usize..12, batch in 1usize..3, shortcut in prop::sample::select(vec!["B", "C", "none"]),
    ) {
        // "Same" padding, so that a projection shortcut fits every shape.
        let p = k / 2;
        // With a head: a network whose output is a map runs planar.
        let src = tiny_spec(cin, h, w, 16 * cout_b, k, s, p, 1, shortcut).replace(
            &format!("stride {s}\n}}"),
            &format!("stride {s}\n  head {{\n    max_pool(3, stride = 2, pad = 1)\n    global_avg_pool\n    flatten\n    fc(10)\n  }}\n}}"),
        );
        let mut sources = SourceMap::new();
        let Ok(g) = compile_source("t.rn", &src, &Options { batch, input: None }, &mut sources) else {
            // A projection that no 1x1 stride fits (odd sizes at stride 2).
            return Ok(());
        };
        let x = input_for(&g);
        let (wts, want) = common::finite_run(&g, &x, 5);
        let m = Module { graph: g.clone(), weights: Some(wts.bind(&g, "init").unwrap()) };
        let (m, _) = passes::optimize(m, &passes::Options { level: 2, ..Default::default() }).unwrap();
        let opts = jit::JitOptions { threads: 2, ..Default::default() };
        let mut c = jit::compile(&m.graph, m.weights.as_ref().unwrap(), &opts).unwrap();
        // Blocked, unless the first block's identity shortcut adds the
        // planar input itself.
        let same_shape = cin == 16 * cout_b && (s == 1 || (h == 1 && w == 1));
        let identity_input = shortcut == "B" && same_shape;
        if jit::blocked::supported() && !identity_input {
            prop_assert!(c.strategies.iter().all(|(_, s)| *s == "blocked"), "{}: {:?}", src, c.strategies);
        }
        let got = c.run(&x).unwrap();
        prop_assert!(rel(&got, &want) <= 1e-4, "{}: {:e}", src, rel(&got, &want));
    }
}
