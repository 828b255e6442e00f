//! The CPU JIT: a program becomes one native function (cranelift) over one
//! arena. Weights are packed once, at compile time, for the kernel set
//! chosen then (`kernels/`: AVX-512, AVX2 + FMA, portable); the generated
//! code calls GEMM and direct-conv kernels with fused epilogues and runs
//! SIMD loops for the elementwise ops.

pub mod amx;
pub mod blocked;
pub mod codegen;
pub mod gemm;
pub mod gemv;
pub mod kernels;
pub mod lower;
pub mod runtime;
pub mod slide;
pub mod strategy;
pub mod team;
pub mod winograd;

use std::any::Any;
use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use ndarray::ArrayD;

use super::program::{Epilogue, Kind, Program, Residual, Step, WeightId};
use super::{
    Backend, Entry, Executable, Info, Listing, ListingFile, OptionError, Options, Refusal, StepInfo,
};
use crate::ir::{At, GraphError, Stage};
use gemm::PackedA;
use kernels::Kernels;
use lower::{Desc, Lowered};
use runtime::{
    BlockedConvDesc, ConvDesc, GlobalDesc, LinearDesc, LinearWeights, PadDesc, PoolDesc,
    ScaleShiftDesc, Shared,
};
pub use strategy::ConvStrategy;

pub const ENTRY: Entry = Entry {
    name: "jit",
    about: "native code from cranelift: direct and GEMM convs with fused epilogues, threads",
    emits: Some("clif"),
    listing_weights: false,
    new: Jit::make,
};

const STAGE: Stage = Stage::Backend("jit");
const RUN: Stage = Stage::Run("jit");

/// The JIT, with its options.
pub struct Jit {
    threads: usize,
    forced: Option<ConvStrategy>,
    kernels: &'static Kernels,
    /// `--precision bf16`: blocked convs take bf16 dot products.
    bf16: bool,
    /// And run on AMX's tiles where they can (the machine has them).
    amx: Option<&'static kernels::amx::Amx>,
    profile: bool,
    fault: Option<String>,
}

impl Jit {
    fn make(o: &Options) -> Result<Box<dyn Backend>, OptionError> {
        Ok(Box::new(Jit::new(o)?))
    }

    pub fn new(o: &Options) -> Result<Jit, OptionError> {
        let fail = |message: String| OptionError {
            backend: ENTRY.name,
            message,
        };
        let kernels = match &o.kernels {
            None => kernels::best(),
            Some(name) => kernels::by_name(name).ok_or_else(|| {
                fail(format!(
                    "no kernel set `{name}`: expected one of {}",
                    kernels::names().join(", ")
                ))
            })?,
        };
        let forced = match &o.conv_strategy {
            None => None,
            Some(name) => Some(ConvStrategy::from_name(name).ok_or_else(|| {
                let names: Vec<_> = strategy::ALL.iter().map(|s| s.name()).collect();
                fail(format!(
                    "no conv strategy `{name}`: expected one of {}",
                    names.join(", ")
                ))
            })?),
        };
        let bf16 = match o.precision.as_deref() {
            None | Some("f32") => false,
            Some("bf16") if kernels.bf16_here().is_some() => true,
            Some(p) => return Err(fail(precision_refused(p, kernels))),
        };
        Ok(Jit {
            threads: o.threads,
            forced,
            kernels,
            bf16,
            amx: kernels.amx_here().filter(|_| bf16),
            profile: o.profile,
            fault: o.fault.clone(),
        })
    }

    fn lower(&self, p: &Program) -> Lowered {
        lower::lower(
            p,
            self.kernels,
            self.forced,
            self.bf16,
            self.amx.is_some(),
            self.profile,
            self.fault.as_deref(),
        )
    }
}

impl Backend for Jit {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn check(&self, _: &Program) -> Vec<GraphError> {
        let mut why = Vec::new();
        if !(self.kernels.supported)() {
            let here: Vec<_> = kernels::available().iter().map(|k| k.name).collect();
            why.push(
                GraphError::new(
                    STAGE,
                    format!(
                        "kernel set `{}` does not run on this machine",
                        self.kernels.name
                    ),
                )
                .help(format!("it runs: {}", here.join(", "))),
            );
        }
        why
    }

