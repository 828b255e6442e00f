//! Blocked convs on AMX's bf16 tiles (`--precision bf16` on a machine that
//! has them): the frame, which knows no instructions; the kernels are
//! `kernels/amx.rs`.
//!
//! The input map is converted as the conv starts into bf16 pixels of 32
//! channels (64 bytes, one tile row), zero-padded, so every tap of every
//! output pixel is a plain offset: a tile of 16 output pixels reads its
//! rows `stride` pixels apart, and a stride-1 conv's pixels run on across
//! rows of the padded map (the padding columns' sums are dropped). A strided
//! 1x1 conv's input is subsampled by the conversion instead. Weights are
//! packed at compile time as the tiles read them: per pair of output
//! blocks, per k-step (32 channels of one tap), two tiles of 16 channel
//! pairs by 16 outputs. The fused epilogue runs on each tile's sums.

use std::sync::Arc;

use super::blocked::{Bf16Input, Geom, Input, Region, BLOCK};
use super::kernels::amx::{Amx, Block, ConvertRow, StoreRows, ROW, TILE};
use super::team::{TaskPtr, Team};

/// Channels of a converted pixel (one tile row).
const CHANNELS: usize = ROW / 2;

/// Whether a conv of geometry `g` runs on the tiles: a blocked input, one
/// group (the stem's planar input keeps the bf16 dot-product tiles).
pub fn takes(g: &Geom) -> bool {
    g.input == Input::Blocked && g.groups <= 1
}

/// How the input is converted: pixel (y, x) of the bf16 map is pixel
/// (y * sub - pad, x * sub - pad) of the input, zero outside it.
#[derive(Clone, Copy, Debug)]
struct Layout {
    sub: usize,
    pad: usize,
    h: usize,
    w: usize,
    /// 32-channel blocks.
    blocks: usize,
}

impl Layout {
    fn of(g: &Geom) -> (Layout, usize) {
        let blocks = g.c.div_ceil(CHANNELS);
        if g.kernel == 1 && g.pad == 0 && g.stride > 1 {
            let l = Layout {
                sub: g.stride,
                pad: 0,
                h: g.oh,
                w: g.ow,
                blocks,
            };
            (l, 1)
        } else {
            let l = Layout {
                sub: 1,
                pad: g.pad,
                h: g.h + 2 * g.pad,
                w: g.w + 2 * g.pad,
                blocks,
            };
            (l, g.stride)
        }
    }

    /// bf16 values of one image's converted map.
    fn image(&self) -> usize {
        self.blocks * self.h * self.w * CHANNELS
    }
}

/// 16 output pixels: the byte offset of the first one's input (tap 0,
/// block 0) in an image's converted map, and each row's output pixel
/// (negative: dropped).
#[derive(Clone, Copy, Debug)]
struct PixelTile {
    a: usize,
    pixels: [i32; 16],
}

/// A conv packed for the tiles.
pub struct Plan {
    g: Geom,
    amx: &'static Amx,
    layout: Layout,
    /// Bytes between a tile's rows.
    a_stride: usize,
    /// Per k-step, its bytes from a tile's `a`.
    offsets: Vec<isize>,
    tiles: Vec<PixelTile>,
    /// Output block pairs (the last one's second block may be padding).
    pairs: usize,
    /// The packed weights in the store: (offset, floats).
    pub weights: (usize, usize),
    /// bf16 values past the last image's map that tiles may read.
    slack: usize,
    bias: Option<Vec<f32>>,
    relu: bool,
    buf: Arc<Bf16Input>,
}

/// Floats of a store the weights of a conv of geometry `g` take.
pub fn floats(g: &Geom) -> usize {
    let steps = g.c.div_ceil(CHANNELS) * g.kernel * g.kernel;
    // Two tiles of bytes a pair of output blocks and k-step.
    g.o.div_ceil(2 * BLOCK) * steps * 2 * TILE / 4
}

