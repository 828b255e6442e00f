//! Direct convolution on channel-blocked maps (`[C/16][H][W][16]`, "NCHW16c"),
//! the layout the JIT runs a network in when every map has a multiple of 16
//! channels and the machine has AVX-512 (or AVX2 with FMA: see [`supported`]).
//!
//! No im2col and no packing at run time: a tile of up to 4 blocks of 16
//! output channels (the vector operand, weights packed at compile time in
//! the order the loop reads them) by up to 6 neighbouring output pixels of
//! one row (broadcast straight from the input) accumulates all of K in 24
//! registers, then bias, residual and ReLU are applied as it is stored.
//! Padding costs nothing: each row and column class has its own list of
//! the taps that fall inside the input, made once at compile time.
//!
//! This is the frame; the tiles come from a kernel set ([`Kernels`]): up to
//! 4 blocks a tile on AVX-512, up to 4 one after another (as two halves)
//! on AVX2, one (plain Rust) in the portable set.

use std::sync::{Arc, Mutex};

use super::kernels::amx::Amx;
use super::kernels::epilogue::{Also, Lanes};
use super::kernels::{BlockedTile, Kernels};
use super::team::{TaskPtr, Team};

/// Channels per block: one AVX-512 vector (two AVX2 ones).
pub const BLOCK: usize = 16;
/// Output blocks per tile (64 channels).
const OB: usize = 4;
/// K steps a packing chunk transposes at once.
const STEPS: usize = 144;

/// How the input map is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// `[C/16][H][W][16]`.
    Blocked,
    /// `[C][H][W]`: the network's input, read by the stem.
    Planar,
    /// `[H][W][C]`, `C` even: the bf16 copy of a planar input, channel
    /// pairs side by side (a padding channel of zeros where `C` was odd).
    Interleaved,
}

/// What a blocked conv's dot products take: f32, or (`--precision bf16`)
/// bf16 weights and inputs summed in f32, where the kernel set has them
/// ([`Kernels`]'s `blocked.bf16`). The bf16 copy of the input map is made
/// as the conv starts, into a buffer the network's convs share: a blocked
/// map as it is, the stem's planar one [`Input::Interleaved`].
#[derive(Clone, Default)]
pub enum Precision {
    #[default]
    F32,
    Bf16(Arc<Bf16Input>),
}

/// A network's bf16 input maps: one conv's at a time. With `amx`, convs
/// on blocked maps run on AMX's tiles ([`super::amx`]).
#[derive(Default)]
pub struct Bf16Input {
    buf: std::cell::UnsafeCell<Vec<u16>>,
    amx: Option<&'static Amx>,
}

// SAFETY: written by one conv's run at a time (a network runs once at a
// time: `Conv::run`'s contract), read only by that run's tasks.
unsafe impl Sync for Bf16Input {}
// SAFETY: as for Sync.
unsafe impl Send for Bf16Input {}

/// A kernel set's f32 -> bf16 conversion (`kernels::Bf16::convert`).
type Convert = unsafe fn(*const f32, *mut u16, usize);

impl Bf16Input {
    /// A buffer for convs whose blocked inputs run on `amx`'s tiles, where given.
    pub fn new(amx: Option<&'static Amx>) -> Bf16Input {
        Bf16Input {
            buf: Default::default(),
            amx,
        }
    }

    /// Room for `len` values from a 64-byte boundary (tile rows are read whole).
    ///
    /// # Safety
    /// No other conv of the network runs at once.
    pub(super) unsafe fn aligned(&self, len: usize) -> *mut u16 {
        // SAFETY: one run at a time (the caller's promise).
        let buf = unsafe { &mut *self.buf.get() };
        if buf.len() < len + 32 {
            buf.resize(len + 32, 0);
        }
        let p = buf.as_mut_ptr();
        p.wrapping_add(p.align_offset(64))
    }

    /// Convert `len` floats at `x` into the buffer, on `team`; returns it.
    ///
    /// # Safety
    /// `x` holds `len` floats; no other conv of the network runs at once.
    unsafe fn fill(&self, len: usize, x: *const f32, convert: Convert, team: &Team) -> *const u16 {
        // SAFETY: one run at a time (the caller's promise).
        let buf = unsafe { &mut *self.buf.get() };
        if buf.len() < len {
            buf.resize(len, 0);
        }
        // Tasks of whole lines, at least 16K values each.
        let tasks = (len >> 14).clamp(1, 4 * team.size());
        // SAFETY: the tasks read x and each writes its own part of buf.
        let io = unsafe { (TaskPtr::reading(x), TaskPtr::new(buf.as_mut_ptr())) };
        team.run(tasks, &|t| {
            let (x, dst) = (io.0.get() as *const f32, io.1.get());
            let at = |t: usize| (len * t / tasks) / BLOCK * BLOCK;
            let (a, b) = (at(t), if t + 1 == tasks { len } else { at(t + 1) });
            // SAFETY: a..b lies inside both; the kernel set runs here (it
            // was picked for a conv packed with it).
            unsafe { convert(x.add(a), dst.add(a), b - a) };
        });
        buf.as_ptr()
    }

    /// `n` planar maps of `c` channels of `hw` pixels at `x` into the
    /// buffer, interleaved as `[hw][c2]` (`c2` even, channels from `c` on
    /// zero), on `team`; returns it. Scalar (a stem's 150K pixels an image):
    /// RGB as one 8-byte store a pixel, 0.1-0.2 ms less for ResNet-50's stem.
    ///
    /// # Safety
    /// `x` holds `n * c * hw` floats; no other conv of the network runs at once.
    unsafe fn interleave(
        &self,
        (n, c, c2, hw): (usize, usize, usize, usize),
        x: *const f32,
        team: &Team,
    ) -> *const u16 {
        // SAFETY: one run at a time (the caller's promise).
        let buf = unsafe { &mut *self.buf.get() };
        let len = n * c2 * hw;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        // Parts of up to 4K pixels an image.
        let per = hw.div_ceil(1 << 12);
        let rows = n * per;
        let tasks = rows.min(4 * team.size());
        // SAFETY: the tasks read x and each writes its own pixels of buf.
        let io = unsafe { (TaskPtr::reading(x), TaskPtr::new(buf.as_mut_ptr())) };
        team.run(tasks, &|t| {
            let (x, dst) = (io.0.get() as *const f32, io.1.get());
            // (The half crate's rounding, as vcvtneps2bf16's: nearest even, NaN quiet.)
            let bf16 = |v: f32| half::bf16::from_f32(v).to_bits();
            for r in rows * t / tasks..rows * (t + 1) / tasks {
                let (img, part) = (r / per, r % per);
                let (p0, p1) = (hw * part / per, hw * (part + 1) / per);
                let src = x.wrapping_add(img * c * hw);
                let out = dst.wrapping_add(img * hw * c2);
                if (c, c2) == (3, 4) {
                    // RGB: a pixel's four values as one store.
                    for p in p0..p1 {
                        // SAFETY: pixel p of the image's 3 planes, and its
                        // 4 values in this task's pixels of the buffer.
                        unsafe {
                            let v = |ch: usize| u64::from(bf16(*src.add(ch * hw + p)));
                            (out.add(p * 4) as *mut u64)
                                .write_unaligned(v(0) | v(1) << 16 | v(2) << 32);
                        }
                    }
                    continue;
                }
                for p in p0..p1 {
                    for ch in 0..c2 {
                        // SAFETY: pixel p of channel ch of the image, and its
                        // place in this task's pixels of the buffer.
                        unsafe {
                            *out.add(p * c2 + ch) = if ch < c {
                                bf16(*src.add(ch * hw + p))
                            } else {
                                0
                            };
                        }
                    }
                }
            }
        });
        buf.as_ptr()
    }
}

/// Whether a conv of geometry `g` can take bf16 dot products: its k-steps
/// pair up as neighbouring channels of a blocked input, or of the stem's
/// planar one once interleaved.
pub fn takes_bf16(g: &Geom) -> bool {
    g.input == Input::Blocked || (g.input == Input::Planar && g.groups <= 1)
}

/// `g` as its conv runs it with bf16 dot products: a planar input interleaved.
fn bf16_geom(g: Geom) -> Geom {
    match g.input {
        Input::Planar => Geom {
            c: g.c.next_multiple_of(2),
            input: Input::Interleaved,
            ..g
        },
        _ => g,
    }
}

/// A conv's geometry (one image).
#[derive(Clone, Copy, Debug)]
pub struct Geom {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    /// Taps `dilation` pixels apart (DeepLab's backbones: 2 and 4).
    pub dilation: usize,
    /// Channel groups (ResNeXt's 32): see [`span`].
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
    pub input: Input,
}

impl Geom {
    /// Floats between neighbouring output pixels' inputs: a compile-time
    /// constant of the kernel, so only these are supported.
    fn pixel_step(&self) -> usize {
        match self.input {
            Input::Blocked => self.stride * BLOCK,
            Input::Planar => self.stride,
            Input::Interleaved => self.stride * self.c,
        }
    }
}

/// The tiles' input step for pixels `step` apart: the kernel sets' tiles
/// have these built in; others (an interleaved stem's) are read at run
/// time (0, as a column's are).
fn tile_step(step: usize) -> usize {
    if matches!(step, 1 | 2 | 16 | 32) {
        step
    } else {
        0
    }
}

/// Whether [`Conv`] can run a conv of this geometry (with any kernel set).
pub fn eligible(g: &Geom) -> bool {
    g.o.is_multiple_of(BLOCK)
        && (g.input == Input::Planar || g.c.is_multiple_of(BLOCK))
        && span(g).is_some()
        && (g.groups <= 1 || g.input == Input::Blocked)
        && matches!(g.pixel_step(), 1 | 2 | 16 | 32)
        && g.kernel > 0
        && g.dilation > 0
        && g.oh > 0
        && g.ow > 0
}