    fn compile(&self, p: &Program) -> Result<Box<dyn Executable>, Refusal> {
        let why = self.check(p);
        if !why.is_empty() {
            return Err(Refusal(why));
        }
        Ok(Box::new(compile(self, p, None)?))
    }

    fn compile_owned(&self, mut p: Program) -> Result<Box<dyn Executable>, Refusal> {
        let why = self.check(&p);
        if !why.is_empty() {
            return Err(Refusal(why));
        }
        let owned = p.take_weights();
        Ok(Box::new(compile(self, &p, owned)?))
    }

    fn footprint(&self, p: &Program) -> super::memory::Footprint {
        let l = self.lower(p);
        let mut f = super::memory::Footprint::default();
        let w = super::weight_bytes(p);
        f.add("arena", p.arena_bytes, true);
        f.add("scratch", 4 * l.scratch as u64, true);
        // The weights as read (held by the program) and as packed, on 2 MB
        // pages; a Winograd conv's are 4x (36 elements for 9 taps) or 16/9.
        let winograd: u64 = l
            .descs
            .iter()
            .filter_map(|d| match *d {
                Desc::WinogradConv { step, tile } => {
                    strategy::blocked_geom(p, &p.steps[step]).map(|g| (g, tile))
                }
                _ => None,
            })
            .map(|(g, tile)| 4 * (winograd::weight_len(&g, tile) - 9 * g.c * g.o) as u64)
            .sum();
        f.add("weights", w, false);
        f.add(
            "packed weights",
            w.div_ceil(2 << 20) * (2 << 20) + winograd,
            false,
        );
        f
    }

    fn listing(&self, p: &Program) -> Result<Option<Listing>, Refusal> {
        let l = self.lower(p);
        let (_, (_, clif)) = generate(&l, &p.name)?;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "; {}: {} steps, kernel set {}, {}",
            p.name,
            l.infos.len(),
            self.kernels.name,
            match &l.layout {
                Ok(()) => "channel-blocked maps".to_string(),
                Err(why) => format!("planar maps ({why})"),
            }
        );
        let _ = writeln!(
            text,
            "; v0: the arena; v1: the descriptor table, 8 bytes a slot:"
        );
        for (k, d) in l.descs.iter().enumerate() {
            let of = d
                .step()
                .map_or(String::new(), |s| format!(" of `{}`", p.steps[s].at.value));
            let _ = writeln!(text, ";   {k:>3}: {}{of}", d.what());
        }
        let calls: Vec<String> = codegen::RUNTIME
            .iter()
            .enumerate()
            .map(|(i, (sym, _))| format!("fn{i} = {sym}"))
            .collect();
        let _ = writeln!(text, "; {}", calls.join(", "));
        text.push_str(&clif);
        Ok(Some(Listing {
            files: vec![ListingFile::text(format!("{}.clif", p.name), text)],
        }))
    }
}

/// Why `--precision p` is refused: the JIT computes in f32 and, with the
/// kernel sets that have them and a CPU with AVX512_BF16, bf16.
fn precision_refused(p: &str, set: &Kernels) -> String {
    if p != "bf16" {
        return format!("precision `{p}`: the CPU JIT computes in f32 or bf16 (`--precision f32`, the default, or `bf16`)");
    }
    // The CPU first: no choice of kernels helps a CPU without the instructions.
    if !kernels::has_bf16_dot() {
        return "precision `bf16` needs AVX512_BF16 (`vdpbf16ps`), which this CPU lacks; the \
                JIT runs f32 (the default, or `--precision f32`)"
            .to_string();
    }
    format!(
        "precision `bf16` runs on the avx512 kernel set; `{}` has no bf16 kernels (f32 is the default)",
        set.name
    )
}

/// The cranelift module and function for `l` (not yet finalized), and its CLIF.
fn generate(
    l: &Lowered,
    name: &str,
) -> Result<(JITModule, (cranelift_module::FuncId, String)), GraphError> {
    let fail = |e: String| GraphError::new(STAGE, e);
    let mut flag_builder = settings::builder();
    for (k, v) in [
        ("opt_level", "speed"),
        ("is_pic", "false"),
        ("use_colocated_libcalls", "false"),
    ] {
        flag_builder
            .set(k, v)
            .map_err(|e| fail(format!("cranelift flag {k}: {e}")))?;
    }
    let isa = cranelift_native::builder()
        .map_err(|e| fail(format!("this host is not supported by cranelift: {e}")))?
        .finish(settings::Flags::new(flag_builder))
        .map_err(|e| fail(format!("cranelift: {e}")))?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for (name, ptr) in codegen::runtime_symbols() {
        jb.symbol(name, ptr);
    }
    let mut module = JITModule::new(jb);
    let f = codegen::build(&mut module, &l.code, name).map_err(fail)?;
    Ok((module, f))
}

