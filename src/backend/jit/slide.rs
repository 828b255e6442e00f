//! Stride-1 3x3 convs with one or two blocks of 16 output channels
//! (CIFAR's 16- and 32-channel layers), a row of output pixels at a time,
//! each input value broadcast once for the three column taps it feeds.
//!
//! The blocked tiles broadcast an input value once per output block: with
//! one block that is a broadcast per FMA, and Zen 5 runs those at 58-69%
//! of its FMA peak (a register loop, 12-24 accumulators). Sliding along
//! the row, a broadcast feeds three FMAs (taps kx = 0, 1, 2 of three
//! neighbouring outputs): 86-97% in the same loop.

use super::blocked::{Geom, BLOCK};
use super::kernels::epilogue::{self, Lanes};
use super::kernels::Kernels;
use super::team::{TaskPtr, Team};
use super::winograd;

/// The widest row piece a kernel set's slide tiles take, for one block
/// of outputs and for two (`2 x 12` accumulators, 6 weights and the
/// broadcast fill the 32 registers).
pub const MAX_WIDTH: [usize; 2] = [16, 12];
const _: () = assert!(MAX_WIDTH[0] + 2 <= 18, "`row` unrolls 18 columns");

/// A slide tile: one row piece of `W` pixels by `B` output blocks.
pub type SlideTile = unsafe fn(&SlideRow);

/// A set's slide tiles: `one[w - 1]` computes `w` pixels of one output
/// block, `two[w - 1]` of two.
pub struct SlideTiles {
    pub one: [SlideTile; MAX_WIDTH[0]],
    pub two: [SlideTile; MAX_WIDTH[1]],
}

/// Whether a conv of geometry `g` runs here: one Winograd could take
/// (3x3, stride 1, blocked, `pad <= 2`), undilated, with 16 or 32 output
/// channels.
pub fn takes(g: &Geom) -> bool {
    winograd::eligible(g) && g.dilation <= 1 && (g.o == BLOCK || g.o == 2 * BLOCK)
}

/// The slide tiles of kernel set `kernels` for a conv of geometry `g`,
/// where it has them and they take `g` (f32 only: the caller checks).
pub fn tiles_for(kernels: &Kernels, g: &Geom) -> Option<&'static SlideTiles> {
    kernels.blocked.slide.filter(|_| takes(g))
}

/// Floats of packed weights: `[ky][c][output block][kx][16]`.
pub fn weight_len(g: &Geom) -> usize {
    9 * g.c * g.o
}

/// `w` pixels of one output row from column `x0 + pad` on, every output
/// block: input rows `y .. y + 3` and columns `x0 .. x0 + w + 2` (zero
/// outside the map).
pub struct SlideRow {
    /// The image's input map, `[c/16][h][w][16]`.
    pub x: *const f32,
    pub blocks: usize,
    pub h: usize,
    pub w: usize,
    pub y: isize,
    pub x0: isize,
    /// `[ky][c][output block][kx][16]`.
    pub weights: *const f32,
    /// Null or 16 floats an output block.
    pub bias: *const f32,
    /// Null or laid out as `out` (it may be `out`).
    pub res: *const f32,
    /// The first output pixel's 16 channels of the first block; the next
    /// pixel 16 floats on, the next block `out_plane` floats on.
    pub out: *mut f32,
    pub out_plane: usize,
    pub relu: bool,
}

