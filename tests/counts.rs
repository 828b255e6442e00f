//! Exact parameter and MAC counts of every spec against torchvision and the
//! paper (`tests/reference/counts.json`, made by `tests/reference/counts.py`).

mod common;

use common::{compile, root};
use resnetc::ir::ParamKind;

/// The brief's facts, written out so that they hold even if the JSON changes.
#[test]
fn torchvision_and_paper_figures() {
    let cases: &[(&str, u64, u64)] = &[
        ("specs/resnet18.rn", 11_689_512, 1_814_073_344),
        ("specs/resnet34.rn", 21_797_672, 3_663_761_408),
        ("specs/resnet50.rn", 25_557_032, 3_857_973_248),
        ("specs/resnet50_v1_5.rn", 25_557_032, 4_089_184_256),
        ("specs/resnet101.rn", 44_549_160, 7_570_194_432),
        ("specs/resnet152.rn", 60_192_808, 11_282_415_616),
        ("specs/resnet101_v1_5.rn", 44_549_160, 7_801_405_440),
        ("specs/resnet152_v1_5.rn", 60_192_808, 11_513_626_624),
        ("specs/cifar/resnet20.rn", 269_722, 40_551_040),
        ("specs/cifar/resnet32.rn", 464_154, 68_862_592),
        ("specs/cifar/resnet44.rn", 658_586, 97_174_144),
        ("specs/cifar/resnet56.rn", 853_018, 125_485_696),
        ("specs/cifar/resnet110.rn", 1_727_962, 252_887_680),
        ("specs/cifar/resnet1202.rn", 19_421_274, 2_829_238_912),
    ];
    for &(spec, params, macs) in cases {
        let g = compile(&root().join(spec));
        assert_eq!(g.trainable_params(), params, "{spec} parameters");
        assert_eq!(g.macs(), macs, "{spec} MACs");
    }
}

/// Which entry of counts.json each spec is checked against.
fn reference_key(stem: &str) -> String {
    match stem {
        "resnet50" | "resnet101" | "resnet152" => format!("{stem}_v1"),
        "resnet50_v1_5" | "resnet101_v1_5" | "resnet152_v1_5" => stem.replace("_v1_5", ""),
        "resnet34_a" => "resnet34_optA".into(),
        "resnet34_c" => "resnet34_optC".into(),
        other => other.into(),
    }
}

#[test]
fn every_spec_matches_the_pytorch_reference() {
    let text = std::fs::read_to_string(root().join("tests/reference/counts.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for path in common::all_specs() {
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let key = reference_key(stem);
        let r = &reference[key.as_str()];
        assert!(r.is_object(), "no reference for {}", path.display());
        let g = compile(&path);
        let buffers: u64 = g
            .nodes()
            .flat_map(|(_, n)| n.op.params())
            .filter(|p| matches!(p.kind, ParamKind::RunningMean | ParamKind::RunningVar))
            .map(|p| p.numel())
            .sum();
        assert_eq!(
            g.trainable_params(),
            r["params"].as_u64().unwrap(),
            "{key} params"
        );
        assert_eq!(
            buffers,
            r["bn_buffers"].as_u64().unwrap(),
            "{key} BN buffers"
        );
        assert_eq!(g.macs(), r["macs"].as_u64().unwrap(), "{key} MACs");
        let stages: Vec<Vec<usize>> = g
            .stages
            .iter()
            .map(|s| g.node(s.output).shape.dims()[1..].to_vec())
            .collect();
        let expected: Vec<Vec<usize>> = serde_json::from_value(r["stages"].clone()).unwrap();
        assert_eq!(stages, expected, "{key} stage outputs");
        let out = g.output_shape().dims()[1..].to_vec();
        let expected: Vec<usize> = serde_json::from_value(r["output"].clone()).unwrap();
        assert_eq!(out, expected, "{key} output");
        checked += 1;
    }
    assert_eq!(checked, 28, "every spec and example has a reference");
}

/// Table 1's output sizes and the depth in each network's name (6n+2 on CIFAR).
#[test]
fn table1_shapes_and_depths() {
    for path in common::all_specs() {
        let g = compile(&path);
        let stem = path.file_stem().unwrap().to_str().unwrap();
        let digits: String = stem
            .chars()
            .skip_while(|c| !c.is_ascii_digit())
            .take_while(|c| c.is_ascii_digit())
            .collect();
        // open_nsfw is a ResNet-50 at half width.
        let named_depth: usize = if stem == "open_nsfw" {
            50
        } else {
            digits.parse().unwrap()
        };
        // wide_resnet50_2 and resnext50_32x4d are 50 deep too.
        assert_eq!(g.depth(), named_depth, "{stem} depth");
        let sizes: Vec<usize> = g
            .stages
            .iter()
            .map(|s| g.node(s.output).shape.height())
            .collect();
        if g.input_shape().height() == 224 {
            let conv1 = g.find("conv1").unwrap();
            assert_eq!(g.node(conv1).shape.height(), 112, "{stem} conv1");
            // The dilated backbone keeps layer3 and layer4 at stride 8.
            let table1 = if stem.ends_with("_dilated") {
                [56, 28, 28, 28]
            } else {
                [56, 28, 14, 7]
            };
            assert_eq!(sizes, table1, "{stem}");
        } else {
            assert_eq!(sizes, [32, 16, 8], "{stem}");
        }
    }
}

/// torchvision's state_dict names come out of lowering.
#[test]
fn names_follow_torchvision_state_dict() {
    let g = compile(&root().join("specs/resnet50_v1_5.rn"));
    let mut keys = Vec::new();
    for (_, n) in g.nodes() {
        for p in n.op.params() {
            keys.push(format!("{}.{}", n.name, p.suffix));
        }
    }
    for k in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "layer3.1.conv2.weight",
        "layer4.2.bn3.bias",
        "fc.weight",
        "fc.bias",
    ] {
        assert!(keys.contains(&k.to_string()), "missing {k}");
    }
    // torchvision's resnet50 state_dict has 320 entries: 267 tensors and 53 num_batches_tracked.
    assert_eq!(keys.len(), 267);
    assert!(!keys.iter().any(|k| k.starts_with("layer1.1.downsample")));
}
