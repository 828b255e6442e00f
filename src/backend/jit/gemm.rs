//! GEMM with a fused epilogue: `C = epilogue(A x B)`, A the weights packed
//! once at compile time, B the activations. This is the frame: packing,
//! scratch and the loops over tiles, for any ISA; the microkernel, the
//! epilogue and the vector im2col come from a kernel set ([`Kernels`]).
//!
//! Layout (BLIS-like): A in panels of MR rows, k-major (`[k][MR]`); B in
//! panels of NR columns, k-major (`[k][NR]`). Each GEMM is cut into one
//! rectangle per thread ([`cut`]); a task packs its B columns KC rows at
//! a time (from the input rows, or by im2col) into an L2-resident block,
//! and runs the set's 12x32 microkernel over it with each A panel held in
//! L1, accumulating into a C buffer local to the thread. The epilogue
//! (bias, residual, ReLU) then writes each output once, after all of K: so
//! an output may overwrite its residual in place.

use super::kernels::Kernels;
use super::team::{TaskPtr, Team};

pub const MR: usize = 12;
pub const NR: usize = 32;
const NC: usize = 16 * NR;
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

/// Images side by side along a GEMM's N: column j is column `j % cols`
/// of image `j / cols`, whose data starts `stride` elements after the
/// previous image's. A batch is one GEMM, so the weights are read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Images {
    pub cols: usize,
    pub stride: usize,
}

impl Images {
    /// All `n` columns in one image.
    pub fn one(n: usize) -> Images {
        Images {
            cols: n.max(1),
            stride: 0,
        }
    }
}

impl ResidualRead {
    /// The read for image `b`, an `Add` residual's images `stride` apart.
    fn for_image(mut self, b: usize, stride: usize) -> ResidualRead {
        match &mut self {
            ResidualRead::None => {}
            ResidualRead::Add { ptr } => *ptr = ptr.wrapping_add(b * stride),
            ResidualRead::PadAdd {
                ptr,
                channels,
                h,
                w,
                ..
            } => *ptr = ptr.wrapping_add(b * *channels * *h * *w),
        }
        self
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Epilogue {
    pub bias: Option<*const f32>,
    pub residual: ResidualRead,
    pub relu: bool,
    /// Output element (i, j) of image b (see `images`) is at
    /// `out[b * images.stride + i * row_stride + j * col_stride]`; an `Add`
    /// residual is laid out as the output, a `PadAdd` one image per
    /// `channels * h * w`.
    pub row_stride: usize,
    pub col_stride: usize,
    pub images: Images,
}

// SAFETY: an epilogue's pointers (bias, residual) are only read while a
// GEMM runs; its tasks write disjoint outputs.
unsafe impl Sync for Epilogue {}
// SAFETY: as for Sync.
unsafe impl Send for Epilogue {}

/// The geometry of a convolution's input as seen by im2col.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Channels, height and width of the input map.
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    /// Spacing of the taps (1: dense).
    pub dilation: usize,
    pub ow: usize,
    /// Elements from one image's map to the next (a batch along N).
    pub image_stride: usize,
}

impl ConvGeom {
    /// Output positions (GEMM columns) per image.
    pub fn cols_per_image(&self) -> usize {
        let extent = self.dilation * (self.kernel - 1) + 1;
        let oh = (self.h + 2 * self.pad - extent) / self.stride + 1;
        oh * self.ow
    }
}

/// Where the GEMM reads B (`k x n`) from. Every task packs the blocks it
/// needs into its own cache-resident buffer: no B matrix is materialized.
#[derive(Clone, Copy, Debug)]
pub enum BSource {
    /// Already packed panels: `packed_b_len(k, n)` values.
    Packed(*const f32),
    /// A row-major matrix at row stride `ld` (a 1x1 conv's input), per image.
    Rows {
        ptr: *const f32,
        ld: usize,
        images: Images,
    },
    /// im2col of a `c x h x w` map: row `(c, ki, kj)`, column `(oy, ox)`
    /// reads `x[c, oy*s + ki - p, ox*s + kj - p]`, zero outside.
    Im2col { x: *const f32, geom: ConvGeom },
}

// SAFETY: a GEMM's B is only read while it runs.
unsafe impl Sync for BSource {}
// SAFETY: as for Sync.
unsafe impl Send for BSource {}

/// The B rows `p0..p0 + kc` of columns `j0..j0 + nc`, packed into
/// `nc.div_ceil(NR)` panels of `kc x NR` in `dst` (zero past `n`).
///
/// # Safety
/// The source holds the `k x n` values it claims to; the set runs here.
unsafe fn pack_block(
    k: &Kernels,
    b: BSource,
    n: usize,
    (p0, kc): (usize, usize),
    (j0, nc): (usize, usize),
    dst: &mut [f32],
) {
    if let (BSource::Im2col { x, geom }, Some(im2col)) = (b, k.gemm.im2col) {
        // SAFETY: the caller's source and block.
        return unsafe { im2col(x, &geom, n, (p0, kc), (j0, nc), dst) };
    }
    for (p, panel) in dst[..nc.div_ceil(NR) * kc * NR]
        .chunks_exact_mut(kc * NR)
        .enumerate()
    {
        let j = j0 + p * NR;
        let cols = (n - j).min(NR);
        match b {
            BSource::Packed(_) => unreachable!("packed B is read in place"),
            BSource::Rows { ptr, ld, images } if (j % images.cols) + cols > images.cols => {
                // The panel spans images: a run of columns per image.
                for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                    let mut c = 0;
                    while c < cols {
                        let (b, q) = ((j + c) / images.cols, (j + c) % images.cols);
                        let len = (images.cols - q).min(cols - c);
                        // SAFETY: image b's row p0 + kk has columns q..q + len.
                        let src = ptr.wrapping_add(b * images.stride + (p0 + kk) * ld + q);
                        // SAFETY: image b's row p0 + kk has columns q..q + len.
                        row[c..c + len]
                            .copy_from_slice(unsafe { std::slice::from_raw_parts(src, len) });
                        c += len;
                    }
                    row[cols..].fill(0.0);
                }
            }
            BSource::Rows { ptr, ld, images } => {
                let (b, q) = (j / images.cols, j % images.cols);
                for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                    let src = ptr.wrapping_add(b * images.stride + (p0 + kk) * ld + q);
                    if cols == NR {
                        // A fixed-size copy: vector moves, not a memcpy call per row.
                        // SAFETY: image b's row p0 + kk has columns q..q + NR.
                        let v = unsafe { std::ptr::read_unaligned(src as *const [f32; NR]) };
                        row.copy_from_slice(&v);
                    } else {
                        // SAFETY: image b's row p0 + kk has columns q..q + cols.
                        row[..cols]
                            .copy_from_slice(unsafe { std::slice::from_raw_parts(src, cols) });
                        row[cols..].fill(0.0);
                    }
                }
            }
            // SAFETY: the caller's map.
            BSource::Im2col { x, geom } => unsafe { im2col_panel(x, &geom, p0, j, cols, panel) },
        }
    }
}

