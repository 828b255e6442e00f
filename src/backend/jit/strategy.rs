//! How each conv is lowered, chosen by named eligibility rules that can be
//! overridden for experiments (`--conv-strategy`).

use crate::backend::program::{ConvGeom, Kind, Program, Residual, Step};
use crate::backend::Strategy;

use super::kernels::Kernels;
use super::{blocked, slide, winograd};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvStrategy {
    /// 1x1, stride 1, no padding: the input is already the GEMM's B matrix
    /// (packed, no im2col).
    Direct1x1,
    /// 1x1 with a stride, no padding: the input subsampled into a scratch
    /// buffer (a tenth of it or less), then as direct-1x1.
    Strided1x1,
    /// Any conv: im2col into packed B, then the GEMM.
    Im2col,
    /// The whole network on channel-blocked maps (16 channels a vector),
    /// every conv direct; the default where the network allows it
    /// (channels in multiples of 16, no groups: [`blocked_layout`]).
    Blocked,
    /// Winograd F(4x4, 3x3) for stride-1 3x3 convs on blocked maps
    /// (`winograd.rs`); forced, every eligible conv takes it, else
    /// [`winograd_rule`] picks it per layer.
    Winograd,
    /// Winograd F(2x2, 3x3), likewise.
    WinogradF2,
}

/// Every strategy, as `--conv-strategy` names them.
pub const ALL: &[ConvStrategy] = &[
    ConvStrategy::Blocked,
    ConvStrategy::Winograd,
    ConvStrategy::WinogradF2,
    ConvStrategy::Direct1x1,
    ConvStrategy::Strided1x1,
    ConvStrategy::Im2col,
];

impl ConvStrategy {
    pub fn name(self) -> &'static str {
        self.strategy().name()
    }

    /// The strategy as profiles name it.
    pub fn strategy(self) -> Strategy {
        match self {
            ConvStrategy::Direct1x1 => Strategy::Direct1x1,
            ConvStrategy::Strided1x1 => Strategy::Strided1x1,
            ConvStrategy::Im2col => Strategy::Im2col,
            ConvStrategy::Blocked => Strategy::Blocked,
            ConvStrategy::Winograd => Strategy::Winograd,
            ConvStrategy::WinogradF2 => Strategy::WinogradF2,
        }
    }

    /// The strategy called `name`.
    pub fn from_name(name: &str) -> Option<ConvStrategy> {
        ALL.iter().copied().find(|s| s.name() == name)
    }

    /// Whether this strategy can compute a conv of geometry `g` on planar maps.
    pub fn eligible(self, g: &ConvGeom) -> bool {
        match self {
            ConvStrategy::Direct1x1 => g.kernel == 1 && g.stride == 1 && g.pad == 0,
            ConvStrategy::Strided1x1 => g.kernel == 1 && g.pad == 0,
            ConvStrategy::Im2col => true,
            ConvStrategy::Blocked | ConvStrategy::Winograd | ConvStrategy::WinogradF2 => false,
        }
    }
}

/// Whether the whole program can run on channel-blocked maps, and if not,
/// why: every map but the input a multiple of 16 channels; the input read
/// only as convs' main input (the stem reads it planar), not as a residual;
/// convs grouped only where each block of 16 outputs reads whole blocks of
/// inputs (`blocked::span`; an option A residual is built blocked); and no step
/// outside conv, max pool, ReLU, add, scale-shift (an unfolded BN), global
/// average pool and the head.
pub fn blocked_layout(p: &Program) -> Result<(), String> {
    let last = p.steps.len().saturating_sub(1);
    for (k, s) in p.steps.iter().enumerate() {
        let why = |what: &str| Err(format!("`{}` ({}): {what}", s.at.value, s.op));
        // The input stays planar: only a conv's main input may be it (a
        // residual is read in the output's layout).
        let reads_input = s.inputs.iter().any(|b| b.value == p.input.value);
        let planar_ok = matches!(s.kind, Kind::Conv { .. })
            && !s.inputs.iter().skip(1).any(|b| b.value == p.input.value);
        if reads_input && !planar_ok {
            return why("reads the network's input, which only a conv can read planar");
        }
        let out = &s.output.shape;
        if out.rank() == 4 {
            let spatial = out.height() * out.width() > 1;
            if !out.channels().is_multiple_of(blocked::BLOCK) {
                return why("channels not a multiple of 16");
            }
            if k == last && spatial {
                return why("the output is a map, not logits");
            }
        }
        match &s.kind {
            Kind::MaxPool(_)
            | Kind::Relu
            | Kind::Add
            | Kind::GlobalAvgPool { .. }
            | Kind::ScaleShift { .. } => {}
            Kind::Conv { geom, epilogue, .. } => {
                // Option A's residual is built blocked before the conv
                // (`blocked::pad_residual`), from a blocked map.
                if let Some(Residual::PadAdd { buffer, .. }) = &epilogue.residual {
                    if buffer.value == p.input.value {
                        return why("an option A shortcut of the network's input");
                    }
                }
                if !blocked_geom(p, s).is_some_and(|g| blocked::eligible(&g)) {
                    return why(if geom.groups > 1 {
                        "grouped so that a block of 16 outputs reads part of a block of 16 inputs"
                    } else {
                        "a stride the direct kernel has no variant for"
                    });
                }
            }
            Kind::Flatten | Kind::Linear { .. } => {
                let map = |b: &crate::backend::program::Buffer| {
                    b.shape.rank() == 4 && b.shape.height() * b.shape.width() > 1
                };
                if s.inputs.first().is_none_or(map) {
                    return why("reads a map, whose blocked layout differs");
                }
            }
            _ => return why("runs on planar maps only"),
        }
    }
    Ok(())
}