fn flat(t: &ArrayD<f32>) -> Vec<f32> {
    match t.as_slice() {
        Some(s) => s.to_vec(),
        None => t.as_standard_layout().iter().copied().collect(),
    }
}

/// The values of a tensor given up, without a copy where it is contiguous.
fn into_flat(t: ArrayD<f32>) -> Vec<f32> {
    if !t.is_standard_layout() {
        return flat(&t);
    }
    let len = t.len();
    match t.into_raw_vec_and_offset() {
        (v, Some(0) | None) if v.len() == len => v,
        (v, off) => {
            let at = off.unwrap_or(0);
            v.get(at..at + len).map_or_else(Vec::new, <[f32]>::to_vec)
        }
    }
}

/// Where `compile` reads weights: the program's, or the program's given up
/// (each read once, then freed when packed).
enum Source<'a> {
    Borrowed(Vec<&'a ArrayD<f32>>),
    Owned(Mutex<Vec<Option<ArrayD<f32>>>>),
}

impl Source<'_> {
    fn get(&self, id: WeightId) -> Vec<f32> {
        match self {
            Source::Borrowed(w) => w.get(id.0).map_or_else(Vec::new, |t| flat(t)),
            Source::Owned(w) => {
                // Taken under the lock, converted outside it.
                let t = w.lock().ok().and_then(|mut v| v.get_mut(id.0)?.take());
                t.map_or_else(Vec::new, into_flat)
            }
        }
    }
}