/// One panel of im2col: rows `p0..`, columns `j..j + cols` (zero past `cols`).
///
/// # Safety
/// `x` holds the `c x h x w` map of `g`.
unsafe fn im2col_panel(
    x: *const f32,
    g: &ConvGeom,
    p0: usize,
    j: usize,
    cols: usize,
    panel: &mut [f32],
) {
    let (h, w, kernel, stride, pad, ow) = (g.h, g.w, g.kernel, g.stride, g.pad, g.ow);
    let dil = g.dilation;
    let per_image = g.cols_per_image();
    // The panel's columns as runs inside one output row:
    // (first column, image, oy, first ox, length).
    let mut runs = [(0usize, 0usize, 0usize, 0usize, 0usize); NR];
    let mut nruns = 0;
    let mut jj = 0;
    while jj < cols {
        let (b, q) = ((j + jj) / per_image, (j + jj) % per_image);
        let (oy, ox) = (q / ow, q % ow);
        let len = (ow - ox).min(cols - jj);
        runs[nruns] = (jj, b, oy, ox, len);
        nruns += 1;
        jj += len;
    }
    let kk0 = p0;
    let (mut ci, mut ki, mut kj) = (kk0 / (kernel * kernel), kk0 / kernel % kernel, kk0 % kernel);
    for dst in panel.chunks_exact_mut(NR) {
        dst[cols..].fill(0.0);
        for &(col, b, oy, ox0, len) in &runs[..nruns] {
            let out = &mut dst[col..col + len];
            let iy = (oy * stride + ki * dil) as isize - pad as isize;
            if iy < 0 || iy as usize >= h {
                out.fill(0.0);
                continue;
            }
            // ix(t) = (ox0 + t) * stride + kj*d - pad: the t whose ix is inside [0, w).
            let first = (ox0 * stride + kj * dil) as isize - pad as isize;
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
            let row = x.wrapping_add(b * g.image_stride + (ci * h + iy as usize) * w);
            let start = (first + (lo * stride) as isize) as usize;
            if stride == 1 {
                // SAFETY: [start, start + hi - lo) lies inside the row.
                let src = unsafe { std::slice::from_raw_parts(row.add(start), hi - lo) };
                out[lo..hi].copy_from_slice(src);
            } else {
                for (t, o) in out[lo..hi].iter_mut().enumerate() {
                    // SAFETY: lanes lo..hi read inside the row (see above).
                    *o = unsafe { *row.add(start + t * stride) };
                }
            }
        }
        kj += 1;
        if kj == kernel {
            kj = 0;
            ki += 1;
            if ki == kernel {
                ki = 0;
                ci += 1;
            }
        }
    }
}

/// Where each lane of an im2col panel reads, per kernel tap `(ki, kj)`:
/// planned once per panel and column chunk, then used for every input
/// channel and every KC slice.
#[derive(Default)]
struct Taps {
    /// Stride 1: `(offset of lane 0 from the channel's start, lane mask)`
    /// runs; tap t's are `runs[starts[t]..starts[t + 1]]`.
    runs: Vec<(isize, u32)>,
    starts: Vec<usize>,
    /// Other strides: each lane's offset in the channel, -1 for padding.
    lanes: Vec<[i32; NR]>,
}

