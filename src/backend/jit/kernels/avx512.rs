//! The AVX-512 kernel set: 16-lane vectors in 32 registers. The GEMM tile
//! is 12x32 (24 accumulators); im2col packs with masked loads and gathers;
//! a blocked tile holds up to 4 blocks of 16 channels by 6 pixels and
//! fetches the next slice's weights as it runs; slide tiles take 3x3 convs
//! with one or two output blocks a row of up to 16 (12) pixels at a time.

use std::arch::x86_64::*;

use super::epilogue::{self, Also, Lanes};
use super::{Blocked, BlockedTile, Gemm, Kernels, Peak, Winograd};
use crate::backend::jit::blocked::AlsoTile;
use crate::backend::jit::blocked::{Tap, TileArgs, BLOCK};
use crate::backend::jit::gemm::{self, Acc, ConvGeom, Epilogue, Tile, MR, NR};
use crate::backend::jit::gemv::{self, StripArgs};
use crate::backend::jit::slide::{self, SlideRow, SlideTiles};
use crate::backend::jit::winograd::{self, InputRow, OutputRow};

pub static KERNELS: Kernels = Kernels {
    name: "avx512",
    about: "avx512f 12x32",
    supported: || is_x86_feature_detected!("avx512f"),
    gemm: Gemm {
        tile: gemm_tile,
        epilogue: gemm_epilogue,
        gemv: gemv_strip,
        im2col: Some(im2col),
    },
    blocked: Blocked {
        blocks: 4,
        max_width,
        tile: blocked_tile,
        prefetches: true,
        also: also_tile,
        max_pool,
        bf16: Some(super::Bf16 {
            supported: super::has_bf16_dot,
            tile: blocked_tile_bf16,
            convert: to_bf16,
            amx: Some(&super::amx::AMX),
        }),
        slide: Some(&SLIDE),
    },
    winograd: Winograd {
        input: winograd_input,
        output: winograd_output,
        // Zen 4, 2026-12-02: 7x7 at batch 1 (16 tiles) F(2x2) 1.10-1.18 of
        // direct (ResNet-18, ResNet-50), 14x14 (49 tiles) 0.68-0.74.
        f2_min_tiles: 32,
        // Zen 5, 2026-12-02 (CIFAR ResNet-56's 64-channel 8x8 layer3):
        // at batch 1 (4 tiles) F(4x4) 1.15-1.26 of direct, F(2x2) 0.80-0.86;
        // at batch 8 (32 tiles) F(4x4) 0.81-0.83, F(2x2) 0.93-0.98.
        f4_min_tiles: 32,
    },
    peak: Peak {
        flops_per_iter: 12 * 16 * 2,
        run: fma_loop,
    },
};

/// Sixteen lanes in a zmm register.
#[derive(Clone, Copy)]
pub struct V(__m512);

