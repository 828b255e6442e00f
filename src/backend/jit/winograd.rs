//! Winograd F(4x4, 3x3) and F(2x2, 3x3) for stride-1 3x3 convs on
//! channel-blocked maps (Lavin & Gray, "Fast Algorithms for Convolutional
//! Neural Networks", 2016): F(4x4) takes 36 multiplications for 16 outputs
//! where direct convolution takes 144, at the price of transforms and 4x the
//! weights; F(2x2) takes 16 for 4 (of 36), with 16/9 the weights.
//!
//! Three phases, each split over the team:
//! 1. the input transform: each input tile (`m + 2` square, stride `m`,
//!    zero outside the map) becomes `(m + 2)^2` vectors `B^T d B`, one per
//!    Winograd element `e`, stored as blocked "maps" whose pixels are the
//!    tiles of every image;
//! 2. a GEMM per element: `M_e = U_e V_e`, run by the kernel set's blocked
//!    tile as a 1x1 conv over the tiles (the weights `U = G g G^T` were
//!    transformed at compile time);
//! 3. the output transform `A^T m A` of each tile, with the fused epilogue
//!    (bias, residual, ReLU) as it is stored.
//!
//! This is the frame; the transforms are written once over [`Lanes`] and
//! stamped into each kernel set, as the epilogue is.

use std::sync::Arc;

use super::blocked::{self, Geom, Input, Region, Store, Tap, TileArgs, BLOCK};
use super::kernels::epilogue::{self, Lanes};
use super::kernels::{BlockedTile, Kernels};
use super::team::{TaskPtr, Team};

/// The output tile: F(m x m, 3x3) for m = 2 or 4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tile {
    /// F(2x2, 3x3): 4x4 input tiles, 16 elements.
    F2,
    /// F(4x4, 3x3): 6x6 input tiles, 36 elements.
    F4,
}

