//! The JIT's lowering of a program: which layout and conv strategies, which
//! kernel each step calls or which loop it generates, and what goes in the
//! descriptor table. It needs no weights: `compile` builds the table from
//! [`Lowered::descs`] with them, `listing` prints the code without.

use super::codegen::{Arg, MapOp, Step as Code};
use super::kernels::Kernels;
use super::strategy::{self, ConvStrategy};
use super::{gemm, gemv, winograd};
use crate::backend::program::{Buffer, Kind, Program};
use crate::backend::{StepInfo, Strategy};
use crate::ir::At;

/// What a descriptor table slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desc {
    /// The network's shared state (the team, the scratch, the failure).
    Shared,
    /// A planar conv of program step `step`, by GEMM.
    Conv {
        step: usize,
        strategy: ConvStrategy,
    },
    /// A conv on channel-blocked maps; `also`: the scale-shift step its
    /// epilogue makes as a second output ([`second_output`]).
    BlockedConv {
        step: usize,
        also: Option<usize>,
    },
    /// A Winograd conv on channel-blocked maps.
    WinogradConv {
        step: usize,
        tile: winograd::Tile,
    },
    Linear {
        step: usize,
    },
    /// Pooling (`blocked`: on channel-blocked maps, max only).
    Pool {
        step: usize,
        blocked: bool,
    },
    /// The option A shortcut, built.
    Pad {
        step: usize,
    },
    /// The global pool of channel-blocked maps.
    Global {
        step: usize,
    },
    /// A scale-shift on channel-blocked maps.
    ScaleShift {
        step: usize,
    },
    /// A scale-shift's scale (its `weight`) or shift (`bias`) array.
    Scale {
        step: usize,
    },
    Shift {
        step: usize,
    },
    /// The profile's timestamps.
    Ticks,
}

impl Desc {
    /// The kernel that reads it, for listings.
    pub fn what(self) -> &'static str {
        match self {
            Desc::Shared => "shared state",
            Desc::Conv { .. } => "rt_conv descriptor",
            Desc::BlockedConv { .. } => "rt_conv_blocked descriptor",
            Desc::WinogradConv {
                tile: winograd::Tile::F4,
                ..
            } => "rt_conv_winograd descriptor",
            Desc::WinogradConv { .. } => "rt_conv_winograd F(2x2) descriptor",
            Desc::Linear { .. } => "rt_linear descriptor",
            Desc::Pool { blocked: true, .. } => "rt_max_pool_blocked descriptor",
            Desc::Pool { .. } => "rt_pool descriptor",
            Desc::Pad { .. } => "rt_shortcut_pad descriptor",
            Desc::Global { .. } => "rt_global_avg_blocked descriptor",
            Desc::ScaleShift { .. } => "rt_scale_shift_blocked descriptor",
            Desc::Scale { .. } => "scale (f32 per channel)",
            Desc::Shift { .. } => "shift (f32 per channel)",
            Desc::Ticks => "profile timestamps",
        }
    }

    /// The program step it belongs to.
    pub fn step(self) -> Option<usize> {
        match self {
            Desc::Conv { step, .. }
            | Desc::BlockedConv { step, .. }
            | Desc::WinogradConv { step, .. }
            | Desc::Linear { step }
            | Desc::Pool { step, .. }
            | Desc::Pad { step }
            | Desc::Global { step }
            | Desc::ScaleShift { step }
            | Desc::Scale { step }
            | Desc::Shift { step } => Some(step),
            Desc::Shared | Desc::Ticks => None,
        }
    }
}

/// A program as the JIT runs it.
pub struct Lowered {
    /// The generated function's body.
    pub code: Vec<Code>,
    /// The descriptor table's slots (slot 0: [`Desc::Shared`]).
    pub descs: Vec<Desc>,
    /// One per step that runs code, in order: what profiles and errors
    /// refer to (index `i` is a descriptor's `step` field).
    pub infos: Vec<StepInfo>,
    pub ats: Vec<At>,
    /// Each info's program step.
    pub program_steps: Vec<usize>,
    /// Blocked maps, or why not.
    pub layout: Result<(), String>,
    /// Floats of shared scratch the kernels need.
    pub scratch: usize,
}

