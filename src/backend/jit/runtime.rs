//! What generated code calls: kernels with `extern "C"` entry points, each
//! taking a descriptor built at compile time (shapes, packed weights) and
//! arena pointers. The descriptors live as long as the compiled network.
//!
//! Every entry point runs its body under [`Shared::guard`]: a panic in a
//! kernel (on any thread of the team) becomes the run's error instead of
//! unwinding into generated code, and the steps after it are skipped.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::gemm::{self, Epilogue, PackedA, ResidualRead};
use super::gemv::{self, Strips};
use super::kernels::epilogue::{max_nan, Lanes};
use super::kernels::Kernels;
use super::strategy::ConvStrategy;
use super::team::{TaskPtr, Team};
use crate::backend::program::ConvGeom;
use crate::ir::op::Residual;

/// State shared by every kernel of one compiled network.
pub struct Shared {
    pub team: Team,
    /// The kernel set, chosen once at compile time.
    pub kernels: &'static Kernels,
    /// The fc layer's packed input, or a strided 1x1 conv's subsampled one.
    pub scratch: std::cell::UnsafeCell<Vec<f32>>,
    /// Whether a step of this run failed (the rest are skipped).
    pub failed: AtomicBool,
    /// The first failure: the step and what happened.
    pub failure: Mutex<Option<(usize, String)>>,
}

// SAFETY: `scratch` is used by one step at a time (runs are not
// concurrent: `run` takes `&mut self`), its tasks on disjoint parts.
unsafe impl Sync for Shared {}

impl Shared {
    /// Run step `step`'s body, catching a panic as the run's failure;
    /// nothing runs once a step has failed.
    pub fn guard(&self, step: usize, body: impl FnOnce()) {
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        let ran = catch_unwind(AssertUnwindSafe(body));
        if let Err(p) = ran {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            if let Ok(mut f) = self.failure.lock() {
                f.get_or_insert((step, what));
            }
            self.failed.store(true, Ordering::Release);
        }
    }

    /// The failure of the last run, if any, and ready for the next.
    pub fn take_failure(&self) -> Option<(usize, String)> {
        let f = self.failure.lock().ok().and_then(|mut f| f.take());
        self.failed.store(false, Ordering::Release);
        f
    }
}

pub struct ConvDesc {
    pub shared: *const Shared,
    /// The step's index, for errors.
    pub step: usize,
    pub g: ConvGeom,
    /// One packed A per group.
    pub a: Vec<PackedA>,
    pub bias: Option<Vec<f32>>,
    pub residual: Residual,
    /// Shape (c, h, w) of the residual input.
    pub res_chw: (usize, usize, usize),
    pub relu: bool,
    pub strategy: ConvStrategy,
}

// SAFETY: a descriptor is only read while the network runs; `shared` is Sync.
unsafe impl Sync for ConvDesc {}

/// # Safety
/// Called by generated code with a live descriptor and arena pointers that
/// hold the shapes the descriptor names.
pub unsafe extern "C" fn rt_conv(
    d: *const ConvDesc,
    x: *const f32,
    res: *const f32,
    out: *mut f32,
) {
    // SAFETY: the descriptor and its network's shared state are live.
    let (d, shared) = unsafe { (&*d, &*(*d).shared) };
    // SAFETY: the caller's arena pointers, for this descriptor.
    shared.guard(d.step, || unsafe { conv(d, shared, x, res, out) });
}

/// The conv of `rt_conv`.
///
/// # Safety
/// As [`rt_conv`].
unsafe fn conv(d: &ConvDesc, shared: &Shared, x: *const f32, res: *const f32, out: *mut f32) {
    let team = &shared.team;
    // SAFETY: one kernel runs at a time; jobs use disjoint parts of the scratch.
    let scratch = unsafe { (*shared.scratch.get()).as_mut_ptr() };
    let jobs = d.g.n * d.g.groups;
    // A batch goes along N as one GEMM: the weights are read once, not
    // once per image (im2col's lane offsets must stay within i32).
    if d.g.groups == 1 && d.g.n > 1 && d.g.n * d.g.c * d.g.h * d.g.w <= i32::MAX as usize {
        // SAFETY: the caller's pointers.
        return unsafe { conv_batch(d, shared.kernels, (x, res, out), scratch, team) };
    }
    if team.size() > 1 && jobs >= team.size() {
        // Images (or groups) enough to go round: each thread takes whole
        // GEMMs, with no cut to pack twice or wait on.
        // SAFETY: job (b, g) reads its image and writes its own image and
        // group of the output and its own part of the scratch.
        let io = unsafe {
            (
                TaskPtr::reading(x),
                TaskPtr::reading(res),
                TaskPtr::new(out),
                TaskPtr::new(scratch),
            )
        };
        team.run(jobs, &|t| {
            let (x, res, out, scratch) = (
                io.0.get() as *const f32,
                io.1.get() as *const f32,
                io.2.get(),
                io.3.get(),
            );
            // SAFETY: as above.
            unsafe {
                conv_one(
                    d,
                    shared.kernels,
                    (t / d.g.groups, t % d.g.groups),
                    (x, res, out),
                    scratch,
                    None,
                )
            }
        });
    } else {
        for t in 0..jobs {
            let job = (t / d.g.groups, t % d.g.groups);
            // SAFETY: the caller's pointers, one job at a time.
            unsafe { conv_one(d, shared.kernels, job, (x, res, out), scratch, Some(team)) };
        }
    }
}

