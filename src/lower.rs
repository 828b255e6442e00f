//! Lowering: a checked [`Program`] becomes a [`Graph`] with a shape on every
//! value. Blocks are instantiated per stage, names follow torchvision's
//! state_dict (`layer2.0.conv1`, `layer2.0.downsample.0`), and every node
//! keeps the span of the statement it came from.

pub mod check;
pub mod eval;
pub mod load;
pub mod preprocess;
pub mod sig;

use std::collections::HashMap;
use std::path::Path;

use petgraph::stable_graph::NodeIndex;

use crate::ir::op::Residual;
use crate::ir::{Graph, Node, Op, Shape, StageInfo};
use crate::syntax::ast::{Arg, BlockDef, ExprKind, Network, ShortcutKind, ShortcutSpec, Stmt};
use crate::syntax::{Diagnostic, Diagnostics, SourceMap, Span};
use eval::{eval, Env, Value};
pub use load::{load_file, load_source, Program};
use sig::{as_size, bind_primitive, match_args, primitive};

/// Compile-time choices that are not part of the spec.
#[derive(Clone, Debug)]
pub struct Options {
    pub batch: usize,
    /// Overrides the spec's `input CxHxW`.
    pub input: Option<[usize; 3]>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch: 1,
            input: None,
        }
    }
}

/// Load, check and lower a spec file. `sources` keeps the text for rendering errors.
pub fn compile_file(
    path: &Path,
    opts: &Options,
    sources: &mut SourceMap,
) -> Result<Graph, Diagnostics> {
    let prog = load_file(path, sources)?;
    lower_program(&prog, opts)
}

/// Load, check and lower a spec given as text (imports relative to `name`).
pub fn compile_source(
    name: &str,
    text: &str,
    opts: &Options,
    sources: &mut SourceMap,
) -> Result<Graph, Diagnostics> {
    let prog = load_source(name, text, sources)?;
    lower_program(&prog, opts)
}

/// Check a program and lower its network.
pub fn lower_program(prog: &Program, opts: &Options) -> Result<Graph, Diagnostics> {
    let diags = check::check(prog);
    if !diags.is_empty() {
        return Err(diags);
    }
    let Some(net) = &prog.network else {
        return Err(Diagnostic::new(
            "missing",
            "the file defines no network (a block library can be checked, not compiled)",
        )
        .into());
    };
    Ok(lower_network(prog, net, opts)?)
}

/// How a block's `add shortcut` is built (the paper's options).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Strided identity, new channels zero-padded: split before/after, or all after.
    A {
        split: bool,
    },
    B(Projection),
    C(Projection),
    Plain,
}

/// A projection shortcut's options: `shortcut B(bias = true, bn = false)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Projection {
    bias: bool,
    bn: bool,
}

const PROJECTION: Projection = Projection {
    bias: false,
    bn: true,
};

/// Graphs larger than this are spec mistakes (ResNet-1202 has ~4,000 values).
pub const MAX_NODES: usize = 1_000_000;

struct Lowerer {
    graph: Graph,
    names: HashMap<String, Span>,
    /// Running totals, checked so that no later report can overflow.
    macs: u64,
    params: u64,
}

struct Scope {
    prefix: String,
    env: Env,
    taps: HashMap<String, NodeIndex>,
    cur: NodeIndex,
    origin: Option<Span>,
    mode: Mode,
    /// Every block but the first of a stage must keep its input's shape.
    id_block: bool,
}

type R<T> = Result<T, Diagnostic>;