impl Plan {
    /// Pack `weight` (`o x c x kernel x kernel`) for `g` into `store`;
    /// `None` if it has no room.
    pub fn pack(
        g: Geom,
        weight: &[f32],
        (bias, relu): (Option<Vec<f32>>, bool),
        amx: &'static Amx,
        buf: &Arc<Bf16Input>,
        store: &mut Region,
    ) -> Option<Plan> {
        let (layout, stride) = Layout::of(&g);
        let kk = g.kernel * g.kernel;
        let steps = layout.blocks * kk;
        let plane = (layout.h * layout.w * ROW) as isize;
        let offsets: Vec<isize> = (0..steps)
            .map(|s| {
                let (b, tap) = (s / kk, s % kk);
                let (ky, kx) = (tap / g.kernel * g.dilation, tap % g.kernel * g.dilation);
                b as isize * plane + ((ky * layout.w + kx) * ROW) as isize
            })
            .collect();
        let (tiles, a_stride) = pixel_tiles(&g, &layout, stride);
        // The farthest byte a tile's row reads, past one image's map.
        let last = tiles.iter().map(|t| t.a).max()? + 15 * a_stride;
        let reach = last + *offsets.iter().max()? as usize + ROW;
        let slack = reach.saturating_sub(layout.image() * 2).div_ceil(2);
        // Weights: pair j, step s, tile b: row r (channels 2r, 2r + 1 of
        // the step's block), output n, as bf16 pairs.
        let pairs = g.o.div_ceil(2 * BLOCK);
        let len = floats(&g);
        let (offset, dst) = store.take(len)?;
        // SAFETY: the same floats as 2-byte values (an f32's alignment
        // holds for u16), borrowed from the region alone.
        let dst = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u16, len * 2) };
        // Store pages may hold a freed tensor's data: what no tile covers is zero.
        dst.fill(0);
        let bits = |v: f32| half::bf16::from_f32(v).to_bits();
        for (t, tile) in dst.chunks_exact_mut(TILE / 2).enumerate() {
            let (j, s, b) = (t / (2 * steps), t / 2 % steps, t % 2);
            let (block, tap) = (s / kk, s % kk);
            tile.fill(0);
            // The tile's 16 outputs' weights (fewer in a padding block).
            let oc0 = (2 * j + b) * BLOCK;
            let rows = weight.get(oc0.min(g.o) * g.c * kk..)?;
            let outputs = g.o.saturating_sub(oc0).min(BLOCK);
            if rows.len() < outputs * g.c * kk {
                return None;
            }
            for (n, row) in rows.chunks_exact(g.c * kk).take(outputs).enumerate() {
                for c in block * CHANNELS..((block + 1) * CHANNELS).min(g.c) {
                    let at = c - block * CHANNELS;
                    tile[at / 2 * CHANNELS + n * 2 + at % 2] = bits(row[c * kk + tap]);
                }
            }
        }
        Some(Plan {
            g,
            amx,
            layout,
            a_stride,
            offsets,
            tiles,
            pairs,
            weights: (offset, len),
            slack,
            bias,
            relu,
            buf: buf.clone(),
        })
    }

    /// `out = relu?(conv(x) + bias + res)` for `n` images, on `team`; `w`
    /// is the plan's weights in the store.
    ///
    /// # Safety
    /// As [`super::blocked::Conv::run`]; AMX is supported here.
    pub unsafe fn run(
        &self,
        w: &[f32],
        n: usize,
        x: *const f32,
        res: *const f32,
        out: *mut f32,
        team: &Team,
    ) {
        let (g, l) = (&self.g, &self.layout);
        // SAFETY: one conv runs at a time (the caller's promise).
        let buf = unsafe { self.buf.aligned(n * l.image() + self.slack) };
        // SAFETY: x holds the n input maps (the caller's).
        unsafe { self.convert(n, x, buf, team) };
        let image = l.image() * 2;
        let steps = self.offsets.len();
        let pair_bytes = steps * 2 * TILE;
        let pixel_pairs = self.tiles.len().div_ceil(2);
        // Split the output block pairs where the weights are large (each
        // read once), the pixels otherwise (each task reads them all).
        let tasks = 2 * team.size();
        let heavy = pair_bytes * self.pairs >= 256 << 10;
        let units = n * pixel_pairs;
        let mut by_pair = if heavy { self.pairs.min(tasks) } else { 1 };
        let by_pixel = tasks.div_ceil(by_pair).min(units);
        if by_pair * by_pixel < tasks {
            by_pair = self.pairs.min(tasks.div_ceil(by_pixel));
        }
        let bias = self.bias.as_ref().map_or(std::ptr::null(), |b| b.as_ptr());
        let (o_blocks, out_plane) = (g.o / BLOCK, g.oh * g.ow * BLOCK);
        // SAFETY: the tasks read the converted map, the weights, the bias
        // and res, and each writes its own output pixels of its own blocks
        // (res may be out: each value is read, then written).
        let io = unsafe {
            (
                TaskPtr::reading(buf as *const u16),
                TaskPtr::reading(w.as_ptr()),
                TaskPtr::reading(res),
                TaskPtr::new(out),
                TaskPtr::reading(bias),
            )
        };
        let amx = self.amx;
        team.run(by_pair * by_pixel, &|t| {
            let (buf, w, res, out) = (
                io.0.get() as *const u8,
                io.1.get() as *const u8,
                io.2.get() as *const f32,
                io.3.get(),
            );
            let bias = io.4.get() as *const f32;
            let (tp, tu) = (t / by_pixel, t % by_pixel);
            let (j0, j1) = (self.pairs * tp / by_pair, self.pairs * (tp + 1) / by_pair);
            let (u0, u1) = (units * tu / by_pixel, units * (tu + 1) / by_pixel);
            let mut c = Sums([0.0; 1024]);
            // SAFETY: AMX is supported (the caller's).
            unsafe { (amx.configure)() };
            for j in j0..j1 {
                for u in u0..u1 {
                    let (img, pp) = (u / pixel_pairs, u % pixel_pairs);
                    let t0 = 2 * pp;
                    let t1 = (t0 + 1).min(self.tiles.len() - 1);
                    let base = buf.wrapping_add(img * image);
                    let block = Block {
                        a: [
                            base.wrapping_add(self.tiles[t0].a),
                            base.wrapping_add(self.tiles[t1].a),
                        ],
                        a_stride: self.a_stride,
                        offsets: self.offsets.as_ptr(),
                        steps,
                        b: w.wrapping_add(j * pair_bytes),
                        c: c.0.as_mut_ptr(),
                    };
                    // SAFETY: configured above; every row read lies in the
                    // converted maps or their slack (`pack`); steps >= 1.
                    unsafe { (amx.block)(&block) };
                    for half in 0..2 {
                        let ob = 2 * j + half;
                        if ob >= o_blocks {
                            continue;
                        }
                        let plane = (img * o_blocks + ob) * out_plane;
                        let count = if t1 > t0 { 2 } else { 1 };
                        for (i, &tile) in [t0, t1][..count].iter().enumerate() {
                            let rows = StoreRows {
                                c: c.0.as_ptr().wrapping_add((2 * i + half) * 256),
                                pixels: &self.tiles[tile].pixels,
                                bias: if bias.is_null() {
                                    bias
                                } else {
                                    bias.wrapping_add(ob * BLOCK)
                                },
                                res: if res.is_null() {
                                    res
                                } else {
                                    res.wrapping_add(plane)
                                },
                                out: out.wrapping_add(plane),
                                relu: self.relu,
                            };
                            // SAFETY: the tile's pixels are inside block ob's
                            // plane of this image; this task's alone.
                            unsafe { (amx.store)(&rows) };
                        }
                    }
                }
            }
            // SAFETY: as configure.
            unsafe { (amx.release)() };
        });
    }

    /// The `n` blocked maps at `x` into `buf` as [`Layout`] says, on `team`.
    ///
    /// # Safety
    /// `x` holds `n` input maps; `buf` has room for `n` converted ones.
    unsafe fn convert(&self, n: usize, x: *const f32, buf: *mut u16, team: &Team) {
        let (g, l) = (&self.g, &self.layout);
        let rows = n * l.blocks * l.h;
        let tasks = rows.min(4 * team.size());
        let in_blocks = g.c / BLOCK;
        let in_plane = g.h * g.w * BLOCK;
        // SAFETY: the tasks read x and each writes its own rows of buf.
        let io = unsafe { (TaskPtr::reading(x), TaskPtr::new(buf)) };
        let convert = self.amx.convert;
        team.run(tasks, &|t| {
            let (x, buf) = (io.0.get() as *const f32, io.1.get());
            for r in rows * t / tasks..rows * (t + 1) / tasks {
                let (plane, y) = (r / l.h, r % l.h);
                let (img, b) = (plane / l.blocks, plane % l.blocks);
                let dst = buf.wrapping_add(r * l.w * CHANNELS);
                let sy = (y * l.sub) as isize - l.pad as isize;
                if sy < 0 || sy >= g.h as isize {
                    // SAFETY: row r of buf (this task's).
                    unsafe { dst.write_bytes(0, l.w * CHANNELS) };
                    continue;
                }
                let px = if l.sub > 1 { l.w } else { g.w };
                let lo_block = img * in_blocks + 2 * b;
                let lo = x.wrapping_add(lo_block * in_plane + sy as usize * g.w * BLOCK);
                let row = ConvertRow {
                    lo,
                    hi: if 2 * b + 1 < in_blocks {
                        lo.wrapping_add(in_plane)
                    } else {
                        std::ptr::null()
                    },
                    step: l.sub * BLOCK,
                    n: px,
                    dst: dst.wrapping_add(l.pad * CHANNELS),
                };
                // SAFETY: the row's pixels are inside input row sy of blocks
                // 2b (and 2b + 1) of image img, and its padding and pixels
                // inside row r of buf; the set runs here (AMX implies it).
                unsafe {
                    dst.write_bytes(0, l.pad * CHANNELS);
                    convert(&row);
                    dst.add((l.pad + px) * CHANNELS)
                        .write_bytes(0, (l.w - l.pad - px) * CHANNELS);
                }
            }
        });
    }
}

