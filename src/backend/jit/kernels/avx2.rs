//! The AVX2 + FMA kernel set: 8-lane vectors in 16 registers. The GEMM
//! tile runs as 6x16 pieces; a blocked tile is up to 4 blocks of 16
//! channels, one at a time (two vectors) by up to 6 pixels, the next
//! slice's weights prefetched.

use std::arch::x86_64::*;

use super::epilogue::{self, Also, Lanes};
use super::{Blocked, Gemm, Kernels, Peak, Winograd};
use crate::backend::jit::blocked::AlsoTile;
use crate::backend::jit::blocked::TileArgs;
use crate::backend::jit::gemm::{Acc, Epilogue, Tile, MR, NR};
use crate::backend::jit::gemv::{self, StripArgs};
use crate::backend::jit::winograd::{self, InputRow, OutputRow};

pub static KERNELS: Kernels = Kernels {
    name: "avx2",
    about: "avx2+fma 4x(6x16)",
    supported: || is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
    gemm: Gemm {
        tile: gemm_tile,
        epilogue: gemm_epilogue,
        gemv: gemv_strip,
        im2col: None,
    },
    blocked: Blocked {
        // A tile's blocks one after another (12 accumulators each), in one
        // call: a 1x1 with K = 16 (pre-activation ResNet-164) spent a
        // third of its time getting in and out of one-block tiles.
        blocks: 4,
        max_width: |_| 6,
        tile: blocked_tile,
        prefetches: true,
        also: also_tile,
        max_pool,
        bf16: None,
        slide: None,
    },
    winograd: Winograd {
        input: winograd_input,
        output: winograd_output,
        // 7x7 at batch 1 (16 tiles): F(2x2) 0.68-0.83 of direct.
        f2_min_tiles: 16,
        f4_min_tiles: 4,
    },
    peak: Peak {
        flops_per_iter: 12 * 8 * 2,
        run: fma_loop,
    },
};

/// Eight lanes in a ymm register.
#[derive(Clone, Copy)]
pub struct V(__m256);

/// A mask of the first `n` of 8 lanes.
#[inline(always)]
unsafe fn first(n: usize) -> __m256i {
    // SAFETY: AVX2 (the caller's promise).
    unsafe {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }
}

