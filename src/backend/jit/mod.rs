//! The CPU JIT: the optimized, memory-planned graph becomes one native
//! function (cranelift) over one arena. Weights are packed once, here; the
//! generated code calls GEMM kernels with fused epilogues and runs SIMD loops
//! for the elementwise ops.

pub mod blocked;
pub mod codegen;
pub mod gemm;
pub mod runtime;
pub mod strategy;
pub mod team;

use std::time::{Duration, Instant};

use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use ndarray::ArrayD;

use super::interp::logits_node;
use super::RunError;
use crate::ir::{Graph, Op};
use crate::weights::BoundWeights;
use codegen::{Arg, MapOp, Step};
use gemm::PackedA;
use runtime::{ConvDesc, LinearDesc, PadDesc, PoolDesc, Shared};
pub use strategy::ConvStrategy;

#[derive(Clone, Debug, Default)]
pub struct JitOptions {
    /// Worker threads for the GEMMs; 0 means one per core.
    pub threads: usize,
    /// Force a conv strategy where eligible (experiments).
    pub conv_strategy: Option<ConvStrategy>,
    /// Time every step (a call after each; for `resnetc bench --profile`).
    pub profile: bool,
}

/// One step of the compiled network, for profiles.
#[derive(Clone, Debug)]
pub struct StepInfo {
    pub name: String,
    pub op: &'static str,
    /// The conv strategy, or how the op runs.
    pub how: &'static str,
    pub flops: u64,
}