/// All images of an ungrouped conv as one GEMM, N = images x positions.
///
/// # Safety
/// As [`rt_conv`].
unsafe fn conv_batch(
    d: &ConvDesc,
    k: &Kernels,
    (x, res, out): (*const f32, *const f32, *mut f32),
    scratch: *mut f32,
    team: &Team,
) {
    let n_pix = d.g.oh * d.g.ow;
    let (x_image, out_image) = (d.g.c * d.g.h * d.g.w, d.g.o * n_pix);
    let b_source = match d.strategy {
        ConvStrategy::Direct1x1 => gemm::BSource::Rows {
            ptr: x,
            ld: d.g.h * d.g.w,
            images: gemm::Images {
                cols: n_pix,
                stride: x_image,
            },
        },
        ConvStrategy::Strided1x1 => {
            for b in 0..d.g.n {
                // SAFETY: compile sized the scratch for every image.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(scratch.add(b * d.g.c * n_pix), d.g.c * n_pix)
                };
                let xb = x.wrapping_add(b * x_image);
                let shape = (d.g.c, d.g.h, d.g.w);
                // SAFETY: image b of the input.
                unsafe { subsample(xb, shape, d.g.stride, (d.g.oh, d.g.ow), dst, Some(team)) };
            }
            gemm::BSource::Rows {
                ptr: scratch,
                ld: n_pix,
                images: gemm::Images {
                    cols: n_pix,
                    stride: d.g.c * n_pix,
                },
            }
        }
        ConvStrategy::Im2col
        | ConvStrategy::Blocked
        | ConvStrategy::Winograd
        | ConvStrategy::WinogradF2 => gemm::BSource::Im2col {
            x,
            geom: geom(d, d.g.c, x_image),
        },
    };
    let epi = Epilogue {
        bias: d.bias.as_ref().map(|v| v.as_ptr()),
        residual: residual_read(d, res),
        relu: d.relu,
        row_stride: n_pix,
        col_stride: 1,
        images: gemm::Images {
            cols: n_pix,
            stride: out_image,
        },
    };
    // SAFETY: the caller's arena pointers hold the shapes of the descriptor.
    unsafe { gemm::gemm(k, &d.a[0], b_source, d.g.n * n_pix, out, &epi, Some(team)) };
}

/// im2col's view of `c` input channels of a conv, images `image_stride` apart.
fn geom(d: &ConvDesc, c: usize, image_stride: usize) -> gemm::ConvGeom {
    gemm::ConvGeom {
        c,
        h: d.g.h,
        w: d.g.w,
        kernel: d.g.kernel,
        stride: d.g.stride,
        pad: d.g.pad,
        dilation: d.g.dilation,
        ow: d.g.ow,
        image_stride,
    }
}

/// How image 0 of a conv's epilogue reads its residual (`res` the tensor).
fn residual_read(d: &ConvDesc, res: *const f32) -> ResidualRead {
    let (rc, rh, rw) = d.res_chw;
    match d.residual {
        Residual::None => ResidualRead::None,
        Residual::Add => ResidualRead::Add { ptr: res },
        Residual::PadAdd {
            stride, pad_before, ..
        } => ResidualRead::PadAdd {
            ptr: res,
            channels: rc,
            h: rh,
            w: rw,
            stride,
            before: pad_before,
            out_w: d.g.ow,
        },
    }
}

