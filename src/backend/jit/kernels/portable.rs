//! The portable kernel set: plain Rust, for any machine (the compiler
//! vectorizes what it can for the target's baseline). Also the reference
//! the SIMD sets are tested against.

use super::epilogue::{self, Also, Lanes};
use super::{Blocked, Gemm, Kernels, Peak, Winograd};
use crate::backend::jit::blocked::AlsoTile;
use crate::backend::jit::blocked::{TileArgs, BLOCK};
use crate::backend::jit::gemm::{Acc, Epilogue, Tile, MR, NR};
use crate::backend::jit::gemv::{self, StripArgs};
use crate::backend::jit::winograd::{self, InputRow, OutputRow};

pub static KERNELS: Kernels = Kernels {
    name: "portable",
    about: "portable 12x32",
    supported: || true,
    gemm: Gemm {
        tile: gemm_tile,
        epilogue: gemm_epilogue,
        gemv: gemv_strip,
        im2col: None,
    },
    blocked: Blocked {
        blocks: 1,
        max_width: |_| 6,
        tile: blocked_tile,
        prefetches: false,
        also: also_tile,
        max_pool,
        bf16: None,
        slide: None,
    },
    winograd: Winograd {
        input: winograd_input,
        output: winograd_output,
        // Unmeasured: the AVX2 set's.
        f2_min_tiles: 16,
        f4_min_tiles: 4,
    },
    peak: Peak {
        flops_per_iter: 16 * 2,
        run: fma_loop,
    },
};

/// Eight lanes as an array: loops over it compile to whatever vectors the
/// target has.
#[derive(Clone, Copy)]
pub struct F32x8([f32; 8]);