/// A compiled network, ready to run.
// Boxed descriptors: generated code holds their addresses, which must not
// move when the vectors grow.
#[allow(clippy::vec_box)]
pub struct Compiled {
    func: unsafe extern "C" fn(*mut f32),
    module: Option<JITModule>,
    arena: Arena,
    input: (usize, Vec<usize>),
    output: (usize, Vec<usize>),
    // Descriptors the code points at: boxed, so their addresses are stable.
    _shared: Box<Shared>,
    _convs: Vec<Box<ConvDesc>>,
    _blocked_convs: Vec<Box<runtime::BlockedConvDesc>>,
    /// Where the blocked convs' weights are (declared after them: dropped after).
    _store: Option<blocked::Store>,
    _linears: Vec<Box<LinearDesc>>,
    _pools: Vec<Box<PoolDesc>>,
    _pads: Vec<Box<PadDesc>>,
    _consts: Vec<Vec<f32>>,
    /// The generated function as cranelift IR text.
    pub clif: String,
    /// The strategy picked for each conv, by name.
    pub strategies: Vec<(String, &'static str)>,
    pub compile_time: Duration,
    pub threads: usize,
    /// The steps, in order (what a profile's times refer to).
    pub steps: Vec<StepInfo>,
    ticks: Option<Box<runtime::Ticks>>,
}

/// 64-byte aligned f32 storage.
struct Arena {
    ptr: *mut f32,
    layout: std::alloc::Layout,
}

impl Arena {
    fn new(bytes: usize) -> Result<Arena, RunError> {
        let layout = std::alloc::Layout::from_size_align(bytes.max(64), 64)
            .map_err(|e| RunError(format!("arena of {bytes} bytes: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) } as *mut f32;
        if ptr.is_null() {
            return Err(RunError(format!(
                "cannot allocate an arena of {bytes} bytes"
            )));
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

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: nothing calls the function after this.
            unsafe { m.free_memory() };
        }
    }
}

fn err(msg: impl Into<String>) -> RunError {
    RunError(msg.into())
}

fn param<'a>(w: &'a BoundWeights, name: &str, suffix: &str) -> Result<&'a ArrayD<f32>, RunError> {
    w.param(name, suffix)
        .ok_or_else(|| err(format!("no weight `{name}.{suffix}`")))
}

fn flat(t: &ArrayD<f32>) -> Vec<f32> {
    t.as_standard_layout().iter().copied().collect()
}

/// Compile a planned graph with its weights.
pub fn compile(g: &Graph, w: &BoundWeights, opts: &JitOptions) -> Result<Compiled, RunError> {
    let start = Instant::now();
    let plan = g
        .plan
        .as_ref()
        .ok_or_else(|| err("the graph has no memory plan: run the optimizer first"))?;
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.threads
    };
    let team = team::Team::new(threads).map_err(|e| err(format!("threads: {e}")))?;
    let shared = Box::new(Shared {
        team,
        scratch: std::cell::UnsafeCell::new(Vec::new()),
    });
    let sp: *const Shared = &*shared;
    let off = |i| {
        plan.slot(i)
            .map(|s| s.offset)
            .ok_or_else(|| err("a value has no arena slot"))
    };
    let last = logits_node(g);
    let blocked = matches!(opts.conv_strategy, None | Some(ConvStrategy::Blocked))
        && strategy::blocked_layout(g, last).is_ok();
    let mut blocked_convs = Vec::new();
    let mut store = if blocked {
        let geoms: Vec<blocked::Geom> = g
            .order
            .iter()
            .filter_map(|&i| strategy::blocked_geom(g, i))
            .collect();
        blocked::Store::new(&geoms, &shared.team)
    } else {
        None
    };
    let mut steps = Vec::new();
    let mut convs = Vec::new();
    let mut linears = Vec::new();
    let mut pools = Vec::new();
    let mut pads = Vec::new();
    let mut consts: Vec<Vec<f32>> = Vec::new();
    let mut strategies = Vec::new();
    let mut infos: Vec<StepInfo> = Vec::new();
    let ticks = opts
        .profile
        .then(|| Box::new(runtime::Ticks(std::cell::UnsafeCell::new(Vec::new()))));
    let mut scratch = 0usize;
    for &i in &g.order {
        let before = steps.len();
        let n = g.node(i);
        let ins = g.inputs(i);
        let shape = &n.shape;
        let out = off(i)?;
        let xin = |k: usize| -> Result<u64, RunError> {
            off(*ins.get(k).ok_or_else(|| err("missing input"))?)
        };
        let xs = ins.first().map(|&j| g.node(j).shape.clone());
        match n.op {
            Op::Input => {}
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                groups,
                bias,
                residual,
                relu,
            } => {
                let x = xs.ok_or_else(|| err("conv without input"))?;
                let wt = flat(param(w, &n.name, "weight")?);
                let b = if bias {
                    Some(flat(param(w, &n.name, "bias")?))
                } else {
                    None
                };
                let r = if residual.is_none() {
                    Arg::Const(0)
                } else {
                    Arg::Arena(xin(1)?)
                };
                let desc = if blocked {
                    let geom = strategy::blocked_geom(g, i)
                        .ok_or_else(|| err(format!("`{}`: no blocked geometry", n.name)))?;
                    let d = Box::new(runtime::BlockedConvDesc {
                        shared: sp,
                        n: x.batch(),
                        conv: blocked::Conv::new(geom, &wt, b, relu, store.as_mut()),
                    });
                    strategies.push((n.name.clone(), ConvStrategy::Blocked.name()));
                    let ptr = &*d as *const runtime::BlockedConvDesc as u64;
                    blocked_convs.push(d);
                    ("rt_conv_blocked", ptr)
                } else {
                    let (cg, og) = (in_channels / groups, out_channels / groups);
                    let k = cg * kernel * kernel;
                    let a = (0..groups)
                        .map(|gi| PackedA::pack(&wt[gi * og * k..(gi + 1) * og * k], og, k))
                        .collect();
                    let strategy = strategy::choose(&n.op, opts.conv_strategy);
                    strategies.push((n.name.clone(), strategy.name()));
                    if strategy == ConvStrategy::Strided1x1 {
                        // The subsampled input, for every image and group at once.
                        scratch =
                            scratch.max(in_channels * x.batch() * shape.height() * shape.width());
                    }
                    let res = ins.get(1).map(|&j| g.node(j).shape.clone());
                    let d = Box::new(ConvDesc {
                        shared: sp,
                        n: x.batch(),
                        c: in_channels,
                        h: x.height(),
                        w: x.width(),
                        o: out_channels,
                        kernel,
                        stride,
                        pad: padding,
                        groups,
                        oh: shape.height(),
                        ow: shape.width(),
                        a,
                        bias: b,
                        residual,
                        res_chw: res.map_or((0, 0, 0), |r| (r.channels(), r.height(), r.width())),
                        relu,
                        strategy,
                    });
                    let ptr = &*d as *const ConvDesc as u64;
                    convs.push(d);
                    ("rt_conv", ptr)
                };
                steps.push(Step::Call {
                    symbol: desc.0,
                    args: vec![Arg::Const(desc.1), Arg::Arena(xin(0)?), r, Arg::Arena(out)],
                });
            }
            Op::Linear {
                in_features,
                out_features,
                bias,
            } => {
                let wt = flat(param(w, &n.name, "weight")?);
                let b = if bias {
                    Some(flat(param(w, &n.name, "bias")?))
                } else {
                    None
                };
                scratch = scratch.max(gemm::packed_b_len(in_features, shape.batch()));
                let d = Box::new(LinearDesc {
                    shared: sp,
                    n: shape.batch(),
                    f: in_features,
                    a: PackedA::pack(&wt, out_features, in_features),
                    bias: b,
                });
                steps.push(Step::Call {
                    symbol: "rt_linear",
                    args: vec![
                        Arg::Const(&*d as *const LinearDesc as u64),
                        Arg::Arena(xin(0)?),
                        Arg::Arena(out),
                    ],
                });
                linears.push(d);
            }
            Op::BatchNorm { channels, eps } => {
                let (gm, bt, mu, var) = (
                    flat(param(w, &n.name, "weight")?),
                    flat(param(w, &n.name, "bias")?),
                    flat(param(w, &n.name, "running_mean")?),
                    flat(param(w, &n.name, "running_var")?),
                );
                let s: Vec<f32> = (0..channels)
                    .map(|c| (gm[c] as f64 / (var[c] as f64 + eps).sqrt()) as f32)
                    .collect();
                let t: Vec<f32> = (0..channels).map(|c| bt[c] - mu[c] * s[c]).collect();
                steps.push(scale_shift(xin(0)?, out, shape, channels, &s, &t, false));
                consts.push(s);
                consts.push(t);
            }
            Op::ScaleShift { channels, relu } => {
                let s = flat(param(w, &n.name, "weight")?);
                let t = flat(param(w, &n.name, "bias")?);
                steps.push(scale_shift(xin(0)?, out, shape, channels, &s, &t, relu));
                consts.push(s);
                consts.push(t);
            }
            Op::Relu => steps.push(Step::Map {
                op: MapOp::Relu,
                inputs: vec![xin(0)?],
                out,
                len: shape.numel() as usize,
            }),
            Op::Add => steps.push(Step::Map {
                op: MapOp::Add,
                inputs: vec![xin(0)?, xin(1)?],
                out,
                len: shape.numel() as usize,
            }),
            Op::Flatten => {
                if xin(0)? != out {
                    steps.push(Step::Map {
                        op: MapOp::Copy,
                        inputs: vec![xin(0)?],
                        out,
                        len: shape.numel() as usize,
                    });
                }
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding,
            } => {
                let x = xs.ok_or_else(|| err("pool without input"))?;
                let d = Box::new(PoolDesc {
                    shared: sp,
                    n: x.batch(),
                    c: x.channels(),
                    h: x.height(),
                    w: x.width(),
                    kernel,
                    stride,
                    pad: padding,
                    oh: shape.height(),
                    ow: shape.width(),
                    max: matches!(n.op, Op::MaxPool { .. }),
                });
                steps.push(Step::Call {
                    symbol: if blocked {
                        "rt_max_pool_blocked"
                    } else {
                        "rt_pool"
                    },
                    args: vec![
                        Arg::Const(&*d as *const PoolDesc as u64),
                        Arg::Arena(xin(0)?),
                        Arg::Arena(out),
                    ],
                });
                pools.push(d);
            }
            Op::GlobalAvgPool if blocked => {
                let x = xs.ok_or_else(|| err("pool without input"))?;
                steps.push(Step::Call {
                    symbol: "rt_global_avg_blocked",
                    args: vec![
                        Arg::Const(x.batch() as u64),
                        Arg::Const(x.channels() as u64),
                        Arg::Const((x.height() * x.width()) as u64),
                        Arg::Arena(xin(0)?),
                        Arg::Arena(out),
                    ],
                });
            }
            Op::GlobalAvgPool => {
                let x = xs.ok_or_else(|| err("pool without input"))?;
                steps.push(Step::GlobalAvg {
                    x: xin(0)?,
                    out,
                    planes: x.batch() * x.channels(),
                    plane: x.height() * x.width(),
                });
            }
            Op::ShortcutPad {
                stride,
                pad_before,
                pad_after,
            } => {
                let x = xs.ok_or_else(|| err("shortcut without input"))?;
                let d = Box::new(PadDesc {
                    n: x.batch(),
                    c: x.channels(),
                    h: x.height(),
                    w: x.width(),
                    stride,
                    before: pad_before,
                    after: pad_after,
                });
                steps.push(Step::Call {
                    symbol: "rt_shortcut_pad",
                    args: vec![
                        Arg::Const(&*d as *const PadDesc as u64),
                        Arg::Arena(xin(0)?),
                        Arg::Arena(out),
                    ],
                });
                pads.push(d);
            }
            Op::Softmax => steps.push(Step::Call {
                symbol: "rt_softmax",
                args: vec![
                    Arg::Const(shape.batch() as u64),
                    Arg::Const(shape.numel() / shape.batch().max(1) as u64),
                    Arg::Arena(xin(0)?),
                    Arg::Arena(out),
                ],
            }),
        }
        if steps.len() > before {
            let shapes: Vec<&crate::ir::Shape> = ins.iter().map(|&j| &g.node(j).shape).collect();
            let how = match &n.op {
                Op::Conv2d { .. } if blocked => ConvStrategy::Blocked.name(),
                Op::Conv2d { .. } => strategy::choose(&n.op, opts.conv_strategy).name(),
                Op::Linear { .. } => "gemm",
                Op::Relu
                | Op::Add
                | Op::Flatten
                | Op::BatchNorm { .. }
                | Op::ScaleShift { .. }
                | Op::GlobalAvgPool
                    if !blocked =>
                {
                    "clif simd loop"
                }
                Op::Relu | Op::Add | Op::Flatten => "clif simd loop",
                _ => "kernel",
            };
            infos.push(StepInfo {
                name: n.name.clone(),
                op: n.op.kind(),
                how,
                flops: n.op.cost(&shapes, shape).flops.total(),
            });
            if let Some(t) = &ticks {
                steps.push(Step::Call {
                    symbol: "rt_tick",
                    args: vec![
                        Arg::Const(&**t as *const runtime::Ticks as u64),
                        Arg::Const(infos.len() as u64),
                    ],
                });
            }
        }
        if i == last {
            break;
        }
    }
    if let Some(t) = &ticks {
        // SAFETY: nothing runs yet.
        unsafe { *t.0.get() = vec![Instant::now(); infos.len() + 1] };
        steps.insert(
            0,
            Step::Call {
                symbol: "rt_tick",
                args: vec![
                    Arg::Const(&**t as *const runtime::Ticks as u64),
                    Arg::Const(0),
                ],
            },
        );
    }
    // Scale and shift arrays are addressed by the code: fix their addresses.
    for (s, step) in consts.chunks(2).zip(
        steps
            .iter_mut()
            .filter(|s| matches!(s, Step::ScaleShift { .. })),
    ) {
        if let Step::ScaleShift { scale, shift, .. } = step {
            *scale = s[0].as_ptr() as u64;
            *shift = s[1].as_ptr() as u64;
        }
    }
    // SAFETY: no kernel runs yet; the scratch is sized once, here.
    unsafe { (*shared.scratch.get()).resize(scratch, 0.0) };