/// Whether a conv on blocked maps of geometry `g` over `n` images runs as
/// Winograd, and with which tile: where eligible, when forced; by default
/// where it measured faster than the direct kernel
/// (`benches/winograd_rule.py`: ResNet-18, ResNet-50 v1.5 and CIFAR
/// ResNet-56 at batch 1 to 64 on this project's AVX2 machine, 2026-12-01):
/// - fewer than [`WINOGRAD_MIN_CHANNELS`]: direct (the transforms outweigh
///   the GEMMs);
/// - F(4x4)'s weights small (at most [`WINOGRAD_LARGE_WEIGHTS`]): F(4x4)
///   from [`WINOGRAD_MIN_TILES`] tiles on (CIFAR's 8x8 64-channel layer3
///   at batch 1, 4 tiles: 0.59-0.65 of direct; F(2x2) there 1.2-1.4), or
///   from the set's `f4_min_tiles` on, F(2x2) below it (AVX-512 on Zen 5);
///   direct where the set's slide tiles take the conv (32 outputs), below
///   [`WINOGRAD_SLIDE_F4_TILES`];
/// - large, with [`WINOGRAD_F4_TILES`] tiles or more: F(4x4), which reads
///   them for enough tiles (ResNet-50 at batch 2 and up);
/// - large, fewer tiles: F(2x2), with 16/36 of the weights to read, where
///   F(4x4) has under 8 tiles (7x7 at batch 1: F(2x2) 0.68-0.83 of direct,
///   F(4x4) 0.85-0.96) or computes more padded pixels than F(2x2) (14x14
///   at batch 1: 256 against 196; ResNet-50's layer3 F(2x2) 0.52-0.63,
///   F(4x4) 0.60-0.74), from the kernel set's `f2_min_tiles` tiles on
///   (AVX-512 on Zen 4: direct at 7x7 at batch 1, where F(2x2) measured
///   1.10-1.18 of it); else F(4x4) (7x7 at batch 2: 0.58-0.71 against
///   0.59-0.84).
pub fn winograd_rule(
    g: &blocked::Geom,
    n: usize,
    forced: Option<ConvStrategy>,
    kernels: &Kernels,
) -> Option<winograd::Tile> {
    use winograd::Tile::{F2, F4};
    if !winograd::eligible(g) {
        return None;
    }
    match forced {
        Some(ConvStrategy::Winograd) => return Some(F4),
        Some(ConvStrategy::WinogradF2) => return Some(F2),
        Some(_) => return None,
        None => {}
    }
    if g.c.min(g.o) < WINOGRAD_MIN_CHANNELS {
        return None;
    }
    let (t4, t2) = (winograd::tiles(g, n, F4), winograd::tiles(g, n, F2));
    if 4 * winograd::weight_len(g, F4) <= WINOGRAD_LARGE_WEIGHTS {
        if slide::tiles_for(kernels, g).is_some() && t4 < WINOGRAD_SLIDE_F4_TILES {
            return None;
        }
        return if t4 >= kernels.winograd.f4_min_tiles {
            Some(F4)
        } else {
            (t4 >= WINOGRAD_MIN_TILES).then_some(F2)
        };
    }
    if t4 >= WINOGRAD_F4_TILES {
        return Some(F4);
    }
    let padded = |t: usize, tile: winograd::Tile| t * tile.out() * tile.out();
    if t4 < 8 || padded(t2, F2) < padded(t4, F4) {
        (t2 >= kernels.winograd.f2_min_tiles).then_some(F2)
    } else {
        Some(F4)
    }
}