/// A 2 x 2 block's sums, on one thread's stack.
#[repr(C, align(64))]
struct Sums([f32; 1024]);

/// The tiles of 16 output pixels and the bytes between their rows: a
/// stride-1 conv's run on across rows of the padded map, a strided one's
/// along each output row.
fn pixel_tiles(g: &Geom, l: &Layout, stride: usize) -> (Vec<PixelTile>, usize) {
    let mut tiles = Vec::new();
    if stride == 1 {
        // Output (oy, ox) reads from pixel oy * w + ox of the padded map.
        let virtual_pixels = (g.oh - 1) * l.w + g.ow;
        for q0 in (0..virtual_pixels).step_by(16) {
            let mut pixels = [-1; 16];
            for (i, p) in pixels.iter_mut().enumerate() {
                let (oy, ox) = ((q0 + i) / l.w, (q0 + i) % l.w);
                if oy < g.oh && ox < g.ow {
                    *p = (oy * g.ow + ox) as i32;
                }
            }
            tiles.push(PixelTile {
                a: q0 * ROW,
                pixels,
            });
        }
        (tiles, ROW)
    } else {
        for oy in 0..g.oh {
            for ox0 in (0..g.ow).step_by(16) {
                let mut pixels = [-1; 16];
                for (i, p) in pixels.iter_mut().enumerate() {
                    if ox0 + i < g.ow {
                        *p = (oy * g.ow + ox0 + i) as i32;
                    }
                }
                let a = (oy * stride * l.w + ox0 * stride) * ROW;
                tiles.push(PixelTile { a, pixels });
            }
        }
        (tiles, stride * ROW)
    }
}
