//! The conv GEMMs alone on ResNet-50's layer shapes (batch 1): GFLOP/s and
//! the share of the measured FMA peak, on one thread and on all. B comes
//! from the real source (the input read in place, or im2col), packed per
//! task as in a network run, and the weights cold (out of cache) as they
//! are there. Beside it, the same conv run direct on channel-blocked maps
//! (`blocked.rs`, what the JIT runs where a network allows it). Run with
//! `cargo bench --bench gemm`; the whole-network view is
//! `resnetc bench --profile`.

use std::sync::Arc;

use resnetc::backend::jit::gemm::{
    self, BSource, ConvGeom, Epilogue, Images, PackedA, ResidualRead,
};
use resnetc::backend::jit::team::Team;
use resnetc::backend::jit::{blocked, kernels};
use std::time::Instant;

/// (layer, in channels, input size, out channels, kernel, stride)
const CONVS: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("conv1", 3, 224, 64, 7, 2),
    ("layer2.0 3x3 /2", 128, 56, 128, 3, 2),
    ("layer1 1x1 reduce", 256, 56, 64, 1, 1),
    ("layer1 3x3", 64, 56, 64, 3, 1),
    ("layer1 1x1 expand", 64, 56, 256, 1, 1),
    ("layer2 1x1 reduce", 512, 28, 128, 1, 1),
    ("layer2 3x3", 128, 28, 128, 3, 1),
    ("layer2 1x1 expand", 128, 28, 512, 1, 1),
    ("layer3 1x1 reduce", 1024, 14, 256, 1, 1),
    ("layer3 3x3", 256, 14, 256, 3, 1),
    ("layer3 1x1 expand", 256, 14, 1024, 1, 1),
    ("layer4 1x1 reduce", 2048, 7, 512, 1, 1),
    ("layer4 3x3", 512, 7, 512, 3, 1),
    ("layer4 1x1 expand", 512, 7, 2048, 1, 1),
];

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The best set here (RESNETC_NO_AVX512=1 for AVX2).
    let ks = kernels::best();
    println!("microkernel {}", ks.about);
    println!(
        "{:>3}  {:<18} {:>5} {:>5} {:>5}  {:>8}  {:>5}  {:>13}",
        "thr", "layer", "M", "K", "N", "GFLOP/s", "peak%", "direct"
    );
    // `cargo bench --bench gemm -- NAME`: only the layers whose name holds NAME.
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for t in [1, threads] {
        let pool = Team::new(t).expect("threads");
        let peak = gemm::measure_peak(ks, &pool);
        for &(name, c, size, o, kernel, stride) in CONVS {
            if only.as_deref().is_some_and(|o| !name.contains(o)) {
                continue;
            }
            let pad = kernel / 2;
            let out_size = (size + 2 * pad - kernel) / stride + 1;
            let (m, k, n) = (o, c * kernel * kernel, out_size * out_size);
            let w: Vec<f32> = (0..m * k).map(|i| (i % 97) as f32 / 97.0 - 0.5).collect();
            // Weights cold, as in a network run: cycle through copies filling 128 MiB.
            let copies = (128 << 20) / (4 * m * k);
            let a: Vec<PackedA> = (0..copies.max(1))
                .map(|_| PackedA::pack(&w, m, k))
                .collect();
            let x: Vec<f32> = (0..c * size * size)
                .map(|i| (i % 89) as f32 / 89.0)
                .collect();
            let b = if kernel == 1 {
                BSource::Rows {
                    ptr: x.as_ptr(),
                    ld: size * size,
                    images: Images::one(n),
                }
            } else {
                let geom = ConvGeom {
                    c,
                    h: size,
                    w: size,
                    kernel,
                    stride,
                    pad,
                    dilation: 1,
                    ow: out_size,
                    image_stride: 0,
                };
                BSource::Im2col {
                    x: x.as_ptr(),
                    geom,
                }
            };
            let mut out = vec![0.0f32; m * n];
            let epi = Epilogue {
                bias: None,
                residual: ResidualRead::None,
                relu: true,
                row_stride: n,
                col_stride: 1,
                images: Images::one(n),
            };
            let flops = 2.0 * (m * k * n) as f64;
            let reps = ((1e9 / flops) as usize).clamp(3, 1000);
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let start = Instant::now();
                for r in 0..reps {
                    let a = &a[r % a.len()];
                    // SAFETY: x holds the conv's input, out its m x n output.
                    unsafe { gemm::gemm(ks, a, b, n, out.as_mut_ptr(), &epi, Some(&pool)) };
                }
                best = best.min(start.elapsed().as_secs_f64() / reps as f64);
            }
            let g = flops / best / 1e9;
            // The same conv direct on channel-blocked maps, where it runs.
            let geom = blocked::Geom {
                c,
                h: size,
                w: size,
                o,
                kernel,
                stride,
                pad,
                dilation: 1,
                groups: 1,
                oh: out_size,
                ow: out_size,
                input: if c % blocked::BLOCK == 0 {
                    blocked::Input::Blocked
                } else {
                    blocked::Input::Planar
                },
            };
            let direct = blocked::eligible(&geom).then(|| {
                let convs: Vec<blocked::Conv> = (0..copies.max(1))
                    .map(|_| {
                        let mut store = blocked::Store::new(&[geom]).expect("memory");
                        let conv = blocked::Conv::pack(geom, &w, None, true, ks, &mut store.rest())
                            .expect("room");
                        conv.bind(Arc::new(store))
                    })
                    .collect();
                let mut best = f64::INFINITY;
                for _ in 0..5 {
                    let start = Instant::now();
                    for r in 0..reps {
                        let conv = &convs[r % convs.len()];
                        // SAFETY: x and out hold the conv's maps (blocked or planar alike in size).
                        unsafe {
                            conv.run(
                                1,
                                x.as_ptr(),
                                std::ptr::null(),
                                out.as_mut_ptr(),
                                kernels::epilogue::Also::NONE,
                                &pool,
                            )
                        };
                    }
                    best = best.min(start.elapsed().as_secs_f64() / reps as f64);
                }
                flops / best / 1e9
            });
            let d = direct.map_or("-".to_string(), |d| {
                format!("{d:.1}  {:>4.0}%", 100.0 * d / peak)
            });
            println!(
                "{t:>3}  {name:<18} {m:>5} {k:>5} {n:>5}  {g:>8.1}  {:>4.0}%  {d:>13}",
                100.0 * g / peak
            );
        }
    }
}
