//! With the binary's allocator installed (as here), weights are read side
//! by side into slabs of 2 MB pages, and the JIT packs a network given up
//! (`compile_owned`) into a weight store made of the pages its tensors
//! free. It must compute exactly what the same network computes packed
//! into fresh pages (`compile`, weights borrowed), on every strategy and
//! precision that packs into the store.

mod common;

use ndarray::ArrayD;
use resnetc::backend::{self, Options, Program};
use resnetc::ir::Graph;
use resnetc::lower::Options as BuildOptions;
use resnetc::pages::Pages;

#[global_allocator]
static PAGES: Pages = Pages;

/// `g`'s program on He-initialized tensors as read (carved from slabs),
/// not copies of them.
fn program_of_read_tensors(g: &Graph) -> Program {
    let w = resnetc::weights::init::init(g, Default::default());
    let m = resnetc::passes::Module {
        graph: g.clone(),
        weights: Some(w.bind(g, "test").expect("weights fit")),
    };
    let opts = resnetc::passes::Options {
        level: 2,
        ..Default::default()
    };
    let (m, _) = resnetc::passes::prepare(m, &opts).expect("prepares");
    Program::lower(m).expect("lowers")
}

#[test]
fn a_store_of_freed_pages_computes_what_fresh_pages_do() {
    let g = common::compile_with(
        &common::root().join("specs/resnet50_v1_5.rn"),
        &BuildOptions {
            batch: 2,
            input: Some([3, 64, 64]),
        },
    );
    let x = ArrayD::from_shape_fn(g.input_shape().dims().to_vec(), |d| {
        ((d[0] * 31 + d[1] * 17 + d[2] * 7 + d[3] * 3) % 23) as f32 / 11.0 - 1.0
    });
    let w = resnetc::weights::init::init(&g, Default::default());
    let mut cases = vec![
        (None, None),
        (Some("winograd"), None),
        (Some("winograd-f2"), None),
    ];
    if resnetc::backend::jit::kernels::has_bf16_dot() {
        cases.push((None, Some("bf16")));
    } else {
        println!("no bf16 case: this CPU has no AVX512_BF16");
    }
    for (strategy, precision) in cases {
        let opts = Options {
            threads: 2,
            conv_strategy: strategy.map(Into::into),
            precision: precision.map(Into::into),
            ..Default::default()
        };
        let b = backend::by_name("jit", &opts).expect("the jit backend");
        let fresh = b
            .compile(&common::program(&g, &w, 2))
            .unwrap_or_else(|e| panic!("{e}"));
        let p = program_of_read_tensors(&g);
        // Tensors of 1 MiB and up are carved from slabs (layer3's and
        // layer4's convs, and the fc's: 82 of ResNet-50's 98 MB), and their
        // pages freed as they are packed.
        let big: usize = p
            .weights
            .iter()
            .map(|t| 4 * t.shape.iter().product::<usize>())
            .filter(|&b| b >= 1 << 20)
            .sum();
        let moved = b.compile_owned(p).unwrap_or_else(|e| panic!("{e}"));
        let (bytes, got) = moved.info().store.expect("a weight store");
        let case = format!("{strategy:?} {precision:?}");
        println!("{case}: {got} bytes of the store's {bytes} moved, of {big} freed");
        // Whole 2 MB pages, all but those freed after the store's last page
        // was backed (the first convs' read, last packed). A bf16 store is
        // half the size of the tensors.
        assert!(
            got > big.min(bytes) / 2 && got <= bytes,
            "{case}: {got} bytes of the store's {bytes} moved, of {big} freed"
        );
        assert_eq!(got % (2 << 20), 0, "{case}: whole 2 MB pages");
        let fresh_store = fresh.info().store.expect("a weight store");
        assert_eq!(fresh_store.0, bytes, "{case}: the same store");
        assert_eq!(fresh_store.1, 0, "{case}: nothing freed to move");
        let (mut fresh, mut moved) = (fresh, moved);
        let want = fresh.run(&x).expect("runs");
        let have = moved.run(&x).expect("runs");
        assert!(want.iter().all(|v| v.is_finite()), "{case}");
        let differ = want
            .iter()
            .zip(have.iter())
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differ,
            0,
            "{case}: {differ} of {} logits differ",
            want.len()
        );
    }
}