// SAFETY: every method is called only inside this set's AVX2 functions
// (the trait's contract); the pointer arguments are the callers'.
unsafe impl Lanes for V {
    const N: usize = 8;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V {
        // SAFETY: p holds 8 floats; AVX is available.
        V(unsafe { _mm256_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> V {
        // SAFETY: the masked-off lanes are not read.
        V(unsafe { _mm256_maskload_ps(p, first(n)) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: p has room for 8 floats.
        unsafe { _mm256_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // SAFETY: the masked-off lanes are not written.
        unsafe { _mm256_maskstore_ps(p, first(n), self.0) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> V {
        // SAFETY: AVX is available.
        V(unsafe { _mm256_set1_ps(v) })
    }
    #[inline(always)]
    unsafe fn add(self, o: V) -> V {
        // SAFETY: AVX is available.
        V(unsafe { _mm256_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, o: V) -> V {
        // SAFETY: AVX is available.
        V(unsafe { _mm256_sub_ps(self.0, o.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, o: V) -> V {
        // SAFETY: AVX is available.
        V(unsafe { _mm256_mul_ps(self.0, o.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, s: f32, acc: V) -> V {
        // SAFETY: FMA is available.
        V(unsafe { _mm256_fmadd_ps(self.0, _mm256_set1_ps(s), acc.0) })
    }
    #[inline(always)]
    unsafe fn relu(self) -> V {
        // maxps returns its second operand when either is NaN: with the
        // value second, a NaN stays NaN.
        // SAFETY: AVX is available.
        V(unsafe { _mm256_max_ps(_mm256_setzero_ps(), self.0) })
    }
    #[inline(always)]
    unsafe fn max_nan(self, o: V) -> V {
        // maxps gives `o` where either is NaN; then `self` where it is.
        // SAFETY: AVX is available.
        unsafe {
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(self.0, self.0);
            V(_mm256_blendv_ps(_mm256_max_ps(self.0, o.0), self.0, nan))
        }
    }
}

/// # Safety
/// As [`epilogue::gemm`]; AVX2 and FMA are available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm_epilogue(acc: &Acc, out: *mut f32, e: &Epilogue) {
    // SAFETY: the features are enabled here; the rest is the caller's.
    unsafe { epilogue::gemm::<V>(acc, out, e) }
}

/// # Safety
/// AVX2 and FMA are available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn fma_loop(iters: u64) {
    let m = _mm256_set1_ps(0.999_999);
    let a = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, m, a);
        }
    }
    std::hint::black_box(acc);
}

/// An `R x 16` GEMM piece (R <= 6 rows, 16 of the panel's 32 columns) in
/// the 16 ymm registers.
///
/// # Safety
/// As [`gemm_tile`].
#[target_feature(enable = "avx2,fma")]
unsafe fn piece<const R: usize>(t: &Tile) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (a, b) = (t.a, t.b);
    for k in 0..t.kc {
        _mm_prefetch::<_MM_HINT_T0>(t.a_next.wrapping_add(k * MR) as *const i8);
        // SAFETY: B holds kc rows of NR columns, A kc rows of MR.
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(k * NR));
            let b1 = _mm256_loadu_ps(b.add(k * NR + 8));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(k * MR + r));
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        let p = t.c.wrapping_add(r * t.ldc);
        let (mut v0, mut v1) = (row[0], row[1]);
        // SAFETY: C has the piece's R rows of 16 columns at stride ldc.
        unsafe {
            if t.accumulate {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(p));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(p.add(8)));
            }
            _mm256_storeu_ps(p, v0);
            _mm256_storeu_ps(p.add(8), v1);
        }
    }
}

/// The tile as up to 2 x 2 pieces of at most 6 rows and 16 columns.
///
/// # Safety
/// The tile's pointers hold what [`Tile`] says; AVX2 and FMA are available.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gemm_tile(t: &Tile) {
    let mut r0 = 0;
    while r0 < t.rows {
        let rows = (t.rows - r0).min(6);
        for half in [0, 16] {
            let p = Tile {
                rows,
                a: t.a.wrapping_add(r0),
                b: t.b.wrapping_add(half),
                c: t.c.wrapping_add(r0 * t.ldc + half),
                ..*t
            };
            // SAFETY: a piece of the caller's tile.
            unsafe {
                match rows {
                    6 => piece::<6>(&p),
                    5 => piece::<5>(&p),
                    4 => piece::<4>(&p),
                    3 => piece::<3>(&p),
                    2 => piece::<2>(&p),
                    _ => piece::<1>(&p),
                }
            }
        }
        r0 += rows;
    }
}

super::one_block_tiles!(tile);

/// `t.blocks` blocks x `W` pixels, a block at a time.
///
/// # Safety
/// As the blocked contract ([`TileArgs`]); AVX2 and FMA are available.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const W: usize, const S: usize>(t: &TileArgs) {
    for b in 0..t.blocks.max(1) {
        let mut one = t.block(b);
        // The first block fetches the next slice's weights for them all.
        if b > 0 {
            one.prefetch_lines = 0;
        }
        // SAFETY: block b of the tile's, under the same contract.
        unsafe { block::<W, S>(&one) };
    }
}

/// One block (two 8-lane halves) x `W` pixels: the weights `t.w_step`
/// floats a k-step apart (the group's layout); the next slice's weights
/// prefetched as the first taps run.
///
/// # Safety
/// As the blocked contract ([`TileArgs`]), for one block; AVX2 and FMA are
/// available.
#[target_feature(enable = "avx2,fma")]
#[inline]
#[allow(clippy::needless_range_loop)] // acc[h][j]: halves and pixels
unsafe fn block<const W: usize, const S: usize>(t: &TileArgs) {
    let step = if S == 0 { t.x_step } else { S };
    let os = t.out_step;
    let mut acc = [[_mm256_setzero_ps(); W]; 2];
    if !t.first {
        for (h, row) in acc.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                // SAFETY: pixel j's partial sums.
                *v = unsafe { _mm256_loadu_ps(t.partial.add(j * os + 8 * h)) };
            }
        }
    }
    // The next slice's weights, `rate` lines with each of the first taps
    // (as the AVX-512 tile fetches them): layer4's come from memory.
    // (No division in the common case: fewer lines than taps.)
    let lines = t.prefetch_lines;
    let taps = t.taps.len().max(1);
    let rate = if lines <= taps {
        usize::from(lines > 0)
    } else {
        lines.div_ceil(taps)
    };
    if t.runs {
        // A run's 16 steps from its first tap: a third fewer instructions
        // a step than reading each tap (2-4% on 1x1 convs).
        debug_assert!(t.taps.len().is_multiple_of(16));
        for (i, run) in t.taps.chunks_exact(16).enumerate() {
            let first = 16 * i * rate;
            for q in first..(first + 16 * rate).min(lines) {
                _mm_prefetch::<_MM_HINT_T0>(t.prefetch.wrapping_add(q * 16) as *const i8);
            }
            let x = t.x.wrapping_offset(run[0].x as isize);
            // SAFETY: the run's 16 k-steps' weights, and its 16 channels of
            // the tile's pixels, inside the map ([`blocked::in_runs`]).
            unsafe {
                let mut w = t.w.add(run[0].k as usize * t.w_step);
                for c in 0..16 {
                    let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
                    for j in 0..W {
                        let xv = _mm256_broadcast_ss(&*x.add(j * step + c));
                        acc[0][j] = _mm256_fmadd_ps(w0, xv, acc[0][j]);
                        acc[1][j] = _mm256_fmadd_ps(w1, xv, acc[1][j]);
                    }
                    w = w.add(t.w_step);
                }
            }
        }
    } else {
        for (i, tap) in t.taps.iter().enumerate() {
            if i * rate < lines {
                for q in i * rate..((i + 1) * rate).min(lines) {
                    _mm_prefetch::<_MM_HINT_T0>(t.prefetch.wrapping_add(q * 16) as *const i8);
                }
            }
            let x = t.x.wrapping_offset(tap.x as isize);
            // SAFETY: k-step tap.k's 16 weights; the tap's pixels are inside the map.
            unsafe {
                let w = t.w.add(tap.k as usize * t.w_step);
                let (w0, w1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
                for j in 0..W {
                    let xv = _mm256_broadcast_ss(&*x.add(j * step));
                    acc[0][j] = _mm256_fmadd_ps(w0, xv, acc[0][j]);
                    acc[1][j] = _mm256_fmadd_ps(w1, xv, acc[1][j]);
                }
            }
        }
    }
    if !t.last {
        for (h, row) in acc.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                // SAFETY: pixel j's partial sums.
                unsafe { _mm256_storeu_ps(t.partial.add(j * os + 8 * h), v) };
            }
        }
        return;
    }
    for (h, row) in acc.iter().enumerate() {
        // SAFETY: the block's 16 biases, and pixel j's 16 residuals and outputs.
        unsafe {
            let bias = if t.bias.is_null() {
                V::splat(0.0)
            } else {
                V::load(t.bias.add(8 * h))
            };
            for (j, &v) in row.iter().enumerate() {
                let at = j * os + 8 * h;
                let res = (!t.res.is_null()).then(|| V::load(t.res.add(at)));
                epilogue::apply(V(v), bias, res, t.relu).store(t.out.add(at));
            }
        }
    }
}

/// # Safety
/// As [`winograd::input_row`]; AVX2 and FMA are available.
#[target_feature(enable = "avx2,fma")]
unsafe fn winograd_input(r: &InputRow) {
    // SAFETY: the features are enabled here; the rest is the caller's.
    unsafe { winograd::input_row::<V>(r) }
}

/// # Safety
/// As [`winograd::output_row`]; AVX2 and FMA are available.
#[target_feature(enable = "avx2,fma")]
unsafe fn winograd_output(r: &OutputRow) {
    // SAFETY: the features are enabled here; the rest is the caller's.
    unsafe { winograd::output_row::<V>(r) }
}

/// # Safety
/// As [`gemv::strip`]; AVX2 and FMA are available.
#[target_feature(enable = "avx2,fma")]
unsafe fn gemv_strip(a: &StripArgs) {
    // SAFETY: the features are enabled here; the rest is the caller's.
    unsafe { gemv::strip::<V>(a) }
}

/// # Safety
/// As [`crate::backend::jit::blocked::also_tile`]; the CPU has the set's features.
#[target_feature(enable = "avx2,fma")]
unsafe fn also_tile(also: &Also, t: &AlsoTile) {
    // SAFETY: the caller's promise, passed on.
    unsafe { crate::backend::jit::blocked::also_tile::<V>(also, t) }
}

/// # Safety
/// As [`crate::backend::jit::runtime::max_pool_row`]; the CPU has the set's features.
#[target_feature(enable = "avx2,fma")]
unsafe fn max_pool(r: &crate::backend::jit::runtime::MaxPoolRow) {
    // SAFETY: the caller's promise, passed on.
    unsafe { crate::backend::jit::runtime::max_pool_row::<V>(r) }
}
