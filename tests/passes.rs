//! The optimizer: each pass as before/expected IR, negative cases where a
//! pass must not fire, differential runs (optimized equals unoptimized) and
//! the memory plan checker.

mod common;

use proptest::prelude::*;
use resnetc::backend::interp;
use resnetc::ir::{plan, text, Graph, GraphError, Op};
use resnetc::lower::{compile_source, Options};
use resnetc::passes::{self, Module, Pass};
use resnetc::syntax::SourceMap;

fn graph_of(src: &str) -> Graph {
    let mut sources = SourceMap::new();
    compile_source("t.rn", src, &Options::default(), &mut sources)
        .unwrap_or_else(|d| panic!("{}", d.render(&sources, false)))
}

/// Run only these rewrites (to a fixpoint) and render the IR without the plan.
fn after(src: &str, rewrites: &[Pass]) -> String {
    let m = Module {
        graph: graph_of(src),
        weights: None,
    };
    let (m, _) = passes::rewrite(m, rewrites, &passes::Options::default()).unwrap();
    text::render(&m.graph)
}

const BLOCK: &str = "
network t {
  input 4x8x8
  shortcut B
  stem { conv1: conv(8, 3, pad = 1)  bn1: bn  relu }
  stage layer1: basic(8) x 1
  stage layer2: basic(16) x 1 stride 2
  head { avgpool: global_avg_pool  flatten  fc: fc(3) }
}";

#[test]
fn fold_bn_before_and_after() {
    insta::assert_snapshot!("fold_bn", after(BLOCK, &[passes::FOLD_BN]));
}

#[test]
fn fusion_before_and_after() {
    let all = [passes::FOLD_BN, passes::FUSE_RESIDUAL, passes::FUSE_RELU];
    insta::assert_snapshot!("fold_and_fuse", after(BLOCK, &all));
}

#[test]
fn option_a_shortcut_is_read_inside_the_fused_add() {
    let src = BLOCK.replace("shortcut B", "shortcut A");
    let ir = after(
        &src,
        &[passes::FOLD_BN, passes::FUSE_RESIDUAL, passes::FUSE_RELU],
    );
    assert!(!ir.contains("shortcut_pad"), "{ir}");
    assert!(ir.contains("= conv2d(layer2.0.conv1, layer1.0.conv2) out=16 k=3 s=1 p=1 bias +residual(s=2 pad=4+4) relu"), "{ir}");
}

// ---- where the passes must not fire ---------------------------------------

#[test]
fn bn_after_an_add_becomes_a_scale_shift() {
    // Pre-activation: the BN reads an add (and the add is read twice).
    let g = common::compile(&common::root().join("examples/preact_resnet164.rn"));
    let m = Module {
        graph: g,
        weights: None,
    };
    let (m, _) = passes::rewrite(m, &[passes::FOLD_BN], &passes::Options::default()).unwrap();
    let ss = m
        .graph
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::ScaleShift { .. }))
        .count();
    // 54 blocks: every bn1 but the first reads an add; plus the head's bn.
    assert_eq!(ss, 53 + 1);
    assert!(!m
        .graph
        .nodes()
        .any(|(_, n)| matches!(n.op, Op::BatchNorm { .. })));
}

#[test]
fn a_conv_read_twice_keeps_its_bn_and_relu_apart() {
    let src = "
block twice(planes, stride = 1) {
  conv1: conv(planes, 3, pad = 1) as c
  bn1: bn
  relu
  add shortcut(from = c)
}
network t {
  input 4x8x8
  stem { conv0: conv(8, 1) }
  stage layer1: twice(8) x 1
}";
    let ir = after(
        src,
        &[passes::FOLD_BN, passes::FUSE_RESIDUAL, passes::FUSE_RELU],
    );
    // conv1 feeds both the BN and the add: the BN cannot fold into it.
    assert!(ir.contains("= scale_shift(layer1.0.conv1) relu"), "{ir}");
    assert!(ir.contains("add(layer1.0.bn1, layer1.0.conv1)"), "{ir}");
}