/// Compile `p` with its weights (or `owned`, taken from it) for `jit`'s options.
fn compile(
    jit: &Jit,
    p: &Program,
    owned: Option<Vec<ArrayD<f32>>>,
) -> Result<Compiled, GraphError> {
    let start = Instant::now();
    let source = match owned {
        Some(w) => Source::Owned(Mutex::new(w.into_iter().map(Some).collect())),
        None => Source::Borrowed(p.weight_values(STAGE)?),
    };
    let weight = |id: WeightId| source.get(id);
    let mut phases = Vec::new();
    let mut mark = {
        let mut last = Instant::now();
        move |name: &'static str, phases: &mut Vec<(&'static str, Duration)>| {
            phases.push((name, last.elapsed()));
            last = Instant::now();
        }
    };
    let l = jit.lower(p);
    if let (true, Err(why)) = (jit.bf16, &l.layout) {
        return Err(GraphError::new(
            STAGE,
            format!(
                "--precision bf16 runs convs on channel-blocked maps, and this network runs planar: \
                 {why}; without --precision it runs in f32"
            ),
        ));
    }
    let threads = if jit.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        jit.threads
    };
    mark("lower", &mut phases);
    let team =
        team::Team::new(threads).map_err(|e| GraphError::new(STAGE, format!("threads: {e}")))?;
    let shared = Box::new(Shared {
        team,
        kernels: jit.kernels,
        scratch: std::cell::UnsafeCell::new(vec![0.0; l.scratch]),
        failed: AtomicBool::new(false),
        failure: Mutex::new(None),
    });
    let sp: *const Shared = &*shared;
    // Program step -> the info index that errors and profiles name.
    let mut info_of = vec![0usize; p.steps.len()];
    for (i, &k) in l.program_steps.iter().enumerate() {
        info_of[k] = i;
    }
    // Floats of the store a conv on blocked maps is packed into.
    let stored = |d: &Desc| match *d {
        Desc::BlockedConv { step, .. } => strategy::blocked_geom(p, &p.steps[step])
            .map(|g| blocked::floats_for(&g, jit.bf16, jit.amx.is_some())),
        Desc::WinogradConv { step, tile } => {
            strategy::blocked_geom(p, &p.steps[step]).map(|g| winograd::weight_len(&g, tile))
        }
        _ => None,
    };
    let total: Option<usize> = l.descs.iter().filter_map(stored).reduce(|a, b| a + b);
    let mut store = match total {
        None => None,
        Some(floats) => Some(blocked::Store::sized(floats).map_err(|e| GraphError::new(STAGE, e))?),
    };
    let mut table = vec![0u64; l.descs.len()];
    let mut held: Vec<Box<dyn Any>> = Vec::new();
    let mut packed = Vec::new();
    let mut winograds = Vec::new();
    let mut jobs = Vec::new();
    // A blocked conv's second output's scales, shifts and ReLU, by slot.
    let mut alsos = std::collections::HashMap::new();
    let mut ticks = None;
    // A boxed descriptor's address goes in the table; the box is held, so
    // it stays put for as long as the code may read it.
    fn hold<T: 'static>(held: &mut Vec<Box<dyn Any>>, v: T) -> u64 {
        let b = Box::new(v);
        let addr = &*b as *const T as u64;
        held.push(b);
        addr
    }
    for (slot, d) in l.descs.iter().enumerate() {
        let s = d.step().map(|k| &p.steps[k]);
        let info = d.step().map_or(0, |k| info_of[k]);
        table[slot] = match (*d, s) {
            (Desc::Shared, _) => sp as u64,
            (Desc::Ticks, _) => {
                let t = Box::new(runtime::Ticks(std::cell::UnsafeCell::new(vec![
                    Instant::now(
                    );
                    l.infos
                        .len()
                        + 1
                ])));
                let addr = &*t as *const runtime::Ticks as u64;
                ticks = Some(t);
                addr
            }
            (
                Desc::Conv { .. }
                | Desc::BlockedConv { .. }
                | Desc::WinogradConv { .. }
                | Desc::Linear { .. },
                Some(_),
            ) => {
                if let Desc::BlockedConv { also: Some(k), .. } = *d {
                    alsos.insert(slot, scale_shift(&p.steps[k], &weight)?.0);
                }
                jobs.push(slot);
                0
            }
            (Desc::Pool { .. }, Some(s)) => {
                let (Kind::MaxPool(g) | Kind::AvgPool(g)) = s.kind else {
                    return Err(s.error(STAGE, "a pool descriptor for another op"));
                };
                hold(
                    &mut held,
                    PoolDesc {
                        shared: sp,
                        step: info,
                        n: g.n,
                        c: g.c,
                        h: g.h,
                        w: g.w,
                        kernel: g.kernel,
                        stride: g.stride,
                        pad: g.pad,
                        oh: g.oh,
                        ow: g.ow,
                        max: matches!(s.kind, Kind::MaxPool(_)),
                    },
                )
            }
            (Desc::Pad { .. }, Some(s)) => {
                let Kind::ShortcutPad {
                    stride,
                    pad_before,
                    pad_after,
                } = s.kind
                else {
                    return Err(s.error(STAGE, "a pad descriptor for another op"));
                };
                let x = s.inputs.first().ok_or_else(|| s.error(STAGE, "no input"))?;
                hold(
                    &mut held,
                    PadDesc {
                        shared: sp,
                        step: info,
                        n: x.shape.batch(),
                        c: x.shape.channels(),
                        h: x.shape.height(),
                        w: x.shape.width(),
                        stride,
                        before: pad_before,
                        after: pad_after,
                    },
                )
            }
            (Desc::Global { .. }, Some(s)) => {
                let Kind::GlobalAvgPool { n, c, hw } = s.kind else {
                    return Err(s.error(STAGE, "a global pool descriptor for another op"));
                };
                hold(
                    &mut held,
                    GlobalDesc {
                        shared: sp,
                        step: info,
                        n,
                        c,
                        hw,
                    },
                )
            }
            (Desc::ScaleShift { .. }, Some(s)) => {
                let (runtime::Affine { scale, shift, relu }, (channels, plane)) =
                    scale_shift(s, &weight)?;
                hold(
                    &mut held,
                    ScaleShiftDesc {
                        shared: sp,
                        step: info,
                        n: s.output.len() / (channels * plane).max(1),
                        c: channels,
                        hw: plane,
                        relu,
                        scale,
                        shift,
                    },
                )
            }
            (Desc::Scale { .. } | Desc::Shift { .. }, Some(s)) => {
                let Kind::ScaleShift { scale, shift, .. } = s.kind else {
                    return Err(s.error(STAGE, "a scale for another op"));
                };
                let v = weight(if matches!(d, Desc::Scale { .. }) {
                    scale
                } else {
                    shift
                });
                let addr = v.as_ptr() as u64;
                held.push(Box::new(v));
                addr
            }
            (_, None) => return Err(GraphError::new(STAGE, "a descriptor without its step")),
        };
    }
    mark("threads, store", &mut phases);
    // The weights are packed on the team, the largest first; each tensor
    // is freed (when given up) as soon as it is packed.
    let size = |slot: &usize| {
        l.descs[*slot]
            .step()
            .and_then(|k| match &p.steps[k].kind {
                Kind::Conv { weight, .. } | Kind::Linear { weight, .. } => p
                    .weights
                    .get(weight.0)
                    .map(|w| w.shape.iter().product::<usize>()),
                _ => None,
            })
            .unwrap_or(0)
    };
    let owned = matches!(source, Source::Owned(_));
    if owned {
        // Last step first (layer4's convs, the largest, then back): the
        // reverse of the order the tensors were read in, side by side
        // (`pages::Carving`), so that their 2 MB pages are freed whole one
        // after another, while the store still has pages to back with them.
        jobs.sort_by_key(|s| std::cmp::Reverse(l.descs[*s].step()));
    } else {
        jobs.sort_by_key(|s| std::cmp::Reverse(size(s)));
    }
    let floats: Vec<usize> = jobs
        .iter()
        .filter_map(|&slot| stored(&l.descs[slot]))
        .collect();
    let mut regions = match store.as_mut() {
        Some(st) => st
            .regions(&floats)
            .ok_or_else(|| GraphError::new(STAGE, "the weight store is full"))?,
        None => Vec::new(),
    }
    .into_iter();
    type Input<'a> = Mutex<Option<(usize, Option<blocked::Region<'a>>)>>;
    let inputs: Vec<Input> = jobs
        .iter()
        .map(|&slot| {
            let region = match stored(&l.descs[slot]) {
                Some(_) => regions.next(),
                None => None,
            };
            Mutex::new(Some((slot, region)))
        })
        .collect();
    let outputs: Vec<Mutex<Option<Built>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let at = Shareable(sp);
    // The bf16 copy of a conv's input: one buffer for the network's convs.
    let precision = if jit.bf16 {
        blocked::Precision::Bf16(Arc::new(blocked::Bf16Input::new(jit.amx)))
    } else {
        blocked::Precision::F32
    };
    // Tensors given up are freed as they are packed: their blocks back the
    // store's pages from here on, instead of fresh ones.
    let recycling = owned.then(crate::pages::Recycling::begin);
    shared.team.run(jobs.len(), &|i| {
        let Some((slot, mut region)) = inputs[i].lock().ok().and_then(|mut v| v.take()) else {
            return;
        };
        let d = l.descs[slot];
        let built = d
            .step()
            .map(|k| &p.steps[k])
            .ok_or_else(|| GraphError::new(STAGE, "a descriptor without its step"))
            .and_then(|s| {
                let info = d.step().map_or(0, |k| info_of[k]);
                build(jit, p, s, d, info, at, &weight, &precision, region.as_mut())
            });
        if let Ok(mut out) = outputs[i].lock() {
            *out = Some(Built(slot, built));
        }
    });
    for out in outputs {
        let Some(Built(slot, built)) = out.into_inner().ok().flatten() else {
            return Err(GraphError::new(
                STAGE,
                "a weight packing task did not finish",
            ));
        };
        table[slot] = match built? {
            Packing::Table { addr, held: b } => {
                held.push(b);
                addr
            }
            Packing::Blocked { info, n, conv } => {
                packed.push((slot, info, n, *conv));
                0
            }
            Packing::Winograd { info, n, conv } => {
                winograds.push((slot, info, n, *conv));
                0
            }
        };
    }
    drop(recycling);
    let store_bytes = store.as_ref().map(|s| s.bytes());
    // Every conv is packed: the store is shared from here on, read only.
    if let Some(store) = store.take() {
        let store = Arc::new(store);
        // A conv's option A residual, built past Winograd's transforms (`wino`).
        let pad = |slot: usize| {
            let wino = match l.descs[slot] {
                Desc::WinogradConv { tile, .. } => Some(tile),
                _ => None,
            };
            l.descs[slot]
                .step()
                .and_then(|k| strategy::pad_residual(p, &p.steps[k], wino))
        };
        for (slot, info, n, conv) in packed {
            table[slot] = hold(
                &mut held,
                BlockedConvDesc {
                    shared: sp,
                    step: info,
                    n,
                    conv: conv.bind(store.clone()),
                    pad: pad(slot),
                    also: alsos.remove(&slot),
                },
            );
        }
        for (slot, info, n, conv) in winograds {
            table[slot] = hold(
                &mut held,
                runtime::WinogradConvDesc {
                    shared: sp,
                    step: info,
                    n,
                    conv: conv.bind(store.clone()),
                    pad: pad(slot),
                },
            );
        }
    }
    mark("pack weights", &mut phases);
    let (mut module, (id, _)) = generate(&l, &p.name)?;
    module
        .finalize_definitions()
        .map_err(|e| GraphError::new(STAGE, e.to_string()))?;
    let code = module.get_finalized_function(id);
    // SAFETY: the function was built with the signature fn(i64, i64) and
    // the platform's default calling convention, which is extern "C".
    let func: unsafe extern "C" fn(*mut f32, *const u64) = unsafe { std::mem::transmute(code) };
    mark("generate code", &mut phases);
    let arena = Arena::new(p.arena_bytes as usize)?;
    mark("arena", &mut phases);
    Ok(Compiled {
        func,
        module: Some(module),
        table,
        _held: held,
        ticks,
        arena,
        input: (p.input.index(), p.input.shape.dims().to_vec()),
        output: (p.output.index(), p.output.shape.dims().to_vec()),
        steps: l.infos,
        ats: l.ats,
        kernels: jit.kernels,
        compile_time: start.elapsed(),
        phases,
        store_bytes,
        threads,
        shared,
    })
}