/// What a group of output blocks that share a tile reads: `blocks` output
/// blocks (up to [`OB`]) read `width` input channels, from a multiple of
/// 16. Ungrouped, every channel. Grouped, a block of 16 outputs reads its
/// groups' inputs, with zero weights for the other groups' where a group
/// is narrower than 16 (ResNeXt 32x4d's layer1: 4 groups of 4 a block, 4x
/// the multiplications, on the blocked kernels); `None` where a block's
/// inputs do not start and end on blocks of 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub blocks: usize,
    pub width: usize,
}

pub fn span(g: &Geom) -> Option<Span> {
    if g.groups <= 1 {
        return Some(Span {
            blocks: OB,
            width: g.c,
        });
    }
    let (cin, cout) = (g.c / g.groups, g.o / g.groups);
    if cin * g.groups != g.c || cout * g.groups != g.o || cout == 0 {
        return None;
    }
    let s = if cout.is_multiple_of(BLOCK) {
        // Blocks of one group share a tile.
        let per = cout / BLOCK;
        let blocks = (1..=OB.min(per)).rev().find(|b| per.is_multiple_of(*b))?;
        Span { blocks, width: cin }
    } else if BLOCK.is_multiple_of(cout) {
        Span {
            blocks: 1,
            width: BLOCK / cout * cin,
        }
    } else {
        return None;
    };
    s.width.is_multiple_of(BLOCK).then_some(s)
}

/// One entry per tap that falls inside the input: where its value is,
/// relative to the tile's first pixel, and which k-step of weights it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tap {
    pub x: i32,
    pub k: u32,
}

/// A run of output pixels `ox0..ox0 + len` of one row sharing a column class.
#[derive(Clone, Copy, Debug)]
struct Tile {
    ox0: usize,
    len: usize,
    class: usize,
}

/// How a bf16 conv's input is converted as it starts.
struct Bf16Run {
    /// Into this buffer,
    buf: Arc<Bf16Input>,
    /// by this kernel (a blocked map),
    convert: Convert,
    /// or interleaved, from a planar map of this many channels.
    planar: Option<usize>,
}

/// A direct conv whose weights are packed into a [`Store`] not yet shared:
/// [`Packed::bind`] hands it the store once every conv is packed.
pub struct Packed(Conv<()>);

/// A compiled direct conv: packed weights and tap lists. `S` holds the
/// weight store: the conv cannot outlive it (an `Arc`), by type.
pub struct Conv<S = Arc<Store>> {
    store: S,
    g: Geom,
    kernels: &'static Kernels,
    /// Per group of `OB` output blocks (a [`Span`]'s): `k` steps of
    /// `blocks * 16` weights, at (offset, length) in floats in the store.
    groups: Vec<(usize, usize)>,
    /// Per group, where its input channels start in an input map (floats).
    inputs: Vec<usize>,
    /// Output blocks of a full group.
    full: usize,
    /// `k` = input channels read x kernel x kernel.
    k: usize,
    /// Tap lists by (row class, column class).
    taps: Vec<Vec<Tap>>,
    /// Where each tap list's K slices start (and the last ends).
    bounds: Vec<Vec<usize>>,
    col_classes: usize,
    /// Each output row's row class.
    row_class: Vec<usize>,
    /// Tiles of a row, for full groups (6 pixels) and for a last partial group.
    tiles: [Vec<Tile>; 2],
    /// Columns tiled down, not along rows, and their column classes.
    border_cols: Vec<(usize, usize)>,
    /// 1x1, stride 1, no padding: tiles may run on across rows.
    flat: bool,
    bias: Option<Vec<f32>>,
    relu: bool,
    /// K steps per slice.
    kc: usize,
    /// Every tap list's slices come in runs of 16 ([`in_runs`]).
    runs: bool,
    /// A strided 1x1 conv's real input geometry and its subsampled input.
    subsampled: Option<Subsampled>,
    /// bf16 dot products: k-steps are channel pairs, the input is
    /// converted first.
    bf16: Option<Bf16Run>,
    /// The kernel set's tiles this conv runs (f32 or bf16), by block,
    /// width and step.
    tile: fn(usize, usize, usize) -> BlockedTile,
    /// Run on AMX's tiles instead (the fields above then hold nothing).
    amx: Option<super::amx::Plan>,
    /// Or on the set's slide tiles (3x3, stride 1, one or two output blocks).
    slide: Option<super::slide::Plan>,
}

impl Packed {
    /// The conv, reading its weights from `store` (the one it was packed into).
    pub fn bind(self, store: Arc<Store>) -> Conv {
        let c = self.0;
        Conv {
            store,
            g: c.g,
            kernels: c.kernels,
            groups: c.groups,
            inputs: c.inputs,
            full: c.full,
            k: c.k,
            taps: c.taps,
            bounds: c.bounds,
            col_classes: c.col_classes,
            row_class: c.row_class,
            tiles: c.tiles,
            border_cols: c.border_cols,
            flat: c.flat,
            bias: c.bias,
            relu: c.relu,
            kc: c.kc,
            runs: c.runs,
            subsampled: c.subsampled,
            bf16: c.bf16,
            tile: c.tile,
            amx: c.amx,
            slide: c.slide,
        }
    }
}

impl Conv {
    /// Pack `weight` (`o x c x kernel x kernel`, row-major) for `g` into
    /// `store`, for the tiles of kernel set `kernels`; the epilogue adds
    /// `bias` (`o` values) and applies ReLU if `relu`. `None` if the store
    /// has no room left.
    pub fn pack(
        outer: Geom,
        weight: &[f32],
        bias: Option<Vec<f32>>,
        relu: bool,
        kernels: &'static Kernels,
        store: &mut Region,
    ) -> Option<Packed> {
        Conv::pack_with(outer, weight, bias, relu, kernels, &Precision::F32, store)
    }

