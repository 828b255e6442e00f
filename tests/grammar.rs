//! The grammar, statement by statement.

use resnetc::syntax::ast::{ExprKind, ShortcutKind, Stmt};
use resnetc::syntax::parser::parse;
use resnetc::syntax::FileId;

fn ok(src: &str) -> resnetc::syntax::ast::File {
    parse(FileId(0), src).unwrap_or_else(|d| panic!("{src}: {}", d.message))
}

fn err(src: &str) -> String {
    match parse(FileId(0), src) {
        Ok(_) => panic!("parsed but should not: {src}"),
        Err(d) => d.message,
    }
}

#[test]
fn empty_file_and_comments() {
    let f = ok("# only a comment\n// and another\n");
    assert!(f.blocks.is_empty() && f.networks.is_empty());
}

#[test]
fn network_items() {
    let f = ok(r#"
        import "lib.rn"
        network n {
          input 3x224x224
          shortcut A(pad = "after")
          stem { conv1: conv(64, 7, stride = 2, pad = 3); bn1: bn; relu }
          stage layer1: basic(64) x 2
          stage layer2: basic(128) x 2 stride 2 shortcut C
          head { global_avg_pool flatten fc(1000) }
        }"#);
    assert_eq!(f.imports[0].path, "lib.rn");
    let n = &f.networks[0];
    assert_eq!(n.input.unwrap().0, [3, 224, 224]);
    let sc = n.shortcut.as_ref().unwrap();
    assert_eq!(sc.kind, ShortcutKind::A);
    assert_eq!(sc.args.len(), 1);
    assert_eq!(n.stem.as_ref().unwrap().body.len(), 3);
    assert_eq!(n.stages.len(), 2);
    assert_eq!(n.stages[1].repeat, 2);
    assert!(n.stages[1].stride.is_some());
    assert_eq!(n.stages[1].shortcut.as_ref().unwrap().kind, ShortcutKind::C);
    assert_eq!(n.head.as_ref().unwrap().body.len(), 3);
}

#[test]
fn block_statements() {
    let f = ok("block b(planes, stride = 1, v = true) {
          let w = planes * 4
          bn1: bn
          relu as pre
          layer.x.0: conv(w, 3, stride = v ? stride : 1, pad = 1)
          add shortcut(project_from = pre, bn = false)
        }");
    let b = &f.blocks[0];
    assert_eq!(b.params.len(), 3);
    assert!(b.params[1].default.is_some());
    assert!(matches!(b.body[0], Stmt::Let { .. }));
    match &b.body[2] {
        Stmt::Layer { bind, .. } => assert_eq!(bind.as_ref().unwrap().name, "pre"),
        s => panic!("{s:?}"),
    }
    match &b.body[3] {
        Stmt::Layer { label, call, .. } => {
            assert_eq!(label.as_ref().unwrap().name, "layer.x.0");
            assert!(matches!(call.args[2].value.kind, ExprKind::Cond(..)));
        }
        s => panic!("{s:?}"),
    }
    assert!(matches!(&b.body[4], Stmt::AddShortcut { args, .. } if args.len() == 2));
}

#[test]
fn keywords_are_whole_words() {
    // `letter`, `added`, `stages` and `inputs` are names, not keywords.
    let f = ok("block b(letter) { added: conv(letter, 1) as stages }");
    assert!(matches!(&f.blocks[0].body[0], Stmt::Layer { .. }));
    ok("network inputs { input 1x8x8 }");
}

#[test]
fn numbers_with_separators() {
    let f = ok("network n { input 3x1_024x1_024 }");
    assert_eq!(f.networks[0].input.unwrap().0, [3, 1024, 1024]);
}

#[test]
fn syntax_errors_say_what_was_expected() {
    assert!(err("network n { input 3x224 }").contains("dimensions such as `3x224x224`"));
    assert!(err("network n { stem { conv(64 } }").contains("`)` or `,`"));
    assert!(err("network n { shortcut D }").contains("shortcut option"));
    assert!(err("network n { stage s: basic(64) }").contains("repeat count"));
    assert!(err("block b( { }").contains("found `{`"));
    assert!(err("network n {").contains("end of file"));
}

#[test]
fn huge_integers_are_errors() {
    assert!(err("block b(x = 99999999999999999999) {}").contains("too large"));
}

#[test]
fn spans_point_at_the_text() {
    let src = "network n {\n  stem {\n    conv1: conv(64, 3)\n  }\n}";
    let f = ok(src);
    let Stmt::Layer { span, call, .. } = &f.networks[0].stem.as_ref().unwrap().body[0] else {
        panic!()
    };
    assert_eq!(&src[span.start..span.end], "conv1: conv(64, 3)");
    assert_eq!(&src[call.name.span.start..call.name.span.end], "conv");
}