// SAFETY: plain array arithmetic; pointers are the callers' to vouch for.
unsafe impl Lanes for F32x8 {
    const N: usize = 8;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> F32x8 {
        // SAFETY: p holds 8 floats (the caller's promise).
        F32x8(unsafe { std::ptr::read_unaligned(p as *const [f32; 8]) })
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> F32x8 {
        let mut v = [0.0; 8];
        // SAFETY: p holds n < 8 floats.
        v[..n].copy_from_slice(unsafe { std::slice::from_raw_parts(p, n) });
        F32x8(v)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: p has room for 8 floats.
        unsafe { std::ptr::write_unaligned(p as *mut [f32; 8], self.0) }
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        // SAFETY: p has room for n < 8 floats.
        unsafe { std::ptr::copy_nonoverlapping(self.0.as_ptr(), p, n) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> F32x8 {
        F32x8([v; 8])
    }
    #[inline(always)]
    unsafe fn add(self, o: F32x8) -> F32x8 {
        let mut v = self.0;
        for (a, b) in v.iter_mut().zip(o.0) {
            *a += b;
        }
        F32x8(v)
    }
    #[inline(always)]
    unsafe fn sub(self, o: F32x8) -> F32x8 {
        let mut v = self.0;
        for (a, b) in v.iter_mut().zip(o.0) {
            *a -= b;
        }
        F32x8(v)
    }
    #[inline(always)]
    unsafe fn mul(self, o: F32x8) -> F32x8 {
        let mut v = self.0;
        for (a, b) in v.iter_mut().zip(o.0) {
            *a *= b;
        }
        F32x8(v)
    }
    #[inline(always)]
    unsafe fn mul_add(self, s: f32, acc: F32x8) -> F32x8 {
        let mut v = acc.0;
        for (a, b) in v.iter_mut().zip(self.0) {
            *a += b * s;
        }
        F32x8(v)
    }
    #[inline(always)]
    unsafe fn relu(self) -> F32x8 {
        F32x8(self.0.map(epilogue::relu))
    }
    #[inline(always)]
    unsafe fn max_nan(self, o: F32x8) -> F32x8 {
        let mut v = self.0;
        for (a, b) in v.iter_mut().zip(o.0) {
            *a = epilogue::max_nan(*a, b);
        }
        F32x8(v)
    }
}

/// # Safety
/// As the GEMM contract: the tile's pointers hold what [`Tile`] says.
pub unsafe fn gemm_tile(t: &Tile) {
    let mut acc = [[0.0f32; NR]; MR];
    for k in 0..t.kc {
        // SAFETY: A holds kc x MR values, B kc x NR.
        let (a, b) = unsafe {
            (
                std::slice::from_raw_parts(t.a.add(k * MR), MR),
                std::slice::from_raw_parts(t.b.add(k * NR), NR),
            )
        };
        for (row, &av) in acc.iter_mut().zip(a).take(t.rows) {
            for (v, &bv) in row.iter_mut().zip(b) {
                *v += av * bv;
            }
        }
    }
    for (r, row) in acc.iter().enumerate().take(t.rows) {
        // SAFETY: C has `rows` rows of NR columns at stride ldc.
        let c = unsafe { std::slice::from_raw_parts_mut(t.c.add(r * t.ldc), NR) };
        for (p, v) in c.iter_mut().zip(row) {
            *p = if t.accumulate { *p + v } else { *v };
        }
    }
}

/// # Safety
/// As [`epilogue::gemm`].
pub unsafe fn gemm_epilogue(acc: &Acc, out: *mut f32, e: &Epilogue) {
    // SAFETY: portable lanes need no features; the rest is the caller's.
    unsafe { epilogue::gemm::<F32x8>(acc, out, e) }
}

/// # Safety
/// None beyond running: a register-only loop.
pub unsafe fn fma_loop(iters: u64) {
    let mut acc = [1.0f32; 16];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = *a * 0.999_999 + 1e-7;
        }
    }
    std::hint::black_box(acc);
}

super::one_block_tiles!(tile);

/// One block of 16 output channels x `W` pixels, input pixels `S` floats
/// apart (0: the tile's `x_step`); weights `t.w_step` floats a k-step apart.
///
/// # Safety
/// As the blocked contract: the taps address the input map, the outputs
/// (and residual, partial sums) hold the tile's pixels.
unsafe fn tile<const W: usize, const S: usize>(t: &TileArgs) {
    let step = if S == 0 { t.x_step } else { S };
    let os = t.out_step;
    let mut acc = [[0.0f32; BLOCK]; W];
    if !t.first {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: pixel j's partial sums.
            a.copy_from_slice(unsafe { std::slice::from_raw_parts(t.partial.add(j * os), BLOCK) });
        }
    }
    for tap in t.taps {
        let x = t.x.wrapping_offset(tap.x as isize);
        // SAFETY: k-step tap.k's 16 weights; the tap's input pixels are inside the map.
        let w = unsafe { &*(t.w.add(tap.k as usize * t.w_step) as *const [f32; BLOCK]) };
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: as above, pixel j.
            let xv = unsafe { *x.add(j * step) };
            for (v, &wv) in a.iter_mut().zip(w) {
                *v += wv * xv;
            }
        }
    }
    if !t.last {
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: pixel j's partial sums.
            unsafe { std::ptr::copy_nonoverlapping(a.as_ptr(), t.partial.add(j * os), BLOCK) };
        }
        return;
    }
    for (j, a) in acc.iter().enumerate() {
        for half in 0..BLOCK / F32x8::N {
            let l = half * F32x8::N;
            // SAFETY: 16 channels of bias, residual and output at pixel j.
            unsafe {
                let bias = if t.bias.is_null() {
                    F32x8::splat(0.0)
                } else {
                    F32x8::load(t.bias.add(l))
                };
                let res = (!t.res.is_null()).then(|| F32x8::load(t.res.add(j * os + l)));
                let v = epilogue::apply(F32x8::load(a.as_ptr().add(l)), bias, res, t.relu);
                v.store(t.out.add(j * os + l));
            }
        }
    }
}

/// # Safety
/// As [`winograd::input_row`].
unsafe fn winograd_input(r: &InputRow) {
    // SAFETY: the caller's promise, passed on.
    unsafe { winograd::input_row::<F32x8>(r) }
}

/// # Safety
/// As [`winograd::output_row`].
unsafe fn winograd_output(r: &OutputRow) {
    // SAFETY: the caller's promise, passed on.
    unsafe { winograd::output_row::<F32x8>(r) }
}

/// # Safety
/// As [`gemv::strip`].
unsafe fn gemv_strip(a: &StripArgs) {
    // SAFETY: the caller's promise, passed on.
    unsafe { gemv::strip::<F32x8>(a) }
}

/// # Safety
/// As [`crate::backend::jit::blocked::also_tile`].
unsafe fn also_tile(also: &Also, t: &AlsoTile) {
    // SAFETY: the caller's promise, passed on.
    unsafe { crate::backend::jit::blocked::also_tile::<F32x8>(also, t) }
}

/// # Safety
/// As [`crate::backend::jit::runtime::max_pool_row`].
unsafe fn max_pool(r: &crate::backend::jit::runtime::MaxPoolRow) {
    // SAFETY: the caller's promise, passed on.
    unsafe { crate::backend::jit::runtime::max_pool_row::<F32x8>(r) }
}