thread_local! {
    /// The plans of the column chunk a thread is packing, one per panel,
    /// and the chunk they were made for.
    static TAPS: std::cell::RefCell<(Vec<Taps>, Option<ChunkKey>)> =
        std::cell::RefCell::default();
}

/// The chunk plans were made for: input, first column, columns, geometry.
type ChunkKey = (usize, usize, usize, ConvGeom);

impl Taps {
    #[inline(always)]
    fn plan(&mut self, g: &ConvGeom, j: usize, cols: usize) {
        let (h, w, kernel, stride, pad, ow) = (g.h, g.w, g.kernel, g.stride, g.pad, g.ow);
        self.runs.clear();
        self.starts.clear();
        self.lanes.clear();
        // Each lane's input position at tap (0, 0); lanes past `cols`
        // start out of range, so they stay padding.
        let (mut y0, mut x0, mut image) = ([i32::MIN / 2; NR], [0i32; NR], [0i32; NR]);
        let per_image = g.cols_per_image();
        for l in 0..cols {
            let (b, q) = ((j + l) / per_image, (j + l) % per_image);
            let (oy, ox) = (q / ow, q % ow);
            y0[l] = (oy * stride) as i32 - pad as i32;
            x0[l] = (ox * stride) as i32 - pad as i32;
            // Fits: rt_conv batches along N only while offsets fit in i32.
            image[l] = (b * g.image_stride) as i32;
        }
        let (h, w) = (h as i32, w as i32);
        for t in 0..kernel * kernel {
            let dil = g.dilation as i32;
            let (ki, kj) = ((t / kernel) as i32 * dil, (t % kernel) as i32 * dil);
            // Branch-free over the lanes, so it vectorizes: taps x lanes per
            // panel is most of the packing work when channels are few (the stem).
            let mut lanes = [-1i32; NR];
            for l in 0..NR {
                let (iy, ix) = (y0[l] + ki, x0[l] + kj);
                let inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w);
                lanes[l] = if inside { image[l] + iy * w + ix } else { -1 };
            }
            self.starts.push(self.runs.len());
            if stride == 1 {
                // Lanes whose offsets step by one form a run: one masked load.
                let mut l = 0;
                while l < NR {
                    if lanes[l] < 0 {
                        l += 1;
                        continue;
                    }
                    let first = l;
                    while l + 1 < NR && lanes[l + 1] == lanes[l] + 1 {
                        l += 1;
                    }
                    let mask = (((1u64 << (l + 1)) - 1) & !((1u64 << first) - 1)) as u32;
                    self.runs
                        .push((lanes[first] as isize - first as isize, mask));
                    l += 1;
                }
            }
            self.lanes.push(lanes);
        }
        self.starts.push(self.runs.len());
    }
}

/// How a kernel set loads one im2col row of NR lanes from a plan.
///
/// # Safety
/// Implementations may use their set's instructions: they are called only
/// inside [`im2col_planned`] stamped in a function compiled for them.
pub unsafe trait Im2colRows {
    /// From runs of consecutive offsets, `(offset of lane 0, lane mask)`;
    /// masked-off lanes neither load nor fault.
    ///
    /// # Safety
    /// Every unmasked lane reads inside the map at `base`; `dst` holds NR floats.
    unsafe fn runs(runs: &[(isize, u32)], base: *const f32, dst: *mut f32);
    /// From each lane's offset, -1 for padding (zero).
    ///
    /// # Safety
    /// As [`Im2colRows::runs`].
    unsafe fn gather(lanes: &[i32; NR], base: *const f32, dst: *mut f32);
}

/// [`pack_block`] of im2col from plans made at the chunk's first KC slice:
/// masked loads (stride 1) or gathers, as the set `R` does them.
///
/// # Safety
/// As [`pack_block`], inside a function compiled for `R`'s instructions.
#[inline(always)]
pub unsafe fn im2col_planned<R: Im2colRows>(
    x: *const f32,
    g: &ConvGeom,
    n: usize,
    (p0, kc): (usize, usize),
    (j0, nc): (usize, usize),
    dst: &mut [f32],
) {
    let taps = g.kernel * g.kernel;
    let plane = g.h * g.w;
    let panels = nc.div_ceil(NR);
    // The plans are taken out of the thread's slot and put back after: the
    // loop runs here, in the set's compiled context, not in a closure
    // (which would not be compiled for the set's features).
    let mut state = TAPS.with(|t| t.take());
    let (plans, made_for) = &mut state;
    // A new chunk (or another conv): plan its panels.
    let key = (x as usize, j0, nc, *g);
    if p0 == 0 || *made_for != Some(key) {
        if plans.len() < panels {
            plans.resize_with(panels, Taps::default);
        }
        for (p, plan) in plans.iter_mut().enumerate().take(panels) {
            let j = j0 + p * NR;
            plan.plan(g, j, (n - j).min(NR));
        }
        *made_for = Some(key);
    }
    for (plan, panel) in plans
        .iter()
        .zip(dst[..panels * kc * NR].chunks_exact_mut(kc * NR))
    {
        let (mut ci, mut tap) = (p0 / taps, p0 % taps);
        for row in panel.chunks_exact_mut(NR) {
            let base = x.wrapping_add(ci * plane);
            // SAFETY: every unmasked lane reads inside channel ci; row holds NR values.
            unsafe {
                if g.stride == 1 {
                    R::runs(
                        &plan.runs[plan.starts[tap]..plan.starts[tap + 1]],
                        base,
                        row.as_mut_ptr(),
                    );
                } else {
                    R::gather(&plan.lanes[tap], base, row.as_mut_ptr());
                }
            }
            tap += 1;
            if tap == taps {
                tap = 0;
                ci += 1;
            }
        }
    }
    TAPS.with(|t| t.replace(state));
}