/// The first `n` of 16 lanes.
#[inline(always)]
fn first(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

// SAFETY: every method is called only inside this set's AVX-512
// functions (the trait's contract); the pointer arguments are the callers'.
unsafe impl Lanes for V {
    const N: usize = 16;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V {
        // SAFETY: p holds 16 floats; AVX-512F is available.
        V(unsafe { _mm512_loadu_ps(p) })
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> V {
        // SAFETY: masked-off lanes are neither read nor fault.
        V(unsafe { _mm512_maskz_loadu_ps(first(n), p) })
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: p has room for 16 floats.
        unsafe { _mm512_storeu_ps(p, self.0) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // SAFETY: masked-off lanes are not written.
        unsafe { _mm512_mask_storeu_ps(p, first(n), self.0) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> V {
        // SAFETY: AVX-512F is available.
        V(unsafe { _mm512_set1_ps(v) })
    }
    #[inline(always)]
    unsafe fn add(self, o: V) -> V {
        // SAFETY: AVX-512F is available.
        V(unsafe { _mm512_add_ps(self.0, o.0) })
    }
    #[inline(always)]
    unsafe fn sub(self, o: V) -> V {
        // SAFETY: AVX-512F is available.
        V(unsafe { _mm512_sub_ps(self.0, o.0) })
    }
    #[inline(always)]
    unsafe fn mul(self, o: V) -> V {
        // SAFETY: AVX-512F is available.
        V(unsafe { _mm512_mul_ps(self.0, o.0) })
    }
    #[inline(always)]
    unsafe fn mul_add(self, s: f32, acc: V) -> V {
        // SAFETY: AVX-512F is available.
        V(unsafe { _mm512_fmadd_ps(self.0, _mm512_set1_ps(s), acc.0) })
    }
    #[inline(always)]
    unsafe fn relu(self) -> V {
        // maxps returns its second operand when either is NaN: with the
        // value second, a NaN stays NaN.
        // SAFETY: AVX-512F is available.
        V(unsafe { _mm512_max_ps(_mm512_setzero_ps(), self.0) })
    }
    #[inline(always)]
    unsafe fn max_nan(self, o: V) -> V {
        // maxps gives `o` where either is NaN; then `self` where it is.
        // SAFETY: AVX-512F is available.
        unsafe {
            let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(self.0, self.0);
            V(_mm512_mask_blend_ps(
                nan,
                _mm512_max_ps(self.0, o.0),
                self.0,
            ))
        }
    }
}

/// # Safety
/// As [`epilogue::gemm`]; AVX-512F is available.
#[target_feature(enable = "avx512f")]
pub unsafe fn gemm_epilogue(acc: &Acc, out: *mut f32, e: &Epilogue) {
    // SAFETY: the feature is enabled here; the rest is the caller's.
    unsafe { epilogue::gemm::<V>(acc, out, e) }
}

/// # Safety
/// AVX-512F is available.
#[target_feature(enable = "avx512f")]
pub unsafe fn fma_loop(iters: u64) {
    let m = _mm512_set1_ps(0.999_999);
    let a = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, m, a);
        }
    }
    std::hint::black_box(acc);
}

// ---- GEMM -------------------------------------------------------------

/// An `R x 16NV` tile (R <= MR rows of the A panel): `NV` B vectors and a
/// broadcast, within the 32 zmm registers.
///
/// # Safety
/// As [`gemm_tile`].
#[target_feature(enable = "avx512f")]
unsafe fn rows_of<const R: usize, const NV: usize>(t: &Tile) {
    let mut acc = [[_mm512_setzero_ps(); NV]; R];
    let (a, b) = (t.a, t.b);
    for k in 0..t.kc {
        _mm_prefetch::<_MM_HINT_T0>(t.a_next.wrapping_add(k * MR) as *const i8);
        let mut bv = [_mm512_setzero_ps(); NV];
        // SAFETY: B holds kc rows of NR columns, A kc rows of MR.
        unsafe {
            for (v, x) in bv.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(b.add(k * NR + 16 * v));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(k * MR + r));
                for (x, y) in row.iter_mut().zip(&bv) {
                    *x = _mm512_fmadd_ps(av, *y, *x);
                }
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (v, &x) in row.iter().enumerate() {
            // SAFETY: C has the tile's rows of 16NV columns at stride ldc.
            unsafe {
                let p = t.c.add(r * t.ldc + 16 * v);
                let x = if t.accumulate {
                    _mm512_add_ps(x, _mm512_loadu_ps(p))
                } else {
                    x
                };
                _mm512_storeu_ps(p, x);
            }
        }
    }
}

/// Whole panels with two vectors a row; a last panel of 16 columns or
/// fewer (N = 196, 784 at batch 1) with one.
///
/// # Safety
/// As [`gemm_tile`].
#[target_feature(enable = "avx512f")]
unsafe fn rows<const NV: usize>(t: &Tile) {
    // SAFETY: the caller's tile.
    unsafe {
        match t.rows {
            12 => rows_of::<12, NV>(t),
            11 => rows_of::<11, NV>(t),
            10 => rows_of::<10, NV>(t),
            9 => rows_of::<9, NV>(t),
            8 => rows_of::<8, NV>(t),
            7 => rows_of::<7, NV>(t),
            6 => rows_of::<6, NV>(t),
            5 => rows_of::<5, NV>(t),
            4 => rows_of::<4, NV>(t),
            3 => rows_of::<3, NV>(t),
            2 => rows_of::<2, NV>(t),
            _ => rows_of::<1, NV>(t),
        }
    }
}

/// # Safety
/// The tile's pointers hold what [`Tile`] says; AVX-512F is available.
#[target_feature(enable = "avx512f")]
pub unsafe fn gemm_tile(t: &Tile) {
    // SAFETY: the caller's tile, or its first 16 columns and its 17th.
    unsafe {
        if t.cols == 1 {
            column(t)
        } else if t.cols <= 8 {
            // N = 196's last 4 columns: 4 FMAs a k here, 12 in a 16-column tile.
            match t.cols {
                2 => columns::<2, 2>(t),
                3 => columns::<3, 2>(t),
                4 => columns::<4, 2>(t),
                5 => columns::<5, 1>(t),
                6 => columns::<6, 1>(t),
                7 => columns::<7, 1>(t),
                _ => columns::<8, 1>(t),
            }
        } else if t.cols <= 16 {
            rows::<1>(t)
        } else if t.cols == 17 {
            // 16 + 1 columns (N = 49 at batch 1) cost 19 FMA cycles a k, 32 cost 24.
            rows::<1>(t);
            column(&Tile {
                b: t.b.add(16),
                c: t.c.add(16),
                ..*t
            })
        } else {
            rows::<2>(t)
        }
    }
}

/// `C` columns (fc at batch 1; N = 196's last 4): the A panel's rows as
/// the vector, `C` FMAs per k instead of one per row, `CH` chains per
/// column so that at least 4 FMAs are in flight.
///
/// # Safety
/// As [`gemm_tile`].
#[target_feature(enable = "avx512f")]
unsafe fn columns<const C: usize, const CH: usize>(t: &Tile) {
    let rows = first(t.rows);
    let mut acc = [[_mm512_setzero_ps(); C]; CH];
    let step = |acc: &mut [__m512; C], k: usize| {
        _mm_prefetch::<_MM_HINT_T0>(t.a_next.wrapping_add(k * MR) as *const i8);
        // SAFETY: A's k-th row of MR (the rows past `rows` masked off), B's of NR.
        unsafe {
            let av = _mm512_maskz_loadu_ps(rows, t.a.add(k * MR));
            for (j, x) in acc.iter_mut().enumerate() {
                let bv = _mm512_set1_ps(*t.b.add(k * NR + j));
                *x = _mm512_fmadd_ps(av, bv, *x);
            }
        }
    };
    let full = t.kc / CH * CH;
    for k in (0..full).step_by(CH) {
        for (ch, a) in acc.iter_mut().enumerate() {
            step(a, k + ch);
        }
    }
    for k in full..t.kc {
        step(&mut acc[0], k);
    }
    for j in 0..C {
        let mut sum = acc[0][j];
        for a in &acc[1..] {
            sum = _mm512_add_ps(sum, a[j]);
        }
        let mut lanes = [0.0f32; 16];
        // SAFETY: 16 floats of `lanes`; C's rows at stride ldc, column j.
        unsafe {
            _mm512_storeu_ps(lanes.as_mut_ptr(), sum);
            for (r, &v) in lanes.iter().enumerate().take(t.rows) {
                let p = t.c.add(r * t.ldc + j);
                *p = if t.accumulate { *p + v } else { v };
            }
        }
    }
}

/// One column (see [`columns`]).
///
/// # Safety
/// As [`gemm_tile`].
#[target_feature(enable = "avx512f")]
unsafe fn column(t: &Tile) {
    // SAFETY: the caller's tile.
    unsafe { columns::<1, 4>(t) }
}

// ---- im2col -------------------------------------------------------------

/// Rows of im2col panels by masked load (stride 1) or gather.
struct Rows;

// SAFETY: called only inside [`im2col`], compiled for AVX-512F.
unsafe impl gemm::Im2colRows for Rows {
    #[inline(always)]
    unsafe fn runs(runs: &[(isize, u32)], base: *const f32, dst: *mut f32) {
        // SAFETY: every unmasked lane of a run reads inside the channel;
        // dst holds NR floats; AVX-512F is available.
        unsafe {
            let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
            for &(off, mask) in runs {
                let p = base.wrapping_offset(off);
                lo = _mm512_mask_loadu_ps(lo, mask as u16, p);
                hi = _mm512_mask_loadu_ps(hi, (mask >> 16) as u16, p.wrapping_add(16));
            }
            _mm512_storeu_ps(dst, lo);
            _mm512_storeu_ps(dst.add(16), hi);
        }
    }

    #[inline(always)]
    unsafe fn gather(lanes: &[i32; NR], base: *const f32, dst: *mut f32) {
        for half in 0..2 {
            // SAFETY: lanes at -1 are masked off, the rest read inside the
            // channel; dst holds NR floats.
            unsafe {
                let idx = _mm512_loadu_si512(lanes.as_ptr().add(16 * half) as *const _);
                let mask = _mm512_cmpge_epi32_mask(idx, _mm512_setzero_si512());
                let v = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, idx, base);
                _mm512_storeu_ps(dst.add(16 * half), v);
            }
        }
    }
}

/// # Safety
/// As `gemm::pack_block` for an im2col source; AVX-512F is available.
#[target_feature(enable = "avx512f")]
unsafe fn im2col(
    x: *const f32,
    g: &ConvGeom,
    n: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    dst: &mut [f32],
) {
    // SAFETY: the caller's source and block; the feature is enabled here.
    unsafe { gemm::im2col_planned::<Rows>(x, g, n, rows, cols, dst) }
}

// ---- blocked direct convs ----------------------------------------------

/// Pixels per tile for `blocks` output blocks: 24 accumulators at most.
fn max_width(blocks: usize) -> usize {
    match blocks {
        4 => 6,
        3 => 8,
        _ => 12,
    }
}

/// The tile for `blocks` x `width`, input pixels `step` floats apart.
fn blocked_tile(blocks: usize, width: usize, step: usize) -> BlockedTile {
    select_tile!(tile, blocks, width, step)
}

/// The bf16 tile for `blocks` x `width`, input pixels `step` values apart.
fn blocked_tile_bf16(blocks: usize, width: usize, step: usize) -> BlockedTile {
    select_tile!(tile_bf16, blocks, width, step)
}

/// `$tile::<B, W, S>` for `blocks` x `width`, step `step`.
macro_rules! select_tile {
    ($tile:ident, $blocks:expr, $width:expr, $step:expr) => {
        match $blocks {
            4 => steps!($tile, $width, $step, 4, 1 2 3 4 5 6),
            3 => steps!($tile, $width, $step, 3, 1 2 3 4 5 6 7 8),
            2 => steps!($tile, $width, $step, 2, 1 2 3 4 5 6 7 8 9 10 11 12),
            _ => steps!($tile, $width, $step, 1, 1 2 3 4 5 6 7 8 9 10 11 12),
        }
    };
}
macro_rules! steps {
    ($tile:ident, $width:expr, $step:expr, $b:literal, $($w:literal)*) => {
        match $step {
            0 => widths!($tile, $width, $b, 0, $($w)*),
            1 => widths!($tile, $width, $b, 1, $($w)*),
            2 => widths!($tile, $width, $b, 2, $($w)*),
            16 => widths!($tile, $width, $b, 16, $($w)*),
            _ => widths!($tile, $width, $b, 32, $($w)*),
        }
    };
}
macro_rules! widths {
    ($tile:ident, $width:expr, $b:literal, $s:literal, $($w:literal)*) => {
        match $width {
            $($w => $tile::<$b, $w, $s>,)*
            _ => unreachable!("tile widths are planned within `max_width`"),
        }
    };
}
use {select_tile, steps, widths};

/// What a blocked tile's k-step multiplies: 16 f32 weights by one f32
/// input, or 16 pairs of bf16 weights by a pair of channels' inputs.
trait Dot {
    /// Bytes of one input value.
    const BYTES: usize;
    /// The input value (or pair) at `p`, in every lane.
    unsafe fn input(p: *const u8) -> __m512;
    /// `acc + w x`, lane by lane (pair by pair).
    unsafe fn dot(acc: __m512, w: __m512, x: __m512) -> __m512;
}

struct F32;

// SAFETY: used only in functions compiled for AVX-512F.
impl Dot for F32 {
    const BYTES: usize = 4;
    #[inline(always)]
    unsafe fn input(p: *const u8) -> __m512 {
        // SAFETY: p holds an f32 (the caller's).
        unsafe { _mm512_set1_ps((p as *const f32).read()) }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512, w: __m512, x: __m512) -> __m512 {
        // SAFETY: AVX-512F is available.
        unsafe { _mm512_fmadd_ps(w, x, acc) }
    }
}

struct Bf16;

// SAFETY: used only in functions compiled for AVX-512F and AVX512_BF16.
impl Dot for Bf16 {
    const BYTES: usize = 2;
    #[inline(always)]
    unsafe fn input(p: *const u8) -> __m512 {
        // SAFETY: p holds two bf16 (the caller's; 4-byte aligned, as even
        // channels of a 64-byte aligned map are, but read as unaligned).
        unsafe { _mm512_castsi512_ps(_mm512_set1_epi32((p as *const i32).read_unaligned())) }
    }
    #[inline(always)]
    unsafe fn dot(acc: __m512, w: __m512, x: __m512) -> __m512 {
        // SAFETY: AVX512_BF16 is available; __m512 and __m512bh are both
        // 64 bytes of lanes, here pairs of bf16.
        unsafe {
            _mm512_dpbf16_ps(
                acc,
                std::mem::transmute::<__m512, __m512bh>(w),
                std::mem::transmute::<__m512, __m512bh>(x),
            )
        }
    }
}

/// `dst[i] = bf16(src[i])` for `len` values, rounded to nearest even.
///
/// # Safety
/// `src` holds `len` floats and `dst` room for `len` bf16; AVX-512F and
/// AVX512_BF16 are available.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn to_bf16(src: *const f32, dst: *mut u16, len: usize) {
    let whole = len / 16 * 16;
    for i in (0..whole).step_by(16) {
        // SAFETY: values i..i + 16 are inside both (i + 16 <= len).
        unsafe {
            let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src.add(i)));
            _mm256_storeu_si256(
                dst.add(i) as *mut __m256i,
                std::mem::transmute::<__m256bh, __m256i>(h),
            );
        }
    }
    for i in whole..len {
        // SAFETY: i < len.
        unsafe { *dst.add(i) = half::bf16::from_f32(*src.add(i)).to_bits() };
    }
}