/// The slot of the shared state, the same in every table.
pub const SHARED: usize = 0;

/// Lower `p` for kernel set `kernels`: blocked maps where the layout rule
/// allows and nothing else is forced; `bf16`: their convs take bf16 dot
/// products, direct (Winograd's transformed values need f32's range of
/// digits) unless Winograd is forced, on AMX's tiles where `amx`; `profile` adds a timestamp after every step; `fault` names a
/// value before whose step a task panics (tests).
pub fn lower(
    p: &Program,
    kernels: &Kernels,
    forced: Option<ConvStrategy>,
    bf16: bool,
    amx: bool,
    profile: bool,
    fault: Option<&str>,
) -> Lowered {
    let layout = match forced {
        None | Some(ConvStrategy::Blocked | ConvStrategy::Winograd | ConvStrategy::WinogradF2) => {
            strategy::blocked_layout(p)
        }
        Some(f) => Err(format!(
            "--conv-strategy {} runs every map planar",
            f.name()
        )),
    };
    let blocked = layout.is_ok();
    let mut l = Lowered {
        code: Vec::new(),
        descs: vec![Desc::Shared],
        infos: Vec::new(),
        ats: Vec::new(),
        program_steps: Vec::new(),
        layout,
        scratch: 0,
    };
    let ticks = profile.then(|| {
        l.descs.push(Desc::Ticks);
        l.descs.len() - 1
    });
    if let Some(t) = ticks {
        l.code.push(Code::Call {
            symbol: "rt_tick",
            args: vec![Arg::Desc(t), Arg::Const(0)],
        });
    }
    // A scale-shift made by the conv before it.
    let mut absorbed = None;
    for (k, s) in p.steps.iter().enumerate() {
        if absorbed == Some(k) {
            continue;
        }
        let info = l.infos.len();
        let desc = |d: Desc, l: &mut Lowered| {
            l.descs.push(d);
            Arg::Desc(l.descs.len() - 1)
        };
        let arena = |i: usize| Arg::Arena(s.inputs.get(i).map_or(0, |b| b.offset));
        let out = Arg::Arena(s.output.offset);
        let before = l.code.len();
        if fault == Some(s.at.value.as_str()) {
            l.code.push(Code::Call {
                symbol: "rt_fault",
                args: vec![Arg::Desc(SHARED), Arg::Const(info as u64)],
            });
        }
        let strategy = match &s.kind {
            Kind::Conv { geom, epilogue, .. } => {
                // On blocked maps: Winograd's transforms, then any option A
                // residual built past them, in the shared scratch.
                let on_blocked = if blocked {
                    strategy::blocked_geom(p, s)
                } else {
                    None
                };
                let wino = on_blocked
                    .filter(|_| !bf16 || forced.is_some())
                    .and_then(|g| strategy::winograd_rule(&g, geom.n, forced, kernels));
                if let (Some(g), Some(tile)) = (on_blocked, wino) {
                    l.scratch = l.scratch.max(winograd::scratch_len(&g, geom.n, tile));
                }
                if let Some((pad, at)) = strategy::pad_residual(p, s, wino).filter(|_| blocked) {
                    l.scratch = l.scratch.max(at + pad.len(geom.n));
                }
                let (symbol, d, how) = if let Some(tile) = wino {
                    (
                        "rt_conv_winograd",
                        Desc::WinogradConv { step: k, tile },
                        match tile {
                            winograd::Tile::F2 => Strategy::WinogradF2,
                            winograd::Tile::F4 => Strategy::Winograd,
                        },
                    )
                } else if blocked {
                    // As `blocked::Conv::pack_with` decides.
                    let slides = !bf16
                        && on_blocked
                            .is_some_and(|g| super::slide::tiles_for(kernels, &g).is_some());
                    let bf16 = bf16 && on_blocked.is_some_and(|g| super::blocked::takes_bf16(&g));
                    (
                        "rt_conv_blocked",
                        Desc::BlockedConv {
                            step: k,
                            also: None,
                        },
                        if bf16 && amx && on_blocked.is_some_and(|g| super::amx::takes(&g)) {
                            Strategy::BlockedAmx
                        } else if bf16 {
                            Strategy::BlockedBf16
                        } else if slides {
                            Strategy::BlockedSlide
                        } else {
                            Strategy::Blocked
                        },
                    )
                } else {
                    let c = strategy::choose(geom, forced);
                    if c == ConvStrategy::Strided1x1 {
                        // The subsampled input, for every image and group at once.
                        l.scratch = l.scratch.max(geom.c * geom.n * geom.oh * geom.ow);
                    }
                    (
                        "rt_conv",
                        Desc::Conv {
                            step: k,
                            strategy: c,
                        },
                        c.strategy(),
                    )
                };
                let res = match &epilogue.residual {
                    Some(r) => Arg::Arena(r.buffer().offset),
                    None => Arg::Const(0),
                };
                let mut args = vec![arena(0), res, out];
                let d = match d {
                    Desc::BlockedConv { step, .. } => {
                        // Only the direct tiles' epilogue has the second output.
                        // (At -O2: the levels below fuse nothing.)
                        let direct = matches!(how, Strategy::Blocked | Strategy::BlockedBf16);
                        let also = (direct && p.level() >= 2)
                            .then(|| second_output(p, k))
                            .flatten()
                            .filter(|&n| fault != Some(p.steps[n].at.value.as_str()));
                        args.push(
                            also.map_or(Arg::Const(0), |n| Arg::Arena(p.steps[n].output.offset)),
                        );
                        absorbed = also;
                        Desc::BlockedConv { step, also }
                    }
                    d => d,
                };
                args.insert(0, desc(d, &mut l));
                l.code.push(Code::Call { symbol, args });
                how
            }
            Kind::Linear { n, in_features, .. } => {
                let d = desc(Desc::Linear { step: k }, &mut l);
                l.code.push(Code::Call {
                    symbol: "rt_linear",
                    args: vec![d, arena(0), out],
                });
                if *n <= gemv::MAX_BATCH {
                    Strategy::Gemv
                } else {
                    l.scratch = l.scratch.max(gemm::packed_b_len(*in_features, *n));
                    Strategy::Gemm
                }
            }
            Kind::ScaleShift { .. } if blocked => {
                let d = desc(Desc::ScaleShift { step: k }, &mut l);
                l.code.push(Code::Call {
                    symbol: "rt_scale_shift_blocked",
                    args: vec![d, arena(0), out],
                });
                Strategy::Kernel
            }
            Kind::ScaleShift {
                channels,
                plane,
                relu,
                ..
            } => {
                let (scale, shift) = (l.descs.len(), l.descs.len() + 1);
                l.descs.push(Desc::Scale { step: k });
                l.descs.push(Desc::Shift { step: k });
                l.code.push(Code::ScaleShift {
                    x: s.inputs.first().map_or(0, |b| b.offset),
                    out: s.output.offset,
                    planes: s.output.len() / (*plane).max(1),
                    channels: *channels,
                    plane: *plane,
                    scale,
                    shift,
                    relu: *relu,
                });
                Strategy::Loop
            }
            Kind::Relu | Kind::Add => {
                l.code.push(Code::Map {
                    op: if s.kind == Kind::Relu {
                        MapOp::Relu
                    } else {
                        MapOp::Add
                    },
                    inputs: s.inputs.iter().map(|b| b.offset).collect(),
                    out: s.output.offset,
                    len: s.output.len(),
                });
                Strategy::Loop
            }
            Kind::Flatten => {
                let x = s.inputs.first().map_or(0, |b| b.offset);
                if x != s.output.offset {
                    l.code.push(Code::Map {
                        op: MapOp::Copy,
                        inputs: vec![x],
                        out: s.output.offset,
                        len: s.output.len(),
                    });
                }
                Strategy::Loop
            }
            Kind::MaxPool(_) | Kind::AvgPool(_) => {
                let on_blocked = blocked && matches!(s.kind, Kind::MaxPool(_));
                let d = desc(
                    Desc::Pool {
                        step: k,
                        blocked: on_blocked,
                    },
                    &mut l,
                );
                l.code.push(Code::Call {
                    symbol: if on_blocked {
                        "rt_max_pool_blocked"
                    } else {
                        "rt_pool"
                    },
                    args: vec![d, arena(0), out],
                });
                Strategy::Kernel
            }
            Kind::GlobalAvgPool { n, c, hw } => {
                if blocked {
                    let d = desc(Desc::Global { step: k }, &mut l);
                    l.code.push(Code::Call {
                        symbol: "rt_global_avg_blocked",
                        args: vec![d, arena(0), out],
                    });
                    Strategy::Kernel
                } else {
                    l.code.push(Code::GlobalAvg {
                        x: s.inputs.first().map_or(0, |b| b.offset),
                        out: s.output.offset,
                        planes: n * c,
                        plane: *hw,
                    });
                    Strategy::Loop
                }
            }
            Kind::ShortcutPad { .. } => {
                let d = desc(Desc::Pad { step: k }, &mut l);
                l.code.push(Code::Call {
                    symbol: "rt_shortcut_pad",
                    args: vec![d, arena(0), out],
                });
                Strategy::Kernel
            }
        };
        if l.code.len() == before {
            continue;
        }
        l.infos.push(StepInfo {
            name: s.at.value.clone(),
            op: s.op,
            strategy,
            flops: s.flops,
        });
        l.ats.push(s.at.clone());
        l.program_steps.push(k);
        if let Some(t) = ticks {
            l.code.push(Code::Call {
                symbol: "rt_tick",
                args: vec![Arg::Desc(t), Arg::Const(l.infos.len() as u64)],
            });
        }
    }
    l
}