/// A 64-byte aligned, growable f32 buffer: packed B panels and C tiles
/// start on cache lines, so the microkernel's vector loads never split one.
#[derive(Default)]
struct Aligned(Vec<Line>);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl Aligned {
    fn get(&mut self, len: usize) -> &mut [f32] {
        let lines = len.div_ceil(16);
        if self.0.len() < lines {
            self.0.resize(lines, Line([0.0; 16]));
        }
        // SAFETY: `lines` Lines are `16 * lines` contiguous f32s.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut f32, len) }
    }
}

thread_local! {
    /// A thread's packed-B block and C accumulator.
    static SCRATCH: std::cell::RefCell<(Aligned, Aligned)> = std::cell::RefCell::default();
}

/// C accumulator budget per task: it stays in L2 beside the packed B block.
const C_BYTES: usize = 1024 * 1024;

/// How a GEMM is shared out on a team of the given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// One task: too small to share.
    Whole,
    /// Tasks of whole column panels, each packing its own B columns (wide B).
    Columns(usize),
    /// B packed once by the team, then tasks of whole row panels (narrow B).
    Rows(usize),
}

/// Panels per task at least, so each task's share of packing or of
/// reading A or B stays small.
const PANELS_PER_TASK: usize = 4;

/// The cut of an `m x n x k` GEMM for `threads`: along N when there are
/// panels enough for every thread to pack its own B block in L2 (a shared,
/// whole B is read from the other core's cache by every task), else along M.
pub fn cut(m: usize, n: usize, k: usize, threads: usize) -> Cut {
    let (pm, pn) = (m.div_ceil(MR), n.div_ceil(NR));
    if threads <= 1 || 2 * m * n * k < 1 << 20 {
        Cut::Whole
    } else if pn >= 3 * threads || pn >= 2 * pm {
        Cut::Columns(threads)
    } else {
        Cut::Rows(threads)
    }
}

/// `panels` in guided chunks for `threads`: each a share of what is left
/// (big first, small last), claimed as threads come free. This host's
/// cores run at speeds that differ by up to 1.5x from moment to moment;
/// with equal static shares the faster one waited 11% of the time.
fn chunks(panels: usize, threads: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < panels {
        let left = panels - start;
        let c = left.div_ceil(2 * threads).max(PANELS_PER_TASK).min(left);
        out.push((start, start + c));
        start += c;
    }
    out
}

/// `n` columns as `threads` runs of whole panels, as equal in columns as
/// panels allow. With few panels, guided chunks would hand out 4 + 3 of
/// N = 196's 7: 128 columns against 68, the last one 4 wide.
///
/// Listed last part first: the calling thread claims the first task as it
/// publishes the step, before the others wake, so it takes the part with
/// the partial panel, which packs a whole panel for a few columns.
/// (Counted in the team: waits fell from 3.6 to 3.0 ms a ResNet-50 run.)
fn even(n: usize, threads: usize) -> Vec<(usize, usize)> {
    let edge = |t: usize| (n * t + threads * NR / 2) / (threads * NR);
    (0..threads)
        .rev()
        .map(|t| {
            (
                edge(t),
                if t + 1 == threads {
                    n.div_ceil(NR)
                } else {
                    edge(t + 1)
                },
            )
        })
        .filter(|(p0, p1)| p0 < p1)
        .collect()
}

thread_local! {
    /// B packed for a [`Cut::Rows`] step, on the thread that runs the step.
    static WHOLE_B: std::cell::RefCell<Aligned> = std::cell::RefCell::default();
}

/// `out = epilogue(A x B)` for A `m x k` (packed), B `k x n`, with the
/// kernels of set `k`.
///
/// # Safety
/// `out` and the residual must be valid for every element the epilogue
/// addresses; `b` holds the `k x n` values it claims to; the set runs here.
pub unsafe fn gemm(
    k: &Kernels,
    a: &PackedA,
    b: BSource,
    n: usize,
    out: *mut f32,
    epi: &Epilogue,
    team: Option<&Team>,
) {
    match team {
        Some(team) => {
            let how = cut(a.m, n, a.k, team.size());
            // SAFETY: the caller's promise.
            unsafe { run_cut(k, a, b, n, out, epi, how, team) }
        }
        // SAFETY: the caller's promise, on this thread.
        None => unsafe { task(k, a, b, n, (0, a.m), (0, n), out, epi) },
    }
}