impl Tile {
    /// Output pixels a tile side.
    pub const fn out(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Input pixels a tile side.
    pub const fn inp(self) -> usize {
        self.out() + 2
    }

    /// Winograd elements per tile.
    pub const fn elements(self) -> usize {
        self.inp() * self.inp()
    }
}

/// `G x` for one column of 3 (16 lanes): the weight transform `U = G g G^T`
/// with `G` (6x3) = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
/// 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1].
fn g_col4(x: [[f32; BLOCK]; 3]) -> [[f32; BLOCK]; 6] {
    let mut out = [[0.0f32; BLOCK]; 6];
    for l in 0..BLOCK {
        let (a, b, c) = (x[0][l], x[1][l], x[2][l]);
        // Reciprocals, not divisions: a quarter of Winograd's packing
        // time, for at most an ulp.
        let (s, t, u) = (a + c, a * (1.0 / 24.0) + c * (1.0 / 6.0), b * (1.0 / 12.0));
        out[0][l] = a * 0.25;
        out[1][l] = (s + b) * (-1.0 / 6.0);
        out[2][l] = (s - b) * (-1.0 / 6.0);
        out[3][l] = t + u;
        out[4][l] = t - u;
        out[5][l] = c;
    }
    out
}

/// As [`g_col4`] for F(2x2, 3x3): `G` (4x3) = [1 0 0; 1/2 1/2 1/2;
/// 1/2 -1/2 1/2; 0 0 1].
fn g_col2(x: [[f32; BLOCK]; 3]) -> [[f32; BLOCK]; 4] {
    let mut out = [[0.0f32; BLOCK]; 4];
    for l in 0..BLOCK {
        let (a, b, c) = (x[0][l], x[1][l], x[2][l]);
        out[0][l] = a;
        out[1][l] = (a + b + c) * 0.5;
        out[2][l] = (a - b + c) * 0.5;
        out[3][l] = c;
    }
    out
}

/// Whether a conv of geometry `g` can run as Winograd (either tile). A
/// dilated one (`d` apart taps) is `d x d` stride-1 convs, one on each
/// phase of the map (the pixels `d` apart): its tiles read and write
/// pixels `d` apart.
pub fn eligible(g: &Geom) -> bool {
    let d = g.dilation.max(1);
    g.kernel == 3
        && g.stride == 1
        && g.groups <= 1
        && g.pad <= 2 * d
        && g.input == Input::Blocked
        && g.c.is_multiple_of(BLOCK)
        && g.o.is_multiple_of(BLOCK)
        && g.oh + 2 * d == g.h + 2 * g.pad
        && g.ow + 2 * d == g.w + 2 * g.pad
        && g.oh > 0
        && g.ow > 0
}

/// The dilation `d`, and the tile rows and columns of each of the `d x d`
/// phases (the widest phase's: a narrower one's last tiles fall partly
/// outside the map, as a map's last tiles may).
fn grid(g: &Geom, tile: Tile) -> (usize, usize, usize) {
    let d = g.dilation.max(1);
    let m = tile.out();
    (
        d,
        g.oh.div_ceil(d).div_ceil(m),
        g.ow.div_ceil(d).div_ceil(m),
    )
}

/// Tiles of `n` images of geometry `g`.
pub fn tiles(g: &Geom, n: usize, tile: Tile) -> usize {
    let (d, th, tw) = grid(g, tile);
    n * d * d * th * tw
}

/// Floats of scratch a run over `n` images needs: the transformed input
/// and the GEMMs' output, an element per tile and channel each.
pub fn scratch_len(g: &Geom, n: usize, tile: Tile) -> usize {
    let (v, m) = planes(g, n, tile);
    tile.elements() * (v + m)
}

/// Floats between one Winograd element's part of V (`c` channels of every
/// tile) and the next's, and of M (`o` channels): a line more than they
/// hold, so that the 16 or 36 elements of a tile, stored or loaded
/// together, fall in different L1 sets (a power of two apart, a batch's
/// V and M put them all in one).
fn planes(g: &Geom, n: usize, tile: Tile) -> (usize, usize) {
    let t = tiles(g, n, tile);
    (g.c * t + BLOCK, g.o * t + BLOCK)
}

/// Floats of transformed weights.
pub fn weight_len(g: &Geom, tile: Tile) -> usize {
    tile.elements() * g.c * g.o
}

/// A row of tiles for the input transform: tile `tx` reads the
/// `inp x inp` pixels `dil` apart from (`y0`, `x0 + out tx dil`) of one
/// block's map (`h x w x 16`), zero outside it, and writes element `e` of
/// its 16 channels at `dst + e * e_stride + 16 tx`.
pub struct InputRow {
    pub tile: Tile,
    pub x: *const f32,
    pub h: usize,
    pub w: usize,
    pub y0: isize,
    pub x0: isize,
    pub dil: usize,
    pub tiles: usize,
    pub dst: *mut f32,
    pub e_stride: usize,
}

/// A row of tiles for the output transform: tile `tx` reads element `e` at
/// `m + e * e_stride + 16 tx` and writes `relu?(A^T m A + bias + res)` to the
/// pixels `dil` apart from (`y0`, `x0 + out tx dil`) of one block's output
/// map (`h x w x 16`) that lie inside it. `res` is null or laid out as
/// `out` (it may be `out`).
pub struct OutputRow {
    pub tile: Tile,
    pub m: *const f32,
    pub e_stride: usize,
    pub bias: *const f32,
    pub res: *const f32,
    pub out: *mut f32,
    pub relu: bool,
    pub h: usize,
    pub w: usize,
    pub y0: usize,
    pub x0: usize,
    pub dil: usize,
    pub tiles: usize,
}

/// One tile size's `B^T` and `A^T` over one axis, `I` inputs and `O`
/// outputs a side.
trait Transform<const I: usize, const O: usize> {
    /// # Safety
    /// The CPU has `L`'s features.
    unsafe fn bt<L: Lanes>(d: [L; I]) -> [L; I];
    /// # Safety
    /// The CPU has `L`'s features.
    unsafe fn at<L: Lanes>(m: [L; I]) -> [L; O];
}

struct F4;

impl Transform<6, 4> for F4 {
    #[inline(always)]
    unsafe fn bt<L: Lanes>(d: [L; 6]) -> [L; 6] {
        // SAFETY: lane arithmetic; the features are the caller's.
        unsafe {
            let [d0, d1, d2, d3, d4, d5] = d;
            [
                d2.mul_add(-5.0, d0.mul_add(4.0, d4)),
                d1.add(d2).mul_add(-4.0, d3.add(d4)),
                d1.sub(d2).mul_add(4.0, d4.sub(d3)),
                d1.sub(d3).mul_add(-2.0, d4.sub(d2)),
                d1.sub(d3).mul_add(2.0, d4.sub(d2)),
                d3.mul_add(-5.0, d1.mul_add(4.0, d5)),
            ]
        }
    }