    let mut flag_builder = settings::builder();
    for (k, v) in [
        ("opt_level", "speed"),
        ("is_pic", "false"),
        ("use_colocated_libcalls", "false"),
    ] {
        flag_builder
            .set(k, v)
            .map_err(|e| err(format!("cranelift flag {k}: {e}")))?;
    }
    let isa = cranelift_native::builder()
        .map_err(|e| err(format!("this host is not supported by cranelift: {e}")))?
        .finish(settings::Flags::new(flag_builder))
        .map_err(|e| err(format!("cranelift: {e}")))?;
    let mut jb = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    for (name, ptr) in codegen::runtime_symbols() {
        jb.symbol(name, ptr);
    }
    let mut module = JITModule::new(jb);
    let (id, clif) = codegen::build(&mut module, &steps, &g.name).map_err(err)?;
    module
        .finalize_definitions()
        .map_err(|e| err(e.to_string()))?;
    let code = module.get_finalized_function(id);
    // SAFETY: the function was built with the signature fn(i64) and the
    // platform's default calling convention, which is extern "C".
    let func: unsafe extern "C" fn(*mut f32) = unsafe { std::mem::transmute(code) };
    let arena = Arena::new(plan.arena_bytes as usize)?;
    Ok(Compiled {
        func,
        module: Some(module),
        arena,
        input: (off(g.input)? as usize, g.input_shape().dims().to_vec()),
        output: (off(last)? as usize, g.node(last).shape.dims().to_vec()),
        _shared: shared,
        _convs: convs,
        _blocked_convs: blocked_convs,
        _store: store,
        _linears: linears,
        _pools: pools,
        _pads: pads,
        _consts: consts,
        clif,
        strategies,
        compile_time: start.elapsed(),
        threads,
        steps: infos,
        ticks,
    })
}