/// The tasks of a cut, on `team`.
///
/// # Safety
/// As [`gemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn run_cut(
    kernels: &Kernels,
    a: &PackedA,
    b: BSource,
    n: usize,
    out: *mut f32,
    epi: &Epilogue,
    how: Cut,
    team: &Team,
) {
    let (m, k) = (a.m, a.k);
    let (pm, pn) = (m.div_ceil(MR), n.div_ceil(NR));
    // SAFETY: every task below writes its own rows or columns of `out`.
    let out = unsafe { TaskPtr::new(out) };
    // Panels p0..p1 of `size` as elements, clipped to `len`.
    let span = |(p0, p1): (usize, usize), size: usize, len: usize| {
        ((p0 * size).min(len), (p1 * size).min(len))
    };
    match how {
        // SAFETY: the caller's promise, in one task.
        Cut::Whole => unsafe { task(kernels, a, b, n, (0, m), (0, n), out.get(), epi) },
        Cut::Columns(threads) => {
            let parts = if pn < 4 * threads {
                even(n, threads)
            } else {
                chunks(pn, threads)
            };
            team.run(parts.len(), &|i| {
                let cols = span(parts[i], NR, n);
                // SAFETY: this task's outputs are its own.
                unsafe { task(kernels, a, b, n, (0, m), cols, out.get(), epi) };
            });
        }
        Cut::Rows(threads) => WHOLE_B.with(|whole| {
            let mut whole = whole.borrow_mut();
            let b = match b {
                BSource::Packed(_) => b,
                _ => {
                    // The team packs all of B in (panel, K range) pieces:
                    // N = 49 is two panels, and by panels alone one thread
                    // packed while the other waited.
                    let dst = whole.get(packed_b_len(k, n));
                    // SAFETY: each piece below writes its own rows of one panel.
                    let d = unsafe { TaskPtr::new(dst.as_mut_ptr()) };
                    let per_panel = (4 * threads).div_ceil(pn).clamp(1, k.div_ceil(64));
                    let depth = k.div_ceil(per_panel);
                    team.run(pn * per_panel, &|t| {
                        let (p, k0) = (t / per_panel, t % per_panel * depth);
                        if k0 >= k {
                            return;
                        }
                        let kc = depth.min(k - k0);
                        // SAFETY: piece t alone writes rows k0..k0 + kc of panel p.
                        let rows = unsafe {
                            std::slice::from_raw_parts_mut(d.get().add((p * k + k0) * NR), kc * NR)
                        };
                        let cols = (p * NR, ((p + 1) * NR).min(n) - p * NR);
                        // SAFETY: the caller's source.
                        unsafe { pack_block(kernels, b, n, (k0, kc), cols, rows) };
                    });
                    BSource::Packed(dst.as_ptr())
                }
            };
            let parts = chunks(pm, threads);
            team.run(parts.len(), &|i| {
                let rows = span(parts[i], MR, m);
                // SAFETY: this task's outputs are its own.
                unsafe { task(kernels, a, b, n, rows, (0, n), out.get(), epi) };
            });
        }),
    }
}

/// Rows `r0..r1` (a multiple of MR from r0) times columns `c0..c1`.
///
/// # Safety
/// As [`gemm`], for these rows and columns.
#[allow(clippy::too_many_arguments)]
unsafe fn task(
    kernels: &Kernels,
    a: &PackedA,
    b: BSource,
    n: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    out: *mut f32,
    epi: &Epilogue,
) {
    let k = a.k;
    let panels_m = (r1 - r0).div_ceil(MR);
    // As many columns as keep the C accumulator within budget.
    let nc_max = (C_BYTES / 4 / (panels_m * MR) / NR).clamp(1, NC / NR) * NR;
    let microkernel = kernels.gemm.tile;
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (bbuf, cbuf) = &mut *s;
        let mut j0 = c0;
        while j0 < c1 {
            let nc = (c1 - j0).min(nc_max);
            let panels_n = nc.div_ceil(NR);
            let ldc = panels_n * NR;
            let c = cbuf.get(panels_m * MR * ldc);
            let mut p0 = 0;
            // Two panels or fewer (N = 49): half-depth slices keep B's whole
            // block (32 KB) in L1 while the A panels stream past it.
            let kc_max = if panels_n <= 2 { KC / 2 } else { KC };
            while p0 < k {
                let kc = (k - p0).min(kc_max);
                let (bp, b_panel) = match b {
                    BSource::Packed(ptr) => (ptr, k * NR),
                    _ => {
                        let dst = bbuf.get(panels_n * kc * NR);
                        // SAFETY: the caller's source.
                        unsafe { pack_block(kernels, b, n, (p0, kc), (j0, nc), dst) };
                        (dst.as_ptr(), kc * NR)
                    }
                };
                // Packed B is read in place: its panels are k deep, at depth p0.
                let (bp, skip) = match b {
                    BSource::Packed(_) => (bp.wrapping_add((j0 / NR) * k * NR), p0 * NR),
                    _ => (bp, 0),
                };
                // The A panel stays in L1 while the B panels stream from L2.
                for pi in 0..panels_m {
                    let apanel = a.panel(r0 / MR + pi)[p0 * MR..].as_ptr();
                    // Weights come cold from memory: fetch the next panel meanwhile.
                    let next = (r0 / MR + pi + 1).min(a.m.div_ceil(MR) - 1);
                    let mut tile = Tile {
                        kc,
                        rows: (r1 - r0 - pi * MR).min(MR),
                        cols: NR,
                        a: apanel,
                        a_next: a.panel(next)[p0 * MR..].as_ptr(),
                        b: bp,
                        c: c.as_mut_ptr(),
                        ldc,
                        accumulate: p0 > 0,
                    };
                    for pj in 0..panels_n {
                        tile.b = bp.wrapping_add(pj * b_panel + skip);
                        tile.cols = (nc - pj * NR).min(NR);
                        tile.c = c.as_mut_ptr().wrapping_add(pi * MR * ldc + pj * NR);
                        // SAFETY: A holds kc x MR values from here, B kc rows
                        // of NR, C the tile's rows at ldc; the set runs here.
                        unsafe { microkernel(&tile) };
                    }
                }
                p0 += kc;
            }
            let acc = Acc {
                buf: c,
                ld: ldc,
                i0: r0,
                j0,
                rows: r1 - r0,
                cols: nc,
            };
            // SAFETY: the caller owns these outputs.
            unsafe { epilogue(kernels, &acc, out, epi) };
            j0 += nc;
        }
    });
}

