//! The backend-neutral program: the prepared graph lowered once into steps
//! that say what to compute and where, with no backend's choices in them.
//!
//! One step per value up to the logits (a final softmax is the caller's:
//! every backend returns logits). Each step names its arena buffers (byte
//! offset and NCHW shape), its geometry, the weights it reads (by key, not
//! by value: a program is built without weights, so `compile --emit` needs
//! none) and, for a conv, its fused epilogue as data. Backends that compile
//! (the JIT, CUDA) lower these steps; the interpreter runs the graph itself,
//! so a bug here cannot fool both sides of a differential test.

use std::sync::Arc;

use petgraph::stable_graph::NodeIndex;

use crate::ir::op::Residual as IrResidual;
use crate::ir::{At, GraphError, Op, Shape, Stage};
use crate::passes::Prepared;

/// A value's place: `offset` bytes into the arena, f32 elements of `shape`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// The value that lives here.
    pub value: NodeIndex,
    pub offset: u64,
    pub shape: Shape,
}

impl Buffer {
    /// Elements of the value.
    pub fn len(&self) -> usize {
        self.shape.numel() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset in f32 elements.
    pub fn index(&self) -> usize {
        (self.offset / 4) as usize
    }
}

/// A weight tensor, by its index in [`Program::weights`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WeightId(pub usize);

/// A weight tensor a step reads: its state_dict key and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightRef {
    pub key: String,
    pub shape: Vec<usize>,
}

/// A convolution's geometry, for all `n` images of the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
    /// Spacing of the taps: tap `(ki, kj)` reads `(oy*s + ki*d - p, ...)`.
    pub dilation: usize,
    pub oh: usize,
    pub ow: usize,
}

/// How a conv's epilogue reads its residual.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Residual {
    /// Element by element, laid out as the output.
    Add(Buffer),
    /// The paper's option A: every `stride`-th pixel of `buffer`, its
    /// channels placed after `pad_before` zero channels (and before
    /// `pad_after` more).
    PadAdd {
        buffer: Buffer,
        stride: usize,
        pad_before: usize,
        pad_after: usize,
    },
}

impl Residual {
    pub fn buffer(&self) -> &Buffer {
        match self {
            Residual::Add(b) | Residual::PadAdd { buffer: b, .. } => b,
        }
    }
}

/// What a conv does after its sums, in this order: add the bias, add the
/// residual, then ReLU (NaN stays NaN, as in PyTorch). Each output element
/// is read and written once, so the output may be the residual's bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Epilogue {
    pub bias: Option<WeightId>,
    pub residual: Option<Residual>,
    pub relu: bool,
}

/// A pooling window's geometry, per plane of `h x w`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

/// What a step computes.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// `out = epilogue(conv(inputs[0]))`; weight `o x c/groups x k x k`.
    Conv {
        geom: ConvGeom,
        weight: WeightId,
        epilogue: Epilogue,
    },
    /// `out[n, o] = x[n, :] . W[o, :] + b[o]`.
    Linear {
        n: usize,
        in_features: usize,
        out_features: usize,
        weight: WeightId,
        bias: Option<WeightId>,
    },
    /// `relu?(x * scale[c] + shift[c])` over `n x channels` planes of `plane`.
    ScaleShift {
        channels: usize,
        plane: usize,
        scale: WeightId,
        shift: WeightId,
        relu: bool,
    },
    Relu,
    /// `inputs[0] + inputs[1]`.
    Add,
    /// The same elements under a flat shape: a copy when the buffers differ.
    Flatten,
    /// Max pooling, -inf padding, NaN kept.
    MaxPool(PoolGeom),
    /// Average pooling, zero padding counted; a window that ceil mode runs
    /// past the padding divides by its taps inside the padded map.
    AvgPool(PoolGeom),
    /// The mean of each of `n x c` planes of `hw` elements.
    GlobalAvgPool {
        n: usize,
        c: usize,
        hw: usize,
    },
    /// The option A shortcut, built (only unfused: `-O0`, `-O1`).
    ShortcutPad {
        stride: usize,
        pad_before: usize,
        pad_after: usize,
    },
}

