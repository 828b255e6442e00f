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

// ---- readers of user files: mutated bytes give a value or an error ------

/// `bytes` with a few of them changed, cut short or grown.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)]) -> Vec<u8> {
    for &(at, kind, v) in edits {
        if bytes.is_empty() {
            bytes.push(v);
            continue;
        }
        let at = at % bytes.len();
        match kind % 4 {
            0 => bytes[at] = v,
            1 => bytes.truncate(at),
            2 => bytes.insert(at, v),
            _ => bytes[at] ^= 1 << (v % 8),
        }
    }
    bytes
}

fn npy_seed() -> Vec<u8> {
    let a = ndarray::ArrayD::from_shape_fn(vec![2, 3, 4, 5], |d| d[3] as f32 - 2.5);
    resnetc::io::npy::to_bytes(&a)
}

fn png_seed() -> Vec<u8> {
    std::fs::read(common::root().join("tests/golden/image/photo.png")).unwrap()
}

fn jpg_seed() -> Vec<u8> {
    std::fs::read(common::root().join("tests/golden/image/photo.jpg")).unwrap()
}

/// tests/onnx/constructs.rn exported (every special form of the exporter),
/// and its graph, made once.
fn onnx_seed() -> &'static (Vec<u8>, resnetc::ir::Graph) {
    static SEED: std::sync::OnceLock<(Vec<u8>, resnetc::ir::Graph)> = std::sync::OnceLock::new();
    SEED.get_or_init(|| {
        let mut sources = resnetc::syntax::SourceMap::new();
        let path = common::root().join("tests/onnx/constructs.rn");
        let g = resnetc::lower::compile_file(&path, &Default::default(), &mut sources).unwrap();
        let w = resnetc::weights::init::init(&g, Default::default());
        let bound = w.bind(&g, "init").unwrap();
        let opts = resnetc::onnx::export::ExportOptions {
            opset: 17,
            batch: None,
            metadata: vec![],
        };
        let bytes = resnetc::onnx::export::export(&g, &bound, &sources, &opts).unwrap();
        resnetc::onnx::import::weights_for(&bytes, "seed.onnx", &g).expect("the seed binds");
        (bytes, g)
    })
}

fn safetensors_seed() -> Vec<u8> {
    std::fs::read(common::root().join("tests/golden/cifar_resnet20/weights.safetensors")).unwrap()
}

/// A PNG header that claims 100000 x 100000 pixels (and has no data).
fn png_bomb() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&ihdr);
    v.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    v
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

#[test]
fn a_decompression_bomb_and_truncated_images_are_errors() {
    let e = resnetc::io::image::decode(&png_bomb()).unwrap_err();
    assert!(e.contains("limit") || e.contains("dimensions"), "{e}");
    // A PNG cut anywhere is an error; a JPEG cut inside its scan data
    // decodes with the rest grey (as libjpeg does), not before it.
    for (seed, cuts) in [
        (png_seed(), vec![0, 8, 100, 1000]),
        (jpg_seed(), vec![0, 8, 100]),
    ] {
        let len = seed.len();
        for cut in cuts.into_iter().chain(std::iter::once(len / 2)) {
            let r = resnetc::io::image::decode(&seed[..cut]);
            assert!(
                r.is_err() || cut == len / 2 && len == jpg_seed().len(),
                "cut at {cut} of {len}"
            );
        }
        assert!(resnetc::io::image::decode(&seed).is_ok());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn mutated_npy_files_never_panic(edits in prop::collection::vec((0usize..1 << 16, 0u8..4, any::<u8>()), 1..8)) {
        let _ = resnetc::io::npy::parse(&mutate(npy_seed(), &edits));
    }

    #[test]
    fn mutated_npy_headers_never_panic(edits in prop::collection::vec((0usize..128, 0u8..4, any::<u8>()), 1..8)) {
        // Edits within the header, where the parser works hardest.
        let _ = resnetc::io::npy::parse(&mutate(npy_seed(), &edits));
    }

    #[test]
    fn mutated_images_never_panic(png in any::<bool>(), edits in prop::collection::vec((0usize..1 << 20, 0u8..4, any::<u8>()), 1..6)) {
        let seed = if png { png_seed() } else { jpg_seed() };
        let _ = resnetc::io::image::decode(&mutate(seed, &edits));
    }

    #[test]
    fn mutated_onnx_models_never_panic(
        near_nodes in any::<bool>(),
        edits in prop::collection::vec((0usize..1 << 18, 0u8..4, any::<u8>()), 1..6),
    ) {
        // The nodes come first in the file: most edits land there.
        let (seed, g) = onnx_seed();
        let edits: Vec<_> = edits
            .into_iter()
            .map(|(at, op, b)| (if near_nodes { at % 16_384 } else { at }, op, b))
            .collect();
        let _ = resnetc::onnx::import::weights_for(&mutate(seed.clone(), &edits), "fuzz.onnx", g);
    }

    #[test]
    fn mutated_safetensors_never_panic(edits in prop::collection::vec((0usize..1 << 12, 0u8..4, any::<u8>()), 1..6)) {
        let _ = resnetc::weights::file::from_bytes(&mutate(safetensors_seed(), &edits), "fuzz");
    }
}