/// A task's accumulated C: `rows x cols` outputs from (i0, j0), at row stride `ld`.
pub struct Acc<'a> {
    pub buf: &'a [f32],
    pub ld: usize,
    pub i0: usize,
    pub j0: usize,
    pub rows: usize,
    pub cols: usize,
}

/// The epilogue, a run of columns per image, by the set's epilogue.
///
/// # Safety
/// As [`gemm`], for the accumulator's outputs.
unsafe fn epilogue(k: &Kernels, acc: &Acc, out: *mut f32, e: &Epilogue) {
    let cols = e.images.cols;
    let mut c = 0;
    while c < acc.cols {
        let (b, q) = ((acc.j0 + c) / cols, (acc.j0 + c) % cols);
        let len = (cols - q).min(acc.cols - c);
        let part = Acc {
            buf: &acc.buf[c..],
            j0: q,
            cols: len,
            ..*acc
        };
        let e = Epilogue {
            residual: e.residual.for_image(b, e.images.stride),
            ..*e
        };
        // SAFETY: image b's outputs are the caller's as well.
        unsafe { (k.gemm.epilogue)(&part, out.wrapping_add(b * e.images.stride), &e) };
        c += len;
    }
}

/// One microkernel call: `c (+)= a x b` over `kc` for the first `rows`
/// rows of an A panel (MR apart per k) and a B panel (NR apart per k);
/// `c` has row stride `ldc`. `a_next` is prefetched meanwhile.
#[derive(Clone, Copy)]
pub struct Tile {
    pub kc: usize,
    pub rows: usize,
    /// Columns of the B panel that matter (the rest may be left unwritten).
    pub cols: usize,
    pub a: *const f32,
    pub a_next: *const f32,
    pub b: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
    pub accumulate: bool,
}

/// The FMA peak in GFLOP/s of kernel set `k` on `team`'s threads,
/// measured with a register-only loop of independent FMAs (what the
/// microkernel could reach).
pub fn measure_peak(k: &Kernels, team: &Team) -> f64 {
    let iters: u64 = 4_000_000;
    let start = std::time::Instant::now();
    let per_thread = team.broadcast(|| {
        // SAFETY: the set was chosen among those this machine runs.
        unsafe { (k.peak.run)(iters) };
        (iters * k.peak.flops_per_iter) as f64
    });
    let secs = start.elapsed().as_secs_f64();
    per_thread.iter().sum::<f64>() / secs / 1e9
}

#[cfg(test)]
#[allow(clippy::undocumented_unsafe_blocks)] // buffers sized for the shapes they are given
mod tests {
    use super::*;
    use crate::backend::jit::kernels;

    fn geoms() -> Vec<ConvGeom> {
        let mut v = Vec::new();
        // 40 channels of 3x3: K spans two KC slices.
        for (c, h, w) in [(3, 9, 7), (2, 5, 40), (4, 14, 14), (40, 6, 5)] {
            for (kernel, stride, pad, dilation) in [
                (1, 1, 0, 1),
                (1, 2, 0, 1),
                (3, 1, 1, 1),
                (3, 2, 1, 1),
                (7, 2, 3, 1),
                (3, 1, 0, 1),
                (3, 3, 1, 1),
                (3, 1, 2, 2),
                (3, 2, 2, 2),
            ] {
                let extent = dilation * (kernel - 1) + 1;
                if w + 2 * pad < extent || h + 2 * pad < extent {
                    continue;
                }
                let ow = (w + 2 * pad - extent) / stride + 1;
                v.push(ConvGeom {
                    c,
                    h,
                    w,
                    kernel,
                    stride,
                    pad,
                    dilation,
                    ow,
                    image_stride: 0,
                });
            }
        }
        v
    }

    fn input(g: &ConvGeom) -> Vec<f32> {
        (0..g.c * g.h * g.w)
            .map(|i| (i % 13) as f32 - 6.0)
            .collect()
    }