/// A blocked tile `$name::<B, W, S>` multiplying by `$dot`.
macro_rules! blocked_tile_fn {
    ($name:ident, $features:literal, $dot:ty) => {
        /// `B` output blocks x `W` pixels (input pixels `S` floats apart): all taps
        /// accumulated in registers, then the epilogue as it is stored.
        ///
        /// # Safety
        /// As the blocked contract ([`TileArgs`]); AVX-512F is available.
        #[target_feature(enable = $features)]
        #[allow(clippy::needless_range_loop)] // acc[b][j]: the tile's two axes
        unsafe fn $name<const B: usize, const W: usize, const S: usize>(t: &TileArgs) {
            // S = 0: the step is the tile's (a column of pixels).
            let step = if S == 0 { t.x_step } else { S };
            let os = t.out_step;
            let mut acc = [[_mm512_setzero_ps(); W]; B];
            if !t.first {
                for (b, row) in acc.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        let p = t.partial.wrapping_add(b * t.partial_plane + j * os);
                        // SAFETY: block b, pixel j of the partial sums.
                        *v = unsafe { _mm512_loadu_ps(p) };
                    }
                }
            }
            // Fewer than 8 accumulators cannot hide the FMA latency: a second set
            // takes every other tap, and they are summed at the end.
            let mut odd = [[_mm512_setzero_ps(); W]; B];
            // The prefetches go with the first taps, `rate` lines each: the rest
            // of the loop carries no prefetch arithmetic.
            let rate = t.prefetch_lines.div_ceil(t.taps.len().max(1));
            let fetching = t.prefetch_lines.div_ceil(rate.max(1));
            let fetch = |i: usize| {
                for q in i * rate..((i + 1) * rate).min(t.prefetch_lines) {
                    _mm_prefetch::<_MM_HINT_T0>(t.prefetch.wrapping_add(q * BLOCK) as *const i8);
                }
            };
            let step = |acc: &mut [[__m512; W]; B], tap: &Tap| {
                let x = (t.x as *const u8).wrapping_offset(tap.x as isize * <$dot>::BYTES as isize);
                // SAFETY: k-step tap.k's B blocks of weights; the tap's W input
                // pixels lie inside the map.
                unsafe {
                    let w = t.w.add(tap.k as usize * B * BLOCK);
                    let mut wv = [_mm512_setzero_ps(); B];
                    for (b, v) in wv.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(w.add(b * BLOCK));
                    }
                    for j in 0..W {
                        let xv = <$dot>::input(x.add(j * step * <$dot>::BYTES));
                        for b in 0..B {
                            acc[b][j] = <$dot>::dot(acc[b][j], wv[b], xv);
                        }
                    }
                }
            };
            if B * W < 8 {
                let pairs = t.taps.chunks_exact(2);
                let rest = pairs.remainder();
                for (i, pair) in pairs.enumerate() {
                    if 2 * i < fetching {
                        fetch(2 * i);
                        fetch(2 * i + 1);
                    }
                    step(&mut acc, &pair[0]);
                    step(&mut odd, &pair[1]);
                }
                if let Some(tap) = rest.first() {
                    fetch(t.taps.len() - 1);
                    step(&mut acc, tap);
                }
                for (a, o) in acc.iter_mut().zip(&odd) {
                    for (x, y) in a.iter_mut().zip(o) {
                        *x = _mm512_add_ps(*x, *y);
                    }
                }
            } else {
                let (head, tail) = t.taps.split_at(fetching.min(t.taps.len()));
                for (i, tap) in head.iter().enumerate() {
                    fetch(i);
                    step(&mut acc, tap);
                }
                for tap in tail {
                    step(&mut acc, tap);
                }
            }
            if !t.last {
                for (b, row) in acc.iter().enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        // SAFETY: block b, pixel j of the partial sums.
                        unsafe { _mm512_storeu_ps(t.partial.add(b * t.partial_plane + j * os), v) };
                    }
                }
                return;
            }
            for (b, row) in acc.iter().enumerate() {
                // SAFETY: block b's 16 biases, and its residual and output at each pixel.
                unsafe {
                    let bias = if t.bias.is_null() {
                        V::splat(0.0)
                    } else {
                        V::load(t.bias.add(b * BLOCK))
                    };
                    for (j, &v) in row.iter().enumerate() {
                        let at = b * t.out_plane + j * os;
                        let res = (!t.res.is_null()).then(|| V::load(t.res.add(at)));
                        epilogue::apply(V(v), bias, res, t.relu).store(t.out.add(at));
                    }
                }
            }
        }
    };
}

