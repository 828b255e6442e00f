//! Cost reports: totals add up, conventions hold, the JSON schema is stable.

mod common;

use common::{compile, root};
use resnetc::ir::{liveness, Graph, Op};
use resnetc::report::{self, plot, table};

fn report_of(spec: &str) -> (Graph, report::Report) {
    let g = compile(&root().join(spec));
    let r = report::build(&g, spec);
    (g, r)
}

#[test]
fn layers_stages_and_blocks_add_up_to_the_totals() {
    for path in common::all_specs() {
        let g = compile(&path);
        let r = report::build(&g, "x");
        let t = &r.totals;
        let layer_macs: u64 = r.layers.iter().map(|l| l.cost.macs).sum();
        let group_macs: u64 = r.groups.iter().map(|g| g.cost.macs).sum();
        let group_params: u64 = r.groups.iter().map(|g| g.cost.params).sum();
        let block_params: u64 = r.blocks.iter().map(|b| b.cost.params).sum();
        let stage_params: u64 = r
            .groups
            .iter()
            .filter(|g| g.block.is_some())
            .map(|g| g.cost.params)
            .sum();
        assert_eq!(layer_macs, t.macs);
        assert_eq!(group_macs, t.macs);
        assert_eq!(group_params, t.params);
        assert_eq!(block_params, stage_params, "{}", path.display());
        assert_eq!(t.macs, g.macs());
        assert_eq!(t.params, g.trainable_params());
        assert_eq!(
            t.flops,
            r.totals.flops_by_kind.conv_fc + t.flops - t.flops_by_kind.conv_fc
        );
        assert_eq!(t.flops_by_kind.conv_fc, 2 * t.macs);
        assert_eq!(t.weight_bytes, 4 * (t.params + t.bn_running_stats));
        let blocks: usize = g.stages.iter().map(|s| s.blocks).sum();
        assert_eq!(r.blocks.len(), blocks);
    }
}

#[test]
fn elementwise_flops_follow_the_stated_conventions() {
    let (g, r) = report_of("specs/cifar/resnet20.rn");
    let numel = |pred: &dyn Fn(&Op) -> bool| -> u64 {
        g.nodes()
            .filter(|(_, n)| pred(&n.op))
            .map(|(_, n)| n.shape.numel())
            .sum()
    };
    let k = &r.totals.flops_by_kind;
    assert_eq!(k.relu, numel(&|o| matches!(o, Op::Relu)));
    assert_eq!(k.add, numel(&|o| matches!(o, Op::Add)));
    assert_eq!(
        k.batch_norm,
        2 * numel(&|o| matches!(o, Op::BatchNorm { .. }))
    );
    // fc has a bias: 10 adds; global pool: 64 channels x 8x8 pixels.
    assert_eq!(k.bias, 10);
    assert_eq!(k.pool, 64 * 64);
    assert_eq!(k.softmax, 40);
    // 19 convs + 19 BN + 19 ReLU + 9 adds on a 16/32/64-channel pyramid.
    assert_eq!(k.relu, 188_416);
    assert_eq!(r.totals.flops, 81_757_490);
}

#[test]
fn bn_folding_count() {
    // Every BN of ResNet-18 follows a conv read by nothing else: each folds
    // into a bias of C, dropping gamma and beta (2C).
    let (g, r) = report_of("specs/resnet18.rn");
    let bn_channels: u64 = g
        .nodes()
        .filter_map(|(_, n)| match n.op {
            Op::BatchNorm { channels, .. } => Some(channels as u64),
            _ => None,
        })
        .sum();
    assert_eq!(bn_channels, 4_800);
    assert_eq!(r.totals.params_bn_folded, 11_689_512 - 4_800);
    // Pre-activation BNs read adds (or the stem conv, which the shortcut also
    // reads): they cannot fold and stay as a scale and shift.
    let (_, r) = report_of("examples/preact_resnet164.rn");
    assert!(r.totals.params_bn_folded > r.totals.params - 12_000);
    let (g, r) = report_of("examples/preact_resnet164.rn");
    let unfoldable: u64 = g
        .nodes()
        .filter_map(|(i, n)| match n.op {
            Op::BatchNorm { channels, .. } => {
                let p = g.inputs(i)[0];
                let ok = matches!(g.node(p).op, Op::Conv2d { .. }) && g.users(p).len() == 1;
                (!ok).then_some(channels as u64)
            }
            _ => None,
        })
        .sum();
    assert!(unfoldable > 0);
    let foldable_channels = r.totals.bn_running_stats / 2 - unfoldable;
    assert_eq!(
        r.totals.params_bn_folded,
        r.totals.params - foldable_channels
    );
}