/// Image `b`, group `g` of a conv: one GEMM, on `team` or on this thread.
///
/// # Safety
/// As [`rt_conv`]; jobs running at once have distinct `(b, g)`.
unsafe fn conv_one(
    d: &ConvDesc,
    k: &Kernels,
    (b, g): (usize, usize),
    (x, res, out): (*const f32, *const f32, *mut f32),
    scratch: *mut f32,
    team: Option<&Team>,
) {
    let (cg, og) = (d.g.c / d.g.groups, d.g.o / d.g.groups);
    let n_pix = d.g.oh * d.g.ow;
    let xg = x.wrapping_add((b * d.g.c + g * cg) * d.g.h * d.g.w);
    let b_source = match d.strategy {
        ConvStrategy::Direct1x1 => gemm::BSource::Rows {
            ptr: xg,
            ld: d.g.h * d.g.w,
            images: gemm::Images::one(n_pix),
        },
        ConvStrategy::Strided1x1 => {
            let job = b * d.g.groups + g;
            // SAFETY: compile sized the scratch for every job; this one's slice is its own.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(scratch.add(job * cg * n_pix), cg * n_pix)
            };
            // SAFETY: image b, group g of the input.
            unsafe {
                subsample(
                    xg,
                    (cg, d.g.h, d.g.w),
                    d.g.stride,
                    (d.g.oh, d.g.ow),
                    dst,
                    team,
                )
            };
            gemm::BSource::Rows {
                ptr: dst.as_ptr(),
                ld: n_pix,
                images: gemm::Images::one(n_pix),
            }
        }
        ConvStrategy::Im2col
        | ConvStrategy::Blocked
        | ConvStrategy::Winograd
        | ConvStrategy::WinogradF2 => gemm::BSource::Im2col {
            x: xg,
            geom: geom(d, cg, 0),
        },
    };
    let out_b = out.wrapping_add((b * d.g.o + g * og) * n_pix);
    let (rc, rh, rw) = d.res_chw;
    // Option A's residual is read per image; an added one as the output.
    let res_b = match d.residual {
        Residual::PadAdd { .. } => res.wrapping_add(b * rc * rh * rw),
        _ => res.wrapping_add((b * d.g.o + g * og) * n_pix),
    };
    let residual = residual_read(d, res_b);
    let epi = Epilogue {
        bias: d.bias.as_ref().map(|v| v[g * og..].as_ptr()),
        residual,
        relu: d.relu,
        row_stride: n_pix,
        col_stride: 1,
        images: gemm::Images::one(n_pix),
    };
    // SAFETY: image b, group g of the caller's arena pointers.
    unsafe { gemm::gemm(k, &d.a[g], b_source, n_pix, out_b, &epi, team) };
}

/// `dst[c, oy, ox] = x[c, oy * stride, ox * stride]`: a strided 1x1 conv's B.
///
/// # Safety
/// `x` holds `c x h x w` values.
unsafe fn subsample(
    x: *const f32,
    (c, h, w): (usize, usize, usize),
    stride: usize,
    (oh, ow): (usize, usize),
    dst: &mut [f32],
    team: Option<&Team>,
) {
    // SAFETY: task t reads x and alone writes its channels of dst.
    let (x, d) = unsafe { (TaskPtr::reading(x), TaskPtr::new(dst.as_mut_ptr())) };
    let chunks = team.map_or(1, |t| c.min(4 * t.size()));
    let run = |t: usize| {
        for ci in c * t / chunks..c * (t + 1) / chunks {
            // SAFETY: channel ci of x; task t alone writes dst's channel ci.
            let (src, out) = unsafe {
                (
                    std::slice::from_raw_parts(x.get().add(ci * h * w) as *const f32, h * w),
                    std::slice::from_raw_parts_mut(d.get().add(ci * oh * ow), oh * ow),
                )
            };
            for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
                let line = &src[oy * stride * w..];
                for (ox, v) in row.iter_mut().enumerate() {
                    *v = line[ox * stride];
                }
            }
        }
    };
    match team {
        Some(team) => team.run(chunks, &run),
        None => run(0),
    }
}

pub struct LinearDesc {
    pub shared: *const Shared,
    pub step: usize,
    pub n: usize,
    pub f: usize,
    pub w: LinearWeights,
    pub bias: Option<Vec<f32>>,
}

/// An fc's weights, packed for the batch it was compiled for.
pub enum LinearWeights {
    /// A GEMM over the batch.
    Gemm(PackedA),
    /// GEMVs, a batch of at most [`gemv::MAX_BATCH`].
    Gemv(Strips),
}

impl LinearWeights {
    /// How an fc over `n` images runs: its weights `m x k`, row-major.
    pub fn pack(w: &[f32], m: usize, k: usize, n: usize) -> LinearWeights {
        if n <= gemv::MAX_BATCH {
            LinearWeights::Gemv(Strips::pack(w, m, k))
        } else {
            LinearWeights::Gemm(PackedA::pack(w, m, k))
        }
    }
}

// SAFETY: only read while the network runs.
unsafe impl Sync for LinearDesc {}

/// fc: out[n, o] = x[n, :] . W[o, :] + b[o], as a GEMM over the batch.
///
/// # Safety
/// As [`rt_conv`].
pub unsafe extern "C" fn rt_linear(d: *const LinearDesc, x: *const f32, out: *mut f32) {
    // SAFETY: the descriptor and its network's shared state are live.
    let (d, shared) = unsafe { (&*d, &*(*d).shared) };
    shared.guard(d.step, || {
        let a = match &d.w {
            LinearWeights::Gemm(a) => a,
            LinearWeights::Gemv(w) => {
                let bias = d.bias.as_deref();
                // SAFETY: x holds n x f values and out room for n x o.
                unsafe { gemv::run(shared.kernels, w, x, d.n, bias, out, &shared.team) };
                return;
            }
        };
        // SAFETY: one step at a time uses the scratch, sized for this fc at compile time.
        let scratch = unsafe { &mut *shared.scratch.get() };
        // SAFETY: x holds n x f values.
        let x = unsafe { std::slice::from_raw_parts(x, d.n * d.f) };
        // B[k = f][j = n] = x[n * F + f]: pack the transposed input.
        let len = gemm::packed_b_len(d.f, d.n);
        scratch[..len].fill(0.0);
        for j in 0..d.n {
            for f in 0..d.f {
                scratch[((j / gemm::NR) * d.f + f) * gemm::NR + j % gemm::NR] = x[j * d.f + f];
            }
        }
        let epi = Epilogue {
            bias: d.bias.as_ref().map(|v| v.as_ptr()),
            residual: ResidualRead::None,
            relu: false,
            row_stride: 1,
            col_stride: a.m,
            images: gemm::Images::one(d.n),
        };
        let b = gemm::BSource::Packed(scratch.as_ptr());
        // SAFETY: out holds n x o values; B is packed above.
        unsafe { gemm::gemm(shared.kernels, a, b, d.n, out, &epi, Some(&shared.team)) };
    });
}