/// The network's shared state, as packing tasks hold it (only its address
/// is read: it goes into the descriptors).
#[derive(Clone, Copy)]
struct Shareable(*const Shared);

// SAFETY: the pointer is only copied into descriptors, not dereferenced
// while the weights are packed.
unsafe impl Send for Shareable {}
// SAFETY: as for Send.
unsafe impl Sync for Shareable {}

/// What packing one step's weights made.
enum Packing {
    /// A descriptor: its address for the table, and the box that holds it.
    Table { addr: u64, held: Box<dyn Any> },
    /// A blocked conv, bound to the store once every conv is packed.
    Blocked {
        info: usize,
        n: usize,
        conv: Box<blocked::Packed>,
    },
    /// A Winograd conv, bound likewise.
    Winograd {
        info: usize,
        n: usize,
        conv: Box<winograd::Packed>,
    },
}

/// A packing task's result, for the descriptor table's `slot`.
struct Built(usize, Result<Packing, GraphError>);

// SAFETY: a result moves once, from the task that made it to the thread
// that assembles the table; its pointers (to the shared state and the
// store) are not dereferenced on the way.
unsafe impl Send for Built {}

/// A boxed descriptor, and its address.
fn table_entry<T: 'static>(v: T) -> Packing {
    let b = Box::new(v);
    let addr = &*b as *const T as u64;
    Packing::Table { addr, held: b }
}