/// Peak liveness against the definition, step by step.
#[test]
fn peak_live_memory_matches_brute_force() {
    for spec in [
        "specs/cifar/resnet20.rn",
        "specs/resnet18.rn",
        "examples/preact_resnet164.rn",
        "specs/resnet50.rn",
    ] {
        let (g, r) = report_of(spec);
        let pos = |i| g.order.iter().position(|&j| j == i).unwrap();
        let last = g.order.len() - 1;
        let mut best = 0;
        for t in 0..g.order.len() {
            let live: u64 = g
                .order
                .iter()
                .filter(|&&v| {
                    let start = pos(v);
                    let end = if v == g.output {
                        last
                    } else {
                        g.users(v).iter().map(|&u| pos(u)).max().unwrap_or(start)
                    };
                    start <= t && t <= end
                })
                .map(|&v| 4 * g.node(v).shape.numel())
                .sum();
            best = best.max(live);
        }
        assert_eq!(r.totals.peak_activation_bytes, best, "{spec}");
        assert_eq!(liveness::peak(&g).0, best);
        assert!(best < r.totals.activation_bytes_sum);
    }
}

#[test]
fn resnet50_memory_figures() {
    let (_, r) = report_of("specs/resnet50.rn");
    // 25,557,032 + 53,120 f32 values.
    assert_eq!(r.totals.weight_bytes, 102_440_608);
    // conv1's output (64x112x112) with the BN output it feeds: 2 x 3.06 MiB,
    // or layer1's 256-channel values: the report names the step.
    assert_eq!(r.totals.peak_activation_bytes, 9_633_792);
    assert_eq!(r.totals.peak_at, "layer1.0.downsample.1");
}

#[test]
fn json_schema_is_stable() {
    let (_, r) = report_of("specs/resnet18.rn");
    let v: serde_json::Value = serde_json::to_value(&r).unwrap();
    assert_eq!(v["schema"], "resnetc.report/1");
    for key in [
        "params",
        "params_bn_folded",
        "macs",
        "flops",
        "weight_bytes",
        "activation_bytes_sum",
        "peak_activation_bytes",
        "bn_running_stats",
        "flops_by_kind",
    ] {
        assert!(v["totals"].get(key).is_some(), "totals.{key}");
    }
    assert_eq!(v["totals"]["params"], 11_689_512);
    assert_eq!(v["totals"]["macs"], 1_814_073_344u64);
    assert_eq!(v["groups"][1]["label"], "conv2_x");
    assert_eq!(v["layers"][0]["name"], "conv1");
    assert_eq!(v["layers"][0]["cost"]["macs"], 118_013_952);
    assert!(v["conventions"]["flops"]
        .as_str()
        .unwrap()
        .contains("2 per MAC"));
}

#[test]
fn table_snapshots() {
    let (_, r) = report_of("specs/resnet50.rn");
    insta::assert_snapshot!("resnet50_stages", table::render_table(&r, 1));
    let (_, r) = report_of("specs/cifar/resnet20.rn");
    insta::assert_snapshot!("resnet20_blocks_markdown", table::render_markdown(&r, 2));
    insta::assert_snapshot!("resnet20_csv", table::render_csv(&r, 1));
}

#[test]
fn tables_fit_a_100_column_terminal() {
    for spec in [
        "specs/resnet152.rn",
        "examples/resnext50_32x4d.rn",
        "specs/cifar/resnet1202.rn",
    ] {
        let (_, r) = report_of(spec);
        let text = table::render_table(&r, 3);
        let widest = text.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(widest <= 100, "{spec}: {widest} columns");
    }
}

#[test]
fn plot_has_a_bar_pair_per_stage() {
    let (_, r) = report_of("specs/resnet152.rn");
    let svg = plot::render_svg(&r, 1);
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    // background + 2 bars for stem, 4 stages, head
    assert_eq!(svg.matches("<rect").count(), 1 + 2 * 6);
    assert!(svg.contains("layer3 (conv4_x)"));
    let svg = plot::render_svg(&r, 3);
    assert_eq!(svg.matches("<rect").count(), 1 + 2 * (155 + 1));
}