/// One step: a value of the graph and how to compute it.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The value, for errors and profiles.
    pub at: At,
    /// The IR op's short name (`conv2d`, `relu`...).
    pub op: &'static str,
    pub kind: Kind,
    /// Arena buffers read, in argument order (a conv's residual too).
    pub inputs: Vec<Buffer>,
    pub output: Buffer,
    /// FLOPs as the reports count them.
    pub flops: u64,
}

impl Step {
    /// An error about this step, from `stage`.
    pub fn error(&self, stage: Stage, msg: impl Into<String>) -> GraphError {
        GraphError {
            stage,
            at: Some(Box::new(self.at.clone())),
            message: msg.into(),
            help: None,
        }
    }
}

/// A prepared graph as steps: what every compiling backend takes.
#[derive(Clone, Debug)]
pub struct Program {
    prepared: Arc<Prepared>,
    pub name: String,
    pub steps: Vec<Step>,
    /// The network's input and its logits.
    pub input: Buffer,
    pub output: Buffer,
    pub weights: Vec<WeightRef>,
    pub arena_bytes: u64,
}

impl Program {
    /// The optimization level it was prepared at.
    pub fn level(&self) -> u8 {
        self.prepared.level()
    }

    /// Lower `prepared` to steps.
    pub fn lower(prepared: Prepared) -> Result<Program, GraphError> {
        let prepared = Arc::new(prepared);
        let g = prepared.graph();
        let plan = prepared.plan();
        let buffer = |i: NodeIndex| -> Result<Buffer, GraphError> {
            let slot = plan
                .slot(i)
                .ok_or_else(|| GraphError::new(Stage::Prepare, "has no arena slot").at(g, i))?;
            Ok(Buffer {
                value: i,
                offset: slot.offset,
                shape: g.node(i).shape.clone(),
            })
        };
        let mut weights: Vec<WeightRef> = Vec::new();
        let mut steps = Vec::new();
        let logits = g.logits();
        for &i in &g.order {
            if i == g.input {
                continue;
            }
            let n = g.node(i);
            let ins: Vec<Buffer> = g
                .inputs(i)
                .into_iter()
                .map(buffer)
                .collect::<Result<_, _>>()?;
            let output = buffer(i)?;
            let mut weight = |suffix: &str| -> Result<WeightId, GraphError> {
                let p =
                    n.op.params()
                        .into_iter()
                        .find(|p| p.suffix == suffix)
                        .ok_or_else(|| {
                            GraphError::new(Stage::Prepare, format!("has no `{suffix}` tensor"))
                                .at(g, i)
                        })?;
                weights.push(WeightRef {
                    key: format!("{}.{suffix}", n.name),
                    shape: p.shape,
                });
                Ok(WeightId(weights.len() - 1))
            };
            let x = ins
                .first()
                .map_or_else(|| Shape(Vec::new()), |b| b.shape.clone());
            let kind = match n.op {
                Op::Input => continue,
                Op::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    groups,
                    dilation,
                    bias,
                    residual,
                    relu,
                } => {
                    let geom = ConvGeom {
                        n: x.batch(),
                        c: in_channels,
                        h: x.height(),
                        w: x.width(),
                        o: out_channels,
                        kernel,
                        stride,
                        pad: padding,
                        groups,
                        dilation,
                        oh: n.shape.height(),
                        ow: n.shape.width(),
                    };
                    let res = ins.get(1).cloned();
                    let residual = match (residual, res) {
                        (IrResidual::None, _) => None,
                        (IrResidual::Add, Some(b)) => Some(Residual::Add(b)),
                        (
                            IrResidual::PadAdd {
                                stride,
                                pad_before,
                                pad_after,
                            },
                            Some(buffer),
                        ) => Some(Residual::PadAdd {
                            buffer,
                            stride,
                            pad_before,
                            pad_after,
                        }),
                        (_, None) => {
                            return Err(GraphError::new(
                                Stage::Prepare,
                                "a residual without its input",
                            )
                            .at(g, i))
                        }
                    };
                    Kind::Conv {
                        geom,
                        weight: weight("weight")?,
                        epilogue: Epilogue {
                            bias: if bias { Some(weight("bias")?) } else { None },
                            residual,
                            relu,
                        },
                    }
                }
                Op::Linear {
                    in_features,
                    out_features,
                    bias,
                } => Kind::Linear {
                    n: n.shape.batch(),
                    in_features,
                    out_features,
                    weight: weight("weight")?,
                    bias: if bias { Some(weight("bias")?) } else { None },
                },
                Op::ScaleShift { channels, relu } => Kind::ScaleShift {
                    channels,
                    plane: if n.shape.rank() == 4 {
                        n.shape.height() * n.shape.width()
                    } else {
                        1
                    },
                    scale: weight("weight")?,
                    shift: weight("bias")?,
                    relu,
                },
                Op::Relu => Kind::Relu,
                Op::Add => Kind::Add,
                Op::Flatten => Kind::Flatten,
                Op::MaxPool {
                    kernel,
                    stride,
                    padding,
                    ..
                }
                | Op::AvgPool {
                    kernel,
                    stride,
                    padding,
                    ..
                } => {
                    let p = PoolGeom {
                        n: x.batch(),
                        c: x.channels(),
                        h: x.height(),
                        w: x.width(),
                        kernel,
                        stride,
                        pad: padding,
                        oh: n.shape.height(),
                        ow: n.shape.width(),
                    };
                    if matches!(n.op, Op::MaxPool { .. }) {
                        Kind::MaxPool(p)
                    } else {
                        Kind::AvgPool(p)
                    }
                }
                Op::GlobalAvgPool => Kind::GlobalAvgPool {
                    n: x.batch(),
                    c: x.channels(),
                    hw: x.height() * x.width(),
                },
                Op::ShortcutPad {
                    stride,
                    pad_before,
                    pad_after,
                } => Kind::ShortcutPad {
                    stride,
                    pad_before,
                    pad_after,
                },
                Op::BatchNorm { .. } | Op::Softmax => {
                    return Err(GraphError::new(
                        Stage::Prepare,
                        format!(
                            "`{}` reached a backend, which legalizing rules out",
                            n.op.kind()
                        ),
                    )
                    .at(g, i))
                }
            };
            let shapes: Vec<&Shape> = ins.iter().map(|b| &b.shape).collect();
            steps.push(Step {
                at: At::node(g, i),
                op: n.op.kind(),
                kind,
                flops: n.op.cost(&shapes, &n.shape).flops.total(),
                inputs: ins,
                output,
            });
            if i == logits {
                break;
            }
        }
        Ok(Program {
            name: g.name.clone(),
            input: buffer(g.input)?,
            output: buffer(logits)?,
            arena_bytes: plan.arena_bytes,
            steps,
            weights,
            prepared,
        })
    }

    /// The prepared graph this program was lowered from (the interpreter
    /// runs it directly).
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// The same, shared.
    pub fn prepared_arc(&self) -> Arc<Prepared> {
        self.prepared.clone()
    }

    /// The weight tensors, taken out of the program, one per
    /// [`Program::weights`] entry (a key read twice is copied); `None` if
    /// the program has no weights or its prepared graph is shared. The
    /// program has no weights after this.
    pub fn take_weights(&mut self) -> Option<Vec<ndarray::ArrayD<f32>>> {
        let mut bound = Arc::get_mut(&mut self.prepared)?.take_weights()?;
        let mut seen: std::collections::HashMap<&str, usize> = Default::default();
        let mut out: Vec<ndarray::ArrayD<f32>> = Vec::with_capacity(self.weights.len());
        for (i, r) in self.weights.iter().enumerate() {
            let t = match seen.get(r.key.as_str()) {
                Some(&j) => out[j].clone(),
                None => bound.take(&r.key)?,
            };
            seen.insert(&r.key, i);
            out.push(t);
        }
        Some(out)
    }

    /// The weight tensors' values, in [`Program::weights`] order; an error
    /// if the program was prepared without weights.
    pub fn weight_values(&self, stage: Stage) -> Result<Vec<&ndarray::ArrayD<f32>>, GraphError> {
        let w = self.prepared.weights().ok_or_else(|| {
            GraphError::new(stage, "running a network needs its weights")
                .help("give --weights, or `resnetc init` some")
        })?;
        self.weights
            .iter()
            .map(|r| {
                w.weights()
                    .get(&r.key)
                    .ok_or_else(|| GraphError::new(stage, format!("no weight `{}`", r.key)))
            })
            .collect()
    }
}
