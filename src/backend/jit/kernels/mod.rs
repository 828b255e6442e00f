//! The JIT's kernel sets: one file per ISA, each behind the same contract
//! ([`Kernels`]), as tract-linalg keeps them. The frames (`gemm.rs`:
//! packing, scratch, the loops over tiles; `blocked.rs`: tap lists and
//! tiling) know no ISA: a compiled network picks one set when it is
//! compiled and hands it down. Adding an ISA is one file and one line in
//! [`ALL`]; tests run every set the host supports in one process.

pub mod amx;
#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod epilogue;
pub mod portable;

use super::blocked::TileArgs;
use super::gemm::{Acc, ConvGeom, Epilogue, Tile};
use super::gemv::StripArgs;
use super::winograd::{InputRow, OutputRow};

/// The selection of a one-block tile `$tile::<W, S>` by width (1 to 6)
/// and input step, for sets whose tiles hold one block.
macro_rules! one_block_tiles {
    ($tile:ident) => {
        fn blocked_tile(_blocks: usize, width: usize, step: usize) -> super::BlockedTile {
            macro_rules! widths {
                ($s:literal) => {
                    match width {
                        1 => $tile::<1, $s>,
                        2 => $tile::<2, $s>,
                        3 => $tile::<3, $s>,
                        4 => $tile::<4, $s>,
                        5 => $tile::<5, $s>,
                        _ => $tile::<6, $s>,
                    }
                };
            }
            match step {
                0 => widths!(0),
                1 => widths!(1),
                2 => widths!(2),
                16 => widths!(16),
                _ => widths!(32),
            }
        }
    };
}
use one_block_tiles;

/// A blocked conv tile: `B` output blocks by `W` pixels, from [`TileArgs`].
pub type BlockedTile = unsafe fn(&TileArgs);

/// im2col of rows `p0..p0 + kc`, columns `j0..j0 + nc` of a conv's B into
/// packed panels (see `gemm::pack_block`).
pub type Im2colBlock =
    unsafe fn(*const f32, &ConvGeom, usize, (usize, usize), (usize, usize), &mut [f32]);

/// The GEMM kernels of a set.
pub struct Gemm {
    /// `c (+)= a x b` for one tile of at most `MR x NR`.
    pub tile: unsafe fn(&Tile),
    /// The fused epilogue over a task's accumulated C, within one image.
    pub epilogue: unsafe fn(&Acc, *mut f32, &Epilogue),
    /// im2col packing with vector loads; `None`: the frame's scalar packing.
    pub im2col: Option<Im2colBlock>,
    /// One strip of the fc at small batches (`gemv.rs`).
    pub gemv: unsafe fn(&StripArgs),
}

/// The direct-conv kernels of a set, on channel-blocked maps.
pub struct Blocked {
    /// Output blocks of 16 channels one tile holds (the frame splits a
    /// group of 4 into tiles of one where this is 1).
    pub blocks: usize,
    /// Pixels per tile for a tile of `blocks` blocks.
    pub max_width: fn(usize) -> usize,
    /// The tile for `blocks` x `width`, input pixels `step` floats apart
    /// (0: the tile's own `x_step`).
    pub tile: fn(usize, usize, usize) -> BlockedTile,
    /// Whether the tile fetches the next slice's weights as it runs.
    pub prefetches: bool,
    /// A row of a max pool's output on blocked maps ([`crate::backend::jit::runtime::max_pool_row`]).
    pub max_pool: unsafe fn(&crate::backend::jit::runtime::MaxPoolRow),
    /// A finished tile's second output ([`crate::backend::jit::blocked::also_tile`]).
    pub also: unsafe fn(&epilogue::Also, &crate::backend::jit::blocked::AlsoTile),
    /// bf16 dot products, where the set has them.
    pub bf16: Option<Bf16>,
    /// Row tiles for 3x3 convs with one or two output blocks (`slide.rs`),
    /// where the set has them.
    pub slide: Option<&'static crate::backend::jit::slide::SlideTiles>,
}

