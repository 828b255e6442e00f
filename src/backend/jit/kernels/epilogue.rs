//! The fused epilogue, defined once: `relu?(acc + bias + residual)`, in that
//! order (the interpreter's order, so results match bit for bit where the
//! sums do), with PyTorch's ReLU: `max(v, 0)`, but NaN stays NaN.
//!
//! It is written over [`Lanes`], a vector of f32 that each kernel set
//! implements for its registers (a plain `f32` is one lane), and stamped
//! into each set inside a function compiled for its features. The GEMM
//! frame's epilogue, the blocked tiles' stores and the scalar paths (option
//! A's strided read, the fc's transposed output) all apply [`apply`].

use crate::backend::jit::gemm::{Acc, Epilogue, ResidualRead};

/// A vector of `N` f32 lanes.
///
/// # Safety
/// Every method may use instructions of its kernel set: call them only
/// where the set is supported (inside its `#[target_feature]` functions).
/// Pointers must hold the lanes they read or write.
pub unsafe trait Lanes: Copy {
    const N: usize;
    /// # Safety
    /// `p` holds `N` floats; the CPU has the set's features.
    unsafe fn load(p: *const f32) -> Self;
    /// The first `n < N` floats at `p`, zero after.
    ///
    /// # Safety
    /// `p` holds `n` floats; the CPU has the set's features.
    unsafe fn load_first(p: *const f32, n: usize) -> Self;
    /// # Safety
    /// `p` has room for `N` floats; the CPU has the set's features.
    unsafe fn store(self, p: *mut f32);
    /// Store the first `n < N` lanes.
    ///
    /// # Safety
    /// `p` has room for `n` floats; the CPU has the set's features.
    unsafe fn store_first(self, p: *mut f32, n: usize);
    /// # Safety
    /// The CPU has the set's features.
    unsafe fn splat(v: f32) -> Self;
    /// # Safety
    /// The CPU has the set's features.
    unsafe fn add(self, other: Self) -> Self;
    /// # Safety
    /// The CPU has the set's features.
    unsafe fn sub(self, other: Self) -> Self;
    /// Lane by lane, unfused.
    ///
    /// # Safety
    /// The CPU has the set's features.
    unsafe fn mul(self, other: Self) -> Self;
    /// `self * s + acc`, fused where the set has FMA.
    ///
    /// # Safety
    /// The CPU has the set's features.
    unsafe fn mul_add(self, s: f32, acc: Self) -> Self;
    /// `max(v, 0)` lane by lane, NaN kept (PyTorch's ReLU).
    ///
    /// # Safety
    /// The CPU has the set's features.
    unsafe fn relu(self) -> Self;
    /// The larger lane by lane, NaN where either is (PyTorch's max pool).
    ///
    /// # Safety
    /// The CPU has the set's features.
    unsafe fn max_nan(self, other: Self) -> Self;
}

/// [`Lanes::max_nan`] on one value.
#[inline(always)]
pub fn max_nan(a: f32, b: f32) -> f32 {
    if b > a || b.is_nan() {
        b
    } else {
        a
    }
}

/// PyTorch's ReLU on one value: `NaN < 0` is false, so NaN stays NaN
/// (`f32::max(NaN, 0)` would give 0).
#[inline(always)]
pub fn relu(v: f32) -> f32 {
    if v < 0.0 {
        0.0
    } else {
        v
    }
}

// SAFETY: plain scalar arithmetic, no special instructions.
unsafe impl Lanes for f32 {
    const N: usize = 1;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller's promise.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn load_first(_: *const f32, _: usize) -> f32 {
        0.0
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller's promise.
        unsafe { *p = self }
    }
    #[inline(always)]
    unsafe fn store_first(self, _: *mut f32, _: usize) {}
    #[inline(always)]
    unsafe fn splat(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    unsafe fn add(self, other: f32) -> f32 {
        self + other
    }
    #[inline(always)]
    unsafe fn sub(self, other: f32) -> f32 {
        self - other
    }
    #[inline(always)]
    unsafe fn mul(self, other: f32) -> f32 {
        self * other
    }
    #[inline(always)]
    unsafe fn mul_add(self, s: f32, acc: f32) -> f32 {
        self * s + acc
    }
    #[inline(always)]
    unsafe fn relu(self) -> f32 {
        relu(self)
    }
    #[inline(always)]
    unsafe fn max_nan(self, other: f32) -> f32 {
        max_nan(self, other)
    }
}

/// The epilogue of one vector of outputs.
///
/// # Safety
/// As [`Lanes`].
#[inline(always)]
pub unsafe fn apply<L: Lanes>(acc: L, bias: L, residual: Option<L>, relu: bool) -> L {
    // SAFETY: the caller's promise, passed on.
    unsafe {
        let mut v = acc.add(bias);
        if let Some(r) = residual {
            v = v.add(r);
        }
        if relu {
            v.relu()
        } else {
            v
        }
    }
}

/// An epilogue's second output: `relu?(v * scale + shift)` per channel of
/// the value `v` it stores, into a map of the output's layout. A
/// pre-activation net's block input goes through its BN and ReLU here, as
/// the conv that makes it stores it: the map is read once, not twice.
/// A null `out`: none.
#[derive(Clone, Copy, Debug)]
pub struct Also {
    pub out: *mut f32,
    pub scale: *const f32,
    pub shift: *const f32,
    pub relu: bool,
}

// SAFETY: the pointers are read-only scales and shifts and a map that the
// tasks of a conv write at disjoint pixels, as they write its output.
unsafe impl Sync for Also {}
// SAFETY: as for Sync.
unsafe impl Send for Also {}

