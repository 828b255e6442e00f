//! GEMM with a fused epilogue: `C = epilogue(A x B)`, A the weights packed
//! once at compile time, B the activations packed (or im2col'ed) per call.
//!
//! Layout (BLIS-like): A in panels of MR rows, k-major (`[k][MR]`); B in
//! panels of NR columns, k-major (`[k][NR]`). A 6x32 microkernel, AVX-512 or
//! two AVX2/FMA 6x16 halves (runtime-detected; portable code otherwise),
//! accumulates KC-deep slices
//! into a tile buffer local to the thread, and the epilogue (bias, residual,
//! ReLU) writes each output element once, after all of K: so an output may
//! overwrite its residual in place. Tiles of MC x NC run on the pool.

use rayon::prelude::*;

pub const MR: usize = 6;
pub const NR: usize = 32;
const MC: usize = 12 * MR;
const NC: usize = 8 * NR;
const KC: usize = 256;

/// Weights packed for the microkernel: `ceil(m / MR)` panels of `k x MR`.
#[derive(Clone, Debug)]
pub struct PackedA {
    pub data: Vec<f32>,
    pub m: usize,
    pub k: usize,
}

impl PackedA {
    /// Pack a row-major `m x k` matrix; rows past `m` are zero.
    pub fn pack(w: &[f32], m: usize, k: usize) -> PackedA {
        let panels = m.div_ceil(MR);
        let mut data = vec![0.0f32; panels * k * MR];
        for p in 0..panels {
            for kk in 0..k {
                for r in 0..MR {
                    let row = p * MR + r;
                    if row < m {
                        data[(p * k + kk) * MR + r] = w[row * k + kk];
                    }
                }
            }
        }
        PackedA { data, m, k }
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * MR..(p + 1) * self.k * MR]
    }
}

/// Packed B: `ceil(n / NR)` panels of `k x NR`, zero past `n`.
pub fn packed_b_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * k * NR
}

/// How the epilogue reads the residual of output element (row i, column j).
#[derive(Clone, Copy, Debug)]
pub enum ResidualRead {
    None,
    /// `res[i * rs + j]`
    Add {
        ptr: *const f32,
    },
    /// Option A: row i reads channel `i - before` of an `h x w` map at
    /// `(oy * stride, ox * stride)`, zero outside its channels.
    PadAdd {
        ptr: *const f32,
        channels: usize,
        h: usize,
        w: usize,
        stride: usize,
        before: usize,
        out_w: usize,
    },
}

#[derive(Clone, Copy, Debug)]
pub struct Epilogue {
    pub bias: Option<*const f32>,
    pub residual: ResidualRead,
    pub relu: bool,
    /// Output element (i, j) is at `out[i * row_stride + j * col_stride]`.
    pub row_stride: usize,
    pub col_stride: usize,
}

/// Raw pointers cross threads: each task writes a disjoint set of outputs.
#[derive(Clone, Copy)]
struct Shared<T>(T);
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

impl<T: Copy> Shared<T> {
    /// Through a method, so closures capture the wrapper, not the field.
    fn get(&self) -> T {
        self.0
    }
}

/// Where the GEMM reads B from.
#[derive(Clone, Copy, Debug)]
pub enum BSource<'a> {
    /// Packed panels: `packed_b_len(k, n)` values.
    Packed(&'a [f32]),
    /// A row-major `k x n` matrix at row stride `ld`, read in place (a 1x1
    /// conv's input needs no copy); `edge` holds the last, partial panel
    /// packed (`k x NR`) when `n` is not a multiple of NR.
    Rows {
        ptr: usize,
        ld: usize,
        edge: &'a [f32],
    },
}