fn lower_network(prog: &Program, net: &Network, opts: &Options) -> R<Graph> {
    let (dims, dspan) = match (opts.input, &net.input) {
        (Some(d), Some((_, s))) => (d.map(|x| x as u64), *s),
        (Some(d), None) => (d.map(|x| x as u64), net.name.span),
        (None, Some((d, s))) => (*d, *s),
        (None, None) => {
            return Err(Diagnostic::at(
                "missing",
                net.name.span,
                "the network has no input",
            ))
        }
    };
    let [c, h, w] = dims;
    let c = as_size(c.min(i64::MAX as u64) as i64, 1, "input channels", dspan)?;
    let h = as_size(h.min(i64::MAX as u64) as i64, 1, "input height", dspan)?;
    let w = as_size(w.min(i64::MAX as u64) as i64, 1, "input width", dspan)?;
    let batch = as_size(opts.batch as i64, 1, "a batch size", dspan)?;
    let shape = Shape::nchw(batch, c, h, w);
    if shape.checked_numel().is_none() {
        return Err(Diagnostic::at(
            "value",
            dspan,
            format!("the input {shape} has more than 2^40 elements"),
        ));
    }
    let input = Node {
        name: "input".into(),
        op: Op::Input,
        shape,
        span: dspan,
        origin: None,
    };
    let mut l = Lowerer {
        graph: Graph::new(&net.name.name, input),
        names: HashMap::from([("input".to_string(), dspan)]),
        macs: 0,
        params: 0,
    };
    let net_mode = match &net.shortcut {
        Some(s) => mode(s, &Env::new())?,
        None => Mode::B(PROJECTION),
    };
    // torchvision's `self.dilation`: a dilated stage's first block keeps
    // the previous stage's dilation, the rest take the new one.
    let mut dilation = 1i64;
    if !net.preprocess.is_empty() {
        l.graph.preprocess = Some(preprocess::preprocess(&net.preprocess, c)?);
    }
    let mut cur = l.graph.input;
    if let Some(stem) = &net.stem {
        cur = l.section(&stem.body, cur, net_mode)?;
    }
    for st in &net.stages {
        let m = match &st.shortcut {
            Some(s) => mode(s, &Env::new())?,
            None => net_mode,
        };
        let stride = match &st.stride {
            Some(e) => match eval(e, &Env::new())? {
                Value::Int(i) => as_size(i, 1, "a stride", e.span)? as i64,
                v => {
                    return Err(Diagnostic::at(
                        "type",
                        e.span,
                        format!("expected an integer stride, found {}", v.type_name()),
                    ))
                }
            },
            None => 1,
        };
        let Some(def) = prog.blocks.get(&st.block.name.name) else {
            return Err(Diagnostic::at(
                "unknown-name",
                st.block.name.span,
                "unknown block",
            ));
        };
        let stage_dilation = match &st.dilation {
            Some(e) => match eval(e, &Env::new())? {
                Value::Int(i) => Some(as_size(i, 1, "a dilation", e.span)? as i64),
                v => {
                    return Err(Diagnostic::at(
                        "type",
                        e.span,
                        format!("expected an integer dilation, found {}", v.type_name()),
                    ))
                }
            },
            None => None,
        };
        for i in 0..st.repeat {
            let s = if i == 0 { stride } else { 1 };
            let d = stage_dilation.map(|d| if i == 0 { dilation } else { d });
            let env = bind_block(def, &st.block.args, s, d, st.block.span)?;
            let mut scope = Scope {
                prefix: format!("{}.{i}", st.name.name),
                env,
                taps: HashMap::new(),
                cur,
                origin: Some(st.span),
                mode: m,
                id_block: i > 0,
            };
            scope.taps.insert("input".into(), cur);
            l.stmts(&def.body, &mut scope)?;
            cur = scope.cur;
        }
        if let Some(d) = stage_dilation {
            dilation = d;
        }
        l.graph.stages.push(StageInfo {
            name: st.name.name.clone(),
            block: def.name.name.clone(),
            blocks: st.repeat as usize,
            span: st.span,
            output: cur,
        });
    }
    if let Some(head) = &net.head {
        l.section(&head.body, cur, net_mode)?;
    }
    Ok(l.graph)
}

/// The shortcut option of a `shortcut` declaration.
fn mode(s: &ShortcutSpec, env: &Env) -> R<Mode> {
    let projection = || -> R<Projection> {
        let mut p = PROJECTION;
        for a in &s.args {
            let name = a.name.as_ref().map(|n| n.name.as_str());
            let v = match eval(&a.value, env)? {
                Value::Bool(b) => b,
                v => {
                    return Err(Diagnostic::at(
                        "type",
                        a.value.span,
                        format!("expected a boolean, found {}", v.type_name()),
                    ))
                }
            };
            match name {
                Some("bias") => p.bias = v,
                Some("bn") => p.bn = v,
                _ => {
                    return Err(Diagnostic::at(
                        "unknown-name",
                        a.span,
                        "a projection shortcut takes `bias` and `bn`",
                    ))
                }
            }
        }
        Ok(p)
    };
    Ok(match s.kind {
        ShortcutKind::B => Mode::B(projection()?),
        ShortcutKind::C => Mode::C(projection()?),
        ShortcutKind::None => Mode::Plain,
        ShortcutKind::A => {
            let mut split = true;
            if let Some(a) = s.args.iter().find(|a| a.name.is_some()) {
                match eval(&a.value, env)? {
                    Value::Str(v) if v == "split" => split = true,
                    Value::Str(v) if v == "after" => split = false,
                    v => {
                        return Err(Diagnostic::at(
                            "value",
                            a.value.span,
                            format!("expected `pad = \"split\"` or `pad = \"after\"`, found {v}"),
                        )
                        .help("\"split\" pads the new channels evenly before and after the old ones (the common PyTorch CIFAR code); \"after\" appends them (the original Torch code)"))
                    }
                }
            }
            Mode::A { split }
        }
    })
}