/// A set's bf16 blocked convs (`--precision bf16`): bf16 weights and
/// inputs, f32 sums and epilogues.
pub struct Bf16 {
    /// Whether this machine runs them.
    pub supported: fn() -> bool,
    /// As [`Blocked::tile`], for k-steps of channel pairs: each weight a
    /// pair of bf16 in the bits of an f32, the input map bf16.
    pub tile: fn(usize, usize, usize) -> BlockedTile,
    /// `dst[i] = bf16(src[i])`, rounded to nearest even, for `len` values.
    pub convert: unsafe fn(*const f32, *mut u16, usize),
    /// AMX's tiles for convs on blocked maps, where the set can hand over
    /// to them (`kernels/amx.rs`).
    pub amx: Option<&'static amx::Amx>,
}

/// The Winograd transforms of a set, for either tile (`winograd.rs`: the
/// frame; each row says its tile).
pub struct Winograd {
    pub input: unsafe fn(&InputRow),
    pub output: unsafe fn(&OutputRow),
    /// The fewest F(2x2) tiles for which [`strategy::winograd_rule`] picks
    /// F(2x2) over the direct kernel for a conv with large weights, as
    /// measured with this set (`benches/winograd_rule.py`).
    ///
    /// [`strategy::winograd_rule`]: super::strategy::winograd_rule
    pub f2_min_tiles: usize,
    /// The fewest F(4x4) tiles for which the rule picks F(4x4) for a conv
    /// with small weights; from [`strategy::WINOGRAD_MIN_TILES`] up to
    /// here it picks F(2x2).
    ///
    /// [`strategy::WINOGRAD_MIN_TILES`]: super::strategy::WINOGRAD_MIN_TILES
    pub f4_min_tiles: usize,
}

/// A register-only FMA loop, for the peak `bench` measures.
pub struct Peak {
    /// Flops of one iteration.
    pub flops_per_iter: u64,
    pub run: unsafe fn(u64),
}

/// One ISA's kernels.
pub struct Kernels {
    /// As `--kernels` names it: `avx512`, `avx2`, `portable`.
    pub name: &'static str,
    /// What `bench` prints: the GEMM microkernel's shape.
    pub about: &'static str,
    /// Whether this machine runs them.
    pub supported: fn() -> bool,
    pub gemm: Gemm,
    pub blocked: Blocked,
    pub winograd: Winograd,
    pub peak: Peak,
}

impl Kernels {
    /// The set's bf16 blocked kernels, where it has them and this machine runs them.
    pub fn bf16_here(&self) -> Option<&Bf16> {
        self.blocked.bf16.as_ref().filter(|b| (b.supported)())
    }

    /// AMX's tiles, where the set's bf16 convs can run on them here;
    /// `RESNETC_NO_AMX=1` keeps them on the set's own bf16 tiles.
    pub fn amx_here(&self) -> Option<&'static amx::Amx> {
        let skip = std::env::var_os("RESNETC_NO_AMX").is_some();
        self.bf16_here()
            .and_then(|b| b.amx)
            .filter(|a| !skip && (a.supported)())
    }
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Kernels {
    fn eq(&self, other: &Kernels) -> bool {
        self.name == other.name
    }
}

/// Every set, best first.
pub fn all() -> Vec<&'static Kernels> {
    vec![
        #[cfg(target_arch = "x86_64")]
        &avx512::KERNELS,
        #[cfg(target_arch = "x86_64")]
        &avx2::KERNELS,
        &portable::KERNELS,
    ]
}

/// The sets this machine runs, best first.
pub fn available() -> Vec<&'static Kernels> {
    all().into_iter().filter(|k| (k.supported)()).collect()
}

/// The set called `name`, whether or not it runs here.
pub fn by_name(name: &str) -> Option<&'static Kernels> {
    all().into_iter().find(|k| k.name == name)
}

/// The best set this machine runs; `RESNETC_NO_AVX512=1` skips AVX-512.
/// Detected once per call: compile stores the result.
pub fn best() -> &'static Kernels {
    let skip_512 = std::env::var_os("RESNETC_NO_AVX512").is_some();
    available()
        .into_iter()
        .find(|k| !(skip_512 && k.name == "avx512"))
        .unwrap_or(&portable::KERNELS)
}

/// Whether this CPU has AVX512_BF16's bf16 dot products (`vdpbf16ps`).
pub fn has_bf16_dot() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The names of every set, for messages.
pub fn names() -> Vec<&'static str> {
    all().iter().map(|k| k.name).collect()
}