    /// As [`Conv::pack`], its dot products in `precision`.
    pub fn pack_with(
        outer: Geom,
        weight: &[f32],
        bias: Option<Vec<f32>>,
        relu: bool,
        kernels: &'static Kernels,
        precision: &Precision,
        store: &mut Region,
    ) -> Option<Packed> {
        if let Precision::Bf16(buf) = precision {
            if let Some(amx) = buf.amx.filter(|_| super::amx::takes(&outer)) {
                let plan = super::amx::Plan::pack(outer, weight, (bias, relu), amx, buf, store)?;
                return Some(Packed(Conv::on_tiles(outer, kernels, Some(plan), None)));
            }
        }
        if let (Precision::F32, Some(tiles)) = (precision, super::slide::tiles_for(kernels, &outer))
        {
            let plan = super::slide::Plan::pack(outer, weight, (bias, relu), tiles, store)?;
            return Some(Packed(Conv::on_tiles(outer, kernels, None, Some(plan))));
        }
        // A strided 1x1 conv on blocked maps runs as a stride-1 one on its
        // input subsampled: read in place, its pixels' lines (and their
        // prefetched neighbours) came from memory once per group.
        let subsample = outer.kernel == 1
            && outer.pad == 0
            && outer.stride > 1
            && outer.input == Input::Blocked;
        let g = if subsample {
            Geom {
                h: outer.oh,
                w: outer.ow,
                stride: 1,
                ..outer
            }
        } else {
            outer
        };
        // bf16: the buffer its input is converted into, and the set's kernels.
        let bf16_with = match precision {
            Precision::Bf16(buf) if takes_bf16(&g) => kernels.bf16_here().map(|b| (buf, b)),
            _ => None,
        };
        let bf16 = bf16_with.is_some();
        // (The weights' input channels: an interleaved input has a zero one more.)
        let c_w = g.c;
        let g = if bf16 { bf16_geom(g) } else { g };
        let kk = g.kernel * g.kernel;
        let span = span(&g)?;
        let k = span.width * kk;
        // k-step order: (input block, ky, kx, channel in block), (channel,
        // ky, kx) for planar input, and (ky, kx, channel) interleaved.
        let step = |s: usize| -> (usize, usize, usize) {
            match g.input {
                Input::Blocked => {
                    let (cb, rest) = (s / (kk * BLOCK), s % (kk * BLOCK));
                    let (tap, ci) = (rest / BLOCK, rest % BLOCK);
                    (cb * BLOCK + ci, tap / g.kernel, tap % g.kernel)
                }
                Input::Planar => (s / kk, s % kk / g.kernel, s % g.kernel),
                Input::Interleaved => (s % g.c, s / g.c / g.kernel, s / g.c % g.kernel),
            }
        };
        // Each k-step's place in a row of `weight` (one output channel's).
        let src_of: Vec<usize> = (0..k)
            .map(|s| {
                let (c, ky, kx) = step(s);
                (c * g.kernel + ky) * g.kernel + kx
            })
            .collect();
        let blocks = g.o / BLOCK;
        let (full, groups_of) = (span.blocks, g.groups.max(1));
        let (cin, cout) = (g.c / groups_of, g.o / groups_of);
        let mut groups = Vec::new();
        let mut inputs = Vec::new();
        // bf16: each group packed as f32 here, then as pairs into the store.
        let mut f32_lines = Vec::new();
        let mut near = Vec::new();
        for grp in 0..blocks.div_ceil(full) {
            let nb = (blocks - grp * full).min(full);
            let len = k * nb * BLOCK;
            let (offset, dst) = store.take(if bf16 { len / 2 } else { len })?;
            if bf16 {
                // Store pages may hold a freed tensor's data: whatever the
                // pairs leave is zero (the f32 transpose writes every float).
                dst.fill(0.0);
            }
            groups.push((offset, dst.len()));
            let (v, pairs) = if bf16 {
                f32_lines.resize(len, 0.0);
                (&mut f32_lines[..], Some(dst))
            } else {
                (dst, None)
            };
            // The group's first input channel: its first output's group's.
            let o0 = grp * full * BLOCK;
            let in0 = o0 / cout * cin;
            // (Channel in0 of a map, blocked or planar, starts in0 planes on.)
            inputs.push(in0 * g.h * g.w);
            if g.input == Input::Interleaved {
                // The stem (one group): channels from c_w on have zero weights.
                let rows = weight.get(o0 * c_w * kk..)?.get(..nb * BLOCK * c_w * kk)?;
                for (s, line) in v.chunks_exact_mut(nb * BLOCK).enumerate() {
                    let (c, ky, kx) = step(s);
                    for (j, d) in line.iter_mut().enumerate() {
                        *d = if c < c_w {
                            *rows.get(((j * c_w + c) * g.kernel + ky) * g.kernel + kx)?
                        } else {
                            0.0
                        };
                    }
                }
                if let Some(pairs) = pairs {
                    to_pairs(v, nb * BLOCK, pairs);
                }
                continue;
            }
            if groups_of > 1 {
                // Grouped: each weight from its row, zero across groups.
                let rows = weight.get(o0 * cin * kk..)?.get(..nb * BLOCK * cin * kk)?;
                for (s, line) in v.chunks_exact_mut(nb * BLOCK).enumerate() {
                    let (c, ky, kx) = step(s);
                    let ic = in0 + c;
                    for (j, d) in line.iter_mut().enumerate() {
                        let oc = o0 + j;
                        let own = oc / cout * cin;
                        *d = if (own..own + cin).contains(&ic) {
                            *rows.get(((j * cin + ic - own) * g.kernel + ky) * g.kernel + kx)?
                        } else {
                            0.0
                        };
                    }
                }
                if let Some(pairs) = pairs {
                    to_pairs(v, nb * BLOCK, pairs);
                }
                continue;
            }
            let rows = weight
                .get(grp * full * BLOCK * k..)?
                .get(..nb * BLOCK * k)?;
            // A transpose, 16 rows at a time (16 pages of a tensor, not
            // 64 for every step) and a chunk of steps at a time (the
            // rows' parts stay in L1).
            for (ob, block) in rows.chunks_exact(BLOCK * k).enumerate() {
                for s0 in (0..k).step_by(STEPS) {
                    let s1 = (s0 + STEPS).min(k);
                    // The chunk's part of each of the 16 rows, copied side
                    // by side at an odd pitch: rows a power of two apart
                    // (1x1 convs of 1,024 channels: 4 KB) share one L1 set,
                    // more than its ways.
                    let ats = &src_of[s0..s1];
                    let lo = *ats.iter().min()?;
                    let pitch = (*ats.iter().max()? + 1 - lo) | 1;
                    near.clear();
                    for row in block.chunks_exact(k) {
                        let part = row.get(lo..)?;
                        near.extend_from_slice(&part[..pitch.min(part.len())]);
                        near.resize(near.len().next_multiple_of(pitch), 0.0);
                    }
                    let dst = v[s0 * nb * BLOCK..s1 * nb * BLOCK].chunks_exact_mut(nb * BLOCK);
                    for (line, &at) in dst.zip(ats) {
                        let mut lanes = [0.0; BLOCK];
                        for (d, row) in lanes.iter_mut().zip(near.chunks_exact(pitch)) {
                            *d = row[at - lo];
                        }
                        let line = &mut line[ob * BLOCK..(ob + 1) * BLOCK];
                        if bf16 {
                            // (Lines the pairs are made from next: cached.)
                            line.copy_from_slice(&lanes);
                        } else {
                            stream_line(line, &lanes);
                        }
                    }
                }
            }
            if let Some(pairs) = pairs {
                to_pairs(v, nb * BLOCK, pairs);
            }
        }
        stream_fence();
        // The taps inside the input for an output row / column: a range of
        // ky / kx, tap t reading `first + t * dilation`.
        let inside = |o: usize, len: usize| -> (usize, usize) {
            let (first, d, k) = (
                (o * g.stride) as isize - g.pad as isize,
                g.dilation,
                g.kernel,
            );
            // The first tap at or past 0, and the first at or past `len`.
            let at_or_past = |v: isize| ((v - first).max(0) as usize).div_ceil(d).min(k);
            let lo = at_or_past(0);
            let hi = at_or_past(len as isize).max(lo);
            (lo, hi)
        };
        let mut row_ranges: Vec<(usize, usize)> = Vec::new();
        let row_class = (0..g.oh)
            .map(|oy| class_of(&mut row_ranges, inside(oy, g.h)))
            .collect();
        let mut col_ranges: Vec<(usize, usize)> = Vec::new();
        let cols: Vec<usize> = (0..g.ow)
            .map(|ox| class_of(&mut col_ranges, inside(ox, g.w)))
            .collect();
        let (row_stride, plane) = match g.input {
            Input::Blocked => (g.w * BLOCK, g.h * g.w * BLOCK),
            Input::Planar => (g.w, g.h * g.w),
            Input::Interleaved => (g.w * g.c, 0),
        };
        let mut taps = Vec::new();
        for &(ky0, ky1) in &row_ranges {
            for &(kx0, kx1) in &col_ranges {
                let list = (0..k)
                    .filter_map(|s| {
                        let (c, ky, kx) = step(s);
                        if !(ky0..ky1).contains(&ky) || !(kx0..kx1).contains(&kx) {
                            return None;
                        }
                        let (ky, kx) = (ky * g.dilation, kx * g.dilation);
                        let x = match g.input {
                            Input::Blocked => {
                                (c / BLOCK) * plane + ky * row_stride + kx * BLOCK + c % BLOCK
                            }
                            Input::Planar => c * plane + ky * row_stride + kx,
                            Input::Interleaved => ky * row_stride + kx * g.c + c,
                        };
                        Some(Tap {
                            x: x as i32,
                            k: s as u32,
                        })
                    })
                    .collect();
                taps.push(list);
            }
        }
        let (k, taps) = if bf16 {
            // A k-step of channel pairs (c, c + 1), c even: neighbours in
            // the blocked input and in the step order.
            let pairs = taps
                .into_iter()
                .map(|list: Vec<Tap>| {
                    list.into_iter()
                        .filter(|t| t.k % 2 == 0)
                        .map(|t| Tap { x: t.x, k: t.k / 2 })
                        .collect()
                })
                .collect();
            (k / 2, pairs)
        } else {
            (k, taps)
        };
        // (An interleaved stem's K, 98 pairs, in one slice: 25 KB of weights.)
        let kc = if g.input == Input::Interleaved {
            k
        } else {
            kc_for(&g)
        };
        let bounds: Vec<Vec<usize>> = taps
            .iter()
            .map(|list: &Vec<Tap>| {
                (0..=k.div_ceil(kc))
                    .map(|sl| list.partition_point(|t| (t.k as usize) < sl * kc))
                    .collect()
            })
            .collect();
        let runs = kc.is_multiple_of(BLOCK)
            && taps
                .iter()
                .zip(&bounds)
                .all(|(list, b)| b.windows(2).all(|w| in_runs(&list[w[0]..w[1]])));
        let last = blocks - (blocks.div_ceil(full) - 1) * full;
        // Columns in runs too short to tile along a row (the borders of a
        // padded conv) are tiled down the columns instead: a one-pixel tile
        // runs at a third of the FMA rate.
        let short = |i: usize| {
            let same = |j: &usize| cols[*j] == cols[i];
            let left = (0..i).rev().take_while(same).count();
            let right = (i + 1..cols.len()).take_while(same).count();
            left + 1 + right < 3 && g.oh > 1
        };
        let flat = g.kernel == 1 && g.stride == 1 && g.pad == 0 && g.h == g.oh && g.w == g.ow;
        // (A flat conv's tiles run across rows: it has no border columns.)
        let border_cols = (0..g.ow)
            .filter(|&i| !flat && short(i))
            .map(|i| (i, cols[i]))
            .collect();
        let inner: Vec<Option<usize>> = (0..g.ow).map(|i| (!short(i)).then_some(cols[i])).collect();
        let max_width = kernels.blocked.max_width;
        let tiles = [
            row_tiles(&inner, max_width(full)),
            row_tiles(&inner, max_width(last)),
        ];
        Some(Packed(Conv {
            store: (),
            g,
            kernels,
            groups,
            inputs,
            full,
            k,
            taps,
            bounds,
            col_classes: col_ranges.len(),
            row_class,
            tiles,
            border_cols,
            bias,
            relu,
            kc,
            runs,
            tile: bf16_with.map_or(kernels.blocked.tile, |(_, b)| b.tile),
            bf16: bf16_with.map(|(buf, b)| Bf16Run {
                buf: buf.clone(),
                convert: b.convert,
                planar: (g.input == Input::Interleaved).then_some(c_w),
            }),
            subsampled: subsample.then(|| Subsampled {
                h: outer.h,
                w: outer.w,
                stride: outer.stride,
                buf: std::cell::UnsafeCell::new(Vec::new()),
            }),
            flat,
            amx: None,
            slide: None,
        }))
    }

    /// A conv of geometry `g` that runs on AMX's tiles or the slide tiles
    /// as its plan says.
    fn on_tiles(
        g: Geom,
        kernels: &'static Kernels,
        amx: Option<super::amx::Plan>,
        slide: Option<super::slide::Plan>,
    ) -> Conv<()> {
        Conv {
            store: (),
            g,
            kernels,
            groups: Vec::new(),
            inputs: Vec::new(),
            full: 0,
            k: 0,
            taps: Vec::new(),
            bounds: Vec::new(),
            col_classes: 0,
            row_class: Vec::new(),
            tiles: [Vec::new(), Vec::new()],
            border_cols: Vec::new(),
            flat: false,
            bias: None,
            relu: false,
            kc: 0,
            runs: false,
            subsampled: None,
            bf16: None,
            tile: kernels.blocked.tile,
            amx,
            slide,
        }
    }
}