/// Evaluate a block's parameters for one instance: the stage's arguments, the
/// stride of this position in the stage, then defaults in declaration order.
fn bind_block(
    def: &BlockDef,
    args: &[Arg],
    stride: i64,
    dilation: Option<i64>,
    call_span: Span,
) -> R<Env> {
    let params: Vec<&str> = def.params.iter().map(|p| p.name.name.as_str()).collect();
    let what = format!("block `{}`", def.name.name);
    let slots = match_args(&what, &params, params.len(), args)?;
    let mut env = Env::new();
    for (p, slot) in def.params.iter().zip(&slots) {
        let v = if p.name.name == "stride" {
            Value::Int(stride)
        } else if let (Some(d), "dilation") = (dilation, p.name.name.as_str()) {
            Value::Int(d)
        } else if let Some(a) = slot {
            eval(&a.value, &Env::new())?
        } else if let Some(d) = &p.default {
            eval(d, &env)?
        } else {
            return Err(Diagnostic::at(
                "arity",
                call_span,
                format!("{what} needs its `{}` argument", p.name.name),
            ));
        };
        env.insert(p.name.name.clone(), v);
    }
    Ok(env)
}

/// The auto name of an unlabelled op, as torchvision names its modules.
fn default_name(op: &str) -> &str {
    match op {
        "max_pool" => "maxpool",
        "avg_pool" | "global_avg_pool" => "avgpool",
        other => other,
    }
}

/// The stride that maps `from`'s pixels onto `to`'s as a strided 1x1 read does.
fn shortcut_stride(from: &Shape, to: &Shape) -> Option<usize> {
    if from.rank() != 4 || to.rank() != 4 || from.batch() != to.batch() || to.height() == 0 {
        return None;
    }
    // The smallest stride that fits both sides: a side of 1 fits any, so
    // neither side alone decides (1x2 -> 1x1 is stride 2).
    (1..=from.height().max(from.width()).max(1)).find(|&s| {
        from.height().div_ceil(s) == to.height() && from.width().div_ceil(s) == to.width()
    })
}

impl Lowerer {
    fn section(&mut self, body: &[Stmt], cur: NodeIndex, mode: Mode) -> R<NodeIndex> {
        let mut scope = Scope {
            prefix: String::new(),
            env: Env::new(),
            taps: HashMap::new(),
            cur,
            origin: None,
            mode,
            id_block: false,
        };
        self.stmts(body, &mut scope)?;
        Ok(scope.cur)
    }

    fn full_name(scope: &Scope, local: &str) -> String {
        if scope.prefix.is_empty() {
            local.to_string()
        } else {
            format!("{}.{local}", scope.prefix)
        }
    }

    /// A free name: `relu`, then `relu_1`, `relu_2`...
    fn auto_name(&self, scope: &Scope, base: &str) -> String {
        let mut name = Self::full_name(scope, base);
        let mut k = 1;
        while self.names.contains_key(&name) {
            name = Self::full_name(scope, &format!("{base}_{k}"));
            k += 1;
        }
        name
    }

    fn add_node(
        &mut self,
        scope: &Scope,
        name: String,
        op: Op,
        inputs: &[NodeIndex],
        span: Span,
    ) -> R<NodeIndex> {
        if let Some(prev) = self.names.get(&name) {
            let mut d = Diagnostic::at("duplicate", span, format!("two layers are named `{name}`"))
                .label(*prev, "first named here");
            if let Some(o) = scope.origin {
                d = d.label(o, "in this stage");
            }
            return Err(d.help("give each layer of a block its own label"));
        }
        let shapes: Vec<&Shape> = inputs.iter().map(|&i| &self.graph.node(i).shape).collect();
        let shape = op.infer(&shapes).map_err(|e| {
            let mut d = Diagnostic::at(
                "shape",
                span,
                format!(
                    "`{name}` ({}): expected {}, found {}",
                    op.kind(),
                    e.expected,
                    e.found
                ),
            );
            if let Some(o) = scope.origin {
                d = d.label(
                    o,
                    format!("in block `{}`, made by this stage", scope.prefix),
                );
            }
            match e.help {
                Some(h) => d.help(h),
                None => d,
            }
        })?;
        let too_big = |what: &str| {
            let mut d = Diagnostic::at(
                "value",
                span,
                format!("`{name}` makes the network's {what} overflow 64 bits"),
            );
            if let Some(o) = scope.origin {
                d = d.label(o, "in this stage");
            }
            d.help("sizes this large are almost certainly a mistake in the spec")
        };
        self.macs = op
            .checked_macs(&shape)
            .and_then(|m| self.macs.checked_add(m))
            .ok_or_else(|| too_big("multiply-add count"))?;
        self.params = op
            .params()
            .iter()
            .try_fold(self.params, |acc, p| {
                p.shape
                    .iter()
                    .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
                    .and_then(|n| acc.checked_add(n))
            })
            .ok_or_else(|| too_big("parameter count"))?;
        if self.graph.len() >= MAX_NODES {
            let mut d = Diagnostic::at(
                "value",
                span,
                format!("the network grows past {MAX_NODES} values here"),
            );
            if let Some(o) = scope.origin {
                d = d.label(o, "in this stage");
            }
            return Err(d.help("check the stages' repeat counts"));
        }
        self.names.insert(name.clone(), span);
        let node = Node {
            name,
            op,
            shape,
            span,
            origin: scope.origin,
        };
        Ok(self.graph.push(node, inputs))
    }