/// The row piece, `W` pixels by `B` output blocks, with `L::N == 16`.
///
/// # Safety
/// The row's pointers hold what [`SlideRow`] says; the CPU has `L`'s features.
#[inline(always)]
pub unsafe fn row<L: Lanes, const B: usize, const W: usize>(r: &SlideRow) {
    debug_assert_eq!(L::N, BLOCK);
    let c = r.blocks * BLOCK;
    // Columns of the piece inside the map: i in lo..hi reads x0 + i.
    let lo = (-r.x0).max(0) as usize;
    let hi = (r.w as isize - r.x0).clamp(0, (W + 2) as isize) as usize;
    // SAFETY: reads stay inside the map (rows and columns checked) and
    // the weights; writes go to the piece's W output pixels of B blocks.
    unsafe {
        let mut acc = [[L::splat(0.0); W]; B];
        for ky in 0..3 {
            let yi = r.y + ky as isize;
            if yi < 0 || yi >= r.h as isize {
                continue;
            }
            for b in 0..r.blocks {
                let line =
                    r.x.add((b * r.h + yi as usize) * r.w * BLOCK)
                        .offset(r.x0 * BLOCK as isize);
                for l in 0..BLOCK {
                    let wp = r.weights.add((ky * c + b * BLOCK + l) * B * 3 * BLOCK);
                    let wv: [[L; 3]; B] = std::array::from_fn(|o| {
                        std::array::from_fn(|kx| L::load(wp.add((o * 3 + kx) * BLOCK)))
                    });
                    // Unrolled by hand (W + 2 <= 18 columns), so that the
                    // accumulators' indices are constants and they stay in
                    // registers; `for` left them on the stack.
                    macro_rules! column {
                        ($($i:literal)*) => {$(
                            if $i < W + 2 && $i >= lo && $i < hi {
                                let v = *line.add($i * BLOCK + l);
                                for o in 0..B {
                                    if $i < W {
                                        acc[o][$i] = wv[o][0].mul_add(v, acc[o][$i]);
                                    }
                                    if $i >= 1 && $i < W + 1 {
                                        let j = ($i as usize).wrapping_sub(1);
                                        acc[o][j] = wv[o][1].mul_add(v, acc[o][j]);
                                    }
                                    if $i >= 2 {
                                        let j = ($i as usize).wrapping_sub(2);
                                        acc[o][j] = wv[o][2].mul_add(v, acc[o][j]);
                                    }
                                }
                            }
                        )*};
                    }
                    column!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17);
                }
            }
        }
        for (o, acc) in acc.iter().enumerate() {
            let bias = if r.bias.is_null() {
                L::splat(0.0)
            } else {
                L::load(r.bias.add(o * BLOCK))
            };
            for (j, &v) in acc.iter().enumerate() {
                let p = o * r.out_plane + j * BLOCK;
                let res = (!r.res.is_null()).then(|| L::load(r.res.add(p)));
                epilogue::apply(v, bias, res, r.relu).store(r.out.add(p));
            }
        }
    }
}

/// A conv packed for the slide tiles: where its weights are in the store.
pub struct Plan {
    g: Geom,
    /// (offset, floats) in the store.
    pub weights: (usize, usize),
    bias: Option<Vec<f32>>,
    relu: bool,
    tiles: &'static SlideTiles,
}

impl Plan {
    /// Pack `weight` (`o x c x 3 x 3`) as `[ky][c][output block][kx][16]`
    /// into `store`.
    /// `None` if `g` is not [`takes`], the weights are short, or the region
    /// has no room.
    pub fn pack(
        g: Geom,
        weight: &[f32],
        (bias, relu): (Option<Vec<f32>>, bool),
        tiles: &'static SlideTiles,
        store: &mut super::blocked::Region,
    ) -> Option<Plan> {
        if !takes(&g) || weight.len() != weight_len(&g) {
            return None;
        }
        let (offset, dst) = store.take(weight_len(&g))?;
        let blocks = g.o / BLOCK;
        for ky in 0..3 {
            for ci in 0..g.c {
                for ob in 0..blocks {
                    for kx in 0..3 {
                        let at = (((ky * g.c + ci) * blocks + ob) * 3 + kx) * BLOCK;
                        for (l, v) in dst[at..][..BLOCK].iter_mut().enumerate() {
                            *v = weight[((ob * BLOCK + l) * g.c + ci) * 9 + ky * 3 + kx];
                        }
                    }
                }
            }
        }
        Some(Plan {
            g,
            weights: (offset, weight_len(&g)),
            bias,
            relu,
            tiles,
        })
    }