impl BSource<'_> {
    /// The first element of panel column `col` at depth `p0`, and its row stride.
    fn at(&self, col: usize, p0: usize, k: usize, n: usize) -> (*const f32, usize) {
        match *self {
            BSource::Packed(b) => (b[((col / NR) * k + p0) * NR..].as_ptr(), NR),
            BSource::Rows { edge, .. } if col + NR > n => (edge[p0 * NR..].as_ptr(), NR),
            // SAFETY (for the caller): rows p0.. of columns col..col+NR exist.
            BSource::Rows { ptr, ld, .. } => ((ptr as *const f32).wrapping_add(p0 * ld + col), ld),
        }
    }
}

/// `out = epilogue(A x B)` for A `m x k` (packed), B `k x n`.
///
/// # Safety
/// `out` and the residual must be valid for every element the epilogue
/// addresses; `b` holds the `k x n` values it claims to.
pub unsafe fn gemm(
    a: &PackedA,
    b: BSource,
    n: usize,
    out: *mut f32,
    epi: &Epilogue,
    pool: &rayon::ThreadPool,
) {
    let (m, k) = (a.m, a.k);
    let tiles_m = m.div_ceil(MC);
    let tiles_n = n.div_ceil(NC);
    let out = Shared(out);
    let epi = Shared(*epi);
    let run = |t: usize| {
        let (ti, tj) = (t / tiles_n, t % tiles_n);
        let (i0, j0) = (ti * MC, tj * NC);
        let (mc, nc) = ((m - i0).min(MC), (n - j0).min(NC));
        TILE.with(|buf| {
            let mut buf = buf.borrow_mut();
            let panels_m = mc.div_ceil(MR);
            let panels_n = nc.div_ceil(NR);
            let ld = panels_n * NR;
            buf.clear();
            buf.resize(panels_m * MR * ld, 0.0);
            let mut p0 = 0;
            while p0 < k {
                let kc = (k - p0).min(KC);
                for pj in 0..panels_n {
                    let (bp, bs) = b.at(j0 + pj * NR, p0, k, n);
                    for pi in 0..panels_m {
                        let apanel = &a.panel(i0 / MR + pi)[p0 * MR..];
                        let c = buf.as_mut_ptr().add(pi * MR * ld + pj * NR);
                        // SAFETY: A holds kc x MR values from here, B kc rows of NR at stride bs.
                        unsafe { kernel(kc, apanel.as_ptr(), bp, bs, c, ld, p0 > 0) };
                    }
                }
                p0 += kc;
            }
            // SAFETY: this tile's outputs belong to this task alone.
            unsafe { epilogue(&buf, ld, i0, j0, mc, nc, out.get(), &epi.get()) };
        });
    };
    let tiles = tiles_m * tiles_n;
    if tiles == 1 || pool.current_num_threads() == 1 {
        (0..tiles).for_each(run);
    } else {
        pool.install(|| (0..tiles).into_par_iter().for_each(run));
    }
}