impl Conv {
    /// `also`'s second output of `n` finished output maps, one value at a time.
    ///
    /// # Safety
    /// As [`Conv::run`]'s.
    unsafe fn also_after(&self, n: usize, out: *const f32, also: Also) {
        if also.out.is_null() {
            return;
        }
        let (hw, blocks) = (self.g.oh * self.g.ow, self.g.o / BLOCK);
        for i in 0..n * self.g.o * hw {
            let c = i / (hw * BLOCK) % blocks * BLOCK + i % BLOCK;
            let a = also.at(0, c);
            // SAFETY: value i of the maps, channel c's scale and shift.
            unsafe { a.put(a.lanes::<f32>(0), *out.add(i), i) };
        }
    }

    /// Group `grp`'s packed weights.
    fn group(&self, grp: usize) -> &[f32] {
        let (offset, len) = self.groups[grp];
        self.store.slice(offset, len)
    }

    /// `out = relu?(conv(x) + bias + res)` for `n` images, on `team`, and
    /// `also`'s second output of it.
    ///
    /// # Safety
    /// `x` holds `n` input maps, `out` (and `res`, unless null) `n` output
    /// maps of the geometry, in their layouts. `res` may be `out` itself.
    /// Unless null, `also.out` holds `n` output maps too, apart from the
    /// others, and its scales and shifts one value an output channel.
    pub unsafe fn run(
        &self,
        n: usize,
        x: *const f32,
        res: *const f32,
        out: *mut f32,
        also: Also,
        team: &Team,
    ) {
        // (The JIT fuses a second output only where neither plan is taken;
        // `also_after` keeps the contract if one is.)
        if let Some(plan) = &self.amx {
            let (offset, len) = plan.weights;
            // SAFETY: as this function's; the plan's weights are in the store.
            unsafe {
                plan.run(self.store.slice(offset, len), n, x, res, out, team);
                self.also_after(n, out, also);
            }
            return;
        }
        if let Some(plan) = &self.slide {
            let (offset, len) = plan.weights;
            // SAFETY: as this function's; the plan's weights are in the store.
            unsafe {
                plan.run(self.store.slice(offset, len), n, x, res, out, team);
                self.also_after(n, out, also);
            }
            return;
        }
        let g = &self.g;
        let x = match &self.subsampled {
            // SAFETY: as this function's; a network runs once at a time.
            Some(sub) => unsafe { sub.fill(g, n, x, team) },
            None => x,
        };
        // (A bf16 input is 2-byte values: the bf16 tiles read x as such.)
        let x = match &self.bf16 {
            Some(Bf16Run {
                buf,
                planar: Some(c),
                ..
            }) => {
                // SAFETY: x holds the n planar maps of c channels (this
                // function's contract); one run at a time.
                unsafe { buf.interleave((n, *c, g.c, g.h * g.w), x, team) as *const f32 }
            }
            Some(Bf16Run { buf, convert, .. }) => {
                // SAFETY: x holds the n maps (this function's contract); one run at a time.
                unsafe { buf.fill(n * g.c * g.h * g.w, x, *convert, team) as *const f32 }
            }
            None => x,
        };
        let bias = self.bias.as_ref().map_or(std::ptr::null(), |b| b.as_ptr());
        let relu = self.relu;
        let groups = self.groups.len();
        // Tasks never share a group unless there are too few groups to go
        // round: a group's weights (up to 1.2 MB) would come from memory
        // once per task. ResNet-50's layer4 has 8 to 32 groups of 7 rows.
        let per_group = n * g.oh;
        let heavy = self.k * self.full * BLOCK * 4 >= 256 << 10;
        let tasks = if heavy { 2 } else { 4 } * team.size();
        let split = tasks.div_ceil(groups).clamp(1, per_group);
        let parts: Vec<(usize, usize)> = (0..groups * split)
            .map(|t| {
                let (grp, p) = (t / split, t % split);
                (
                    grp * per_group + per_group * p / split,
                    grp * per_group + per_group * (p + 1) / split,
                )
            })
            .collect();
        // SAFETY: the tasks read x, bias and res, and each writes its own
        // output rows (res may be out: each element is read, then written).
        let io = unsafe {
            (
                TaskPtr::reading(x),
                TaskPtr::reading(bias),
                TaskPtr::reading(res),
                TaskPtr::new(out),
            )
        };
        // Plan and run 64 tiles' worth of rows at a time, not a task's
        // thousands: their plans (170 B a tile) and partial sums (1 KB)
        // pushed the maps out of L1 and L2 (ResNet-50's 64 -> 256 1x1s ran
        // at 45% of the peak at 56x56, and 77% at 28x28). The group's
        // weights then come from L2 once a chunk.
        let chunk = (64 * (self.kernels.blocked.max_width)(self.full)).div_ceil(g.ow);
        team.run(parts.len(), &|t| {
            let io = (
                io.0.get() as *const f32,
                io.1.get() as *const f32,
                io.2.get() as *const f32,
                io.3.get(),
            );
            let (p0, p1) = parts[t];
            let mut r = p0;
            // Runs of rows of one image and group; the images of a batch
            // are next to each other, so a group's weights are read from
            // memory once per batch, not once per image.
            while r < p1 {
                let (grp, img, oy) = (r / (n * g.oh), r / g.oh % n, r % g.oh);
                let end = (oy + p1 - r).min(g.oh).min(oy.saturating_add(chunk));
                // SAFETY: these rows of group grp of image img are this task's alone.
                unsafe { self.rows(img, grp, (oy, end), io, also, relu) };
                r += end - oy;
            }
        });
    }

    /// Output rows `oy0..oy1` of one group of output blocks. A deep K is
    /// taken in slices whose weights stay in L1 across all the rows' tiles,
    /// the partial sums kept in a per-thread buffer.
    unsafe fn rows(
        &self,
        img: usize,
        grp: usize,
        (oy0, oy1): (usize, usize),
        (x, bias, res, out): (*const f32, *const f32, *const f32, *mut f32),
        also: Also,
        relu: bool,
    ) {
        let g = &self.g;
        let (in_image, out_plane) = (g.c * g.h * g.w, g.oh * g.ow * BLOCK);
        let out_image = g.o * g.oh * g.ow;
        let w = self.group(grp);
        let blocks = w.len() / (self.k * BLOCK);
        let row_stride = match g.input {
            Input::Blocked => g.w * BLOCK,
            Input::Planar => g.w,
            Input::Interleaved => g.w * g.c,
        };
        let tiles = if blocks == self.full {
            &self.tiles[0]
        } else {
            &self.tiles[1]
        };
        let kc = self.kc;
        let slices = self.k.div_ceil(kc);
        let acc_plane = (oy1 - oy0) * g.ow * BLOCK;
        let next_slice = |slice: usize| -> *const f32 {
            if slice + 1 < slices {
                w.as_ptr().wrapping_add((slice + 1) * kc * blocks * BLOCK)
            } else {
                if grp + 1 < self.groups.len() {
                    self.group(grp + 1).as_ptr()
                } else {
                    std::ptr::null()
                }
            }
        };
        let bias = if bias.is_null() {
            bias
        } else {
            bias.wrapping_add(grp * self.full * BLOCK)
        };
        let out0 = img * out_image + grp * self.full * out_plane;
        ACC.with(|acc| {
            let mut acc = acc.borrow_mut();
            if slices > 1 && acc.len() < blocks * acc_plane {
                acc.resize(blocks * acc_plane, 0.0);
            }
            let partials = acc.as_mut_ptr();
            // The task's tiles, planned once for all its K slices:
            // `len` pixels from (oy, ox) along a row, or down a column.
            let plan = |(oy, ox): (usize, usize), len: usize, class: usize, down: bool| {
                let iy = (oy * g.stride) as isize - g.pad as isize;
                let ix = (ox * g.stride) as isize - g.pad as isize;
                let px = match g.input {
                    Input::Blocked => ix * BLOCK as isize,
                    Input::Planar => ix,
                    Input::Interleaved => ix * g.c as isize,
                };
                let start =
                    (img * in_image + self.inputs[grp]) as isize + iy * row_stride as isize + px;
                let o = out0 + (oy * g.ow + ox) * BLOCK;
                // (A bf16 map's values are 2 bytes: the bf16 tile reads x as such.)
                let x = if self.bf16.is_some() {
                    (x as *const u16).wrapping_offset(start) as *const f32
                } else {
                    x.wrapping_offset(start)
                };
                let args = TileArgs {
                    taps: &[],
                    x,
                    x_step: if down {
                        g.stride * row_stride
                    } else {
                        g.pixel_step()
                    },
                    w: w.as_ptr(),
                    w_step: blocks * BLOCK,
                    blocks,
                    bias,
                    res: if res.is_null() {
                        res
                    } else {
                        res.wrapping_add(o)
                    },
                    out: out.wrapping_add(o),
                    out_plane,
                    out_step: if down { g.ow * BLOCK } else { BLOCK },
                    relu,
                    partial: if slices > 1 {
                        partials.wrapping_add(((oy - oy0) * g.ow + ox) * BLOCK)
                    } else {
                        std::ptr::null_mut()
                    },
                    partial_plane: acc_plane,
                    first: true,
                    last: true,
                    prefetch: std::ptr::null(),
                    prefetch_lines: 0,
                    runs: self.runs,
                };
                let list = self.row_class[oy] * self.col_classes + class;
                let step = if down { 0 } else { tile_step(g.pixel_step()) };
                Planned {
                    args,
                    list,
                    run: (self.tile)(blocks, len, step),
                    len,
                    step,
                }
            };
            let width = (self.kernels.blocked.max_width)(blocks);
            let mut planned = Vec::new();
            if self.flat {
                // A 1x1 stride-1 conv's pixels are evenly spaced across rows
                // too: tile them all as one row (N = 49: 6 x 5 + 4 x 4, not
                // 7 x (3 + 4)).
                let (p0, p1) = (oy0 * g.ow, oy1 * g.ow);
                let pieces = (p1 - p0).div_ceil(width);
                for i in 0..pieces {
                    let a = p0 + (p1 - p0) * i / pieces;
                    let b = p0 + (p1 - p0) * (i + 1) / pieces;
                    planned.push(plan((a / g.ow, a % g.ow), b - a, 0, false));
                }
            } else {
                for oy in oy0..oy1 {
                    for t in tiles {
                        planned.push(plan((oy, t.ox0), t.len, t.class, false));
                    }
                }
            }
            let row_tiles = planned.len();
            // Border columns, a run of rows of one class at a time.
            for &(ox, class) in &self.border_cols {
                let mut oy = oy0;
                while oy < oy1 {
                    let run = self.row_class[oy..oy1]
                        .iter()
                        .take_while(|&&c| c == self.row_class[oy])
                        .count();
                    let pieces = run.div_ceil(width);
                    for p in 0..pieces {
                        let (a, b) = (run * p / pieces, run * (p + 1) / pieces);
                        planned.push(plan((oy + a, ox), b - a, class, true));
                    }
                    oy += run;
                }
            }
            if self.kernels.blocked.blocks == 1 {
                // One block a tile (AVX2, portable): each tile once per
                // output block of the group.
                planned = per_block(planned, blocks, self.tile);
            }
            // The row tiles of a slice share out the fetching of the next
            // slice's weights (the next group's first), a line or a few each
            // k-step: a burst of 384 prefetches in one tile stalled it.
            let lines = kc * blocks;
            let share = lines.div_ceil(row_tiles.max(1));
            for slice in 0..slices {
                let next = next_slice(slice);
                for (
                    j,
                    Planned {
                        args,
                        list,
                        run,
                        len,
                        ..
                    },
                ) in planned.iter_mut().enumerate()
                {
                    let b = &self.bounds[*list];
                    args.taps = &self.taps[*list][b[slice]..b[slice + 1]];
                    args.first = slice == 0;
                    args.last = slice + 1 == slices;
                    let lo = (j * share).min(lines);
                    args.prefetch = next.wrapping_add(lo * BLOCK);
                    args.prefetch_lines = if next.is_null() || j >= row_tiles {
                        0
                    } else {
                        ((j + 1) * share).min(lines) - lo
                    };
                    // SAFETY: the taps address x only inside the input map.
                    unsafe { run(args) };
                    if args.last && !also.out.is_null() {
                        // The tile's pixels of the second map, and its channels.
                        // SAFETY: args.out is a pointer into out's maps.
                        let at = unsafe { args.out.offset_from(out) } as usize;
                        let a = also.at(at, at / out_plane % (g.o / BLOCK) * BLOCK);
                        let tile = AlsoTile {
                            out: args.out,
                            blocks: args.blocks,
                            len: *len,
                            plane: out_plane,
                            step: args.out_step,
                        };
                        // SAFETY: the tile's outputs are stored; also's map
                        // is laid out as they are.
                        unsafe { (self.kernels.blocked.also)(&a, &tile) };
                    }
                }
            }
        });
    }
}