    #[test]
    fn simd_im2col_equals_the_scalar_one() {
        for (g, im2col) in kernels::available()
            .into_iter()
            .filter_map(|k| k.gemm.im2col)
            .flat_map(|f| geoms().into_iter().map(move |g| (g, f)))
        {
            let x = input(&g);
            let (k, n) = (g.c * g.kernel * g.kernel, g.cols_per_image());
            // Whole K, then two slices (the second reuses the first's plans).
            for (p0, kc) in [(0, k), (0, k / 2), (k / 2, k - k / 2)] {
                let panels = n.div_ceil(NR);
                let mut want = vec![f32::NAN; panels * kc * NR];
                for (p, panel) in want.chunks_exact_mut(kc * NR).enumerate() {
                    let j = p * NR;
                    // SAFETY: x holds the c x h x w map of g; panel holds kc x NR values.
                    unsafe { im2col_panel(x.as_ptr(), &g, p0, j, (n - j).min(NR), panel) };
                }
                let mut got = vec![f32::NAN; panels * kc * NR];
                // SAFETY: x holds g's map; got holds the panels of the whole block.
                unsafe { im2col(x.as_ptr(), &g, n, (p0, kc), (0, n), &mut got) };
                assert_eq!(got, want, "{g:?} rows {p0}..{}", p0 + kc);
            }
        }
    }

    /// Every row count of the SIMD microkernel against the portable one.
    #[test]
    fn guided_chunks_cover_every_panel_once() {
        for panels in [1, 4, 7, 43, 392] {
            for threads in [1, 2, 3, 8] {
                let c = chunks(panels, threads);
                assert_eq!(c.first().map(|c| c.0), Some(0));
                assert_eq!(c.last().map(|c| c.1), Some(panels));
                assert!(c
                    .windows(2)
                    .all(|w| w[0].1 == w[1].0 && w[0].1 - w[0].0 >= w[1].1 - w[1].0));
            }
        }
    }

    #[test]
    fn even_parts_balance_columns() {
        assert_eq!(even(196, 2), [(3, 7), (0, 3)]);
        assert_eq!(even(196, 3), [(4, 7), (2, 4), (0, 2)]);
        assert_eq!(even(40, 4), [(1, 2), (0, 1)]);
        for (n, t) in [(1, 1), (33, 2), (784, 5), (49, 8)] {
            let e = even(n, t);
            assert_eq!(e.last().map(|e| e.0), Some(0));
            assert_eq!(e.first().map(|e| e.1), Some(n.div_ceil(NR)));
            assert!(e.windows(2).all(|w| w[0].0 == w[1].1));
        }
    }

    /// ResNet-50's layer3 (N = 196, 7 panels) is cut along N on two
    /// threads, layer4 (N = 49, 2 panels) along M; tiny GEMMs stay whole.
    #[test]
    fn cuts_follow_the_panel_counts() {
        assert_eq!(cut(256, 196, 2304, 2), Cut::Columns(2));
        assert_eq!(cut(1024, 196, 256, 2), Cut::Columns(2));
        assert_eq!(cut(512, 49, 4608, 2), Cut::Rows(2));
        assert_eq!(cut(256, 196, 2304, 8), Cut::Rows(8));
        assert_eq!(cut(64, 3136, 576, 8), Cut::Columns(8));
        assert_eq!(cut(64, 3136, 576, 1), Cut::Whole);
        assert_eq!(cut(10, 1, 512, 2), Cut::Whole);
    }

