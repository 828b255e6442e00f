//! Plain kernels, one per op, with PyTorch's eval-mode semantics. Convolution
//! is im2col then one GEMM per image and group (ndarray's `dot`, which runs on
//! matrixmultiply); everything else is a direct loop.

use ndarray::{s, Array2, Array4, ArrayView1, ArrayView2, ArrayView4, Axis};

/// Where a conv's taps fall: stride, padding, dilation, and the output size
/// (the IR's rule, given rather than recomputed).
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub stride: usize,
    pub pad: usize,
    pub dilation: usize,
    pub out: (usize, usize),
}

/// 2-d convolution, NCHW input, OIHW weight (I = input channels / groups).
pub fn conv2d(
    x: ArrayView4<f32>,
    w: ArrayView4<f32>,
    bias: Option<ArrayView1<f32>>,
    win: Window,
    groups: usize,
) -> Array4<f32> {
    let (n, _, h, wd) = x.dim();
    let (o, cg, k, _) = w.dim();
    let (stride, pad, dil) = (win.stride, win.pad, win.dilation);
    let (oh, ow) = win.out;
    let og = o / groups;
    let mut out = Array4::<f32>::zeros((n, o, oh, ow));
    let mut cols = Array2::<f32>::zeros((cg * k * k, oh * ow));
    for b in 0..n {
        for g in 0..groups {
            let xg = x.slice(s![b, g * cg..(g + 1) * cg, .., ..]);
            // cols[(ci, ki, kj), (oy, ox)] = x[ci, oy*s + ki*d - p, ox*s + kj*d - p], 0 outside.
            for ci in 0..cg {
                for ki in 0..k {
                    for kj in 0..k {
                        let row = (ci * k + ki) * k + kj;
                        let mut r = cols.row_mut(row);
                        for oy in 0..oh {
                            let iy = (oy * stride + ki * dil) as isize - pad as isize;
                            for ox in 0..ow {
                                let ix = (ox * stride + kj * dil) as isize - pad as isize;
                                r[oy * ow + ox] = if iy >= 0
                                    && ix >= 0
                                    && (iy as usize) < h
                                    && (ix as usize) < wd
                                {
                                    xg[[ci, iy as usize, ix as usize]]
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                }
            }
            let wg = w
                .slice(s![g * og..(g + 1) * og, .., .., ..])
                .to_shape((og, cg * k * k))
                .map(|v| v.to_owned())
                .unwrap_or_else(|_| Array2::zeros((og, cg * k * k)));
            let y = wg.dot(&cols);
            let mut dst = out.slice_mut(s![b, g * og..(g + 1) * og, .., ..]);
            for (oc, row) in y.outer_iter().enumerate() {
                let add = bias.map_or(0.0, |bv| bv[g * og + oc]);
                for (i, v) in row.iter().enumerate() {
                    dst[[oc, i / ow, i % ow]] = v + add;
                }
            }
        }
    }
    out
}

/// Inference batch norm: (x - mean) / sqrt(var + eps) * gamma + beta.
pub fn batch_norm(
    x: ArrayView4<f32>,
    gamma: ArrayView1<f32>,
    beta: ArrayView1<f32>,
    mean: ArrayView1<f32>,
    var: ArrayView1<f32>,
    eps: f32,
) -> Array4<f32> {
    let mut y = x.to_owned();
    for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
        let inv = 1.0 / (var[c] + eps).sqrt();
        let (g, b, m) = (gamma[c], beta[c], mean[c]);
        plane.mapv_inplace(|v| (v - m) * inv * g + b);
    }
    y
}

/// Per-channel `x * scale + shift` (a BN that could not fold).
pub fn scale_shift(
    x: ArrayView4<f32>,
    scale: ArrayView1<f32>,
    shift: ArrayView1<f32>,
) -> Array4<f32> {
    let mut y = x.to_owned();
    for (c, mut plane) in y.axis_iter_mut(Axis(1)).enumerate() {
        let (a, b) = (scale[c], shift[c]);
        plane.mapv_inplace(|v| v * a + b);
    }
    y
}

/// Max pooling with implicit -inf padding, floor rounding. A NaN in a
/// window is the window's maximum, as in PyTorch (`f32::max` would drop it).
pub fn max_pool(
    x: ArrayView4<f32>,
    k: usize,
    stride: usize,
    pad: usize,
    out: (usize, usize),
) -> Array4<f32> {
    let max = |a: f32, b: f32| if b > a || b.is_nan() { b } else { a };
    pool(x, (k, stride, pad), out, f32::NEG_INFINITY, max, |m, _| m)
}

/// ReLU as PyTorch computes it: NaN stays NaN (`f32::max(NaN, 0)` is 0).
pub fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

/// Average pooling; padding counts as zeros in the average (PyTorch's
/// default `count_include_pad=True`). A window that ceil mode lets run
/// past the padding divides by its part inside the padded map, as PyTorch's
/// does.
pub fn avg_pool(
    x: ArrayView4<f32>,
    k: usize,
    stride: usize,
    pad: usize,
    out: (usize, usize),
) -> Array4<f32> {
    pool(
        x,
        (k, stride, pad),
        out,
        0.0,
        |a, b| a + b,
        |s, n| s / n as f32,
    )
}

/// The taps of window `o` along a side of `size` that lie inside the padded
/// map (PyTorch's average divisor).
pub fn padded_taps(o: usize, size: usize, (k, stride, pad): (usize, usize, usize)) -> usize {
    let start = o * stride;
    (start + k).min(size + 2 * pad) - start.min(size + 2 * pad)
}

fn pool(
    x: ArrayView4<f32>,
    (k, stride, pad): (usize, usize, usize),
    (oh, ow): (usize, usize),
    init: f32,
    fold: impl Fn(f32, f32) -> f32,
    finish: impl Fn(f32, usize) -> f32,
) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    Array4::from_shape_fn((n, c, oh, ow), |(b, ch, oy, ox)| {
        let mut acc = init;
        for ki in 0..k {
            for kj in 0..k {
                let iy = (oy * stride + ki) as isize - pad as isize;
                let ix = (ox * stride + kj) as isize - pad as isize;
                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                    acc = fold(acc, x[[b, ch, iy as usize, ix as usize]]);
                }
            }
        }
        let win = (k, stride, pad);
        finish(acc, padded_taps(oy, h, win) * padded_taps(ox, w, win))
    })
}

pub fn global_avg_pool(x: ArrayView4<f32>) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    Array4::from_shape_fn((n, c, 1, 1), |(b, ch, _, _)| {
        x.slice(s![b, ch, .., ..]).sum() / (h * w) as f32
    })
}