pub struct PoolDesc {
    pub shared: *const Shared,
    pub step: usize,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
    pub max: bool,
}

// SAFETY: only read while the network runs.
unsafe impl Sync for PoolDesc {}

/// Max pooling (-inf padding, NaN kept) or average pooling (padding counted).
///
/// # Safety
/// As [`rt_conv`].
pub unsafe extern "C" fn rt_pool(d: *const PoolDesc, x: *const f32, out: *mut f32) {
    // SAFETY: the descriptor and its network's shared state are live.
    let (d, shared) = unsafe { (&*d, &*(*d).shared) };
    shared.guard(d.step, || {
        let (plane_in, plane_out) = (d.h * d.w, d.oh * d.ow);
        let planes = d.n * d.c;
        // SAFETY: tasks read x and own disjoint planes of out.
        let (out, x) = unsafe { (TaskPtr::new(out), TaskPtr::reading(x)) };
        let chunks = planes.min(8 * shared.team.size());
        shared.team.run(chunks, &|t| {
            let mut rows = vec![0.0f32; d.w];
            for p in planes * t / chunks..planes * (t + 1) / chunks {
                // SAFETY: the arena holds n*c planes of each size; tasks own disjoint planes.
                let (xp, o) = unsafe {
                    (
                        std::slice::from_raw_parts(x.get().add(p * plane_in), plane_in),
                        std::slice::from_raw_parts_mut(out.get().add(p * plane_out), plane_out),
                    )
                };
                pool_plane(d, xp, o, &mut rows);
            }
        });
    });
}

/// One plane: each output row reduces its window's input rows into `rows`
/// first (contiguous, vectorized), then each window across it.
fn pool_plane(d: &PoolDesc, xp: &[f32], o: &mut [f32], rows: &mut [f32]) {
    let (h, w, oh, ow, kernel, stride, pad, max) =
        (d.h, d.w, d.oh, d.ow, d.kernel, d.stride, d.pad, d.max);
    // Max pools pad with -inf, average pools with zeros (counted).
    let init = if max { f32::NEG_INFINITY } else { 0.0 };
    for oy in 0..oh {
        let y0 = (oy * stride) as isize - pad as isize;
        let (ya, yb) = (
            y0.max(0) as usize,
            ((y0 + kernel as isize).min(h as isize)).max(0) as usize,
        );
        // The average's divisor: the window's taps inside the padded map
        // (k x k but where ceil mode runs a window past the padding).
        let rows_in = (y0 + kernel as isize).min((h + pad) as isize) - y0;
        rows.fill(init);
        for iy in ya..yb {
            let src = &xp[iy * w..(iy + 1) * w];
            if max {
                rows.iter_mut()
                    .zip(src)
                    .for_each(|(r, &v)| *r = max_nan(*r, v));
            } else {
                rows.iter_mut().zip(src).for_each(|(r, &v)| *r += v);
            }
        }
        let reduce = |win: &[f32], cols_in: isize| {
            if max {
                win.iter().fold(init, |a, &v| max_nan(a, v))
            } else {
                win.iter().sum::<f32>() / (rows_in * cols_in) as f32
            }
        };
        let orow = &mut o[oy * ow..(oy + 1) * ow];
        // Interior windows (no padding) in one pass; the edges clipped.
        let (lo, hi) = (
            pad.div_ceil(stride),
            ((w + pad).saturating_sub(kernel) / stride + 1).min(ow),
        );
        if lo < hi {
            let windows = rows[lo * stride - pad..].windows(kernel).step_by(stride);
            if max && kernel == 3 {
                // The stem's 3x3 max pool, unrolled.
                for (v, win) in orow[lo..hi].iter_mut().zip(windows) {
                    *v = max_nan(max_nan(win[0], win[1]), win[2]);
                }
            } else {
                for (v, win) in orow[lo..hi].iter_mut().zip(windows) {
                    *v = reduce(win, kernel as isize);
                }
            }
        }
        for ox in (0..lo.min(ow)).chain(hi.max(lo)..ow) {
            let x0 = (ox * stride) as isize - pad as isize;
            let (xa, xb) = (
                x0.max(0) as usize,
                ((x0 + kernel as isize).min(w as isize)).max(0) as usize,
            );
            let cols_in = (x0 + kernel as isize).min((w + pad) as isize) - x0;
            orow[ox] = reduce(&rows[xa..xb.max(xa)], cols_in);
        }
    }
}