/// A tile as planned for a task: its arguments but the K slice's, its
/// tap list, its kernel, and its width and input step (for [`per_block`]).
struct Planned<'a> {
    args: TileArgs<'a>,
    list: usize,
    run: BlockedTile,
    len: usize,
    step: usize,
}

/// Planned tiles of a group of `blocks`, each as `blocks` one-block tiles
/// ([`TileArgs::block`]) for a set whose tiles hold one block.
fn per_block<'a>(
    planned: Vec<Planned<'a>>,
    blocks: usize,
    tile: fn(usize, usize, usize) -> BlockedTile,
) -> Vec<Planned<'a>> {
    let mut out = Vec::with_capacity(planned.len() * blocks);
    for p in planned {
        for b in 0..blocks {
            out.push(Planned {
                args: p.args.block(b),
                list: p.list,
                run: tile(1, p.len, p.step),
                len: p.len,
                step: p.step,
            });
        }
    }
    out
}

/// A strided 1x1 conv's input geometry, and the buffer its input is
/// subsampled into.
struct Subsampled {
    h: usize,
    w: usize,
    stride: usize,
    buf: std::cell::UnsafeCell<Vec<f32>>,
}

impl Subsampled {
    /// Subsample `n` blocked maps at `x` into the buffer, for `g` (the
    /// conv as stride 1 on it); returns the buffer.
    ///
    /// # Safety
    /// `x` holds `n` maps of `c x h x w`; no other call runs at once.
    unsafe fn fill(&self, g: &Geom, n: usize, x: *const f32, team: &Team) -> *const f32 {
        // SAFETY: one run at a time (the caller's promise).
        let buf = unsafe { &mut *self.buf.get() };
        let len = n * g.c * g.h * g.w;
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        let rows = n * (g.c / BLOCK) * g.h;
        let tasks = rows.min(4 * team.size());
        // SAFETY: the tasks read x and each writes its own rows of dst.
        let io = unsafe { (TaskPtr::reading(x), TaskPtr::new(buf.as_mut_ptr())) };
        let (h, w, stride) = (self.h, self.w, self.stride);
        team.run(tasks, &|t| {
            let (x, dst) = (io.0.get() as *const f32, io.1.get());
            for r in rows * t / tasks..rows * (t + 1) / tasks {
                // Row oy of block plane p (image and channel block).
                let (p, oy) = (r / g.h, r % g.h);
                let src = x.wrapping_add((p * h + oy * stride) * w * BLOCK);
                let out = dst.wrapping_add(r * g.w * BLOCK);
                for ox in 0..g.w {
                    // SAFETY: pixel (oy * s, ox * s) of plane p, and this task's row of dst.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            src.add(ox * stride * BLOCK),
                            out.add(ox * BLOCK),
                            BLOCK,
                        )
                    };
                }
            }
        });
        buf.as_ptr()
    }
}

thread_local! {
    /// Partial sums of a deep conv's rows, per thread.
    static ACC: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

// SAFETY: a conv's weights and tap lists are only read while it runs; its
// subsample buffer is written by one run at a time (`run`'s contract).
unsafe impl<S: Send> Send for Conv<S> {}
// SAFETY: as for Send.
unsafe impl<S: Sync> Sync for Conv<S> {}

/// One allocation for the weights of a network's convs, on 2 MB pages
/// where the OS allows (`madvise`): ResNet-50 streams 100 MB of weights a
/// run, otherwise a 4 KB page (and a page walk) every 1,024 of them. Convs
/// are packed into it through `&mut`, then share it read-only (an `Arc`
/// each): it lives as long as the last of them.
pub struct Store {
    map: crate::pages::Mapping,
    used: usize,
    floats: usize,
    backing: Mutex<Backing>,
}

/// Which of a store's 2 MB pages have been backed (filled from freed
/// blocks, or left to be faulted in): each is decided once, before
/// anything is written to it. And the bytes filled.
struct Backing {
    decided: Vec<bool>,
    moved: usize,
}

// SAFETY: written only through `&mut Store` while convs are packed; shared
// afterwards only for reading.
unsafe impl Send for Store {}
// SAFETY: as for Send.
unsafe impl Sync for Store {}

pub(crate) const HUGE_PAGE: usize = crate::pages::HUGE;

/// Part of a [`Store`], handed out for one conv to be packed into, on any
/// thread: the regions of one `regions` call are disjoint.
pub struct Region<'a> {
    ptr: *mut f32,
    /// Its offset in the store.
    start: usize,
    used: usize,
    floats: usize,
    /// The store's first float and its pages' state.
    base: *mut f32,
    backing: &'a Mutex<Backing>,
}

// SAFETY: a region is the only handle to its floats (regions are disjoint,
// and the store is borrowed mutably while any exists); the pages' state is
// behind a lock.
unsafe impl Send for Region<'_> {}

impl Region<'_> {
    /// The next `len` floats, 64-byte aligned, and their offset in the store.
    pub(crate) fn take(&mut self, len: usize) -> Option<(usize, &mut [f32])> {
        if self.used + stored(len) > self.floats {
            return None;
        }
        let at = self.used;
        let lo = 4 * (self.start + at);
        self.back(lo, lo + 4 * stored(len))?;
        // SAFETY: within the region, and handed out once: later takes start
        // past it. The borrow of `self` keeps it from being shared. Its
        // pages are backed (above): nothing moves them from here on.
        let v = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), stored(len)) };
        // Pages made of freed blocks hold old data: the padding to a whole
        // line is zeroed (the packers write every float they are given).
        v[len..].fill(0.0);
        self.used += stored(len);
        Some((self.start + at, &mut v[..len]))
    }

    /// Backs the store's pages that bytes `lo..hi` of it fall in, those
    /// not yet decided, with blocks freed meanwhile ([`crate::pages::fill`]).
    fn back(&self, lo: usize, hi: usize) -> Option<()> {
        let mut b = self.backing.lock().ok()?;
        let huge = HUGE_PAGE;
        for page in lo / huge..hi.div_ceil(huge) {
            let d = b.decided.get_mut(page)?;
            if !*d {
                *d = true;
                b.moved += crate::pages::fill(self.base as usize + page * huge);
            }
        }
        Some(())
    }
}

/// Floats of a store a conv of geometry `g` is packed into.
pub fn floats(g: &Geom) -> usize {
    floats_for(g, false, false)
}

/// As [`floats`], with bf16 weights (half as many) where `bf16`, laid out
/// for AMX's tiles where `amx`.
pub fn floats_for(g: &Geom, bf16: bool, amx: bool) -> usize {
    if bf16 && amx && super::amx::takes(g) {
        return stored(super::amx::floats(g));
    }
    let bf16 = bf16 && takes_bf16(g);
    let g = if bf16 { bf16_geom(*g) } else { *g };
    let len = span(&g).map_or(g.c, |s| s.width) * g.kernel * g.kernel * g.o;
    stored(if bf16 { len / 2 } else { len })
}