/// Option A: every `stride`-th pixel, new channels zero-padded around the old.
pub fn shortcut_pad(x: ArrayView4<f32>, stride: usize, before: usize, after: usize) -> Array4<f32> {
    let (n, c, h, w) = x.dim();
    let (oh, ow) = (h.div_ceil(stride), w.div_ceil(stride));
    let mut y = Array4::<f32>::zeros((n, before + c + after, oh, ow));
    y.slice_mut(s![.., before..before + c, .., ..])
        .assign(&x.slice(s![.., .., ..;stride, ..;stride]));
    y
}

/// x [N, F] times W^T [F, O] plus bias.
pub fn linear(
    x: ArrayView2<f32>,
    w: ArrayView2<f32>,
    bias: Option<ArrayView1<f32>>,
) -> Array2<f32> {
    let mut y = x.dot(&w.t());
    if let Some(b) = bias {
        y += &b;
    }
    y
}

/// Softmax over the last axis, shifted by the max for stability.
pub fn softmax(x: ArrayView2<f32>) -> Array2<f32> {
    let mut y = x.to_owned();
    for mut row in y.outer_iter_mut() {
        let m = row.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let sum = row.sum();
        row.mapv_inplace(|v| v / sum);
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition of convolution, loop by loop: the reference for im2col.
    fn naive_conv(
        x: &Array4<f32>,
        w: &Array4<f32>,
        b: Option<&ndarray::Array1<f32>>,
        (s, p, d): (usize, usize, usize),
        groups: usize,
    ) -> Array4<f32> {
        let (n, _, h, wd) = x.dim();
        let (o, cg, k, _) = w.dim();
        let e = d * (k - 1) + 1;
        let oh = (h + 2 * p - e) / s + 1;
        let ow = (wd + 2 * p - e) / s + 1;
        let og = o / groups;
        Array4::from_shape_fn((n, o, oh, ow), |(bi, oc, oy, ox)| {
            let g = oc / og;
            let mut acc = b.map_or(0.0, |b| b[oc]);
            for ci in 0..cg {
                for ki in 0..k {
                    for kj in 0..k {
                        let iy = (oy * s + ki * d) as isize - p as isize;
                        let ix = (ox * s + kj * d) as isize - p as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                            acc += w[[oc, ci, ki, kj]]
                                * x[[bi, g * cg + ci, iy as usize, ix as usize]];
                        }
                    }
                }
            }
            acc
        })
    }

    fn filled(shape: (usize, usize, usize, usize), seed: u32) -> Array4<f32> {
        Array4::from_shape_fn(shape, |(a, b, c, d)| {
            let v = (a * 7919 + b * 104729 + c * 1299709 + d * 15485863) as u32
                ^ seed.wrapping_mul(2654435761);
            (v % 2001) as f32 / 1000.0 - 1.0
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn im2col_conv_equals_the_definition(
            n in 1usize..3, groups in 1usize..4, cg in 1usize..4, og in 1usize..4,
            k in 1usize..4, stride in 1usize..3, pad in 0usize..3, h in 1usize..9, w in 1usize..9,
            dil in 1usize..3, bias in any::<bool>(), seed in any::<u32>(),
        ) {
            let e = dil * (k - 1) + 1;
            prop_assume!(h + 2 * pad >= e && w + 2 * pad >= e);
            let out = ((h + 2 * pad - e) / stride + 1, (w + 2 * pad - e) / stride + 1);
            let x = filled((n, groups * cg, h, w), seed);
            let wt = filled((groups * og, cg, k, k), seed ^ 1);
            let b = ndarray::Array1::from_shape_fn(groups * og, |i| i as f32 * 0.1 - 0.3);
            let win = Window { stride, pad, dilation: dil, out };
            let got = conv2d(x.view(), wt.view(), bias.then(|| b.view()), win, groups);
            let want = naive_conv(&x, &wt, bias.then_some(&b), (stride, pad, dil), groups);
            prop_assert_eq!(got.dim(), want.dim());
            for (a, e) in got.iter().zip(want.iter()) {
                prop_assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{} vs {}", a, e);
            }
        }
    }

    #[test]
    fn pooling_matches_pytorch_semantics() {
        // 1x1x3x3 ramp; PyTorch: max_pool2d(k=3, s=2, p=1) -> [[4, 5], [7, 8]];
        // avg_pool2d(k=3, s=2, p=1) counts the zero padding: [[8/9, 12/9], [20/9, 24/9]].
        let x = Array4::from_shape_fn((1, 1, 3, 3), |(_, _, y, x)| (y * 3 + x) as f32);
        let m = max_pool(x.view(), 3, 2, 1, (2, 2));
        assert_eq!(
            m.iter().copied().collect::<Vec<_>>(),
            vec![4.0, 5.0, 7.0, 8.0]
        );
        let a = avg_pool(x.view(), 3, 2, 1, (2, 2));
        let want = [8.0 / 9.0, 12.0 / 9.0, 20.0 / 9.0, 24.0 / 9.0];
        for (g, w) in a.iter().zip(want) {
            assert!((g - w).abs() < 1e-6);
        }
        assert_eq!(global_avg_pool(x.view())[[0, 0, 0, 0]], 4.0);
    }

    #[test]
    fn ceil_mode_windows_run_past_the_edge_as_pytorchs_do() {
        // 1x1x4x4 ramp, k=3 s=2 p=0 ceil_mode=True: a 2x2 output whose last
        // windows hold 2 rows or columns. PyTorch: max [[10, 11], [14, 15]],
        // avg [[5, 6.5], [11, 12.5]] (divided by the taps inside the map).
        let x = Array4::from_shape_fn((1, 1, 4, 4), |(_, _, y, x)| (y * 4 + x) as f32);
        let m = max_pool(x.view(), 3, 2, 0, (2, 2));
        assert_eq!(
            m.iter().copied().collect::<Vec<_>>(),
            [10.0, 11.0, 14.0, 15.0]
        );
        let a = avg_pool(x.view(), 3, 2, 0, (2, 2));
        assert_eq!(
            a.iter().copied().collect::<Vec<_>>(),
            [5.0, 6.5, 11.0, 12.5]
        );
    }

    #[test]
    fn option_a_pads_around_a_strided_identity() {
        let x = Array4::from_shape_fn((1, 2, 3, 3), |(_, c, y, x)| (c * 100 + y * 3 + x) as f32);
        let y = shortcut_pad(x.view(), 2, 1, 1);
        assert_eq!(y.dim(), (1, 4, 2, 2));
        assert_eq!(y.slice(s![0, 0, .., ..]).sum(), 0.0);
        assert_eq!(y.slice(s![0, 3, .., ..]).sum(), 0.0);
        let kept: Vec<f32> = y.slice(s![0, 1, .., ..]).iter().copied().collect();
        assert_eq!(kept, vec![0.0, 2.0, 6.0, 8.0]);
        assert_eq!(y[[0, 2, 1, 1]], 108.0);
    }

    #[test]
    fn softmax_is_stable_and_normalized() {
        let x = ndarray::arr2(&[[1000.0f32, 1001.0, 1002.0], [-5.0, 0.0, 5.0]]);
        let y = softmax(x.view());
        for row in y.outer_iter() {
            assert!((row.sum() - 1.0).abs() < 1e-6);
        }
        assert!((y[[0, 2]] - 0.665_240_9).abs() < 1e-6);
    }
}
