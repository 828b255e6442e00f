//! What generated code calls: kernels with `extern "C"` entry points, each
//! taking a descriptor built at compile time (shapes, packed weights) and
//! arena pointers. The descriptors live as long as the compiled network.

use super::gemm::{self, Epilogue, PackedA, ResidualRead};
use super::strategy::ConvStrategy;
use super::team::Sendable;
use crate::ir::op::Residual;

/// State shared by every kernel of one compiled network.
pub struct Shared {
    pub team: super::team::Team,
    /// The fc layer's packed input, or a strided 1x1 conv's subsampled one.
    pub scratch: std::cell::UnsafeCell<Vec<f32>>,
}

pub struct ConvDesc {
    pub shared: *const Shared,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
    /// One packed A per group.
    pub a: Vec<PackedA>,
    pub bias: Option<Vec<f32>>,
    pub residual: Residual,
    /// Shape (c, h, w) of the residual input.
    pub res_chw: (usize, usize, usize),
    pub relu: bool,
    pub strategy: ConvStrategy,
}

/// # Safety
/// Called by generated code with a live descriptor and arena pointers that
/// hold the shapes the descriptor names.
pub unsafe extern "C" fn rt_conv(
    d: *const ConvDesc,
    x: *const f32,
    res: *const f32,
    out: *mut f32,
) {
    let d = unsafe { &*d };
    let shared = unsafe { &*d.shared };
    let team = &shared.team;
    // SAFETY: one kernel runs at a time; jobs use disjoint parts of the scratch.
    let scratch = unsafe { (*shared.scratch.get()).as_mut_ptr() };
    let jobs = d.n * d.groups;
    // A batch goes along N as one GEMM: the weights are read once, not
    // once per image (im2col's lane offsets must stay within i32).
    if d.groups == 1 && d.n > 1 && d.n * d.c * d.h * d.w <= i32::MAX as usize {
        return unsafe { conv_batch(d, (x, res, out), scratch, team) };
    }
    if team.size() > 1 && jobs >= team.size() {
        // Images (or groups) enough to go round: each thread takes whole
        // GEMMs, with no cut to pack twice or wait on.
        let (io, scratch, dp) = (
            Sendable((x, res, out)),
            Sendable(scratch),
            Sendable(d as *const ConvDesc),
        );
        team.run(jobs, &|t| unsafe {
            let d = &*dp.get();
            conv_one(
                d,
                (t / d.groups, t % d.groups),
                io.get(),
                scratch.get(),
                None,
            )
        });
    } else {
        for t in 0..jobs {
            let job = (t / d.groups, t % d.groups);
            unsafe { conv_one(d, job, (x, res, out), scratch, Some(team)) };
        }
    }
}

/// All images of an ungrouped conv as one GEMM, N = images x positions.
///
/// # Safety
/// As [`rt_conv`].
unsafe fn conv_batch(
    d: &ConvDesc,
    (x, res, out): (*const f32, *const f32, *mut f32),
    scratch: *mut f32,
    team: &super::team::Team,
) {
    let n_pix = d.oh * d.ow;
    let (x_image, out_image) = (d.c * d.h * d.w, d.o * n_pix);
    let b_source = match d.strategy {
        ConvStrategy::Direct1x1 => gemm::BSource::Rows {
            ptr: x,
            ld: d.h * d.w,
            images: gemm::Images {
                cols: n_pix,
                stride: x_image,
            },
        },
        ConvStrategy::Strided1x1 => {
            for b in 0..d.n {
                // SAFETY: compile sized the scratch for every image.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(scratch.add(b * d.c * n_pix), d.c * n_pix)
                };
                let xb = unsafe { x.add(b * x_image) };
                let shape = (d.c, d.h, d.w);
                unsafe { subsample(xb, shape, d.stride, (d.oh, d.ow), dst, Some(team)) };
            }
            gemm::BSource::Rows {
                ptr: scratch,
                ld: n_pix,
                images: gemm::Images {
                    cols: n_pix,
                    stride: d.c * n_pix,
                },
            }
        }
        ConvStrategy::Im2col | ConvStrategy::Blocked => gemm::BSource::Im2col {
            x,
            geom: geom(d, d.c, x_image),
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
    unsafe { gemm::gemm(&d.a[0], b_source, d.n * n_pix, out, &epi, Some(team)) };
}

/// im2col's view of `c` input channels of a conv, images `image_stride` apart.
fn geom(d: &ConvDesc, c: usize, image_stride: usize) -> gemm::ConvGeom {
    gemm::ConvGeom {
        c,
        h: d.h,
        w: d.w,
        kernel: d.kernel,
        stride: d.stride,
        pad: d.pad,
        ow: d.ow,
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
            out_w: d.ow,
        },
    }
}