/// Lines of `width` f32 weights, k-step by k-step, as lines of pairs: line
/// `p` of `dst` holds steps `2p` (low half) and `2p + 1` as bf16, rounded
/// to nearest even, in the bits of each f32 (`vdpbf16ps`'s operand).
fn to_pairs(lines: &[f32], width: usize, dst: &mut [f32]) {
    let bits = |v: f32| u32::from(half::bf16::from_f32(v).to_bits());
    for (two, out) in lines
        .chunks_exact(2 * width)
        .zip(dst.chunks_exact_mut(width))
    {
        let (even, odd) = two.split_at(width);
        for ((d, &a), &b) in out.iter_mut().zip(even).zip(odd) {
            *d = f32::from_bits(bits(a) | bits(b) << 16);
        }
    }
}

impl Store {
    /// Room for the weights of direct convs of these geometries; an error
    /// if it cannot be allocated.
    pub fn new(geoms: &[Geom]) -> Result<Store, String> {
        Store::sized(geoms.iter().map(floats).sum())
    }

    /// Room for `floats` floats of weights (in regions of whole lines).
    pub fn sized(floats: usize) -> Result<Store, String> {
        let map = crate::pages::Mapping::new(4 * floats)
            .ok_or_else(|| format!("cannot allocate {} bytes for the conv weights", 4 * floats))?;
        // Pages are backed as the weights are packed into them, each as
        // its unpacked tensor is freed: never all of both at once.
        let pages = map.len / HUGE_PAGE;
        Ok(Store {
            map,
            used: 0,
            floats,
            backing: Mutex::new(Backing {
                decided: vec![false; pages],
                moved: 0,
            }),
        })
    }

    fn ptr(&self) -> *mut f32 {
        self.map.ptr as *mut f32
    }

    /// Its bytes, and how many of them are pages of blocks freed while it
    /// was packed (moved, not faulted in).
    pub fn bytes(&self) -> (usize, usize) {
        let moved = self.backing.lock().map_or(0, |b| b.moved);
        (self.map.len, moved)
    }

    /// Disjoint regions of `floats[i]` floats each, in order, for convs to
    /// be packed into at once (on several threads); `None` if they do not fit.
    pub fn regions(&mut self, floats: &[usize]) -> Option<Vec<Region<'_>>> {
        let total: usize = floats.iter().map(|&f| stored(f)).sum();
        if self.used + total > self.floats {
            return None;
        }
        let mut out = Vec::with_capacity(floats.len());
        for &f in floats {
            out.push(Region {
                // SAFETY: within the allocation (checked above).
                ptr: unsafe { self.ptr().add(self.used) },
                start: self.used,
                used: 0,
                floats: stored(f),
                base: self.ptr(),
                backing: &self.backing,
            });
            self.used += stored(f);
        }
        Some(out)
    }

    /// The rest of the store as one region.
    pub fn rest(&mut self) -> Region<'_> {
        let left = self.floats - self.used;
        let r = Region {
            // SAFETY: within the allocation (used <= floats).
            ptr: unsafe { self.ptr().add(self.used) },
            start: self.used,
            used: 0,
            floats: left,
            base: self.ptr(),
            backing: &self.backing,
        };
        self.used = self.floats;
        r
    }

    /// `len` floats from `offset`, as handed out by a region's `take`.
    pub(crate) fn slice(&self, offset: usize, len: usize) -> &[f32] {
        assert!(
            offset + len <= self.used,
            "a store slice it never handed out"
        );
        // SAFETY: inside the part handed out (checked), which nothing writes
        // once the store is shared.
        unsafe { std::slice::from_raw_parts(self.ptr().add(offset), len) }
    }
}

/// `dst = src`, one 64-byte line of packed weights, written past the
/// caches where `dst` is aligned: a plain store first reads the line in
/// (fresh memory, for weights next read after every other conv's), which
/// doubles the traffic that bounds packing. [`stream_fence`] orders it.
pub(crate) fn stream_line(dst: &mut [f32], src: &[f32; BLOCK]) {
    #[cfg(target_arch = "x86_64")]
    if dst.len() == BLOCK && (dst.as_ptr() as usize).is_multiple_of(64) {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_stream_ps};
        for q in 0..4 {
            // SAFETY: SSE is part of x86-64. `dst` holds 16 floats from a
            // 64-byte boundary (checked), so each 4-float store is in it
            // and 16-byte aligned; `src` holds 16 floats.
            unsafe {
                _mm_stream_ps(
                    dst.as_mut_ptr().add(4 * q),
                    _mm_loadu_ps(src.as_ptr().add(4 * q)),
                )
            };
        }
        return;
    }
    dst.copy_from_slice(&src[..dst.len()]);
}

/// Makes the lines [`stream_line`] wrote visible before the store is
/// shared (streaming stores are not ordered by a later lock's release).
pub(crate) fn stream_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64; a fence has no operands.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

/// Floats a group of `len` weights takes in a store: whole 64-byte lines.
fn stored(len: usize) -> usize {
    len.div_ceil(BLOCK) * BLOCK
}

#[cfg(target_os = "linux")]
pub(crate) fn huge_pages(ptr: *mut u8, bytes: usize) {
    unsafe extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    const MADV_HUGEPAGE: i32 = 14;
    // SAFETY: the range is one allocation of ours. Only advice: a refusal
    // (no THP here) leaves ordinary pages.
    unsafe { madvise(ptr as *mut std::ffi::c_void, bytes, MADV_HUGEPAGE) };
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn huge_pages(_: *mut u8, _: usize) {}

/// K steps per slice for `g`: 96 (24 KB of a 4-block tile's weights, half
/// of L1, the input streaming past), or a whole 16-channel input block of a
/// 3x3 conv (144, 36 KB) where the input map is small enough to stay too.
/// (Alternating profiles of ResNet-50: 64 to 144 within 1-3% of each other.)
fn kc_for(g: &Geom) -> usize {
    let taps = g.kernel * g.kernel;
    if g.h * g.w * 4 < 64 * taps && taps == 9 {
        144
    } else {
        96
    }
}

/// The index of `range` in `classes`, added if new.
fn class_of(classes: &mut Vec<(usize, usize)>, range: (usize, usize)) -> usize {
    classes.iter().position(|&r| r == range).unwrap_or_else(|| {
        classes.push(range);
        classes.len() - 1
    })
}

/// A row's pixels (but those marked `None`) as tiles of at most `width`,
/// each within one column class, as even in width as the classes allow
/// (55 pixels: 6 x 7 + 7 x 2, not 9 x 6 + 1).
fn row_tiles(cols: &[Option<usize>], width: usize) -> Vec<Tile> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cols.len() {
        let run = cols[i..].iter().take_while(|&&c| c == cols[i]).count();
        if let Some(class) = cols[i] {
            let pieces = run.div_ceil(width);
            for p in 0..pieces {
                let (a, b) = (run * p / pieces, run * (p + 1) / pieces);
                out.push(Tile {
                    ox0: i + a,
                    len: b - a,
                    class,
                });
            }
        }
        i += run;
    }
    out
}

/// One tile's work, as a kernel set's blocked tile reads it: `B` output
/// blocks (the tile's kernel) by `W` pixels from `x`, the taps of one K slice.
#[derive(Clone)]
pub struct TileArgs<'a> {
    pub taps: &'a [Tap],
    pub x: *const f32,
    /// Floats between the tile's pixels' inputs, when the kernel's `S` is 0.
    pub x_step: usize,
    pub w: *const f32,
    /// Floats between k-steps of weights (one-block tiles: the group's).
    pub w_step: usize,
    /// Output blocks the tile computes, for a set that loops over them
    /// (AVX2); a set whose tile holds them all has them in its type.
    pub blocks: usize,
    pub bias: *const f32,
    pub res: *const f32,
    pub out: *mut f32,
    pub out_plane: usize,
    /// Floats between the tile's pixels in the output and the partial sums.
    pub out_step: usize,
    pub relu: bool,
    /// Partial sums for a deep K (null: K in one slice): read unless
    /// `first`, written unless `last`, when the epilogue stores the output.
    pub partial: *mut f32,
    pub partial_plane: usize,
    pub first: bool,
    pub last: bool,
    /// Lines of weights to fetch into cache meanwhile, spread over the taps.
    pub prefetch: *const f32,
    pub prefetch_lines: usize,
    /// The taps come in runs of [`BLOCK`]: a block's channels, each one
    /// float and one k-step after the last (see [`in_runs`]).
    pub runs: bool,
}

impl TileArgs<'_> {
    /// Block `b` of the tile alone: its weights `b * 16` floats on, and its
    /// bias, outputs, residuals and partial sums a block's worth on.
    pub fn block(&self, b: usize) -> Self {
        let on = |p: *const f32, by: usize| if p.is_null() { p } else { p.wrapping_add(by) };
        TileArgs {
            blocks: 1,
            w: self.w.wrapping_add(b * BLOCK),
            bias: on(self.bias, b * BLOCK),
            res: on(self.res, b * self.out_plane),
            out: self.out.wrapping_add(b * self.out_plane),
            partial: on(self.partial, b * self.partial_plane) as *mut f32,
            ..self.clone()
        }
    }
}

/// A finished tile's outputs: `len` pixels `step` floats apart of each of
/// `blocks` blocks `plane` floats apart, from `out`.
pub struct AlsoTile {
    pub out: *const f32,
    pub blocks: usize,
    pub len: usize,
    pub plane: usize,
    pub step: usize,
}

