//! Random and mutated specs never panic the parser, checker or lowering.

mod common;

use proptest::prelude::*;
use resnetc::lower::{compile_source, Options};
use resnetc::syntax::SourceMap;

fn corpus() -> Vec<String> {
    common::all_specs()
        .iter()
        .chain(std::iter::once(&common::root().join("src/prelude.rn")))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// Pieces that make mutations likely to reach deep into lowering.
const TOKENS: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "99999999999",
    "x",
    "{",
    "}",
    "(",
    ")",
    ",",
    ":",
    "=",
    "?",
    "stride 2",
    "shortcut A",
    "shortcut C",
    "shortcut none",
    "add shortcut",
    "relu",
    "bn",
    "conv(3, 3)",
    "groups = 3",
    "planes * 0",
    "/ 0",
    "input 0x0x0",
    "flatten",
    "fc(10)",
    "as pre",
    "let w = 1",
    "stage s: basic(8) x 2",
    "\"",
    "#",
    "\n",
];

fn compile(text: &str) {
    let mut sources = SourceMap::new();
    let _ = compile_source("fuzz.rn", text, &Options::default(), &mut sources)
        .map_err(|d| d.render(&sources, false));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn mutated_specs_never_panic(
        which in 0usize..32,
        edits in prop::collection::vec((0usize..10_000, 0usize..40, 0usize..TOKENS.len()), 1..6),
    ) {
        let specs = corpus();
        let mut text = specs[which % specs.len()].clone();
        for (at, cut, tok) in edits {
            let mut at = at % (text.len() + 1);
            while !text.is_char_boundary(at) { at -= 1; }
            let mut end = (at + cut % 12).min(text.len());
            while !text.is_char_boundary(end) { end -= 1; }
            text.replace_range(at..end.max(at), TOKENS[tok]);
        }
        compile(&text);
    }

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        compile(&text);
    }

    #[test]
    fn random_token_soup_never_panics(toks in prop::collection::vec(0usize..TOKENS.len(), 0..60)) {
        let text: Vec<&str> = toks.iter().map(|&t| TOKENS[t]).collect();
        compile(&format!("network n {{ input 3x32x32 {} }}", text.join(" ")));
    }
}