impl Also {
    pub const NONE: Also = Also {
        out: std::ptr::null_mut(),
        scale: std::ptr::null(),
        shift: std::ptr::null(),
        relu: false,
    };

    /// `out` `at` floats on and the scales and shifts `channel` on.
    pub fn at(self, at: usize, channel: usize) -> Also {
        if self.out.is_null() {
            return self;
        }
        Also {
            out: self.out.wrapping_add(at),
            scale: self.scale.wrapping_add(channel),
            shift: self.shift.wrapping_add(channel),
            relu: self.relu,
        }
    }

    /// The scales and shifts of `L::N` channels from `channel`, if wanted.
    ///
    /// # Safety
    /// Unless `out` is null, they hold those channels; the CPU has `L`'s features.
    #[inline(always)]
    pub unsafe fn lanes<L: Lanes>(&self, channel: usize) -> Option<(L, L)> {
        if self.out.is_null() {
            return None;
        }
        // SAFETY: the caller's promise.
        unsafe {
            Some((
                L::load(self.scale.add(channel)),
                L::load(self.shift.add(channel)),
            ))
        }
    }

    /// Store `relu?(v * scale + shift)` at `out + at` (as the standalone
    /// scale-shift computes it, bit for bit), given [`Also::lanes`].
    ///
    /// # Safety
    /// `out + at` has room for `L::N` floats; the CPU has `L`'s features.
    #[inline(always)]
    pub unsafe fn put<L: Lanes>(&self, st: Option<(L, L)>, v: L, at: usize) {
        if let Some((s, t)) = st {
            // SAFETY: the caller's promise.
            unsafe {
                let y = v.mul(s).add(t);
                (if self.relu { y.relu() } else { y }).store(self.out.add(at));
            }
        }
    }
}

/// A contiguous output row, `L::N` lanes at a time, the tail masked. Each
/// chunk's residual is loaded before its output is stored, so `out` may be
/// the residual's own bytes.
///
/// # Safety
/// As [`Lanes`]; `out` (and `res`) hold `row.len()` values.
#[inline(always)]
pub unsafe fn row<L: Lanes>(
    row: &[f32],
    bias: f32,
    res: Option<*const f32>,
    relu: bool,
    out: *mut f32,
) {
    let n = row.len();
    let p = row.as_ptr();
    // SAFETY: every offset below is inside the row, the residual and the
    // output (the caller's promise); the features are the caller's too.
    unsafe {
        let b = L::splat(bias);
        let mut c = 0;
        while c + L::N <= n {
            let r = res.map(|q| L::load(q.add(c)));
            apply(L::load(p.add(c)), b, r, relu).store(out.add(c));
            c += L::N;
        }
        if c < n {
            let m = n - c;
            let r = res.map(|q| L::load_first(q.add(c), m));
            apply(L::load_first(p.add(c), m), b, r, relu).store_first(out.add(c), m);
        }
    }
}

/// The GEMM frame's epilogue over a task's accumulated C, within one image:
/// contiguous rows through [`row`], option A's strided read and strided
/// outputs (fc) one value at a time through [`apply`].
///
/// # Safety
/// As [`Lanes`]; `out` and the residual hold every element `e` addresses
/// for the accumulator's rows and columns.
#[inline(always)]
pub unsafe fn gemm<L: Lanes>(acc: &Acc, out: *mut f32, e: &Epilogue) {
    let &Acc {
        buf,
        ld,
        i0,
        j0,
        rows: mc,
        cols: nc,
    } = acc;
    let cs = e.col_stride;
    for r in 0..mc {
        let i = i0 + r;
        // SAFETY: row i's bias, the accumulator's row r, and output row i
        // from column j0 (and the residual's) are the caller's (see above);
        // each residual element is read before the output over it is written.
        unsafe {
            let bias = e.bias.map_or(0.0, |b| *b.add(i));
            let accs = &buf[r * ld..r * ld + nc];
            let o = out.wrapping_add(i * e.row_stride + j0 * cs);
            match e.residual {
                ResidualRead::None if cs == 1 => row::<L>(accs, bias, None, e.relu, o),
                ResidualRead::Add { ptr } if cs == 1 => {
                    let res = ptr.wrapping_add(i * e.row_stride + j0);
                    row::<L>(accs, bias, Some(res), e.relu, o)
                }
                ResidualRead::None => {
                    for (cj, &a) in accs.iter().enumerate() {
                        *o.add(cj * cs) = apply(a, bias, None, e.relu);
                    }
                }
                ResidualRead::Add { ptr } => {
                    let rp = ptr.wrapping_add(i * e.row_stride + j0 * cs);
                    for (cj, &a) in accs.iter().enumerate() {
                        let res = *rp.add(cj * cs);
                        *o.add(cj * cs) = apply(a, bias, Some(res), e.relu);
                    }
                }
                ResidualRead::PadAdd {
                    ptr,
                    channels,
                    h,
                    w,
                    stride,
                    before,
                    out_w,
                } => {
                    let inside = i >= before && i - before < channels;
                    for (cj, &a) in accs.iter().enumerate() {
                        let j = j0 + cj;
                        let res = if inside {
                            let (oy, ox) = (j / out_w, j % out_w);
                            *ptr.add((i - before) * h * w + oy * stride * w + ox * stride)
                        } else {
                            0.0
                        };
                        *o.add(cj * cs) = apply(a, bias, Some(res), e.relu);
                    }
                }
            }
        }
    }
}