#[test]
fn a_relu_read_elsewhere_is_not_fused() {
    let src = "
block tap(planes, stride = 1) {
  conv1: conv(planes, 3, pad = 1)
  relu as r
  conv2: conv(planes, 3, pad = 1)
  add shortcut(from = r)
}
network t {
  input 4x8x8
  stem { conv0: conv(8, 1) }
  stage layer1: tap(8) x 1
}";
    let ir = after(src, &[passes::FUSE_RESIDUAL, passes::FUSE_RELU]);
    // relu feeds conv2 and the add: stays a separate value; conv2 takes the add.
    assert!(
        ir.contains("layer1.0.conv1 = conv2d(conv0) out=8 k=3 s=1 p=1 relu"),
        "{ir}"
    );
    assert!(
        ir.contains("conv2d(layer1.0.conv1, layer1.0.conv1)") || ir.contains("+residual"),
        "{ir}"
    );
}

#[test]
fn identities_are_removed_and_only_them() {
    let src = "
network t {
  input 4x8x8
  stem { a: max_pool(1, stride = 1)  relu  relu  b: avg_pool(2) }
}";
    let ir = after(src, &[passes::REMOVE_IDENTITY, passes::DCE]);
    assert!(!ir.contains("max_pool"), "{ir}");
    assert_eq!(ir.matches("relu(").count(), 1, "{ir}");
    assert!(ir.contains("avg_pool"), "{ir}");
}

// ---- the pass manager ------------------------------------------------------

fn break_shapes(m: &mut Module) -> Result<bool, GraphError> {
    let i = m.graph.output;
    m.graph.node_mut(i).shape.0[1] += 1;
    Ok(true)
}

#[test]
fn a_pass_that_breaks_the_graph_is_named() {
    let bad = Pass {
        name: "break-shapes",
        run: break_shapes,
        about: "",
    };
    let mut sources = SourceMap::new();
    let g = compile_source("t.rn", BLOCK, &Options::default(), &mut sources).unwrap();
    let m = Module {
        graph: g,
        weights: None,
    };
    let err = passes::rewrite(m, &[bad], &passes::Options::default()).unwrap_err();
    assert_eq!(err.stage, resnetc::ir::Stage::Pass("break-shapes"));
    let msg = err.to_string();
    assert!(
        msg.starts_with("pass `break-shapes`: `fc`: broke the graph: has shape"),
        "{msg}"
    );
    // It renders against the spec, at the statement that made `fc`.
    let shown = err.diagnostic().render(&sources, false);
    assert!(
        shown.contains("t.rn:") && shown.contains("fc: fc("),
        "{shown}"
    );
}

#[test]
fn no_batch_norm_reaches_a_backend_at_any_level() {
    for level in 0..=2 {
        let g = common::optimized(&common::root().join("specs/resnet18.rn"), level);
        let g = g.graph();
        assert!(
            g.nodes()
                .all(|(_, n)| !matches!(n.op, Op::BatchNorm { .. })),
            "-O{level}"
        );
        // -O0 keeps every BN, as a scale-shift; -O1 folds them all.
        let ss = g
            .nodes()
            .filter(|(_, n)| matches!(n.op, Op::ScaleShift { .. }))
            .count();
        assert_eq!(ss, if level == 0 { 20 } else { 0 }, "-O{level}");
    }
}

#[test]
fn print_after_and_timing() {
    let m = Module {
        graph: graph_of(BLOCK),
        weights: None,
    };
    let opts = passes::Options {
        level: 2,
        print_after: vec!["fuse-relu".into()],
        time_passes: true,
        ..Default::default()
    };
    let (_, log) = passes::prepare(m, &opts).unwrap();
    assert!(
        log.printed
            .starts_with("# after fuse-relu (round 1)\nnetwork t"),
        "{}",
        log.printed
    );
    assert_eq!(log.printed.matches("# after").count(), log.rounds);
    let t = log.timing();
    for p in passes::pipeline(2) {
        assert!(t.contains(p), "{t}");
    }
}

// ---- differential runs -----------------------------------------------------

/// Small inputs keep the suite fast; the nets are fully convolutional.
fn small_input(g: &Graph) -> [usize; 3] {
    if g.input_shape().height() >= 224 {
        [3, 64, 64]
    } else {
        [3, 16, 16]
    }
}