/// A finished tile's second output ([`Also`], at the tile's first pixel
/// and channel), read back from the output it has just stored (from L1).
/// A pass of its own, not a term of the tiles' epilogue: there, it made
/// them keep their accumulators in memory (ResNet-50 ran 2.5x slower).
///
/// # Safety
/// The tile's outputs are stored; `also`'s map is laid out as the output
/// and holds the tile's pixels, its scales and shifts the tile's channels;
/// the CPU has `L`'s features.
#[inline(always)]
pub unsafe fn also_tile<L: Lanes>(also: &Also, t: &AlsoTile) {
    for b in 0..t.blocks {
        for lane in (0..BLOCK).step_by(L::N) {
            // SAFETY: the caller's promise.
            unsafe {
                let st = also.lanes::<L>(b * BLOCK + lane);
                for j in 0..t.len {
                    let at = b * t.plane + j * t.step + lane;
                    also.put(st, L::load(t.out.add(at)), at);
                }
            }
        }
    }
}

/// Whether `taps` come in runs of [`BLOCK`] whose `x` and `k` go up by
/// one: a blocked input's channels, which a kernel may then step through
/// without reading every tap.
pub fn in_runs(taps: &[Tap]) -> bool {
    taps.len().is_multiple_of(BLOCK)
        && taps.chunks_exact(BLOCK).all(|run| {
            run.iter()
                .enumerate()
                .all(|(j, t)| t.x == run[0].x + j as i32 && t.k == run[0].k + j as u32)
        })
}

/// The paper's option A shortcut on blocked maps: every `stride`-th pixel
/// of `x` (`n` maps of `c x h x w`), its channels after `before` zero ones,
/// written to `out` as `n` blocked maps of `o` channels (`h / stride`,
/// rounded up, a side), for a conv to add as its residual.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PadResidual {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub stride: usize,
    pub before: usize,
}

impl PadResidual {
    /// Floats of the built residual for `n` images.
    pub fn len(&self, n: usize) -> usize {
        n * self.o * self.h.div_ceil(self.stride) * self.w.div_ceil(self.stride)
    }

    /// Build it.
    ///
    /// # Safety
    /// `x` holds the `n` input maps and `out` [`PadResidual::len`] floats,
    /// apart from them.
    pub unsafe fn build(&self, n: usize, x: *const f32, out: *mut f32, team: &Team) {
        let (oh, ow) = (self.h.div_ceil(self.stride), self.w.div_ceil(self.stride));
        let (cb, ob) = (self.c / BLOCK, self.o / BLOCK);
        // Each output block's lanes: where in an input pixel's blocks their
        // channel is (-1: a padding channel, zero). Computed per lane inside
        // the pixel loop, CIFAR ResNet-20's layer2.0 at batch 64 took 0.7 ms.
        let plane = self.h * self.w * BLOCK;
        let lanes: Vec<[isize; BLOCK]> = (0..ob)
            .map(|b| {
                std::array::from_fn(|l| {
                    (b * BLOCK + l)
                        .checked_sub(self.before)
                        .filter(|&c| c < self.c)
                        .map_or(-1, |ic| ((ic / BLOCK) * plane + ic % BLOCK) as isize)
                })
            })
            .collect();
        let rows = n * ob * oh;
        let tasks = rows.min(8 * team.size());
        // SAFETY: tasks read x and write disjoint output rows.
        let (xp, op) = unsafe { (TaskPtr::reading(x), TaskPtr::new(out)) };
        team.run(tasks, &|k| {
            for r in rows * k / tasks..rows * (k + 1) / tasks {
                let (img, b, y) = (r / (ob * oh), r / oh % ob, r % oh);
                let m = &lanes[b];
                // Pixel (y * stride, 0) of image img's first block, and the row's output.
                let src = xp
                    .get()
                    .wrapping_add(((img * cb * self.h + y * self.stride) * self.w) * BLOCK);
                let dst = op.get().wrapping_add((r * ow) * BLOCK);
                for xx in 0..ow {
                    let px = src.wrapping_add(xx * self.stride * BLOCK);
                    for (l, &at) in m.iter().enumerate() {
                        let v = if at < 0 {
                            0.0
                        } else {
                            // SAFETY: `at` is a channel of pixel (y * s, xx * s)
                            // of image img's map, inside it.
                            unsafe { *px.offset(at) }
                        };
                        // SAFETY: lane l of an output pixel of this task's row.
                        unsafe { *dst.add(xx * BLOCK + l) = v };
                    }
                }
            }
        });
    }
}

/// `[C][H][W]` maps (image after image) to `[C/16][H][W][16]`.
pub fn to_blocked(x: &[f32], c: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for (i, image) in x.chunks_exact(c * hw).enumerate() {
        for (ch, plane) in image.chunks_exact(hw).enumerate() {
            for (p, &v) in plane.iter().enumerate() {
                out[i * c * hw + ((ch / BLOCK) * hw + p) * BLOCK + ch % BLOCK] = v;
            }
        }
    }
    out
}

