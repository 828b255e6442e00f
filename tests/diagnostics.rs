//! Every broken spec in tests/diagnostics/ fails with a pointed, rendered error.

mod common;

use resnetc::lower::{compile_file, Options};
use resnetc::syntax::SourceMap;

#[test]
fn rendered_diagnostics() {
    insta::glob!("diagnostics", "*.rn", |path| {
        let mut sources = SourceMap::new();
        // Name files relative to the crate so snapshots do not depend on the checkout.
        let rel = path.strip_prefix(common::root()).unwrap_or(path);
        let text = std::fs::read_to_string(path).unwrap();
        let result = resnetc::lower::compile_source(
            &rel.display().to_string(),
            &text,
            &Options::default(),
            &mut sources,
        );
        let diags = match result {
            Ok(g) => panic!("{} compiled to {} values", rel.display(), g.len()),
            Err(d) => d,
        };
        for d in &diags.0 {
            let primary = d.primary();
            let is_io_without_span = d.code == "io" && primary.is_none();
            assert!(
                primary.is_some() || is_io_without_span,
                "{}: `{}` has no location",
                rel.display(),
                d.message
            );
        }
        insta::assert_snapshot!(diags.render(&sources, false));
    });
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let mut sources = SourceMap::new();
    let err = compile_file(
        std::path::Path::new("no/such/spec.rn"),
        &Options::default(),
        &mut sources,
    )
    .unwrap_err();
    assert!(err.0[0]
        .message
        .contains("cannot read spec `no/such/spec.rn`"));
}

#[test]
fn several_errors_are_reported_at_once() {
    let path = common::root().join("tests/diagnostics/bad_args.rn");
    let mut sources = SourceMap::new();
    let err = compile_file(&path, &Options::default(), &mut sources).unwrap_err();
    assert_eq!(err.len(), 4);
}