    #[inline(always)]
    unsafe fn at<L: Lanes>(m: [L; 6]) -> [L; 4] {
        // SAFETY: lane arithmetic; the features are the caller's.
        unsafe {
            let [m0, m1, m2, m3, m4, m5] = m;
            let (s12, d12, s34, d34) = (m1.add(m2), m1.sub(m2), m3.add(m4), m3.sub(m4));
            [
                m0.add(s12).add(s34),
                d34.mul_add(2.0, d12),
                s34.mul_add(4.0, s12),
                d34.mul_add(8.0, d12).add(m5),
            ]
        }
    }
}

struct F2;

impl Transform<4, 2> for F2 {
    /// `B^T` = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
    #[inline(always)]
    unsafe fn bt<L: Lanes>(d: [L; 4]) -> [L; 4] {
        // SAFETY: lane arithmetic; the features are the caller's.
        unsafe {
            let [d0, d1, d2, d3] = d;
            [d0.sub(d2), d1.add(d2), d2.sub(d1), d1.sub(d3)]
        }
    }

    /// `A^T` = [1 1 1 0; 0 1 -1 -1].
    #[inline(always)]
    unsafe fn at<L: Lanes>(m: [L; 4]) -> [L; 2] {
        // SAFETY: lane arithmetic; the features are the caller's.
        unsafe {
            let [m0, m1, m2, m3] = m;
            [m0.add(m1).add(m2), m1.sub(m2).sub(m3)]
        }
    }
}

/// The input transform of a row of tiles, `L::N` channels at a time.
///
/// # Safety
/// The row's pointers hold what [`InputRow`] says; the CPU has `L`'s features.
#[inline(always)]
pub unsafe fn input_row<L: Lanes>(r: &InputRow) {
    // SAFETY: passed on.
    unsafe {
        // Undilated, the pixel steps are constants (5% of a CIFAR
        // ResNet-56 at batch 64 went on multiplying by them).
        match (r.tile, r.dil == 1) {
            (Tile::F2, true) => input::<L, F2, 4, 2, true>(r),
            (Tile::F2, false) => input::<L, F2, 4, 2, false>(r),
            (Tile::F4, true) => input::<L, F4, 6, 4, true>(r),
            (Tile::F4, false) => input::<L, F4, 6, 4, false>(r),
        }
    }
}

/// The output transform and epilogue of a row of tiles, `L::N` channels at
/// a time.
///
/// # Safety
/// The row's pointers hold what [`OutputRow`] says; the CPU has `L`'s features.
#[inline(always)]
pub unsafe fn output_row<L: Lanes>(r: &OutputRow) {
    // SAFETY: passed on.
    unsafe {
        match (r.tile, r.dil == 1) {
            (Tile::F2, true) => output::<L, F2, 4, 2, true>(r),
            (Tile::F2, false) => output::<L, F2, 4, 2, false>(r),
            (Tile::F4, true) => output::<L, F4, 6, 4, true>(r),
            (Tile::F4, false) => output::<L, F4, 6, 4, false>(r),
        }
    }
}

/// [`input_row`] for one tile size.
#[inline(always)]
unsafe fn input<L: Lanes, T: Transform<I, O>, const I: usize, const O: usize, const UNIT: bool>(
    r: &InputRow,
) {
    let dil = if UNIT { 1 } else { r.dil as isize };
    for tx in 0..r.tiles {
        let x0 = r.x0 + (O * tx) as isize * dil;
        for lane in (0..BLOCK).step_by(L::N) {
            // SAFETY: only pixels inside the map are read; the caller's
            // destination holds this tile's elements.
            unsafe {
                let mut d = [[L::splat(0.0); I]; I];
                for (i, row) in d.iter_mut().enumerate() {
                    let y = r.y0 + i as isize * dil;
                    if y < 0 || y >= r.h as isize {
                        continue;
                    }
                    for (j, v) in row.iter_mut().enumerate() {
                        let xx = x0 + j as isize * dil;
                        if xx >= 0 && xx < r.w as isize {
                            let at = (y as usize * r.w + xx as usize) * BLOCK + lane;
                            *v = L::load(r.x.add(at));
                        }
                    }
                }
                // Columns first (B^T d), then rows (.. B).
                let mut t = [[L::splat(0.0); I]; I];
                for j in 0..I {
                    let col = T::bt(std::array::from_fn(|i| d[i][j]));
                    for i in 0..I {
                        t[i][j] = col[i];
                    }
                }
                for (i, row) in t.iter().enumerate() {
                    let v = T::bt(*row);
                    for (j, v) in v.iter().enumerate() {
                        let e = i * I + j;
                        v.store(r.dst.add(e * r.e_stride + tx * BLOCK + lane));
                    }
                }
            }
        }
    }
}

/// [`output_row`] for one tile size.
#[inline(always)]
unsafe fn output<L: Lanes, T: Transform<I, O>, const I: usize, const O: usize, const UNIT: bool>(
    r: &OutputRow,
) {
    let dil = if UNIT { 1 } else { r.dil };
    for tx in 0..r.tiles {
        for lane in (0..BLOCK).step_by(L::N) {
            // SAFETY: the caller's elements are read; only output pixels
            // inside the map are written (and their residuals read first).
            unsafe {
                let mut m = [[L::splat(0.0); I]; I];
                for (i, row) in m.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        let e = i * I + j;
                        *v = L::load(r.m.add(e * r.e_stride + tx * BLOCK + lane));
                    }
                }
                let mut t = [[L::splat(0.0); I]; O];
                for j in 0..I {
                    let col = T::at(std::array::from_fn(|i| m[i][j]));
                    for i in 0..O {
                        t[i][j] = col[i];
                    }
                }
                let bias = if r.bias.is_null() {
                    L::splat(0.0)
                } else {
                    L::load(r.bias.add(lane))
                };
                for (i, row) in t.iter().enumerate() {
                    let y = r.y0 + i * dil;
                    if y >= r.h {
                        break;
                    }
                    let v = T::at(*row);
                    for (j, &v) in v.iter().enumerate() {
                        let xx = r.x0 + (O * tx + j) * dil;
                        if xx >= r.w {
                            break;
                        }
                        let p = (y * r.w + xx) * BLOCK + lane;
                        let res = (!r.res.is_null()).then(|| L::load(r.res.add(p)));
                        epilogue::apply(v, bias, res, r.relu).store(r.out.add(p));
                    }
                }
            }
        }
    }
}