/// A conv step on blocked maps: its weight, epilogue, batch and geometry.
fn on_blocked_maps<'a>(
    p: &Program,
    s: &'a Step,
) -> Result<(WeightId, &'a Epilogue, usize, blocked::Geom), GraphError> {
    let Kind::Conv {
        weight,
        epilogue,
        geom,
    } = &s.kind
    else {
        return Err(s.error(STAGE, "a conv descriptor for another op"));
    };
    let g = strategy::blocked_geom(p, s).ok_or_else(|| s.error(STAGE, "no blocked geometry"))?;
    Ok((*weight, epilogue, geom.n, g))
}

/// A scale-shift step's scales, shifts and ReLU, and its (channels, plane).
fn scale_shift(
    s: &Step,
    weight: &dyn Fn(WeightId) -> Vec<f32>,
) -> Result<(runtime::Affine, (usize, usize)), GraphError> {
    let Kind::ScaleShift {
        scale,
        shift,
        channels,
        plane,
        relu,
    } = s.kind
    else {
        return Err(s.error(STAGE, "a scale-shift descriptor for another op"));
    };
    let (scale, shift) = (weight(scale), weight(shift));
    if scale.len() != channels || shift.len() != channels {
        return Err(s.error(STAGE, "a scale or shift not one value a channel"));
    }
    Ok((runtime::Affine { scale, shift, relu }, (channels, plane)))
}