/// The scale-shift of step `k + 1` if conv step `k`'s epilogue can make it
/// as a second output: it reads only the conv's output, and its own
/// overlaps none of the conv's inputs (it is written while they are read)
/// and either is the output's bytes or lies apart from them.
/// A pre-activation block's input goes through BN and ReLU this way as the
/// previous block's last conv stores it, and the map is not read again.
fn second_output(p: &Program, k: usize) -> Option<usize> {
    let (s, next) = (&p.steps[k], p.steps.get(k + 1)?);
    if !matches!(next.kind, Kind::ScaleShift { .. }) {
        return None;
    }
    let [x] = next.inputs.as_slice() else {
        return None;
    };
    if x.offset != s.output.offset || x.len() != s.output.len() {
        return None;
    }
    let bytes = |b: &Buffer| (b.offset, b.offset + 4 * b.len() as u64);
    let (lo, hi) = bytes(&next.output);
    let apart = |b: &Buffer| {
        let (a, e) = bytes(b);
        e <= lo || hi <= a
    };
    // Over the output itself: the plan put it there because nothing else
    // reads the output (then each value is stored, read and overwritten),
    // and a residual read in place there is read before it is stored.
    let over = bytes(&s.output) == (lo, hi);
    let fits = |b: &Buffer| apart(b) || (over && b.offset == s.output.offset);
    let [x, rest @ ..] = s.inputs.as_slice() else {
        return None;
    };
    (apart(x) && rest.iter().all(fits) && fits(&s.output)).then_some(k + 1)
}