pub struct PadDesc {
    pub shared: *const Shared,
    pub step: usize,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub stride: usize,
    pub before: usize,
    pub after: usize,
}

/// The option A shortcut, materialized (only unfused, at -O0/-O1).
///
/// # Safety
/// As [`rt_conv`].
pub unsafe extern "C" fn rt_shortcut_pad(d: *const PadDesc, x: *const f32, out: *mut f32) {
    // SAFETY: the descriptor and its network's shared state are live.
    let (d, shared) = unsafe { (&*d, &*(*d).shared) };
    let (oh, ow) = (d.h.div_ceil(d.stride), d.w.div_ceil(d.stride));
    let oc = d.before + d.c + d.after;
    shared.guard(d.step, || {
        // SAFETY: x holds the n input maps, out the n padded ones.
        let (x, out) = unsafe {
            (
                std::slice::from_raw_parts(x, d.n * d.c * d.h * d.w),
                std::slice::from_raw_parts_mut(out, d.n * oc * oh * ow),
            )
        };
        for b in 0..d.n {
            for c in 0..oc {
                for y in 0..oh {
                    for xx in 0..ow {
                        let v = if c >= d.before && c - d.before < d.c {
                            x[((b * d.c + c - d.before) * d.h + y * d.stride) * d.w + xx * d.stride]
                        } else {
                            0.0
                        };
                        out[((b * oc + c) * oh + y) * ow + xx] = v;
                    }
                }
            }
        }
    });
}

/// Timestamps of a profiled run: one per step, written by `rt_tick`.
pub struct Ticks(pub std::cell::UnsafeCell<Vec<std::time::Instant>>);

/// # Safety
/// `t` is a live [`Ticks`] with more than `i` entries; runs are not concurrent.
pub unsafe extern "C" fn rt_tick(t: *const Ticks, i: usize) {
    // SAFETY: the caller's promise.
    let v = unsafe { &mut *(*t).0.get() };
    if let Some(slot) = v.get_mut(i) {
        *slot = std::time::Instant::now();
    }
}

/// A conv on channel-blocked maps.
pub struct BlockedConvDesc {
    pub shared: *const Shared,
    pub step: usize,
    pub n: usize,
    pub conv: super::blocked::Conv,
    /// An option A residual, built at this offset of the scratch first.
    pub pad: Option<(super::blocked::PadResidual, usize)>,
    /// The scale-shift fused into the epilogue as a second output, if any:
    /// the next step's (see `lower`).
    pub also: Option<Affine>,
}

/// A scale-shift's per-channel scales and shifts, and whether ReLU follows.
pub struct Affine {
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    pub relu: bool,
}

/// `res`, or the option A residual built from it into the scratch.
///
/// # Safety
/// As [`rt_conv_blocked`]; the scratch has room for the built residual at
/// the offset (`lower` sized it) and one kernel runs at a time.
unsafe fn residual(
    shared: &Shared,
    n: usize,
    pad: &Option<(super::blocked::PadResidual, usize)>,
    res: *const f32,
) -> *const f32 {
    match pad {
        None => res,
        Some((pad, at)) => {
            // SAFETY: the caller's promise.
            unsafe {
                let buf = (*shared.scratch.get()).as_mut_ptr().add(*at);
                pad.build(n, res, buf, &shared.team);
                buf
            }
        }
    }
}

/// # Safety
/// As [`rt_conv`]; `res` is null or holds the output's shape; where the
/// descriptor has a second output, `also` holds it (a map of the output's
/// shape, apart from the others).
pub unsafe extern "C" fn rt_conv_blocked(
    d: *const BlockedConvDesc,
    x: *const f32,
    res: *const f32,
    out: *mut f32,
    also: *mut f32,
) {
    use super::kernels::epilogue::Also;
    // SAFETY: the descriptor and its network's shared state are live.
    let (d, shared) = unsafe { (&*d, &*(*d).shared) };
    let also = match &d.also {
        Some(a) if !also.is_null() => Also {
            out: also,
            scale: a.scale.as_ptr(),
            shift: a.shift.as_ptr(),
            relu: a.relu,
        },
        _ => Also::NONE,
    };
    // SAFETY: the caller's arena pointers hold the conv's maps.
    shared.guard(d.step, || unsafe {
        let res = residual(shared, d.n, &d.pad, res);
        d.conv.run(d.n, x, res, out, also, &shared.team)
    });
}

pub struct WinogradConvDesc {
    pub shared: *const Shared,
    pub step: usize,
    pub n: usize,
    pub conv: super::winograd::Conv,
    /// As [`BlockedConvDesc::pad`] (past the transforms' scratch).
    pub pad: Option<(super::blocked::PadResidual, usize)>,
}