/// Every other spec and example (the two halves run in parallel): the
/// interpreter on the prepared graph at each level against the spec's own.
fn optimized_equals_unoptimized_on_half_the_specs(half: usize) {
    for path in common::all_specs().into_iter().skip(half).step_by(2) {
        let full = common::compile(&path);
        let opts = Options {
            batch: 2,
            input: Some(small_input(&full)),
        };
        let g = common::compile_with(&path, &opts);
        let x = ndarray::ArrayD::from_shape_fn(g.input_shape().dims().to_vec(), |d| {
            ((d[0] * 31 + d[1] * 17 + d[2] * 7 + d[3] * 3) % 23) as f32 / 11.0 - 1.0
        });
        let (w, base) = common::finite_run(&g, &x, 11);
        let scale = base.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for level in [0, 1, 2] {
            let m = Module {
                graph: g.clone(),
                weights: Some(w.clone().bind(&g, "init").unwrap()),
            };
            let (m, _) = passes::prepare(
                m,
                &passes::Options {
                    level,
                    ..Default::default()
                },
            )
            .unwrap();
            let got = interp::run(
                m.graph(),
                m.weights().unwrap(),
                x.clone(),
                &[m.graph().logits()],
            )
            .unwrap()
            .remove(0);
            let err = got
                .iter()
                .zip(base.iter())
                .fold(0.0f32, |a, (p, q)| a.max((p - q).abs()))
                / scale;
            assert!(err <= 1e-5, "{} at -O{level}: {err:e}", path.display());
        }
    }
}

#[test]
fn optimized_equals_unoptimized_on_every_spec_first_half() {
    optimized_equals_unoptimized_on_half_the_specs(0);
}

#[test]
fn optimized_equals_unoptimized_on_every_spec_second_half() {
    optimized_equals_unoptimized_on_half_the_specs(1);
}

// ---- memory planning -------------------------------------------------------

#[test]
fn plans_are_valid_for_every_spec_and_level() {
    for path in common::all_specs() {
        for level in 0..=2 {
            let m = common::optimized(&path, level);
            let p = m.plan();
            plan::check(m.graph(), p).unwrap();
            assert!(p.arena_bytes <= p.sum_bytes());
        }
    }
}

#[test]
fn resnet50_arena_is_a_few_mib() {
    let m = Module {
        graph: common::compile(&common::root().join("specs/resnet50.rn")),
        weights: None,
    };
    let (m, _) = passes::prepare(
        m,
        &passes::Options {
            level: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let p = m.plan();
    assert_eq!(p.sum_bytes(), 43_777_856);
    assert_eq!(p.arena_bytes, 5_218_304);
}

#[test]
fn the_checker_catches_overlaps() {
    let m = Module {
        graph: graph_of(BLOCK),
        weights: None,
    };
    let (m, _) = passes::prepare(
        m,
        &passes::Options {
            level: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let mut p = m.plan().clone();
    // Put the input where conv1 writes: both live at step 1.
    let conv1 = p.slots[1].offset;
    p.slots[0].offset = conv1;
    let err = plan::check(m.graph(), &p).unwrap_err().to_string();
    assert!(
        err.contains("`input`") && err.contains("`conv1`") && err.contains("overlap"),
        "{err}"
    );
}

fn random_spec(stages: &[(usize, usize, bool)], shortcut: &str, bottleneck: bool) -> String {
    let block = if bottleneck { "bottleneck" } else { "basic" };
    let mut s = format!("network r {{\n input 3x16x16\n shortcut {shortcut}\n stem {{ conv1: conv(8, 3, pad = 1) bn1: bn relu }}\n");
    for (i, (width, n, stride)) in stages.iter().enumerate() {
        s += &format!(
            " stage layer{}: {block}({width}) x {n}{}\n",
            i + 1,
            if *stride { " stride 2" } else { "" }
        );
    }
    s + " head { avgpool: global_avg_pool flatten fc: fc(5) softmax }\n}\n"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn random_networks_get_valid_plans(
        stages in prop::collection::vec((1usize..5, 1usize..4, any::<bool>()), 1..4),
        shortcut in prop::sample::select(vec!["B", "C", "none", "A"]),
        bottleneck in any::<bool>(),
        level in 0u8..3,
    ) {
        let stages: Vec<_> = stages.into_iter().enumerate().map(|(i, (w, n, s))| (w * 4 * (i + 1), n, s)).collect();
        let src = random_spec(&stages, shortcut, bottleneck);
        let mut sources = SourceMap::new();
        let Ok(g) = compile_source("r.rn", &src, &Options::default(), &mut sources) else {
            // Option A cannot narrow; such specs are rejected, as they should be.
            return Ok(());
        };
        let m = Module { graph: g, weights: None };
        let (m, _) = passes::prepare(m, &passes::Options { level, ..Default::default() }).unwrap();
        plan::check(m.graph(), m.plan()).unwrap();
    }
}