/// A Winograd conv as packed, before it shares the weight store (see
/// [`Packed::bind`]).
pub struct Packed(Conv<()>);

impl Packed {
    /// The conv, reading its weights from `store` (the one it was packed into).
    pub fn bind(self, store: Arc<Store>) -> Conv {
        let c = self.0;
        Conv {
            store,
            g: c.g,
            n: c.n,
            tile: c.tile,
            kernels: c.kernels,
            u: c.u,
            bias: c.bias,
            relu: c.relu,
            taps: c.taps,
            runs: c.runs,
            tile_fns: c.tile_fns,
        }
    }
}

/// A Winograd conv, its weights transformed, for `n` images. `S` holds the
/// weight store, as for the direct conv.
pub struct Conv<S = Arc<Store>> {
    store: S,
    g: Geom,
    n: usize,
    tile: Tile,
    kernels: &'static Kernels,
    /// Where `U` is in the store (offset, floats), as `[e][output block][c][16]`:
    /// each GEMM's weights in the order the blocked tile reads them.
    u: (usize, usize),
    bias: Option<Vec<f32>>,
    relu: bool,
    /// One tap per input channel: where it is in a transformed block map.
    taps: Vec<Tap>,
    /// The taps come in runs of 16 ([`blocked::in_runs`]).
    runs: bool,
    /// The set's one-block tiles by width (1 up to its widest), input
    /// pixels (tiles) 16 floats apart.
    tile_fns: Vec<BlockedTile>,
}

impl Conv {
    /// Transform `weight` (`o x c x 3 x 3`, row-major) for `g`, `n` images
    /// and `tile`, into `store` ([`weight_len`] floats); the epilogue adds
    /// `bias` and applies ReLU if `relu`. `None` if `g` is not
    /// [`eligible`], the weights are not `o x c x 3 x 3` or the region is
    /// too small.
    #[allow(clippy::too_many_arguments)]
    pub fn pack(
        g: Geom,
        n: usize,
        tile: Tile,
        weight: &[f32],
        bias: Option<Vec<f32>>,
        relu: bool,
        kernels: &'static Kernels,
        store: &mut Region,
    ) -> Option<Packed> {
        if !eligible(&g) || weight.len() != g.o * g.c * 9 {
            return None;
        }
        let (offset, u) = store.take(weight_len(&g, tile))?;
        match tile {
            Tile::F2 => transform_weights(&g, weight, u, g_col2),
            Tile::F4 => transform_weights(&g, weight, u, g_col4),
        }
        let t = tiles(&g, n, tile);
        let taps: Vec<Tap> = (0..g.c)
            .map(|c| Tap {
                x: ((c / BLOCK) * t * BLOCK + c % BLOCK) as i32,
                k: c as u32,
            })
            .collect();
        let tile_fns = (1..=(kernels.blocked.max_width)(1))
            .map(|wd| (kernels.blocked.tile)(1, wd, BLOCK))
            .collect();
        Some(Packed(Conv {
            store: (),
            g,
            n,
            tile,
            kernels,
            u: (offset, weight_len(&g, tile)),
            bias,
            relu,
            runs: blocked::in_runs(&taps),
            taps,
            tile_fns,
        }))
    }