thread_local! {
    static TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[allow(clippy::too_many_arguments)]
unsafe fn epilogue(
    buf: &[f32],
    ld: usize,
    i0: usize,
    j0: usize,
    mc: usize,
    nc: usize,
    out: *mut f32,
    e: &Epilogue,
) {
    for r in 0..mc {
        let i = i0 + r;
        let bias = e.bias.map_or(0.0, |b| unsafe { *b.add(i) });
        let row = &buf[r * ld..r * ld + nc];
        let o = unsafe { out.add(i * e.row_stride + j0 * e.col_stride) };
        let cs = e.col_stride;
        let relu = |v: f32| if e.relu && v < 0.0 { 0.0 } else { v };
        if cs == 1 && !matches!(e.residual, ResidualRead::PadAdd { .. }) {
            let res = match e.residual {
                ResidualRead::Add { ptr } => Some(unsafe { ptr.add(i * e.row_stride + j0) }),
                _ => None,
            };
            unsafe { epilogue_row(row, bias, res, e.relu, o) };
            continue;
        }
        // One loop per residual kind, so each inner loop is branch-light.
        match e.residual {
            ResidualRead::None => {
                for (cj, &acc) in row.iter().enumerate() {
                    unsafe { *o.add(cj * cs) = relu(acc + bias) };
                }
            }
            ResidualRead::Add { ptr } => {
                let rp = unsafe { ptr.add(i * e.row_stride + j0 * cs) };
                for (cj, &acc) in row.iter().enumerate() {
                    // Read before write: the output may be the residual's bytes.
                    let res = unsafe { *rp.add(cj * cs) };
                    unsafe { *o.add(cj * cs) = relu(acc + bias + res) };
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
                for (cj, &acc) in row.iter().enumerate() {
                    let j = j0 + cj;
                    let res = if inside {
                        let (oy, ox) = (j / out_w, j % out_w);
                        unsafe { *ptr.add((i - before) * h * w + oy * stride * w + ox * stride) }
                    } else {
                        0.0
                    };
                    unsafe { *o.add(cj * cs) = relu(acc + bias + res) };
                }
            }
        }
    }
}

/// A contiguous output row, 8 lanes at a time (the compiler vectorizes the
/// array arithmetic). The residual chunk is read into registers before the
/// output chunk is written, so the output may be the residual's own bytes.
///
/// # Safety
/// `out` (and `res`) hold `row.len()` values.
#[inline]
unsafe fn epilogue_row(row: &[f32], bias: f32, res: Option<*const f32>, relu: bool, out: *mut f32) {
    const L: usize = 8;
    let full = row.len() / L * L;
    // ReLU as max(v, 0), like the interpreter (NaN becomes 0); without ReLU, no max.
    let act = |v: f32| if relu { v.max(0.0) } else { v };
    for c in (0..full).step_by(L) {
        let mut v = [0.0f32; L];
        v.copy_from_slice(&row[c..c + L]);
        let r: [f32; L] = match res {
            Some(p) => unsafe { std::ptr::read_unaligned(p.add(c) as *const [f32; L]) },
            None => [0.0; L],
        };
        for t in 0..L {
            v[t] = act(v[t] + bias + r[t]);
        }
        unsafe { std::ptr::write_unaligned(out.add(c) as *mut [f32; L], v) };
    }
    for (c, &v) in row.iter().enumerate().skip(full) {
        let r = res.map_or(0.0, |p| unsafe { *p.add(c) });
        unsafe { *out.add(c) = act(v + bias + r) };
    }
}

/// One MR x NR tile: `c (+)= a x b` over `kc`, `c` with row stride `ldc`.
unsafe fn kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    bs: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        match *ISA {
            Isa::Avx512 => {
                return unsafe { x86::kernel_6x32_avx512(kc, a, b, bs, c, ldc, accumulate) }
            }
            Isa::Avx2 => unsafe {
                x86::kernel_6x16(kc, a, b, bs, c, ldc, accumulate);
                x86::kernel_6x16(kc, a, b.add(16), bs, c.add(16), ldc, accumulate);
                return;
            },
            Isa::Portable => {}
        }
    }
    unsafe { kernel_portable(kc, a, b, bs, c, ldc, accumulate) }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
    Portable,
}

/// The best microkernel this machine runs; `RESNETC_NO_AVX512=1` keeps to AVX2.
static ISA: std::sync::LazyLock<Isa> = std::sync::LazyLock::new(|| {
    #[cfg(target_arch = "x86_64")]
    {
        if std::env::var_os("RESNETC_NO_AVX512").is_none() && is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
    }
    Isa::Portable
});

/// The microkernel in use on this machine.
pub fn simd_kernel() -> &'static str {
    match *ISA {
        Isa::Avx512 => "avx512f 6x32",
        Isa::Avx2 => "avx2+fma 2x(6x16)",
        Isa::Portable => "portable 6x32",
    }
}