/// Pack step `s`'s weights for descriptor `d` (`region`: a blocked conv's
/// part of the store).
#[allow(clippy::too_many_arguments)]
fn build(
    jit: &Jit,
    p: &Program,
    s: &Step,
    d: Desc,
    info: usize,
    shared: Shareable,
    weight: &(dyn Fn(WeightId) -> Vec<f32> + Sync),
    precision: &blocked::Precision,
    region: Option<&mut blocked::Region>,
) -> Result<Packing, GraphError> {
    let sp = shared.0;
    Ok(match d {
        Desc::Conv { strategy, .. } => table_entry(conv_desc(s, weight, sp, info, strategy)?),
        Desc::BlockedConv { .. } => {
            let (w, epilogue, n, g) = on_blocked_maps(p, s)?;
            let region = region.ok_or_else(|| s.error(STAGE, "no room in the weight store"))?;
            let bias = epilogue.bias.map(weight);
            let (relu, ks) = (epilogue.relu, jit.kernels);
            let conv = blocked::Conv::pack_with(g, &weight(w), bias, relu, ks, precision, region)
                .ok_or_else(|| s.error(STAGE, "the weight store is full"))?;
            Packing::Blocked {
                info,
                n,
                conv: Box::new(conv),
            }
        }
        Desc::WinogradConv { tile, .. } => {
            let (w, epilogue, n, g) = on_blocked_maps(p, s)?;
            let region = region.ok_or_else(|| s.error(STAGE, "no room in the weight store"))?;
            let bias = epilogue.bias.map(weight);
            let relu = epilogue.relu;
            let conv =
                winograd::Conv::pack(g, n, tile, &weight(w), bias, relu, jit.kernels, region)
                    .ok_or_else(|| {
                        s.error(STAGE, "not a Winograd conv, or the weight store is full")
                    })?;
            Packing::Winograd {
                info,
                n,
                conv: Box::new(conv),
            }
        }
        Desc::Linear { .. } => {
            let Kind::Linear {
                n,
                in_features,
                out_features,
                weight: w,
                bias,
            } = s.kind
            else {
                return Err(s.error(STAGE, "an fc descriptor for another op"));
            };
            table_entry(LinearDesc {
                shared: sp,
                step: info,
                n,
                f: in_features,
                w: LinearWeights::pack(&weight(w), out_features, in_features, n),
                bias: bias.map(weight),
            })
        }
        _ => return Err(s.error(STAGE, "no weights to pack for this descriptor")),
    })
}

/// A planar conv's descriptor: its weights packed for the GEMM.
fn conv_desc(
    s: &Step,
    weight: &dyn Fn(WeightId) -> Vec<f32>,
    shared: *const Shared,
    step: usize,
    strategy: ConvStrategy,
) -> Result<ConvDesc, GraphError> {
    let Kind::Conv {
        geom: g,
        weight: w,
        epilogue,
    } = &s.kind
    else {
        return Err(s.error(STAGE, "a conv descriptor for another op"));
    };
    let wt = weight(*w);
    let (cg, og) = (g.c / g.groups, g.o / g.groups);
    let k = cg * g.kernel * g.kernel;
    let a = (0..g.groups)
        .map(|gi| PackedA::pack(&wt[gi * og * k..(gi + 1) * og * k], og, k))
        .collect();
    let (residual, res_chw) = match &epilogue.residual {
        None => (crate::ir::op::Residual::None, (0, 0, 0)),
        Some(r) => {
            let b = &r.buffer().shape;
            let chw = (b.channels(), b.height(), b.width());
            match r {
                Residual::Add(_) => (crate::ir::op::Residual::Add, chw),
                Residual::PadAdd {
                    stride,
                    pad_before,
                    pad_after,
                    ..
                } => (
                    crate::ir::op::Residual::PadAdd {
                        stride: *stride,
                        pad_before: *pad_before,
                        pad_after: *pad_after,
                    },
                    chw,
                ),
            }
        }
    };
    Ok(ConvDesc {
        shared,
        step,
        g: *g,
        a,
        bias: epilogue.bias.map(weight),
        residual,
        res_chw,
        relu: epilogue.relu,
        strategy,
    })
}