    /// `out = relu?(conv(x) + bias + res)` for the conv's images, on `team`.
    ///
    /// # Safety
    /// `x` holds the input maps, `out` (and `res`, unless null) the output
    /// maps, blocked; `res` may be `out`. `scratch` holds
    /// [`scratch_len`] floats that nothing else uses meanwhile.
    pub unsafe fn run(
        &self,
        x: *const f32,
        res: *const f32,
        out: *mut f32,
        scratch: *mut f32,
        team: &Team,
    ) {
        let (g, tile) = (&self.g, self.tile);
        // Each image's tiles: phase by phase (py, px), then row by row.
        let (d, th, tw) = grid(g, tile);
        let (phases, side) = (d * d, tile.out());
        let t = tiles(g, self.n, tile);
        let (cb, ob) = (g.c / BLOCK, g.o / BLOCK);
        let w = &self.kernels.winograd;
        let (ve, me) = planes(g, self.n, tile);
        // SAFETY: the scratch's first part is V, the rest M (scratch_len).
        let (v, m) = unsafe { (scratch, scratch.add(tile.elements() * ve)) };
        let chunks = |rows: usize| rows.min(8 * team.size());

        // 1. V[e][cb][tile][16]: tasks own disjoint (image, block, tile row)s.
        // SAFETY: tasks read x and write disjoint parts of V.
        let (xp, vp) = unsafe { (TaskPtr::reading(x), TaskPtr::new(v)) };
        let rows = self.n * cb * phases * th;
        let tasks = chunks(rows);
        team.run(tasks, &|k| {
            for r in rows * k / tasks..rows * (k + 1) / tasks {
                let (img, rest) = (r / (cb * phases * th), r % (cb * phases * th));
                let (b, rest) = (rest / (phases * th), rest % (phases * th));
                let (ph, ty) = (rest / th, rest % th);
                let tile0 = ((img * phases + ph) * th + ty) * tw;
                let row = InputRow {
                    tile,
                    x: xp.get().wrapping_add(((img * cb + b) * g.h * g.w) * BLOCK),
                    h: g.h,
                    w: g.w,
                    y0: (ph / d + side * ty * d) as isize - g.pad as isize,
                    x0: (ph % d) as isize - g.pad as isize,
                    dil: d,
                    tiles: tw,
                    dst: vp.get().wrapping_add((b * t + tile0) * BLOCK),
                    e_stride: ve,
                };
                // SAFETY: the row reads its image's block and writes its own tiles.
                unsafe { (w.input)(&row) };
            }
        });

        // 2. M[e][ob][tile][16] = U_e V_e: a task per (element, output block).
        // SAFETY: tasks read V and U and write disjoint parts of M.
        let (vp, mp) = unsafe { (TaskPtr::reading(v), TaskPtr::new(m)) };
        let width = self.tile_fns.len();
        let u = self.store.slice(self.u.0, self.u.1);
        team.run(tile.elements() * ob, &|k| {
            let (e, o) = (k / ob, k % ob);
            let wts = u[(k * g.c) * BLOCK..].as_ptr();
            let x = vp.get().wrapping_add(e * ve);
            let dst = mp.get().wrapping_add(e * me + o * t * BLOCK);
            let mut t0 = 0;
            while t0 < t {
                let wd = (t - t0).min(width);
                let args = TileArgs {
                    taps: &self.taps,
                    x: x.wrapping_add(t0 * BLOCK),
                    x_step: BLOCK,
                    w: wts,
                    w_step: BLOCK,
                    blocks: 1,
                    bias: std::ptr::null(),
                    res: std::ptr::null(),
                    out: dst.wrapping_add(t0 * BLOCK),
                    out_plane: t * BLOCK,
                    out_step: BLOCK,
                    relu: false,
                    partial: std::ptr::null_mut(),
                    partial_plane: 0,
                    first: true,
                    last: true,
                    prefetch: std::ptr::null(),
                    prefetch_lines: 0,
                    runs: self.runs,
                };
                // SAFETY: wd tiles of V_e from t0 on, U_e's block `o` (c x 16),
                // and wd tiles of M to write.
                unsafe { self.tile_fns[wd - 1](&args) };
                t0 += wd;
            }
        });

        // 3. The output: tasks own disjoint (image, block, tile row)s.
        // SAFETY: tasks read M (and res) and write disjoint output rows.
        let (mp, rp, op) = unsafe {
            (
                TaskPtr::reading(m),
                TaskPtr::reading(res),
                TaskPtr::new(out),
            )
        };
        let bias = self.bias.as_deref();
        let rows = self.n * ob * phases * th;
        let tasks = chunks(rows);
        team.run(tasks, &|k| {
            for r in rows * k / tasks..rows * (k + 1) / tasks {
                let (img, rest) = (r / (ob * phases * th), r % (ob * phases * th));
                let (b, rest) = (rest / (phases * th), rest % (phases * th));
                let (ph, ty) = (rest / th, rest % th);
                let tile0 = ((img * phases + ph) * th + ty) * tw;
                let map = ((img * ob + b) * g.oh * g.ow) * BLOCK;
                let row = OutputRow {
                    tile,
                    m: mp.get().wrapping_add((b * t + tile0) * BLOCK),
                    e_stride: me,
                    bias: bias.map_or(std::ptr::null(), |v| v[b * BLOCK..].as_ptr()),
                    res: if rp.get().is_null() {
                        std::ptr::null()
                    } else {
                        rp.get().wrapping_add(map)
                    },
                    out: op.get().wrapping_add(map),
                    relu: self.relu,
                    h: g.oh,
                    w: g.ow,
                    y0: ph / d + side * ty * d,
                    x0: ph % d,
                    dil: d,
                    tiles: tw,
                };
                // SAFETY: the row reads its tiles of M and writes its own pixels.
                unsafe { (w.output)(&row) };
            }
        });
    }
}