/// `[C/16][H][W][16]` maps back to `[C][H][W]`.
pub fn from_blocked(x: &[f32], c: usize, hw: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for (i, image) in x.chunks_exact(c * hw).enumerate() {
        for (ch, plane) in out[i * c * hw..(i + 1) * c * hw]
            .chunks_exact_mut(hw)
            .enumerate()
        {
            for (p, v) in plane.iter_mut().enumerate() {
                *v = image[((ch / BLOCK) * hw + p) * BLOCK + ch % BLOCK];
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::undocumented_unsafe_blocks)] // buffers sized for the shapes they are given
pub(crate) mod tests {
    use super::*;
    use crate::backend::jit::kernels;

    /// The conv by its definition (sums in f64), planar in and out.
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)] // o indexes 3 arrays
    pub(crate) fn naive(
        g: &Geom,
        n: usize,
        x: &[f32],
        w: &[f32],
        bias: &[f32],
        res: &[f32],
        relu: bool,
    ) -> Vec<f32> {
        let mut out = vec![0.0f32; n * g.o * g.oh * g.ow];
        let (cin, cout) = (g.c / g.groups.max(1), g.o / g.groups.max(1));
        for b in 0..n {
            for o in 0..g.o {
                let first = o / cout * cin;
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut s = 0.0f64;
                        for c in first..first + cin {
                            for ky in 0..g.kernel {
                                for kx in 0..g.kernel {
                                    let (dy, dx) = (ky * g.dilation, kx * g.dilation);
                                    let iy = (oy * g.stride + dy) as isize - g.pad as isize;
                                    let ix = (ox * g.stride + dx) as isize - g.pad as isize;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((b * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
                                    let at = (o * cin + c - first) * g.kernel + ky;
                                    let wv = w[at * g.kernel + kx];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                        let i = ((b * g.o + o) * g.oh + oy) * g.ow + ox;
                        let mut v = s as f32 + bias[o] + res[i];
                        if relu {
                            v = v.max(0.0);
                        }
                        out[i] = v;
                    }
                }
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn check(
        c: usize,
        (h, w): (usize, usize),
        o: usize,
        kernel: usize,
        stride: usize,
        pad: usize,
        input: Input,
        n: usize,
    ) {
        case(c, (h, w), o, (kernel, 1, 1), stride, pad, input, n);
    }

    /// As [`check`], with taps `dilation` apart and channels in `groups`.
    #[allow(clippy::too_many_arguments)]
    fn case(
        c: usize,
        (h, w): (usize, usize),
        o: usize,
        (kernel, dilation, groups): (usize, usize, usize),
        stride: usize,
        pad: usize,
        input: Input,
        n: usize,
    ) {
        case_in(
            c,
            (h, w),
            o,
            (kernel, dilation, groups),
            stride,
            pad,
            input,
            n,
            false,
        );
    }

    /// As [`case`], in bf16 where `bf16`: on every set that has bf16 tiles
    /// and runs them here, against the definition on the input and weights
    /// rounded to bf16 (their products are exact in f32: only the order of
    /// the f32 sums differs).
    #[allow(clippy::too_many_arguments)]
    fn case_in(
        c: usize,
        (h, w): (usize, usize),
        o: usize,
        (kernel, dilation, groups): (usize, usize, usize),
        stride: usize,
        pad: usize,
        input: Input,
        n: usize,
        bf16: bool,
    ) {
        let extent = dilation * (kernel - 1) + 1;
        let (oh, ow) = (
            (h + 2 * pad - extent) / stride + 1,
            (w + 2 * pad - extent) / stride + 1,
        );
        let g = Geom {
            c,
            h,
            w,
            o,
            kernel,
            stride,
            pad,
            dilation,
            groups,
            oh,
            ow,
            input,
        };
        assert!(eligible(&g), "{g:?}");
        let val = |i: usize, m: usize| ((i * 7919) % m) as f32 / m as f32 - 0.5;
        let round = |v: f32| {
            if bf16 {
                half::bf16::from_f32(v).to_f32()
            } else {
                v
            }
        };
        let x: Vec<f32> = (0..n * c * h * w).map(|i| round(val(i, 101))).collect();
        let wt: Vec<f32> = (0..o * c / groups * kernel * kernel)
            .map(|i| round(val(i, 97) * 1.003))
            .collect();
        let bias: Vec<f32> = (0..o).map(|i| val(i, 13)).collect();
        let res: Vec<f32> = (0..n * o * oh * ow).map(|i| val(i, 89)).collect();
        let want = naive(&g, n, &x, &wt, &bias, &res, true);
        let team = Team::new(2).expect("threads");
        let sets: Vec<_> = kernels::available()
            .into_iter()
            .filter(|k| !bf16 || k.bf16_here().is_some())
            .collect();
        if sets.is_empty() {
            println!("skipped: no kernel set here has bf16 tiles (AVX512_BF16)");
        }
        // bf16: each set's own tiles, and AMX's where the set hands over to them here.
        let mut runs = Vec::new();
        for ks in sets {
            if !bf16 {
                runs.push((ks, Precision::F32));
                continue;
            }
            runs.push((ks, Precision::Bf16(Arc::new(Bf16Input::new(None)))));
            match ks.amx_here() {
                Some(amx) => runs.push((ks, Precision::Bf16(Arc::new(Bf16Input::new(Some(amx)))))),
                None => println!("{ks:?}: AMX not tested: this machine lacks its bf16 tiles"),
            }
        }
        for (ks, precision) in runs {
            let amx = matches!(&precision, Precision::Bf16(b) if b.amx.is_some());
            let mut store = Store::sized(floats_for(&g, bf16, amx)).expect("a store");
            let bias = Some(bias.clone());
            let conv = Conv::pack_with(g, &wt, bias, true, ks, &precision, &mut store.rest())
                .expect("room in the store");
            let conv = conv.bind(Arc::new(store));
            let tiles = amx && super::super::amx::takes(&g);
            assert_eq!(conv.amx.is_some(), tiles, "{g:?}");
            let slides = !bf16 && super::super::slide::tiles_for(ks, &g).is_some();
            assert_eq!(conv.slide.is_some(), slides, "{g:?}");
            if !tiles && !slides {
                // Blocked inputs take the kernels' run-by-run path, planar ones
                // (3 channels, in c, ky, kx order) the tap-by-tap one; bf16
                // steps are pairs (a planar input's interleaved).
                assert_eq!(conv.runs, input == Input::Blocked && !bf16, "{g:?}");
                assert_eq!(conv.bf16.is_some(), bf16, "{g:?}");
                let interleaved = conv.g.input == Input::Interleaved;
                assert_eq!(interleaved, bf16 && input == Input::Planar, "{g:?}");
            }
            let xb = match input {
                Input::Blocked => to_blocked(&x, c, h * w),
                Input::Planar | Input::Interleaved => x.clone(),
            };
            let mut out = to_blocked(&res, o, oh * ow);
            // A second output, a pre-activation's BN and ReLU of the output.
            let (sc, sh): (Vec<f32>, Vec<f32>) = (0..o)
                .map(|c| (0.5 - (c % 5) as f32 * 0.3, (c % 3) as f32 * 0.2 - 0.2))
                .unzip();
            let mut second = vec![f32::NAN; out.len()];
            let also = Also {
                out: second.as_mut_ptr(),
                scale: sc.as_ptr(),
                shift: sh.as_ptr(),
                relu: true,
            };
            // The residual read in place, as a network run does.
            // SAFETY: xb holds n input maps, out and second n output maps of
            // g, blocked; sc and sh a value an output channel.
            unsafe { conv.run(n, xb.as_ptr(), out.as_ptr(), out.as_mut_ptr(), also, &team) };
            for (i, (&v, &y)) in out.iter().zip(&second).enumerate() {
                let c = i / (oh * ow * BLOCK) % (o / BLOCK) * BLOCK + i % BLOCK;
                let want = crate::backend::jit::kernels::epilogue::relu(v * sc[c] + sh[c]);
                assert_eq!(
                    y.to_bits(),
                    want.to_bits(),
                    "{ks:?} {g:?}: second output at {i}"
                );
            }
            let got = from_blocked(&out, o, oh * ow);
            let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * scale,
                    "{ks:?} (amx {amx}) {g:?} at {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn runs_are_whole_blocks_of_consecutive_channels() {
        let run = |x: i32, k: u32| {
            (0..16).map(move |j| Tap {
                x: x + j,
                k: k + j as u32,
            })
        };
        let two: Vec<Tap> = run(0, 0).chain(run(900, 144)).collect();
        assert!(in_runs(&two));
        assert!(in_runs(&[]));
        assert!(!in_runs(&two[..15]));
        let mut skip = two.clone();
        skip[20].x += 1;
        assert!(!in_runs(&skip));
        let mut skip = two;
        skip[31].k += 1;
        assert!(!in_runs(&skip));
    }

    #[test]
    fn agrees_with_the_definition() {
        check(3, (23, 26), 64, 7, 2, 3, Input::Planar, 2);
        check(3, (9, 12), 16, 3, 1, 1, Input::Planar, 1);
        check(32, (9, 12), 80, 3, 1, 1, Input::Blocked, 2);
        check(16, (10, 13), 48, 3, 2, 1, Input::Blocked, 1);
        check(48, (7, 10), 32, 1, 1, 0, Input::Blocked, 3);
        check(32, (8, 11), 112, 1, 2, 0, Input::Blocked, 1);
        check(16, (5, 8), 16, 5, 1, 2, Input::Blocked, 1);
        // Maps of 2 x 2 and 1 x 1 (layer4 at a 64 x 64 input): every
        // column a border one, and 1x1 tiles across rows.
        check(32, (2, 2), 64, 1, 1, 0, Input::Blocked, 2);
        check(32, (2, 2), 64, 3, 1, 1, Input::Blocked, 2);
        check(16, (1, 1), 32, 3, 1, 1, Input::Blocked, 1);
        check(16, (1, 2), 16, 1, 1, 0, Input::Blocked, 1);
    }

    #[test]
    fn bf16_agrees_with_the_definition_on_rounded_values() {
        let bf16 = |c, hw, o, kdg, s, p, input, n| case_in(c, hw, o, kdg, s, p, input, n, true);
        // 1x1s (flat, strided and so subsampled), 3x3s padded and strided,
        // deep K in slices, maps down to 1 x 1, a dilation, groups, and
        // planar stems (3 channels and an even 4, interleaved; at stride 1,
        // its pixel step one the tiles take at run time).
        bf16(64, (9, 10), 64, (1, 1, 1), 1, 0, Input::Blocked, 2);
        bf16(32, (8, 11), 112, (1, 1, 1), 2, 0, Input::Blocked, 1);
        bf16(32, (9, 12), 80, (3, 1, 1), 1, 1, Input::Blocked, 2);
        bf16(16, (10, 13), 48, (3, 1, 1), 2, 1, Input::Blocked, 1);
        bf16(256, (4, 5), 64, (3, 1, 1), 1, 1, Input::Blocked, 1);
        bf16(16, (1, 1), 32, (3, 1, 1), 1, 1, Input::Blocked, 1);
        bf16(32, (12, 13), 48, (3, 2, 1), 1, 2, Input::Blocked, 2);
        bf16(128, (9, 10), 128, (3, 1, 32), 1, 1, Input::Blocked, 1);
        bf16(3, (23, 26), 64, (7, 1, 1), 2, 3, Input::Planar, 2);
        bf16(4, (9, 12), 32, (3, 1, 1), 1, 1, Input::Planar, 1);
        bf16(3, (15, 14), 16, (3, 2, 1), 1, 2, Input::Planar, 1);
        // Large weights (AMX's tasks split the output blocks, not the
        // pixels), a 7x7 map's 49 pixels in tiles of 16 across rows.
        bf16(512, (7, 7), 1024, (1, 1, 1), 1, 0, Input::Blocked, 1);
        bf16(256, (7, 7), 256, (3, 1, 1), 1, 1, Input::Blocked, 2);
        bf16(48, (17, 19), 32, (3, 1, 1), 2, 1, Input::Blocked, 3);
        // DeepLab's dilations, a map smaller than the dilated kernel.
        bf16(16, (11, 9), 64, (3, 4, 1), 1, 4, Input::Blocked, 1);
        bf16(16, (5, 6), 16, (3, 4, 1), 1, 4, Input::Blocked, 2);
        bf16(64, (13, 12), 32, (3, 2, 1), 2, 2, Input::Blocked, 1);
    }

    #[test]
    fn dilated_agrees_with_the_definition() {
        // DeepLab's layer3 and layer4 (dilation 2 and 4, padded to keep the
        // size), maps smaller than the dilated kernel (every tap of a border
        // outside), a stride, and the planar stem.
        case(32, (12, 13), 48, (3, 2, 1), 1, 2, Input::Blocked, 2);
        case(16, (11, 9), 64, (3, 4, 1), 1, 4, Input::Blocked, 1);
        case(16, (5, 6), 16, (3, 4, 1), 1, 4, Input::Blocked, 2);
        case(16, (13, 12), 32, (3, 2, 1), 2, 2, Input::Blocked, 1);
        case(3, (15, 14), 16, (3, 3, 1), 1, 1, Input::Planar, 1);
    }

    #[test]
    fn grouped_agrees_with_the_definition() {
        // ResNeXt 32x4d's four widths (4, 8, 16 and 32 channels a group:
        // zero-padded blocks, then one and two blocks a group), a strided
        // 3x3, groups of 64 (four blocks share a tile) and of 160 (ten, in
        // tiles of two), and a grouped 1x1.
        case(128, (9, 10), 128, (3, 1, 32), 1, 1, Input::Blocked, 2);
        case(64, (7, 8), 64, (3, 1, 8), 1, 1, Input::Blocked, 1);
        case(64, (9, 7), 64, (3, 1, 4), 2, 1, Input::Blocked, 1);
        case(128, (5, 6), 128, (3, 1, 4), 1, 1, Input::Blocked, 2);
        case(128, (5, 7), 128, (3, 1, 2), 1, 1, Input::Blocked, 1);
        case(128, (6, 5), 320, (3, 1, 2), 1, 1, Input::Blocked, 1);
        case(64, (6, 7), 128, (1, 1, 4), 1, 0, Input::Blocked, 1);
        // A group of 4 inputs and 8 outputs: a block reads 8 inputs, half
        // a block, so the direct kernel declines it.
        let g = Geom {
            c: 32,
            h: 4,
            w: 4,
            o: 64,
            kernel: 3,
            stride: 1,
            pad: 1,
            dilation: 1,
            groups: 8,
            oh: 4,
            ow: 4,
            input: Input::Blocked,
        };
        assert_eq!(span(&g), None);
        assert!(!eligible(&g));
        assert!(eligible(&Geom { groups: 2, ..g }));
    }
}