/// A compiled network, ready to run. Fields drop in order: the code is
/// freed first (in `Drop`), the shared state (the team's threads) last.
pub struct Compiled {
    func: unsafe extern "C" fn(*mut f32, *const u64),
    module: Option<JITModule>,
    /// The descriptor table the code reads, by slot.
    table: Vec<u64>,
    /// What the table points at.
    _held: Vec<Box<dyn Any>>,
    ticks: Option<Box<runtime::Ticks>>,
    arena: Arena,
    input: (usize, Vec<usize>),
    output: (usize, Vec<usize>),
    steps: Vec<StepInfo>,
    ats: Vec<At>,
    kernels: &'static Kernels,
    compile_time: Duration,
    phases: Vec<(&'static str, Duration)>,
    store_bytes: Option<(usize, usize)>,
    threads: usize,
    shared: Box<Shared>,
}

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: nothing calls the function after this.
            unsafe { m.free_memory() };
        }
    }
}

/// 64-byte aligned f32 storage.
struct Arena {
    ptr: *mut f32,
    layout: std::alloc::Layout,
}

impl Arena {
    fn new(bytes: usize) -> Result<Arena, GraphError> {
        // Maps of several MB (ResNet-50's at 56x56: 3.2 MB) on 2 MB pages,
        // as the weights are: fewer TLB misses.
        let huge = bytes >= blocked::HUGE_PAGE / 2;
        let align = if huge { blocked::HUGE_PAGE } else { 64 };
        let layout = std::alloc::Layout::from_size_align(bytes.max(64), align)
            .map_err(|e| GraphError::new(STAGE, format!("an arena of {bytes} bytes: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f32;
        if huge && !ptr.is_null() {
            blocked::huge_pages(ptr as *mut u8, layout.size());
        }
        if ptr.is_null() {
            return Err(GraphError::new(
                STAGE,
                format!("cannot allocate an arena of {bytes} bytes"),
            ));
        }
        Ok(Arena { ptr, layout })
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr as *mut u8, self.layout) }
    }
}

impl Executable for Compiled {
    fn run(&mut self, x: &ArrayD<f32>) -> Result<ArrayD<f32>, GraphError> {
        if x.shape() != self.input.1.as_slice() {
            return Err(GraphError::new(
                RUN,
                format!(
                    "input: expected shape {:?}, found {:?}",
                    self.input.1,
                    x.shape()
                ),
            ));
        }
        let x = x.as_standard_layout();
        let xs = x
            .as_slice()
            .ok_or_else(|| GraphError::new(RUN, "input is not contiguous"))?;
        // SAFETY: the input slot holds exactly the input's elements; the
        // table and what it points at live as long as `self`.
        unsafe {
            let dst = self.arena.ptr.add(self.input.0);
            std::ptr::copy_nonoverlapping(xs.as_ptr(), dst, xs.len());
            (self.func)(self.arena.ptr, self.table.as_ptr());
        }
        if let Some((step, what)) = self.shared.take_failure() {
            return Err(GraphError {
                stage: RUN,
                at: self.ats.get(step).cloned().map(Box::new),
                message: format!("a kernel panicked: {what}"),
                help: None,
            });
        }
        let n: usize = self.output.1.iter().product();
        // SAFETY: the output slot holds n values, written by the run.
        let src = unsafe { std::slice::from_raw_parts(self.arena.ptr.add(self.output.0), n) };
        ArrayD::from_shape_vec(self.output.1.clone(), src.to_vec())
            .map_err(|e| GraphError::new(RUN, e.to_string()))
    }

    fn steps(&self) -> &[StepInfo] {
        &self.steps
    }

    fn profile(&self) -> Option<Vec<Duration>> {
        let t = self.ticks.as_ref()?;
        // SAFETY: no run is in progress (we hold &self, runs take &mut self).
        let v = unsafe { &*t.0.get() };
        Some(
            v.windows(2)
                .map(|w| w[1].saturating_duration_since(w[0]))
                .collect(),
        )
    }

    fn info(&self) -> Info {
        Info {
            threads: self.threads,
            kernels: self.kernels.about.to_string(),
            arena_bytes: self.arena.layout.size(),
            compile_time: self.compile_time,
            phases: self.phases.clone(),
            store: self.store_bytes,
        }
    }

    fn measure_peak(&self) -> Option<f64> {
        Some(gemm::measure_peak(self.kernels, &self.shared.team))
    }
}