/// Image `b`, group `g` of a conv: one GEMM, on `team` or on this thread.
///
/// # Safety
/// As [`rt_conv`]; jobs running at once have distinct `(b, g)`.
unsafe fn conv_one(
    d: &ConvDesc,
    (b, g): (usize, usize),
    (x, res, out): (*const f32, *const f32, *mut f32),
    scratch: *mut f32,
    team: Option<&super::team::Team>,
) {
    let (cg, og) = (d.c / d.groups, d.o / d.groups);
    let n_pix = d.oh * d.ow;
    let xg = unsafe { x.add((b * d.c + g * cg) * d.h * d.w) };
    let b_source = match d.strategy {
        ConvStrategy::Direct1x1 => gemm::BSource::Rows {
            ptr: xg,
            ld: d.h * d.w,
            images: gemm::Images::one(n_pix),
        },
        ConvStrategy::Strided1x1 => {
            // SAFETY: compile sized the scratch for every job; this one's slice is its own.
            let job = b * d.groups + g;
            let dst = unsafe {
                std::slice::from_raw_parts_mut(scratch.add(job * cg * n_pix), cg * n_pix)
            };
            unsafe { subsample(xg, (cg, d.h, d.w), d.stride, (d.oh, d.ow), dst, team) };
            gemm::BSource::Rows {
                ptr: dst.as_ptr(),
                ld: n_pix,
                images: gemm::Images::one(n_pix),
            }
        }
        ConvStrategy::Im2col | ConvStrategy::Blocked => gemm::BSource::Im2col {
            x: xg,
            geom: geom(d, cg, 0),
        },
    };
    let out_b = unsafe { out.add((b * d.o + g * og) * n_pix) };
    let (rc, rh, rw) = d.res_chw;
    // Option A's residual is read per image; an added one as the output.
    let res_b = match d.residual {
        Residual::PadAdd { .. } => res.wrapping_add(b * rc * rh * rw),
        _ => res.wrapping_add((b * d.o + g * og) * n_pix),
    };
    let residual = residual_read(d, res_b);
    let epi = Epilogue {
        bias: d.bias.as_ref().map(|v| unsafe { v.as_ptr().add(g * og) }),
        residual,
        relu: d.relu,
        row_stride: n_pix,
        col_stride: 1,
        images: gemm::Images::one(n_pix),
    };
    unsafe { gemm::gemm(&d.a[g], b_source, n_pix, out_b, &epi, team) };
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
    team: Option<&super::team::Team>,
) {
    let (x, d) = (Sendable(x), Sendable(dst.as_mut_ptr()));
    let chunks = team.map_or(1, |t| c.min(4 * t.size()));
    let run = |t: usize| {
        for ci in c * t / chunks..c * (t + 1) / chunks {
            // SAFETY: channel ci of x; task t alone writes dst's channel ci.
            let src = unsafe { std::slice::from_raw_parts(x.get().add(ci * h * w), h * w) };
            let out = unsafe { std::slice::from_raw_parts_mut(d.get().add(ci * oh * ow), oh * ow) };
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
    pub n: usize,
    pub f: usize,
    pub a: PackedA,
    pub bias: Option<Vec<f32>>,
}

/// fc: out[n, o] = x[n, :] . W[o, :] + b[o], as a GEMM over the batch.
///
/// # Safety
/// As [`rt_conv`].
pub unsafe extern "C" fn rt_linear(d: *const LinearDesc, x: *const f32, out: *mut f32) {
    let d = unsafe { &*d };
    let shared = unsafe { &*d.shared };
    let scratch = unsafe { &mut *shared.scratch.get() };
    // B[k = f][j = n] = x[n * F + f]: pack the transposed input.
    let len = gemm::packed_b_len(d.f, d.n);
    scratch[..len].fill(0.0);
    for j in 0..d.n {
        for f in 0..d.f {
            scratch[((j / gemm::NR) * d.f + f) * gemm::NR + j % gemm::NR] =
                unsafe { *x.add(j * d.f + f) };
        }
    }
    let epi = Epilogue {
        bias: d.bias.as_ref().map(|v| v.as_ptr()),
        residual: ResidualRead::None,
        relu: false,
        row_stride: 1,
        col_stride: d.a.m,
        images: gemm::Images::one(d.n),
    };
    unsafe {
        gemm::gemm(
            &d.a,
            gemm::BSource::Packed(scratch.as_ptr()),
            d.n,
            out,
            &epi,
            Some(&shared.team),
        )
    };
}

pub struct PoolDesc {
    pub shared: *const Shared,
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

/// Max pooling (-inf padding) or average pooling (padding counted).
///
/// # Safety
/// As [`rt_conv`].
pub unsafe extern "C" fn rt_pool(d: *const PoolDesc, x: *const f32, out: *mut f32) {
    let d = unsafe { &*d };
    let shared = unsafe { &*d.shared };
    let (plane_in, plane_out) = (d.h * d.w, d.oh * d.ow);
    let planes = d.n * d.c;
    // The descriptor outlives the run; tasks own disjoint planes.
    let (out, x, dp) = (Sendable(out), Sendable(x), Sendable(d as *const PoolDesc));
    let chunks = planes.min(8 * shared.team.size());
    shared.team.run(chunks, &|t| {
        let d = unsafe { &*dp.get() };
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
        rows.fill(init);
        for iy in ya..yb {
            let src = &xp[iy * w..(iy + 1) * w];
            if max {
                // A plain compare (maxps), not f32::max's NaN handling.
                rows.iter_mut()
                    .zip(src)
                    .for_each(|(r, &v)| *r = if v > *r { v } else { *r });
            } else {
                rows.iter_mut().zip(src).for_each(|(r, &v)| *r += v);
            }
        }
        let reduce = |win: &[f32]| {
            if max {
                win.iter().fold(init, |a, &v| if v > a { v } else { a })
            } else {
                win.iter().sum::<f32>() / (kernel * kernel) as f32
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
                let m = |a: f32, b: f32| if b > a { b } else { a };
                for (v, win) in orow[lo..hi].iter_mut().zip(windows) {
                    *v = m(m(win[0], win[1]), win[2]);
                }
            } else {
                for (v, win) in orow[lo..hi].iter_mut().zip(windows) {
                    *v = reduce(win);
                }
            }
        }
        for ox in (0..lo.min(ow)).chain(hi.max(lo)..ow) {
            let x0 = (ox * stride) as isize - pad as isize;
            let (xa, xb) = (
                x0.max(0) as usize,
                ((x0 + kernel as isize).min(w as isize)).max(0) as usize,
            );
            orow[ox] = reduce(&rows[xa..xb.max(xa)]);
        }
    }
}

pub struct PadDesc {
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
    let d = unsafe { &*d };
    let (oh, ow) = (d.h.div_ceil(d.stride), d.w.div_ceil(d.stride));
    let oc = d.before + d.c + d.after;
    for b in 0..d.n {
        for c in 0..oc {
            for y in 0..oh {
                for xx in 0..ow {
                    let v = if c >= d.before && c - d.before < d.c {
                        unsafe {
                            *x.add(
                                ((b * d.c + c - d.before) * d.h + y * d.stride) * d.w
                                    + xx * d.stride,
                            )
                        }
                    } else {
                        0.0
                    };
                    unsafe { *out.add(((b * oc + c) * oh + y) * ow + xx) = v };
                }
            }
        }
    }
}

/// Softmax over each of `rows` rows of `cols`.
///
/// # Safety
/// As [`rt_conv`].
pub unsafe extern "C" fn rt_softmax(rows: usize, cols: usize, x: *const f32, out: *mut f32) {
    for r in 0..rows {
        let row = unsafe { std::slice::from_raw_parts(x.add(r * cols), cols) };
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let mut sum = 0.0;
        for (j, v) in row.iter().enumerate() {
            let e = (v - m).exp();
            unsafe { *out.add(r * cols + j) = e };
            sum += e;
        }
        for j in 0..cols {
            unsafe { *out.add(r * cols + j) /= sum };
        }
    }
}

/// Timestamps of a profiled run: one per step, written by `rt_tick`.
pub struct Ticks(pub std::cell::UnsafeCell<Vec<std::time::Instant>>);

/// # Safety
/// `t` is a live [`Ticks`] with more than `i` entries; runs are not concurrent.
pub unsafe extern "C" fn rt_tick(t: *const Ticks, i: usize) {
    let v = unsafe { &mut *(*t).0.get() };
    v[i] = std::time::Instant::now();
}

/// A conv on channel-blocked maps.
pub struct BlockedConvDesc {
    pub shared: *const Shared,
    pub n: usize,
    pub conv: super::blocked::Conv,
}

/// # Safety
/// As [`rt_conv`]; `res` is null or holds the output's shape.
pub unsafe extern "C" fn rt_conv_blocked(
    d: *const BlockedConvDesc,
    x: *const f32,
    res: *const f32,
    out: *mut f32,
) {
    let d = unsafe { &*d };
    let team = unsafe { &(*d.shared).team };
    unsafe { d.conv.run(d.n, x, res, out, team) };
}

/// Max pooling of channel-blocked maps (-inf padding), 16 channels a vector.
///
/// # Safety
/// As [`rt_conv`].
pub unsafe extern "C" fn rt_max_pool_blocked(d: *const PoolDesc, x: *const f32, out: *mut f32) {
    use super::blocked::BLOCK;
    let d = unsafe { &*d };
    let shared = unsafe { &*d.shared };
    let rows = d.n * d.c / BLOCK * d.oh;
    let (out, x, dp) = (Sendable(out), Sendable(x), Sendable(d as *const PoolDesc));
    let chunks = rows.min(8 * shared.team.size());
    shared.team.run(chunks, &|t| {
        let d = unsafe { &*dp.get() };
        for r in rows * t / chunks..rows * (t + 1) / chunks {
            let (plane, oy) = (r / d.oh, r % d.oh);
            let y0 = (oy * d.stride) as isize - d.pad as isize;
            let ys =
                y0.max(0) as usize..((y0 + d.kernel as isize).min(d.h as isize)).max(0) as usize;
            let xp = x.get().wrapping_add(plane * d.h * d.w * BLOCK);
            let orow = out.get().wrapping_add((plane * d.oh + oy) * d.ow * BLOCK);
            for ox in 0..d.ow {
                let x0 = (ox * d.stride) as isize - d.pad as isize;
                let xs = x0.max(0) as usize
                    ..((x0 + d.kernel as isize).min(d.w as isize)).max(0) as usize;
                let mut m = [f32::NEG_INFINITY; BLOCK];
                for iy in ys.clone() {
                    for ix in xs.clone() {
                        // SAFETY: (iy, ix) is inside the plane.
                        let v =
                            unsafe { &*(xp.add((iy * d.w + ix) * BLOCK) as *const [f32; BLOCK]) };
                        for (a, &b) in m.iter_mut().zip(v) {
                            *a = if b > *a { b } else { *a };
                        }
                    }
                }
                // SAFETY: output pixel ox of this task's row.
                unsafe { std::ptr::copy_nonoverlapping(m.as_ptr(), orow.add(ox * BLOCK), BLOCK) };
            }
        }
    });
}

/// The mean of each channel of `n` channel-blocked `c x hw` maps: `[n][c]`.
///
/// # Safety
/// `x` holds the maps, `out` `n x c` values.
pub unsafe extern "C" fn rt_global_avg_blocked(
    n: usize,
    c: usize,
    hw: usize,
    x: *const f32,
    out: *mut f32,
) {
    use super::blocked::BLOCK;
    for block in 0..n * c / BLOCK {
        let mut s = [0.0f32; BLOCK];
        for p in 0..hw {
            // SAFETY: pixel p of block `block`.
            let v = unsafe { &*(x.add((block * hw + p) * BLOCK) as *const [f32; BLOCK]) };
            for (a, &b) in s.iter_mut().zip(v) {
                *a += b;
            }
        }
        for (i, v) in s.iter().enumerate() {
            // SAFETY: channel block * 16 + i of out.
            unsafe { *out.add(block * BLOCK + i) = v / hw as f32 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::interp::kernels;

    /// Every pooling shape the fast paths special-case, against the interpreter.
    #[test]
    fn pool_plane_equals_the_interpreter() {
        for (h, w) in [(7, 7), (8, 5), (112, 112)] {
            for (kernel, stride, pad) in [(3, 2, 1), (3, 2, 0), (2, 2, 0), (3, 1, 1), (5, 3, 2)] {
                let x = ndarray::Array4::from_shape_fn((1, 1, h, w), |(_, _, y, x)| {
                    ((y * 31 + x * 17) % 23) as f32 - 11.0
                });
                let (oh, ow) = (
                    (h + 2 * pad - kernel) / stride + 1,
                    (w + 2 * pad - kernel) / stride + 1,
                );
                for max in [true, false] {
                    let d = PoolDesc {
                        shared: std::ptr::null(),
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
                    let want = if max {
                        kernels::max_pool(x.view(), kernel, stride, pad)
                    } else {
                        kernels::avg_pool(x.view(), kernel, stride, pad)
                    };
                    let want: Vec<f32> = want.iter().copied().collect();
                    assert_eq!(got, want, "{h}x{w} k{kernel} s{stride} p{pad} max {max}");
                }
            }
        }
    }
}
