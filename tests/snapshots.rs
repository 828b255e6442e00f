//! Snapshots a reviewer reads: the textual IR of every spec and example.
//! Update with `cargo insta review` and read every change.

mod common;

use resnetc::ir::text;

#[test]
fn ir_of_specs() {
    insta::glob!("../specs", "**/*.rn", |path| {
        insta::assert_snapshot!(text::render(&common::compile(path)));
    });
}

#[test]
fn ir_of_examples() {
    insta::glob!("../examples", "*.rn", |path| {
        insta::assert_snapshot!(text::render(&common::compile(path)));
    });
}

#[test]
fn optimized_ir() {
    use resnetc::passes::{self, Module};
    for spec in [
        "specs/resnet18.rn",
        "specs/resnet50.rn",
        "specs/cifar/resnet20.rn",
    ] {
        let g = common::compile(&common::root().join(spec));
        let (m, _) = passes::prepare(
            Module {
                graph: g,
                weights: None,
            },
            &passes::Options {
                level: 2,
                ..Default::default()
            },
        )
        .unwrap();
        let name = format!("optimized_{}", m.graph().name);
        insta::assert_snapshot!(name, text::render_planned(m.graph(), m.plan()));
    }
}