/// The fewest input and output channels for which the rule picks Winograd:
/// its transforms cost as much per channel at any width, its GEMMs' K is
/// the channels. CIFAR ResNet-56 (`winograd_rule.py --layer1-side 32`,
/// 2026-12-01), F(4x4)'s time over the direct kernel's at batch 1 / 64:
/// 16 channels 1.39 / 1.19, 32 channels 0.88 / 0.74, 64 channels 0.82 / 0.54.
pub const WINOGRAD_MIN_CHANNELS: usize = 32;

/// Bytes of F(4x4) weights (`36 c o` floats) above which reading them
/// bounds a conv with few tiles: 128 channels' 2.25 MiB are small (the
/// caches hold them), 256 channels' 9 MiB large.
pub const WINOGRAD_LARGE_WEIGHTS: usize = 4 << 20;

/// The fewest F(4x4) tiles for which the rule picks F(4x4) with small
/// weights: measured down to 4 (CIFAR's layer3 at batch 1).
pub const WINOGRAD_MIN_TILES: usize = 4;

/// With large weights, the F(4x4) tiles from which F(4x4) is picked:
/// ResNet-50's layer3 at batch 2 (32 tiles), F(4x4) 0.48-0.51 of direct
/// against F(2x2)'s 0.48-0.70.
pub const WINOGRAD_F4_TILES: usize = 32;

/// The fewest F(4x4) tiles for which the rule picks F(4x4) over the slide
/// tiles. CIFAR ResNet-56's 32-channel layer2 on the Zen 5 host
/// (`winograd_rule.py --layer1-side 32`, 2026-12-02), F(4x4)'s time over
/// the slide's: 16 tiles (batch 1) 1.23-1.35, 128 (batch 8) 0.82-0.87,
/// 1,024 (batch 64) 0.83-1.02.
pub const WINOGRAD_SLIDE_F4_TILES: usize = 128;

/// A conv step's option A residual on blocked maps, and where in the
/// shared scratch it is built: past a Winograd conv's transforms (`wino`).
pub fn pad_residual(
    p: &Program,
    s: &Step,
    wino: Option<winograd::Tile>,
) -> Option<(blocked::PadResidual, usize)> {
    let Kind::Conv { geom, epilogue, .. } = &s.kind else {
        return None;
    };
    let Some(Residual::PadAdd {
        buffer,
        stride,
        pad_before,
        ..
    }) = &epilogue.residual
    else {
        return None;
    };
    let at = match wino {
        Some(tile) => winograd::scratch_len(&blocked_geom(p, s)?, geom.n, tile),
        None => 0,
    };
    let b = &buffer.shape;
    Some((
        blocked::PadResidual {
            c: b.channels(),
            h: b.height(),
            w: b.width(),
            o: geom.o,
            stride: *stride,
            before: *pad_before,
        },
        at,
    ))
}

/// A conv step's geometry on blocked maps (its input planar if it is the
/// network's input); `None` for other steps.
pub fn blocked_geom(p: &Program, s: &Step) -> Option<blocked::Geom> {
    let Kind::Conv { geom: g, .. } = &s.kind else {
        return None;
    };
    let input = s.inputs.first()?;
    Some(blocked::Geom {
        c: g.c,
        h: g.h,
        w: g.w,
        o: g.o,
        kernel: g.kernel,
        stride: g.stride,
        pad: g.pad,
        dilation: g.dilation,
        groups: g.groups,
        oh: g.oh,
        ow: g.ow,
        input: if input.value == p.input.value {
            blocked::Input::Planar
        } else {
            blocked::Input::Blocked
        },
    })
}

/// Preference order when nothing is forced.
pub const PREFERENCE: &[ConvStrategy] = &[
    ConvStrategy::Direct1x1,
    ConvStrategy::Strided1x1,
    ConvStrategy::Im2col,
];