    fn stmts(&mut self, body: &[Stmt], scope: &mut Scope) -> R<()> {
        for s in body {
            match s {
                Stmt::Let { name, value } => {
                    let v = eval(value, &scope.env)?;
                    scope.env.insert(name.name.clone(), v);
                }
                Stmt::Layer {
                    label,
                    call,
                    bind,
                    span,
                } => {
                    let Some(sig) = primitive(&call.name.name) else {
                        return Err(Diagnostic::at(
                            "unknown-name",
                            call.name.span,
                            format!("unknown op `{}`", call.name.name),
                        ));
                    };
                    let b = bind_primitive(sig, &call.args, call.span, &scope.env)?;
                    let x = self.graph.node(scope.cur).shape.clone();
                    let size = |n: &'static str, min: i64, what: &str| -> R<usize> {
                        as_size(
                            b.int(n),
                            min,
                            what,
                            b.spans.get(n).copied().unwrap_or(call.span),
                        )
                    };
                    let op = match sig.name {
                        "conv" => Op::Conv2d {
                            in_channels: x.channels(),
                            out_channels: size("out", 1, "output channels")?,
                            kernel: size("k", 1, "a kernel size")?,
                            stride: size("stride", 1, "a stride")?,
                            padding: size("pad", 0, "padding")?,
                            groups: size("groups", 1, "groups")?,
                            dilation: size("dilation", 1, "a dilation")?,
                            bias: b.bool("bias"),
                            residual: Residual::None,
                            relu: false,
                        },
                        "bn" => Op::BatchNorm {
                            channels: x.channels(),
                            eps: crate::ir::op::BN_EPS,
                        },
                        "relu" => Op::Relu,
                        "max_pool" | "avg_pool" => {
                            let (kernel, stride, padding) = (
                                size("k", 1, "a kernel size")?,
                                size("stride", 1, "a stride")?,
                                size("pad", 0, "padding")?,
                            );
                            let ceil = b.bool("ceil");
                            if sig.name == "max_pool" {
                                Op::MaxPool {
                                    kernel,
                                    stride,
                                    padding,
                                    ceil,
                                }
                            } else {
                                Op::AvgPool {
                                    kernel,
                                    stride,
                                    padding,
                                    ceil,
                                }
                            }
                        }
                        "global_avg_pool" => Op::GlobalAvgPool,
                        "flatten" => Op::Flatten,
                        "fc" => Op::Linear {
                            in_features: if x.rank() == 2 {
                                x.dims()[1]
                            } else {
                                x.channels()
                            },
                            out_features: size("out", 1, "output features")?,
                            bias: b.bool("bias"),
                        },
                        _ => Op::Softmax,
                    };
                    let name = match label {
                        Some(l) => Self::full_name(scope, &l.name),
                        None => self.auto_name(scope, default_name(sig.name)),
                    };
                    let idx = self.add_node(scope, name, op, &[scope.cur], *span)?;
                    scope.cur = idx;
                    if let Some(b) = bind {
                        scope.taps.insert(b.name.clone(), idx);
                    }
                }
                Stmt::AddShortcut { args, span } => self.add_shortcut(args, *span, scope)?,
            }
        }
        Ok(())
    }

    fn add_shortcut(&mut self, args: &[Arg], span: Span, scope: &mut Scope) -> R<()> {
        if scope.mode == Mode::Plain {
            return Ok(());
        }
        let slots = match_args("`add shortcut`", check::SHORTCUT_PARAMS, 0, args)?;
        let tap = |slot: Option<&Arg>, default: NodeIndex| -> R<NodeIndex> {
            let Some(a) = slot else { return Ok(default) };
            match &a.value.kind {
                ExprKind::Name(n) => scope.taps.get(n).copied().ok_or_else(|| {
                    Diagnostic::at("unknown-name", a.value.span, format!("unknown value `{n}`"))
                }),
                _ => Err(Diagnostic::at(
                    "type",
                    a.value.span,
                    "expected the name of a value",
                )),
            }
        };
        let block_input = scope.taps.get("input").copied().unwrap_or(scope.cur);
        let from = tap(slots[0], block_input)?;
        let project_from = tap(slots[1], from)?;
        let flag = |slot: Option<&Arg>, name: &str, default: bool| -> R<bool> {
            match slot {
                Some(a) => match eval(&a.value, &scope.env)? {
                    Value::Bool(b) => Ok(b),
                    v => Err(Diagnostic::at(
                        "type",
                        a.value.span,
                        format!("expected a boolean for `{name}`, found {}", v.type_name()),
                    )),
                },
                None => Ok(default),
            }
        };
        let projection = match scope.mode {
            Mode::B(p) | Mode::C(p) => p,
            _ => PROJECTION,
        };
        let with_bn = flag(slots[2], "bn", projection.bn)?;
        let with_bias = flag(slots[3], "bias", projection.bias)?;
        let fs = self.graph.node(from).shape.clone();
        let cs = self.graph.node(scope.cur).shape.clone();
        let same = fs == cs;
        let mismatch = |what: String| {
            let mut d = Diagnostic::at("shortcut", span, what);
            if let Some(o) = scope.origin {
                d = d.label(
                    o,
                    format!("in block `{}`, made by this stage", scope.prefix),
                );
            }
            d
        };
        if scope.id_block && !same && matches!(scope.mode, Mode::A { .. } | Mode::B(_)) {
            return Err(mismatch(format!(
                "identity shortcut with mismatched shapes: expected the block to keep its input shape {fs}, found {cs}"
            ))
            .help("only the first block of a stage (the CONV block) may change the shape; check the block's stride and widths"));
        }
        let shortcut = match scope.mode {
            Mode::Plain => return Ok(()),
            Mode::A { .. } | Mode::B(_) if same => from,
            Mode::A { split } => {
                let Some(stride) = shortcut_stride(&fs, &cs) else {
                    return Err(mismatch(format!(
                        "the option A shortcut cannot map {fs} onto {cs}: no stride subsamples {}x{} to {}x{}",
                        fs.height(), fs.width(), cs.height(), cs.width()
                    )));
                };
                if cs.channels() < fs.channels() {
                    return Err(mismatch(format!(
                        "the option A shortcut zero-pads new channels, but the block goes from {} to {} channels",
                        fs.channels(),
                        cs.channels()
                    ))
                    .help("use `shortcut B` (a projection) for blocks that narrow"));
                }
                let p = cs.channels() - fs.channels();
                let (pad_before, pad_after) = if split { (p / 2, p - p / 2) } else { (0, p) };
                let name = Self::full_name(scope, "shortcut");
                let op = Op::ShortcutPad {
                    stride,
                    pad_before,
                    pad_after,
                };
                self.add_node(scope, name, op, &[from], span)?
            }
            Mode::B(_) | Mode::C(_) => {
                let ps = self.graph.node(project_from).shape.clone();
                let Some(stride) = shortcut_stride(&ps, &cs) else {
                    return Err(mismatch(format!(
                        "the projection shortcut cannot map {ps} onto {cs}: no 1x1 stride takes {}x{} to {}x{}",
                        ps.height(), ps.width(), cs.height(), cs.width()
                    )));
                };
                let conv = Op::Conv2d {
                    in_channels: ps.channels(),
                    out_channels: cs.channels(),
                    kernel: 1,
                    stride,
                    padding: 0,
                    groups: 1,
                    dilation: 1,
                    bias: with_bias,
                    residual: Residual::None,
                    relu: false,
                };
                let name = Self::full_name(scope, "downsample.0");
                let mut out = self.add_node(scope, name, conv, &[project_from], span)?;
                if with_bn {
                    let name = Self::full_name(scope, "downsample.1");
                    let bn = Op::BatchNorm {
                        channels: cs.channels(),
                        eps: crate::ir::op::BN_EPS,
                    };
                    out = self.add_node(scope, name, bn, &[out], span)?;
                }
                out
            }
        };
        let name = self.auto_name(scope, "add");
        scope.cur = self.add_node(scope, name, Op::Add, &[scope.cur, shortcut], span)?;
        Ok(())
    }
}