unsafe fn kernel_portable(
    kc: usize,
    a: *const f32,
    b: *const f32,
    bs: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[0.0f32; NR]; MR];
    for k in 0..kc {
        for (r, row) in acc.iter_mut().enumerate() {
            let av = unsafe { *a.add(k * MR + r) };
            for (j, v) in row.iter_mut().enumerate() {
                *v += av * unsafe { *b.add(k * bs + j) };
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let p = unsafe { c.add(r * ldc + j) };
            unsafe { *p = if accumulate { *p + v } else { *v } };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::MR;

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

    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_6x32_avx512(
        kc: usize,
        a: *const f32,
        b: *const f32,
        bs: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        for k in 0..kc {
            let b0 = unsafe { _mm512_loadu_ps(b.add(k * bs)) };
            let b1 = unsafe { _mm512_loadu_ps(b.add(k * bs + 16)) };
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(unsafe { *a.add(k * MR + r) });
                row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                row[1] = _mm512_fmadd_ps(av, b1, row[1]);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let p = unsafe { c.add(r * ldc) };
            let (mut v0, mut v1) = (row[0], row[1]);
            if accumulate {
                v0 = _mm512_add_ps(v0, unsafe { _mm512_loadu_ps(p) });
                v1 = _mm512_add_ps(v1, unsafe { _mm512_loadu_ps(p.add(16)) });
            }
            unsafe {
                _mm512_storeu_ps(p, v0);
                _mm512_storeu_ps(p.add(16), v1);
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma_loop_avx512(iters: u64) {
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

    /// Half of a 6x32 tile: 16 of the panel's 32 columns (B rows are NR apart).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_6x16(
        kc: usize,
        a: *const f32,
        b: *const f32,
        bs: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for k in 0..kc {
            let b0 = unsafe { _mm256_loadu_ps(b.add(k * bs)) };
            let b1 = unsafe { _mm256_loadu_ps(b.add(k * bs + 8)) };
            for (r, row) in acc.iter_mut().enumerate() {
                let av = unsafe { _mm256_broadcast_ss(&*a.add(k * MR + r)) };
                row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                row[1] = _mm256_fmadd_ps(av, b1, row[1]);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            let p = unsafe { c.add(r * ldc) };
            let (mut v0, mut v1) = (row[0], row[1]);
            if accumulate {
                v0 = _mm256_add_ps(v0, unsafe { _mm256_loadu_ps(p) });
                v1 = _mm256_add_ps(v1, unsafe { _mm256_loadu_ps(p.add(8)) });
            }
            unsafe {
                _mm256_storeu_ps(p, v0);
                _mm256_storeu_ps(p.add(8), v1);
            }
        }
    }
}

/// Pack a row-major `k x n` block (row stride `ld`) into B panels.
///
/// # Safety
/// `src` is valid for `k` rows of `n` values at stride `ld`.
pub unsafe fn pack_b(
    src: *const f32,
    ld: usize,
    k: usize,
    n: usize,
    dst: &mut [f32],
    pool: &rayon::ThreadPool,
) {
    let src = Shared(src);
    let fill = |(p, panel): (usize, &mut [f32])| {
        let j0 = p * NR;
        let w = (n - j0).min(NR);
        for kk in 0..k {
            let row = unsafe { std::slice::from_raw_parts(src.get().add(kk * ld + j0), w) };
            panel[kk * NR..kk * NR + w].copy_from_slice(row);
            panel[kk * NR + w..(kk + 1) * NR].fill(0.0);
        }
    };
    let len = packed_b_len(k, n);
    pool.install(|| dst[..len].par_chunks_mut(k * NR).enumerate().for_each(fill));
}

/// im2col straight into B panels: column j is output pixel (oy, ox), row
/// `(c, ki, kj)` reads `x[c, oy*s + ki - p, ox*s + kj - p]`, zero outside.
///
/// # Safety
/// `x` holds `c x h x w` values.
#[allow(clippy::too_many_arguments)]
pub unsafe fn im2col_b(
    x: *const f32,
    (c, h, w): (usize, usize, usize),
    (kernel, stride, pad): (usize, usize, usize),
    (oh, ow): (usize, usize),
    dst: &mut [f32],
    pool: &rayon::ThreadPool,
) {
    let k = c * kernel * kernel;
    let n = oh * ow;
    let x = Shared(x);
    let fill = |(p, panel): (usize, &mut [f32])| {
        let j0 = p * NR;
        let cols = (n - j0).min(NR);
        // The panel's columns as runs of one output row: (first column, oy, first ox, length).
        let mut runs = [(0usize, 0usize, 0usize, 0usize); NR];
        let mut nruns = 0;
        let mut jj = 0;
        while jj < cols {
            let (oy, ox) = ((j0 + jj) / ow, (j0 + jj) % ow);
            let len = (ow - ox).min(cols - jj);
            runs[nruns] = (jj, oy, ox, len);
            nruns += 1;
            jj += len;
        }
        let xp = x.get();
        for ci in 0..c {
            for ki in 0..kernel {
                for kj in 0..kernel {
                    let kk = (ci * kernel + ki) * kernel + kj;
                    let dst = &mut panel[kk * NR..(kk + 1) * NR];
                    dst[cols..].fill(0.0);
                    for &(col, oy, ox0, len) in &runs[..nruns] {
                        let out = &mut dst[col..col + len];
                        let iy = (oy * stride + ki) as isize - pad as isize;
                        if iy < 0 || iy as usize >= h {
                            out.fill(0.0);
                            continue;
                        }
                        // ix(t) = (ox0 + t) * stride + kj - pad: the t whose ix is inside [0, w).
                        let first = (ox0 * stride + kj) as isize - pad as isize;
                        let lo = if first >= 0 {
                            0
                        } else {
                            ((-first) as usize).div_ceil(stride)
                        };
                        let hi = if first >= w as isize {
                            0
                        } else {
                            ((w as isize - 1 - first) as usize / stride + 1).min(len)
                        };
                        let lo = lo.min(hi);
                        out[..lo].fill(0.0);
                        out[hi..].fill(0.0);
                        let row = unsafe { xp.add((ci * h + iy as usize) * w) };
                        let start = first + (lo * stride) as isize;
                        if stride == 1 {
                            // SAFETY: [start, start + hi - lo) lies inside the row.
                            let src = unsafe {
                                std::slice::from_raw_parts(row.add(start as usize), hi - lo)
                            };
                            out[lo..hi].copy_from_slice(src);
                        } else {
                            for (t, o) in out[lo..hi].iter_mut().enumerate() {
                                *o = unsafe { *row.add(start as usize + t * stride) };
                            }
                        }
                    }
                }
            }
        }
    };
    let len = packed_b_len(k, n);
    pool.install(|| dst[..len].par_chunks_mut(k * NR).enumerate().for_each(fill));
}

/// The machine's FMA peak in GFLOP/s on `pool`'s threads, measured with a
/// register-only loop of independent FMAs (what the microkernel could reach).
pub fn measure_peak(pool: &rayon::ThreadPool) -> f64 {
    let iters: u64 = 4_000_000;
    let start = std::time::Instant::now();
    let per_thread = pool.broadcast(|_| peak_loop(iters));
    let secs = start.elapsed().as_secs_f64();
    per_thread.iter().sum::<f64>() / secs / 1e9
}

/// Flops done by `iters` rounds of 12 independent FMA chains.
fn peak_loop(iters: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: the features were detected.
        match *ISA {
            Isa::Avx512 => {
                unsafe { x86::fma_loop_avx512(iters) };
                return (iters * 12 * 16 * 2) as f64;
            }
            Isa::Avx2 => {
                unsafe { x86::fma_loop(iters) };
                return (iters * 12 * 8 * 2) as f64;
            }
            Isa::Portable => {}
        }
    }
    let mut acc = [1.0f32; 16];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = a.mul_add(0.999_999, 1e-7);
        }
    }
    std::hint::black_box(acc);
    (iters * 16 * 2) as f64
}