    #[test]
    fn microkernels_agree_for_every_row_count() {
        let kc = 37;
        let a: Vec<f32> = (0..kc * MR).map(|i| (i % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..kc * NR).map(|i| (i % 7) as f32 - 3.0).collect();
        for rows in 1..=MR {
            for accumulate in [false, true] {
                let mut want = vec![1.0f32; MR * NR];
                let got = want.clone();
                let tile = |c: &mut Vec<f32>, cols| Tile {
                    kc,
                    rows,
                    cols,
                    a: a.as_ptr(),
                    a_next: a.as_ptr(),
                    b: b.as_ptr(),
                    c: c.as_mut_ptr(),
                    ldc: NR,
                    accumulate,
                };
                // SAFETY: the tile points into live A, B and C buffers of its sizes.
                unsafe { (kernels::portable::KERNELS.gemm.tile)(&tile(&mut want, NR)) };
                for (k, cols) in kernels::available()
                    .into_iter()
                    .flat_map(|k| [NR, 17, 16, 8, 5, 4, 3, 2, 1].map(|c| (k, c)))
                {
                    let mut got = got.clone();
                    // SAFETY: the tile points into live buffers; the set runs on this machine (kernels::available).
                    unsafe { (k.gemm.tile)(&tile(&mut got, cols)) };
                    // The columns that matter agree; a narrow tile may leave the rest.
                    for r in 0..MR {
                        let (g, w) = (&got[r * NR..r * NR + cols], &want[r * NR..r * NR + cols]);
                        assert_eq!(
                            g, w,
                            "{k:?}: {rows} rows, {cols} columns, accumulate {accumulate}"
                        );
                    }
                }
            }
        }
    }

    /// `gemm` against a naive product, with im2col'd B, for every cut of the work.
    /// Three images along N (columns split across images mid-panel) give
    /// each image's own GEMM, bias and in-place residual included.
    #[test]
    fn images_along_n_equal_one_gemm_per_image() {
        let team = Team::new(2).unwrap();
        for (ks, g) in kernels::available()
            .into_iter()
            .flat_map(|k| geoms().into_iter().map(move |g| (k, g)))
        {
            let (k, n) = (g.c * g.kernel * g.kernel, g.cols_per_image());
            let m = 29;
            let wt: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
            let a = PackedA::pack(&wt, m, k);
            let plane = g.c * g.h * g.w;
            let x: Vec<f32> = (0..3 * plane).map(|i| (i % 17) as f32 - 8.0).collect();
            let bias: Vec<f32> = (0..m).map(|i| (i % 3) as f32).collect();
            let res: Vec<f32> = (0..3 * m * n).map(|i| (i % 7) as f32 - 3.0).collect();
            let epi = |images, ptr| Epilogue {
                bias: Some(bias.as_ptr()),
                residual: ResidualRead::Add { ptr },
                relu: true,
                row_stride: n,
                col_stride: 1,
                images,
            };
            let mut want = res.clone();
            for b in 0..3 {
                let geom = ConvGeom {
                    image_stride: 0,
                    ..g
                };
                let src = BSource::Im2col {
                    x: x[b * plane..].as_ptr(),
                    geom,
                };
                let o = want[b * m * n..].as_mut_ptr();
                // SAFETY: a, src and o hold the m x k, k x n and m x n values the call names.
                unsafe { gemm(ks, &a, src, n, o, &epi(Images::one(n), o), Some(&team)) };
            }
            let images = Images {
                cols: n,
                stride: m * n,
            };
            let mut sources = vec![BSource::Im2col {
                x: x.as_ptr(),
                geom: ConvGeom {
                    image_stride: plane,
                    ..g
                },
            }];
            if (g.kernel, g.stride, g.pad) == (1, 1, 0) {
                sources.push(BSource::Rows {
                    ptr: x.as_ptr(),
                    ld: n,
                    images: Images {
                        cols: n,
                        stride: plane,
                    },
                });
            }
            for src in sources {
                for how in [Cut::Whole, Cut::Columns(2), Cut::Rows(2)] {
                    let mut got = res.clone();
                    let o = got.as_mut_ptr();
                    // SAFETY: a, src and o hold the three images the call names.
                    unsafe { run_cut(ks, &a, src, 3 * n, o, &epi(images, o), how, &team) };
                    assert_eq!(got, want, "{ks:?} {g:?} {src:?} {how:?}");
                }
            }
        }
    }

    #[test]
    fn gemm_equals_a_naive_product_for_every_cut() {
        let team = Team::new(2).unwrap();
        for (ks, g) in kernels::available()
            .into_iter()
            .flat_map(|k| geoms().into_iter().map(move |g| (k, g)))
        {
            let x = input(&g);
            let (k, n) = (g.c * g.kernel * g.kernel, g.cols_per_image());
            // Six row panels, the last partial: Rows cuts make two tasks.
            let m = 61;
            let wt: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 - 3.0).collect();
            let a = PackedA::pack(&wt, m, k);
            let mut want = vec![0.0f32; m * n];
            for i in 0..m {
                for j in 0..n {
                    let (oy, ox) = (j / g.ow, j % g.ow);
                    let mut acc = 0.0;
                    for kk in 0..k {
                        let (ci, ki, kj) = (
                            kk / (g.kernel * g.kernel),
                            kk / g.kernel % g.kernel,
                            kk % g.kernel,
                        );
                        let iy = (oy * g.stride + ki * g.dilation) as isize - g.pad as isize;
                        let ix = (ox * g.stride + kj * g.dilation) as isize - g.pad as isize;
                        if (0..g.h as isize).contains(&iy) && (0..g.w as isize).contains(&ix) {
                            acc += wt[i * k + kk] * x[(ci * g.h + iy as usize) * g.w + ix as usize];
                        }
                    }
                    want[i * n + j] = acc.max(0.0);
                }
            }
            let epi = Epilogue {
                bias: None,
                residual: ResidualRead::None,
                relu: true,
                row_stride: n,
                col_stride: 1,
                images: Images::one(n),
            };
            let geom = g;
            let mut sources = vec![BSource::Im2col {
                x: x.as_ptr(),
                geom,
            }];
            if (g.kernel, g.stride, g.pad) == (1, 1, 0) {
                sources.push(BSource::Rows {
                    ptr: x.as_ptr(),
                    ld: g.h * g.w,
                    images: Images::one(n),
                });
            }
            for b in sources {
                for how in [
                    Cut::Whole,
                    Cut::Columns(1),
                    Cut::Columns(3),
                    Cut::Rows(1),
                    Cut::Rows(2),
                ] {
                    let mut got = vec![f32::NAN; m * n];
                    // SAFETY: a, b and got hold the m x k, k x n and m x n values the call names.
                    unsafe { run_cut(ks, &a, b, n, got.as_mut_ptr(), &epi, how, &team) };
                    assert_eq!(got, want, "{ks:?} {g:?} {b:?} {how:?}");
                }
            }
        }
    }
}