/// # Safety
/// As [`rt_conv_blocked`].
pub unsafe extern "C" fn rt_conv_winograd(
    d: *const WinogradConvDesc,
    x: *const f32,
    res: *const f32,
    out: *mut f32,
) {
    // SAFETY: the descriptor and its network's shared state are live.
    let (d, shared) = unsafe { (&*d, &*(*d).shared) };
    // SAFETY: one kernel runs at a time, and the scratch was sized for this
    // conv's transforms (`lower`); the arena pointers hold its maps.
    shared.guard(d.step, || unsafe {
        let res = residual(shared, d.n, &d.pad, res);
        let scratch = (*shared.scratch.get()).as_mut_ptr();
        d.conv.run(x, res, out, scratch, &shared.team)
    });
}

/// Max pooling of channel-blocked maps (-inf padding, NaN kept), 16
/// channels a vector.
///
/// # Safety
/// As [`rt_conv`].
pub unsafe extern "C" fn rt_max_pool_blocked(d: *const PoolDesc, x: *const f32, out: *mut f32) {
    use super::blocked::BLOCK;
    // SAFETY: the descriptor and its network's shared state are live.
    let (d, shared) = unsafe { (&*d, &*(*d).shared) };
    shared.guard(d.step, || {
        let rows = d.n * d.c / BLOCK * d.oh;
        // SAFETY: tasks read x and own disjoint output rows.
        let (out, x) = unsafe { (TaskPtr::new(out), TaskPtr::reading(x)) };
        let chunks = rows.min(8 * shared.team.size());
        shared.team.run(chunks, &|t| {
            for r in rows * t / chunks..rows * (t + 1) / chunks {
                let (plane, oy) = (r / d.oh, r % d.oh);
                let y0 = (oy * d.stride) as isize - d.pad as isize;
                let ys = y0.max(0) as usize
                    ..((y0 + d.kernel as isize).min(d.h as isize)).max(0) as usize;
                let row = MaxPoolRow {
                    x: x.get().wrapping_add(plane * d.h * d.w * BLOCK) as *const f32,
                    w: d.w,
                    ys,
                    ow: d.ow,
                    kernel: d.kernel,
                    stride: d.stride,
                    pad: d.pad,
                    out: out.get().wrapping_add((plane * d.oh + oy) * d.ow * BLOCK),
                };
                // SAFETY: the row reads its plane and writes this task's own row.
                unsafe { (shared.kernels.blocked.max_pool)(&row) };
            }
        });
    });
}

/// One output row of a max pool on one channel-blocked plane (`h x w x
/// 16` at `x`): input rows `ys`, `ow` pixels into `out`.
pub struct MaxPoolRow {
    pub x: *const f32,
    pub w: usize,
    pub ys: std::ops::Range<usize>,
    pub ow: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub out: *mut f32,
}

/// [`MaxPoolRow`]'s pixels, `L::N` channels at a time: the window's
/// largest value (padding is -inf), NaN if any is. (As plain Rust over 16
/// floats it ran at 1% of the machine: ResNet-18's pool took 3% of its time.)
///
/// # Safety
/// The row's pointers hold what [`MaxPoolRow`] says; the CPU has `L`'s features.
#[inline(always)]
pub unsafe fn max_pool_row<L: Lanes>(r: &MaxPoolRow) {
    use super::blocked::BLOCK;
    for ox in 0..r.ow {
        let x0 = (ox * r.stride) as isize - r.pad as isize;
        let xs = x0.max(0) as usize..((x0 + r.kernel as isize).min(r.w as isize)).max(0) as usize;
        for lane in (0..BLOCK).step_by(L::N) {
            // SAFETY: (iy, ix) is inside the plane; pixel ox is the row's.
            unsafe {
                let mut m = L::splat(f32::NEG_INFINITY);
                for iy in r.ys.clone() {
                    for ix in xs.clone() {
                        m = m.max_nan(L::load(r.x.add((iy * r.w + ix) * BLOCK + lane)));
                    }
                }
                m.store(r.out.add(ox * BLOCK + lane));
            }
        }
    }
}

/// A scale-shift (an unfolded BN) on channel-blocked maps.
pub struct ScaleShiftDesc {
    pub shared: *const Shared,
    pub step: usize,
    pub n: usize,
    pub c: usize,
    pub hw: usize,
    pub relu: bool,
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
}

// SAFETY: only read while the network runs.
unsafe impl Sync for ScaleShiftDesc {}