blocked_tile_fn!(tile, "avx512f", F32);
blocked_tile_fn!(tile_bf16, "avx512f,avx512bf16", Bf16);

/// # Safety
/// As [`winograd::input_row`]; AVX-512F is available.
#[target_feature(enable = "avx512f")]
unsafe fn winograd_input(r: &InputRow) {
    // SAFETY: the features are enabled here; the rest is the caller's.
    unsafe { winograd::input_row::<V>(r) }
}

/// # Safety
/// As [`winograd::output_row`]; AVX-512F is available.
#[target_feature(enable = "avx512f")]
unsafe fn winograd_output(r: &OutputRow) {
    // SAFETY: the features are enabled here; the rest is the caller's.
    unsafe { winograd::output_row::<V>(r) }
}

/// # Safety
/// As [`slide::row`]; AVX-512F is available.
#[target_feature(enable = "avx512f")]
unsafe fn slide_tile<const B: usize, const W: usize>(r: &SlideRow) {
    // SAFETY: the features are enabled here; the rest is the caller's.
    unsafe { slide::row::<V, B, W>(r) }
}

static SLIDE: SlideTiles = SlideTiles {
    one: [
        slide_tile::<1, 1>,
        slide_tile::<1, 2>,
        slide_tile::<1, 3>,
        slide_tile::<1, 4>,
        slide_tile::<1, 5>,
        slide_tile::<1, 6>,
        slide_tile::<1, 7>,
        slide_tile::<1, 8>,
        slide_tile::<1, 9>,
        slide_tile::<1, 10>,
        slide_tile::<1, 11>,
        slide_tile::<1, 12>,
        slide_tile::<1, 13>,
        slide_tile::<1, 14>,
        slide_tile::<1, 15>,
        slide_tile::<1, 16>,
    ],
    two: [
        slide_tile::<2, 1>,
        slide_tile::<2, 2>,
        slide_tile::<2, 3>,
        slide_tile::<2, 4>,
        slide_tile::<2, 5>,
        slide_tile::<2, 6>,
        slide_tile::<2, 7>,
        slide_tile::<2, 8>,
        slide_tile::<2, 9>,
        slide_tile::<2, 10>,
        slide_tile::<2, 11>,
        slide_tile::<2, 12>,
    ],
};

/// # Safety
/// As [`gemv::strip`]; AVX-512F is available.
#[target_feature(enable = "avx512f")]
unsafe fn gemv_strip(a: &StripArgs) {
    // SAFETY: the features are enabled here; the rest is the caller's.
    unsafe { gemv::strip::<V>(a) }
}

/// # Safety
/// As [`crate::backend::jit::blocked::also_tile`]; the CPU has the set's features.
#[target_feature(enable = "avx512f")]
unsafe fn also_tile(also: &Also, t: &AlsoTile) {
    // SAFETY: the caller's promise, passed on.
    unsafe { crate::backend::jit::blocked::also_tile::<V>(also, t) }
}

/// # Safety
/// As [`crate::backend::jit::runtime::max_pool_row`]; the CPU has the set's features.
#[target_feature(enable = "avx512f")]
unsafe fn max_pool(r: &crate::backend::jit::runtime::MaxPoolRow) {
    // SAFETY: the caller's promise, passed on.
    unsafe { crate::backend::jit::runtime::max_pool_row::<V>(r) }
}