/// `U = G g G^T` into `u` as `[e][output block][c][16]`, 16 output
/// channels at a time, as lanes: `G g G^T` is separable, and `G`'s rows
/// share terms (see `g_col4`).
fn transform_weights<const I: usize>(
    g: &Geom,
    weight: &[f32],
    u: &mut [f32],
    g_col: fn([[f32; BLOCK]; 3]) -> [[f32; BLOCK]; I],
) {
    let blocks = g.o / BLOCK;
    for ob in 0..blocks {
        for c in 0..g.c {
            let mut w = [[[0.0f32; BLOCK]; 3]; 3];
            for (l, o) in (ob * BLOCK..(ob + 1) * BLOCK).enumerate() {
                for (k, &v) in weight[(o * g.c + c) * 9..][..9].iter().enumerate() {
                    w[k / 3][k % 3][l] = v;
                }
            }
            // Columns: G g (I x 3), then rows: (G g) G^T (I x I).
            let cols = [0, 1, 2].map(|j| g_col([w[0][j], w[1][j], w[2][j]]));
            for (i, ((c0, c1), c2)) in cols[0].iter().zip(&cols[1]).zip(&cols[2]).enumerate() {
                let row = g_col([*c0, *c1, *c2]);
                for (j, v) in row.iter().enumerate() {
                    let e = i * I + j;
                    blocked::stream_line(
                        &mut u[((e * blocks + ob) * g.c + c) * BLOCK..][..BLOCK],
                        v,
                    );
                }
            }
        }
    }
    blocked::stream_fence();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::jit::blocked::{from_blocked, to_blocked};
    use crate::backend::jit::kernels;

    /// A stride-1 3x3 conv on blocked maps.
    pub(crate) fn geom(c: usize, (h, w): (usize, usize), o: usize, pad: usize) -> Geom {
        Geom {
            c,
            h,
            w,
            o,
            kernel: 3,
            stride: 1,
            pad,
            dilation: 1,
            groups: 1,
            oh: h + 2 * pad - 2,
            ow: w + 2 * pad - 2,
            input: Input::Blocked,
        }
    }

    /// The conv by its definition, planar, without an epilogue.
    fn exact(g: &Geom, n: usize, x: &[f32], w: &[f32]) -> Vec<f64> {
        let zeros = vec![0.0; n * g.o * g.oh * g.ow];
        crate::backend::jit::blocked::tests::naive(g, n, x, w, &zeros[..g.o], &zeros, false)
            .into_iter()
            .map(f64::from)
            .collect()
    }

    /// Run the Winograd conv of `g` over `n` images on kernel set `ks`
    /// (planar in and out; with bias, residual and ReLU when `epilogue`).
    fn run(
        g: &Geom,
        n: usize,
        tile: Tile,
        ks: &'static Kernels,
        x: &[f32],
        w: &[f32],
        epilogue: Option<(&[f32], &[f32])>,
    ) -> Vec<f32> {
        let team = Team::new(2).expect("threads");
        let bias = epilogue.map(|(b, _)| b.to_vec());
        let mut store = Store::sized(weight_len(g, tile)).expect("memory");
        let conv = Conv::pack(
            *g,
            n,
            tile,
            w,
            bias,
            epilogue.is_some(),
            ks,
            &mut store.rest(),
        )
        .expect("eligible")
        .bind(Arc::new(store));
        let xb = to_blocked(x, g.c, g.h * g.w);
        let plane = g.o * g.oh * g.ow;
        let mut out = vec![f32::NAN; n * plane];
        let res = epilogue.map(|(_, r)| to_blocked(r, g.o, g.oh * g.ow));
        let mut scratch = vec![f32::NAN; scratch_len(g, n, tile)];
        // SAFETY: xb holds n input maps, out (and res) n output maps of g,
        // blocked; the scratch is scratch_len floats, used by nothing else.
        unsafe {
            conv.run(
                xb.as_ptr(),
                res.as_ref().map_or(std::ptr::null(), |r| r.as_ptr()),
                out.as_mut_ptr(),
                scratch.as_mut_ptr(),
                &team,
            )
        };
        from_blocked(&out, g.o, g.oh * g.ow)
    }

    const TILES: [Tile; 2] = [Tile::F2, Tile::F4];

    fn data(len: usize, m: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919) % m) as f32 / m as f32 - 0.5)
            .collect()
    }

    /// Largest error relative to the largest output.
    fn error(got: &[f32], want: &[f64]) -> f64 {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(want)
            .fold(0.0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
        worst / scale.max(1e-30)
    }

    #[test]
    fn agrees_with_the_definition_on_every_set() {
        // Maps smaller than a tile, not a multiple of 4, pads 0 to 2.
        for (c, hw, o, pad, n) in [
            (16, (1, 1), 16, 1, 1),
            (16, (3, 5), 32, 1, 2),
            (32, (7, 7), 16, 1, 1),
            (16, (9, 6), 48, 0, 3),
            (48, (14, 13), 32, 2, 1),
            (16, (4, 8), 16, 1, 2),
        ] {
            let g = geom(c, hw, o, pad);
            assert!(eligible(&g), "{g:?}");
            let x = data(n * c * hw.0 * hw.1, 101);
            let w = data(o * c * 9, 97);
            let want = exact(&g, n, &x, &w);
            for (ks, tile) in kernels::available()
                .iter()
                .flat_map(|k| TILES.map(|t| (k, t)))
            {
                let got = run(&g, n, tile, ks, &x, &w, None);
                let err = error(&got, &want);
                // F(4x4, 3x3)'s own rounding: ~1e-5 of the largest output
                // (error_growth_on_resnet_shapes), ten times direct's.
                assert!(err <= 3e-5, "{g:?} n={n} {tile:?} {}: {err:e}", ks.name);
            }
        }
    }

    /// Dilated convs as `d x d` phases of stride-1 ones: maps whose sides
    /// are and are not multiples of `d` (phases of unequal sizes), pads
    /// that keep the size and one that shrinks it.
    #[test]
    fn dilated_convs_agree_with_the_definition_on_every_set() {
        for (c, (h, w), o, d, pad, n) in [
            (16, (9, 7), 16, 2, 2, 2),
            (32, (28, 28), 16, 2, 2, 1),
            (16, (13, 11), 32, 4, 4, 1),
            (16, (6, 6), 16, 4, 4, 1),
            (16, (12, 10), 16, 3, 2, 1),
        ] {
            let g = Geom {
                dilation: d,
                pad,
                oh: h + 2 * pad - 2 * d,
                ow: w + 2 * pad - 2 * d,
                ..geom(c, (h, w), o, 1)
            };
            assert!(eligible(&g), "{g:?}");
            let x = data(n * c * h * w, 101);
            let wt = data(o * c * 9, 97);
            let want = exact(&g, n, &x, &wt);
            for (ks, tile) in kernels::available()
                .iter()
                .flat_map(|k| TILES.map(|t| (k, t)))
            {
                let err = error(&run(&g, n, tile, ks, &x, &wt, None), &want);
                assert!(err <= 3e-5, "{g:?} n={n} {tile:?} {}: {err:e}", ks.name);
            }
        }
    }

    #[test]
    fn the_epilogue_is_the_shared_one() {
        let (g, n) = (geom(16, (6, 5), 32, 1), 2);
        let x = data(n * 16 * 30, 101);
        let w = data(32 * 16 * 9, 97);
        let bias = data(32, 13);
        let mut res = data(n * 32 * 30, 89);
        // A NaN residual stays NaN through the ReLU, as in PyTorch.
        res[7] = f32::NAN;
        let conv = exact(&g, n, &x, &w);
        for (ks, tile) in kernels::available()
            .iter()
            .flat_map(|k| TILES.map(|t| (k, t)))
        {
            let got = run(&g, n, tile, ks, &x, &w, Some((&bias, &res)));
            for (i, (&y, &c)) in got.iter().zip(&conv).enumerate() {
                let o = i / 30 % 32;
                let want = epilogue::relu(c as f32 + bias[o] + res[i]);
                if i == 7 {
                    assert!(y.is_nan(), "{} {tile:?}: {y}", ks.name);
                } else {
                    assert!(
                        (y - want).abs() <= 1e-5,
                        "{} {tile:?} at {i}: {y} vs {want}",
                        ks.name
                    );
                }
            }
        }
    }

    #[test]
    fn only_stride_one_three_by_three_convs_on_blocked_maps() {
        let g = geom(16, (8, 8), 16, 1);
        assert!(eligible(&g));
        assert!(!eligible(&Geom {
            stride: 2,
            oh: 4,
            ow: 4,
            ..g
        }));
        assert!(!eligible(&Geom {
            input: Input::Planar,
            ..g
        }));
        assert!(!eligible(&Geom { c: 8, ..g }));
        // Dilated: with the pad that keeps the size, and no other.
        assert!(eligible(&Geom {
            dilation: 2,
            pad: 2,
            ..g
        }));
        assert!(!eligible(&Geom {
            dilation: 2,
            pad: 1,
            ..g
        }));
        assert!(!eligible(&Geom {
            kernel: 5,
            oh: 6,
            ow: 6,
            ..g
        }));
        let mut store = Store::sized(weight_len(&g, Tile::F4)).expect("memory");
        let ks = kernels::best();
        let pack = |w: &[f32], r: &mut Region| Conv::pack(g, 1, Tile::F4, w, None, false, ks, r);
        assert!(pack(&[0.0; 10], &mut store.rest()).is_none());
        let mut small = Store::sized(16).expect("memory");
        assert!(pack(&vec![0.0; 16 * 16 * 9], &mut small.rest()).is_none());
    }

    /// The error growth the closing note quotes: each 3x3 shape of
    /// ResNet-50 at 224 (batch 1), Winograd and direct in f32 against f64.
    /// `cargo test --release --lib winograd -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn error_growth_on_resnet_shapes() {
        let ks = kernels::best();
        println!("shape              F(4x4)       F(2x2)       direct (f32 sums)");
        for (c, hw) in [(64, 56), (128, 28), (256, 14), (512, 7)] {
            let g = geom(c, (hw, hw), c, 1);
            // He-scaled weights and a unit-scale input, as in a trained net.
            let x: Vec<f32> = data(c * hw * hw, 101).iter().map(|v| v * 3.4).collect();
            let scale = (2.0 / (9.0 * c as f32)).sqrt() * 3.4;
            let w: Vec<f32> = data(c * c * 9, 97).iter().map(|v| v * scale).collect();
            let want = exact(&g, 1, &x, &w);
            let [f4, f2] =
                [Tile::F4, Tile::F2].map(|t| error(&run(&g, 1, t, ks, &x, &w, None), &want));
            // Direct: the same sums in f32, in the kernel's order (c, ky, kx).
            let mut direct = vec![0.0f32; want.len()];
            for (i, d) in direct.iter_mut().enumerate() {
                let (o, oy, ox) = (i / (hw * hw), i / hw % hw, i % hw);
                let mut s = 0.0f32;
                for ci in 0..c {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((oy + ky) as isize - 1, (ox + kx) as isize - 1);
                            if iy >= 0 && ix >= 0 && iy < hw as isize && ix < hw as isize {
                                s += x[(ci * hw + iy as usize) * hw + ix as usize]
                                    * w[((o * c + ci) * 3 + ky) * 3 + kx];
                            }
                        }
                    }
                }
                *d = s;
            }
            println!(
                "{c:>3} x {hw:>2}x{hw:<2}        {f4:.2e}     {f2:.2e}     {:.2e}",
                error(&direct, &want)
            );
        }
    }
}