/// `out = x * scale + shift` per channel (then ReLU, NaN kept) over `n`
/// channel-blocked `c x hw` maps, on the team: a pre-activation net's
/// maps at batch 64 are 17 MB, and one core left half the bandwidth idle.
///
/// # Safety
/// As [`rt_conv`]: `x` and `out` (which may be `x`) hold the maps.
pub unsafe extern "C" fn rt_scale_shift_blocked(
    d: *const ScaleShiftDesc,
    x: *const f32,
    out: *mut f32,
) {
    use super::blocked::BLOCK;
    // SAFETY: the descriptor and its network's shared state are live.
    let (d, shared) = unsafe { (&*d, &*(*d).shared) };
    shared.guard(d.step, || {
        let (blocks, pixels) = (d.c / BLOCK, d.n * d.c / BLOCK * d.hw);
        // SAFETY: each task reads, then writes, its own pixels.
        let (out, x) = unsafe { (TaskPtr::new(out), TaskPtr::reading(x)) };
        // Tasks of 64 KB or more: a CIFAR map at batch 1 (256 KB) splits too.
        let chunks = (pixels / 1024).clamp(1, 4 * shared.team.size());
        shared.team.run(chunks, &|t| {
            let (p0, p1) = (pixels * t / chunks, pixels * (t + 1) / chunks);
            let mut p = p0;
            while p < p1 {
                // A run of pixels of one block: its 16 scales and shifts.
                let (plane, at) = (p / d.hw, p % d.hw);
                let end = (p + d.hw - at).min(p1);
                let c0 = plane % blocks * BLOCK;
                let (mut s, mut t) = ([0.0f32; BLOCK], [0.0f32; BLOCK]);
                s.copy_from_slice(&d.scale[c0..c0 + BLOCK]);
                t.copy_from_slice(&d.shift[c0..c0 + BLOCK]);
                let (x, out) = (x.get() as *const f32, out.get());
                // SAFETY: pixels p..end of the maps, this task's own.
                unsafe {
                    if d.relu {
                        affine_run::<true>(x, out, p..end, &s, &t)
                    } else {
                        affine_run::<false>(x, out, p..end, &s, &t)
                    }
                }
                p = end;
            }
        });
    });
}

/// `out = x * s + t` (then ReLU if `RELU`) for blocked pixels `pixels`.
///
/// # Safety
/// `x` and `out` (which may be `x`) hold those pixels, no other thread's.
unsafe fn affine_run<const RELU: bool>(
    x: *const f32,
    out: *mut f32,
    pixels: std::ops::Range<usize>,
    s: &[f32; 16],
    t: &[f32; 16],
) {
    for q in pixels {
        // SAFETY: pixel q, read whole before it is written.
        let v = unsafe { std::ptr::read_unaligned(x.add(q * 16) as *const [f32; 16]) };
        let mut y = [0.0f32; 16];
        for l in 0..16 {
            let r = v[l] * s[l] + t[l];
            // (A NaN is not below 0: it stays, as PyTorch's ReLU keeps it.)
            y[l] = if RELU && r < 0.0 { 0.0 } else { r };
        }
        // SAFETY: as above.
        unsafe { std::ptr::write_unaligned(out.add(q * 16) as *mut [f32; 16], y) };
    }
}