/// The strategy for a conv on planar maps: the forced one if eligible,
/// else the first eligible.
pub fn choose(g: &ConvGeom, forced: Option<ConvStrategy>) -> ConvStrategy {
    if let Some(f) = forced {
        // `blocked` is a layout for the whole network, not a per-conv choice.
        if f.eligible(g) {
            return f;
        }
    }
    PREFERENCE
        .iter()
        .copied()
        .find(|s| s.eligible(g))
        .unwrap_or(ConvStrategy::Im2col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(kernel: usize, stride: usize, pad: usize) -> ConvGeom {
        ConvGeom {
            n: 1,
            c: 8,
            h: 8,
            w: 8,
            o: 8,
            kernel,
            stride,
            pad,
            groups: 1,
            dilation: 1,
            oh: 8,
            ow: 8,
        }
    }

    #[test]
    fn rules() {
        assert_eq!(choose(&conv(1, 1, 0), None), ConvStrategy::Direct1x1);
        assert_eq!(choose(&conv(1, 2, 0), None), ConvStrategy::Strided1x1);
        assert_eq!(choose(&conv(1, 2, 1), None), ConvStrategy::Im2col);
        assert_eq!(choose(&conv(3, 1, 1), None), ConvStrategy::Im2col);
        assert_eq!(
            choose(&conv(1, 1, 0), Some(ConvStrategy::Im2col)),
            ConvStrategy::Im2col
        );
        // A forced strategy that cannot apply falls back to the rules.
        assert_eq!(
            choose(&conv(3, 1, 1), Some(ConvStrategy::Direct1x1)),
            ConvStrategy::Im2col
        );
        for s in ALL {
            assert_eq!(ConvStrategy::from_name(s.name()), Some(*s));
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn winograd_takes_the_stride_one_3x3s_by_weights_and_tiles() {
        use winograd::Tile::{F2, F4};
        // The rule as measured with the AVX2 set (which tests pick need
        // not run here: the rule only reads its measurements).
        let ks = &crate::backend::jit::kernels::avx2::KERNELS;
        let g = |c: usize, side: usize, stride: usize| blocked::Geom {
            c,
            h: side,
            w: side,
            o: c,
            kernel: 3,
            stride,
            pad: 1,
            dilation: 1,
            groups: 1,
            oh: side.div_ceil(stride),
            ow: side.div_ceil(stride),
            input: blocked::Input::Blocked,
        };
        // Small weights (64 and 128 channels): F(4x4) from 4 tiles on.
        assert_eq!(winograd_rule(&g(64, 8, 1), 1, None, ks), Some(F4));
        assert_eq!(winograd_rule(&g(64, 4, 1), 1, None, ks), None);
        assert_eq!(winograd_rule(&g(128, 28, 1), 1, None, ks), Some(F4));
        assert_eq!(winograd_rule(&g(64, 56, 2), 8, None, ks), None);
        // Large (256 and 512): F(4x4) from 32 tiles, F(2x2) below at
        // 14x14 (fewer padded pixels) and at under 8 tiles.
        assert_eq!(winograd_rule(&g(256, 14, 1), 2, None, ks), Some(F4));
        assert_eq!(winograd_rule(&g(256, 14, 1), 1, None, ks), Some(F2));
        assert_eq!(winograd_rule(&g(512, 7, 1), 1, None, ks), Some(F2));
        // ... but for the AVX-512 set, whose direct kernel is faster there.
        let avx512 = &crate::backend::jit::kernels::avx512::KERNELS;
        assert_eq!(winograd_rule(&g(512, 7, 1), 1, None, avx512), None);
        assert_eq!(winograd_rule(&g(256, 14, 1), 1, None, avx512), Some(F2));
        assert_eq!(winograd_rule(&g(512, 7, 1), 2, None, avx512), Some(F4));
        // Small weights on AVX-512: F(2x2) under 32 F(4x4) tiles, and the
        // slide tiles for 32 channels under 128.
        assert_eq!(winograd_rule(&g(64, 8, 1), 1, None, avx512), Some(F2));
        assert_eq!(winograd_rule(&g(64, 8, 1), 8, None, avx512), Some(F4));
        assert_eq!(winograd_rule(&g(64, 4, 1), 1, None, avx512), None);
        assert_eq!(winograd_rule(&g(32, 16, 1), 1, None, avx512), None);
        assert_eq!(winograd_rule(&g(32, 16, 1), 8, None, avx512), Some(F4));
        assert_eq!(winograd_rule(&g(128, 28, 1), 1, None, avx512), Some(F4));
        assert_eq!(winograd_rule(&g(512, 7, 1), 2, None, ks), Some(F4));
        assert_eq!(winograd_rule(&g(512, 7, 1), 8, None, ks), Some(F4));
        // 3x3 at batch 1: 4 F(2x2) tiles, unmeasured: direct.
        assert_eq!(winograd_rule(&g(512, 3, 1), 1, None, ks), None);
        // 16 channels (CIFAR's layer1): direct, however many tiles; 32: F(4x4).
        assert_eq!(winograd_rule(&g(16, 32, 1), 64, None, ks), None);
        assert_eq!(winograd_rule(&g(32, 16, 1), 1, None, ks), Some(F4));
        // Forced either way, where eligible.
        assert_eq!(
            winograd_rule(&g(16, 32, 1), 1, Some(ConvStrategy::Winograd), ks),
            Some(F4)
        );
        let f2 = Some(ConvStrategy::WinogradF2);
        assert_eq!(winograd_rule(&g(512, 3, 1), 1, f2, ks), Some(F2));
        assert_eq!(
            winograd_rule(&g(64, 56, 1), 8, Some(ConvStrategy::Blocked), ks),
            None
        );
        assert_eq!(
            winograd_rule(&g(64, 56, 2), 8, Some(ConvStrategy::Winograd), ks),
            None
        );
    }
}
