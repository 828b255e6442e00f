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
