//! With the binary's allocator installed (as here), the JIT packs a
//! network given up (`compile_owned`) into a weight store made of the pages
//! of its freed tensors. It must compute exactly what the same network
//! computes packed into fresh pages (`compile`, weights borrowed), on every
//! strategy that packs into the store.

mod common;

use ndarray::ArrayD;
use resnetc::backend::{self, Options};
use resnetc::lower::Options as BuildOptions;
use resnetc::pages::Pages;

#[global_allocator]
static PAGES: Pages = Pages;

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
    for strategy in [None, Some("winograd"), Some("winograd-f2")] {
        let opts = Options {
            threads: 2,
            conv_strategy: strategy.map(Into::into),
            ..Default::default()
        };
        let b = backend::by_name("jit", &opts).expect("the jit backend");
        let fresh = b
            .compile(&common::program(&g, &w, 2))
            .unwrap_or_else(|e| panic!("{e}"));
        let p = common::program(&g, &w, 2);
        // Tensors of 1 MiB and up are blocks of their own, freed as they
        // are packed (layer3's and layer4's convs, and the fc's: 82 of
        // ResNet-50's 98 MB).
        let big: usize = p
            .weights
            .iter()
            .map(|t| 4 * t.shape.iter().product::<usize>())
            .filter(|&b| b >= 1 << 20)
            .sum();
        let moved = b.compile_owned(p).unwrap_or_else(|e| panic!("{e}"));
        let (bytes, got) = moved.info().store.expect("a weight store");
        // All but the last ones freed (after the store's last page was
        // backed) and the fc's, which is not packed into the store.
        assert!(
            got > big / 2 && got <= big,
            "{strategy:?}: {got} bytes of the store's {bytes} moved, of {big} freed"
        );
        println!("{strategy:?}: {got} bytes of the store's {bytes} moved, of {big} freed");
        let fresh_store = fresh.info().store.expect("a weight store");
        assert_eq!(fresh_store.0, bytes, "{strategy:?}: the same store");
        assert_eq!(fresh_store.1, 0, "{strategy:?}: nothing freed to move");
        let (mut fresh, mut moved) = (fresh, moved);
        let want = fresh.run(&x).expect("runs");
        let have = moved.run(&x).expect("runs");
        assert!(want.iter().all(|v| v.is_finite()), "{strategy:?}");
        assert_eq!(
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            have.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{strategy:?}: the logits differ"
        );
    }
}
