//! Deterministic initialization: He (Kaiming normal, fan-out) for convs, as
//! torchvision does, from a counter-based generator keyed by tensor name.
//!
//! The generator is specified exactly so that other tools can reproduce it
//! (`tests/golden/make.py` does, in numpy): each state_dict key has its own
//! stream, so adding a layer never changes the others' values.
//!
//! ```text
//! base(seed, key) = splitmix64(seed ^ fnv1a64(key))
//! u(i)            = ((splitmix64(base + i) >> 11) + 0.5) * 2^-53      in (0, 1)
//! normal(j)       = sqrt(-2 ln u(2j)) * cos(2 pi u(2j+1))
//! ```

use ndarray::ArrayD;

use crate::ir::{Graph, Op, ParamKind};

use super::Weights;

pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The uniform stream of one tensor.
pub struct Stream {
    base: u64,
}

impl Stream {
    pub fn new(seed: u64, key: &str) -> Stream {
        Stream {
            base: splitmix64(seed ^ fnv1a64(key.as_bytes())),
        }
    }

    /// The `i`-th uniform in (0, 1).
    pub fn uniform(&self, i: u64) -> f64 {
        ((splitmix64(self.base.wrapping_add(i)) >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// The `j`-th standard normal (Box-Muller on uniforms 2j and 2j+1).
    pub fn normal(&self, j: u64) -> f64 {
        let (u1, u2) = (self.uniform(2 * j), self.uniform(2 * j + 1));
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct InitOptions {
    pub seed: u64,
    /// Random BN affine parameters and statistics instead of 1, 0, 0, 1: makes
    /// BN (and its folding) visible in tests.
    pub randomize_bn: bool,
}

/// Weights for every parameter of the graph.
pub fn init(g: &Graph, opts: InitOptions) -> Weights {
    // Tensors side by side on 2 MB pages, which the JIT's store can take.
    let _carving = crate::pages::Carving::begin();
    let mut w = Weights::default();
    for (_, n) in g.nodes() {
        for p in n.op.params() {
            let key = format!("{}.{}", n.name, p.suffix);
            let s = Stream::new(opts.seed, &key);
            let len = p.numel();
            let values: Vec<f32> = match (&n.op, p.kind) {
                (
                    Op::Conv2d {
                        out_channels,
                        kernel,
                        ..
                    },
                    ParamKind::Weight,
                ) => {
                    let std = (2.0 / (out_channels * kernel * kernel) as f64).sqrt();
                    fill(len, |j| (s.normal(j) * std) as f32)
                }
                (
                    Op::Conv2d {
                        in_channels,
                        kernel,
                        groups,
                        ..
                    },
                    _,
                ) => {
                    let fan_in = (in_channels / groups.max(&1) * kernel * kernel) as f64;
                    uniform_bound(&s, len, fan_in.sqrt())
                }
                (Op::Linear { in_features, .. }, _) => {
                    uniform_bound(&s, len, (*in_features as f64).sqrt())
                }
                (Op::BatchNorm { .. }, kind) if opts.randomize_bn => (0..len)
                    .map(|i| {
                        let u = s.uniform(i);
                        (match kind {
                            ParamKind::Weight | ParamKind::RunningVar => 0.5 + u,
                            ParamKind::Bias | ParamKind::RunningMean => (u - 0.5) * 0.4,
                        }) as f32
                    })
                    .collect(),
                (_, kind) => {
                    let v = match kind {
                        ParamKind::Weight | ParamKind::RunningVar => 1.0,
                        ParamKind::Bias | ParamKind::RunningMean => 0.0,
                    };
                    vec![v; len as usize]
                }
            };
            let array = ArrayD::from_shape_vec(p.shape.clone(), values)
                .unwrap_or_else(|_| ArrayD::zeros(p.shape.clone()));
            w.insert(key, array);
        }
    }
    w
}

/// Uniform in (-1/sqrt_fan_in, 1/sqrt_fan_in), as PyTorch's default for fc.
fn uniform_bound(s: &Stream, len: u64, sqrt_fan_in: f64) -> Vec<f32> {
    fill(len, |i| ((2.0 * s.uniform(i) - 1.0) / sqrt_fan_in) as f32)
}

/// `[f(0), f(1), ..., f(len - 1)]`, large tensors split over the cores: a
/// counter-based stream's values do not depend on who computes them, and
/// a log and a cos per two values take ResNet-152 2 s on one core.
fn fill(len: u64, f: impl Fn(u64) -> f32 + Sync) -> Vec<f32> {
    const SERIAL: u64 = 1 << 16;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    if len < SERIAL || cores < 2 {
        return (0..len).map(f).collect();
    }
    let mut out = vec![0.0f32; len as usize];
    let chunk = len.div_ceil(cores) as usize;
    std::thread::scope(|sc| {
        for (k, part) in out.chunks_mut(chunk).enumerate() {
            let f = &f;
            sc.spawn(move || {
                let first = (k * chunk) as u64;
                for (i, v) in part.iter_mut().enumerate() {
                    *v = f(first + i as u64);
                }
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // From the reference implementation (Vigna): seed 0 gives this stream.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn normals_have_unit_variance() {
        let s = Stream::new(7, "x");
        let n = 20_000;
        let v: Vec<f64> = (0..n).map(|j| s.normal(j)).collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "{mean}");
        assert!((var - 1.0).abs() < 0.05, "{var}");
    }
}