    /// `out = relu?(conv(x) + bias + res)` for `n` images, `weights` the
    /// packed ones, on `team`.
    ///
    /// # Safety
    /// `x` holds `n` blocked input maps, `out` (and `res`, unless null) `n`
    /// output maps; `res` may be `out`. `weights` is what [`Plan::pack`] wrote.
    pub unsafe fn run(
        &self,
        weights: &[f32],
        n: usize,
        x: *const f32,
        res: *const f32,
        out: *mut f32,
        team: &Team,
    ) {
        let g = &self.g;
        let rows = n * g.oh;
        let tasks = rows.min(4 * team.size());
        let two = g.o == 2 * BLOCK;
        let pieces = g.ow.div_ceil(MAX_WIDTH[usize::from(two)]);
        let bias = self
            .bias
            .as_deref()
            .map_or(std::ptr::null(), |b| b.as_ptr());
        // SAFETY: tasks read x, res and the weights and write disjoint rows
        // (res may be out: each pixel is read, then written, by one task).
        let (xp, rp, op, bp, wp) = unsafe {
            (
                TaskPtr::reading(x),
                TaskPtr::reading(res),
                TaskPtr::new(out),
                TaskPtr::reading(bias),
                TaskPtr::reading(weights.as_ptr()),
            )
        };
        team.run(tasks, &|k| {
            for r in rows * k / tasks..rows * (k + 1) / tasks {
                let (img, oy) = (r / g.oh, r % g.oh);
                let at = img * g.o * g.oh * g.ow + oy * g.ow * BLOCK;
                for p in 0..pieces {
                    let (a, b) = (g.ow * p / pieces, g.ow * (p + 1) / pieces);
                    let o = at + a * BLOCK;
                    let row = SlideRow {
                        x: xp.get().wrapping_add(img * g.c * g.h * g.w),
                        blocks: g.c / BLOCK,
                        h: g.h,
                        w: g.w,
                        y: oy as isize - g.pad as isize,
                        x0: a as isize - g.pad as isize,
                        weights: wp.get(),
                        bias: bp.get(),
                        res: if rp.get().is_null() {
                            std::ptr::null()
                        } else {
                            rp.get().wrapping_add(o)
                        },
                        out: op.get().wrapping_add(o),
                        out_plane: g.oh * g.ow * BLOCK,
                        relu: self.relu,
                    };
                    let tile = if two {
                        self.tiles.two[b - a - 1]
                    } else {
                        self.tiles.one[b - a - 1]
                    };
                    // SAFETY: the piece's b - a pixels (1..=MAX_WIDTH) of this row.
                    unsafe { tile(&row) };
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::jit::blocked::tests::naive;
    use crate::backend::jit::blocked::{from_blocked, to_blocked, Store};
    use crate::backend::jit::kernels;

    fn geom(c: usize, hw: (usize, usize), pad: usize) -> Geom {
        crate::backend::jit::winograd::tests::geom(c, hw, BLOCK, pad)
    }

    fn data(len: usize, m: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * m + 7) % 23) as f32 / 11.5 - 1.0)
            .collect()
    }

    #[test]
    fn agrees_with_the_definition() {
        let Some(tiles) = kernels::best().blocked.slide else {
            eprintln!("skipped: this machine's kernel set has no slide tiles (AVX-512)");
            return;
        };
        let team = Team::new(2).expect("threads");
        // Widths below, at and past one piece; pad 0, 1 and 2.
        for (c, hw, o, pad) in [
            (16, (32, 32), 16, 1),
            (32, (5, 7), 16, 1),
            (16, (3, 17), 16, 0),
            (48, (6, 40), 16, 2),
            (16, (1, 1), 16, 1),
            (32, (16, 16), 32, 1),
            (16, (4, 13), 32, 1),
            (32, (3, 25), 32, 2),
        ] {
            let g = crate::backend::jit::winograd::tests::geom(c, hw, o, pad);
            let x = data(c * g.h * g.w, 5);
            let w = data(weight_len(&g), 3);
            let bias = data(o, 7);
            let res = data(o * g.oh * g.ow, 11);
            let mut store = Store::sized(weight_len(&g)).expect("store");
            let mut region = store.rest();
            let plan =
                Plan::pack(g, &w, (Some(bias.clone()), true), tiles, &mut region).expect("packs");
            let xb = to_blocked(&x, c, g.h * g.w);
            let mut out = to_blocked(&res, o, g.oh * g.ow);
            let (off, len) = plan.weights;
            let wts = store.slice(off, len).to_vec();
            // SAFETY: maps sized for g; res is out, as a fused residual is.
            unsafe { plan.run(&wts, 1, xb.as_ptr(), out.as_ptr(), out.as_mut_ptr(), &team) };
            let got = from_blocked(&out, o, g.oh * g.ow);
            let want = naive(&g, 1, &x, &w, &bias, &res, true);
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "c {c}, {hw:?}, o {o}, pad {pad}: value {i}: {a} against {b}"
                );
            }
        }
    }

    #[test]
    fn only_one_or_two_blocks_of_outputs_at_stride_one() {
        let g = geom(16, (8, 8), 1);
        assert!(takes(&g));
        assert!(takes(&Geom { o: 32, ..g }));
        assert!(!takes(&Geom { o: 48, ..g }));
        assert!(!takes(&Geom {
            stride: 2,
            oh: 4,
            ow: 4,
            ..g
        }));
        assert!(!takes(&Geom { c: 8, ..g }));
        assert!(!takes(&Geom { dilation: 2, ..g }));
    }
}