/// The global pool of channel-blocked maps.
pub struct GlobalDesc {
    pub shared: *const Shared,
    pub step: usize,
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

/// The mean of each channel of `n` channel-blocked `c x hw` maps: `[n][c]`.
///
/// # Safety
/// As [`rt_conv`]: `x` holds the maps, `out` `n x c` values.
pub unsafe extern "C" fn rt_global_avg_blocked(d: *const GlobalDesc, x: *const f32, out: *mut f32) {
    use super::blocked::BLOCK;
    // SAFETY: the descriptor and its network's shared state are live.
    let (d, shared) = unsafe { (&*d, &*(*d).shared) };
    shared.guard(d.step, || {
        // SAFETY: x holds n x c x hw values, out n x c.
        let (x, out) = unsafe {
            (
                std::slice::from_raw_parts(x, d.n * d.c * d.hw),
                std::slice::from_raw_parts_mut(out, d.n * d.c),
            )
        };
        for (block, o) in out.chunks_exact_mut(BLOCK).enumerate() {
            let mut s = [0.0f32; BLOCK];
            for v in x[block * d.hw * BLOCK..(block + 1) * d.hw * BLOCK].chunks_exact(BLOCK) {
                for (a, &b) in s.iter_mut().zip(v) {
                    *a += b;
                }
            }
            for (o, v) in o.iter_mut().zip(s) {
                *o = v / d.hw as f32;
            }
        }
    });
}

/// Make one of four tasks panic, as step `step` (the code calls this
/// before a step where a test asked for a fault).
///
/// # Safety
/// `shared` is the network's live shared state.
pub unsafe extern "C" fn rt_fault(shared: *const Shared, step: usize) {
    // SAFETY: the caller's promise.
    let shared = unsafe { &*shared };
    shared.guard(step, || {
        shared.team.run(4, &|t| {
            if t == 1 {
                panic!("an injected fault");
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blocked 3x3 stride-2 max pool row by row, on every kernel set:
    /// each window's largest value, -inf padding, and NaN wherever the
    /// window holds one (first, last or alone in it), as PyTorch's.
    #[test]
    fn max_pool_rows_keep_nan_on_every_set() {
        use crate::backend::jit::blocked::BLOCK;
        let (h, w, k, stride, pad) = (6, 7, 3, 2, 1);
        let (oh, ow) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let mut x: Vec<f32> = (0..h * w * BLOCK)
            .map(|i| ((i * 37) % 101) as f32 / 7.0 - 5.0)
            .collect();
        x[(2 * w + 3) * BLOCK + 5] = f32::NAN;
        x[(5 * w + 6) * BLOCK + 15] = f32::NAN;
        x[BLOCK + 2] = f32::INFINITY;
        x[(3 * w) * BLOCK + 9] = f32::NEG_INFINITY;
        let mut want = vec![0.0f32; oh * ow * BLOCK];
        for oy in 0..oh {
            for ox in 0..ow {
                for l in 0..BLOCK {
                    let mut m = f32::NEG_INFINITY;
                    for iy in (oy * stride).saturating_sub(pad)..(oy * stride + k - pad).min(h) {
                        for ix in (ox * stride).saturating_sub(pad)..(ox * stride + k - pad).min(w)
                        {
                            m = max_nan(m, x[(iy * w + ix) * BLOCK + l]);
                        }
                    }
                    want[(oy * ow + ox) * BLOCK + l] = m;
                }
            }
        }
        assert_eq!(want.iter().filter(|v| v.is_nan()).count(), 3);
        for ks in crate::backend::jit::kernels::available() {
            let mut got = vec![0.0f32; want.len()];
            for oy in 0..oh {
                let y0 = (oy * stride) as isize - pad as isize;
                let row = MaxPoolRow {
                    x: x.as_ptr(),
                    w,
                    ys: y0.max(0) as usize..((y0 + k as isize) as usize).min(h),
                    ow,
                    kernel: k,
                    stride,
                    pad,
                    out: got[oy * ow * BLOCK..].as_mut_ptr(),
                };
                // SAFETY: x holds the plane, got the output rows; the set runs here.
                unsafe { (ks.blocked.max_pool)(&row) };
            }
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{ks:?} {i}: {a} vs {b}"
                );
            }
        }
    }

    /// A blocked scale-shift, in place: each lane its channel's scale and
    /// shift; ReLU zeroes negatives and keeps NaN, as PyTorch's does.
    #[test]
    fn scale_shift_keeps_nan_through_relu() {
        let s: [f32; 16] = std::array::from_fn(|l| l as f32 - 4.0);
        let t: [f32; 16] = std::array::from_fn(|l| 0.5 * l as f32);
        let mut x: Vec<f32> = (0..48).map(|i| 1.0 + (i / 16) as f32).collect();
        x[17] = f32::NAN;
        x[33] = f32::INFINITY;
        let want: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, &v)| v * s[i % 16] + t[i % 16])
            .collect();
        for relu in [false, true] {
            let mut y = x.clone();
            let p = y.as_mut_ptr();
            // SAFETY: y holds the 3 pixels.
            unsafe {
                if relu {
                    affine_run::<true>(p, p, 0..3, &s, &t)
                } else {
                    affine_run::<false>(p, p, 0..3, &s, &t)
                }
            }
            for (i, (&a, &w)) in y.iter().zip(&want).enumerate() {
                let w = if relu && w < 0.0 { 0.0 } else { w };
                assert!(
                    a == w || (a.is_nan() && w.is_nan()),
                    "{relu} {i}: {a} vs {w}"
                );
            }
            assert!(y[17].is_nan(), "{relu}");
            // Lane 1's scale is -3: inf becomes -inf, then 0 with ReLU.
            assert_eq!(y[33], if relu { 0.0 } else { f32::NEG_INFINITY });
        }
    }

    /// Every pooling shape the fast paths special-case, against the interpreter.
    #[test]
    fn pool_plane_equals_the_interpreter() {
        for (h, w) in [(7, 7), (8, 5), (112, 112)] {
            let windows = [(3, 2, 1), (3, 2, 0), (2, 2, 0), (3, 1, 1), (5, 3, 2)];
            for ((kernel, stride, pad), ceil) in
                windows.into_iter().flat_map(|k| [(k, false), (k, true)])
            {
                let x = ndarray::Array4::from_shape_fn((1, 1, h, w), |(_, _, y, x)| {
                    ((y * 31 + x * 17) % 23) as f32 - 11.0
                });
                let out = |size| crate::ir::op::window_out(size, kernel, stride, pad, ceil);
                let (Some(oh), Some(ow)) = (out(h), out(w)) else {
                    continue;
                };
                for max in [true, false] {
                    let d = PoolDesc {
                        shared: std::ptr::null(),
                        step: 0,
                        n: 1,
                        c: 1,
                        h,
                        w,
                        kernel,
                        stride,
                        pad,
                        oh,
                        ow,
                        max,
                    };
                    let mut got = vec![f32::NAN; oh * ow];
                    let mut rows = vec![0.0; w];
                    pool_plane(&d, x.as_slice().unwrap(), &mut got, &mut rows);
                    use crate::backend::interp::kernels;
                    let pool = if max {
                        kernels::max_pool
                    } else {
                        kernels::avg_pool
                    };
                    let want = pool(x.view(), kernel, stride, pad, (oh, ow));
                    assert_eq!(
                        got,
                        want.as_slice().unwrap(),
                        "{h}x{w} k{kernel} s{stride} p{pad} ceil {ceil} max {max}"
                    );
                }
            }
        }
    }
}