fn scale_shift(
    x: u64,
    out: u64,
    shape: &crate::ir::Shape,
    channels: usize,
    _s: &[f32],
    _t: &[f32],
    relu: bool,
) -> Step {
    let plane = if shape.rank() == 4 {
        shape.height() * shape.width()
    } else {
        1
    };
    Step::ScaleShift {
        x,
        out,
        planes: shape.numel() as usize / plane.max(1),
        channels,
        plane,
        // Filled in once the constant arrays have their final addresses.
        scale: 0,
        shift: 0,
        relu,
    }
}

impl Compiled {
    /// Run on one input batch (the shape the graph was compiled for);
    /// returns the logits (the value before a final softmax).
    pub fn run(&mut self, x: &ArrayD<f32>) -> Result<ArrayD<f32>, RunError> {
        if x.shape() != self.input.1.as_slice() {
            return Err(err(format!(
                "input: expected shape {:?}, found {:?}",
                self.input.1,
                x.shape()
            )));
        }
        let x = x.as_standard_layout();
        let xs = x.as_slice().ok_or_else(|| err("input is not contiguous"))?;
        // SAFETY: the input slot holds exactly the input's elements.
        unsafe {
            let dst = self.arena.ptr.add(self.input.0 / 4);
            std::ptr::copy_nonoverlapping(xs.as_ptr(), dst, xs.len());
            (self.func)(self.arena.ptr);
            let n: usize = self.output.1.iter().product();
            let src = std::slice::from_raw_parts(self.arena.ptr.add(self.output.0 / 4), n);
            ArrayD::from_shape_vec(self.output.1.clone(), src.to_vec())
                .map_err(|e| err(e.to_string()))
        }
    }

    /// The time of each step in the last run, when compiled with `profile`.
    pub fn profile(&self) -> Option<Vec<Duration>> {
        let t = self.ticks.as_ref()?;
        // SAFETY: no run is in progress (we hold &self, runs take &mut self).
        let v = unsafe { &*t.0.get() };
        Some(
            v.windows(2)
                .map(|w| w[1].saturating_duration_since(w[0]))
                .collect(),
        )
    }

    /// The FMA peak (GFLOP/s) of this network's threads, measured now.
    pub fn measure_peak(&self) -> f64 {
        gemm::measure_peak(&self._shared.team)
    }

    /// Bytes of the activation arena.
    pub fn arena_bytes(&self) -> usize {
        self.arena.layout.size()
    }
}
