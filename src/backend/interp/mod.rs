//! The reference interpreter: walks the schedule, runs each op's plain kernel,
//! frees each value after its last reader. As a backend it runs the prepared
//! graph itself, not the program's steps: an independent oracle for the
//! shared lowering the other backends take.

pub mod kernels;

use std::sync::Arc;
use std::time::Instant;

use ndarray::{ArrayD, Ix2, Ix4, IxDyn};
use petgraph::stable_graph::NodeIndex;

use super::{Backend, Entry, Executable, Info, Listing, Program, Refusal};
use super::{StepInfo, Strategy};
use crate::ir::op::Residual;
use crate::ir::{Graph, GraphError, Op, Stage};
use crate::passes::Prepared;
use crate::weights::BoundWeights;

pub const ENTRY: Entry = Entry {
    name: "interp",
    about: "the reference interpreter (ndarray): plain kernels, the oracle",
    emits: None,
    listing_weights: false,
    new: |_| Ok(Box::new(Interp) as Box<dyn Backend>),
};

const STAGE: Stage = Stage::Run("interp");

struct Interp;

impl Backend for Interp {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn check(&self, _: &Program) -> Vec<GraphError> {
        Vec::new()
    }

    fn compile(&self, p: &Program) -> Result<Box<dyn Executable>, Refusal> {
        let start = Instant::now();
        if p.prepared().weights().is_none() {
            return Err(GraphError::new(
                Stage::Backend(ENTRY.name),
                "running a network needs its weights",
            )
            .into());
        }
        let g = p.prepared().graph();
        let steps = g
            .nodes()
            .filter(|&(i, _)| i != g.input)
            .map(|(i, n)| {
                let shapes: Vec<_> = g
                    .inputs(i)
                    .iter()
                    .map(|&j| g.node(j).shape.clone())
                    .collect();
                let shapes: Vec<_> = shapes.iter().collect();
                StepInfo {
                    name: n.name.clone(),
                    op: n.op.kind(),
                    strategy: Strategy::Reference,
                    flops: n.op.cost(&shapes, &n.shape).flops.total(),
                }
            })
            .collect();
        Ok(Box::new(Compiled {
            prepared: p.prepared_arc(),
            steps,
            compile_time: start.elapsed(),
        }))
    }

    fn listing(&self, _: &Program) -> Result<Option<Listing>, Refusal> {
        Ok(None)
    }

    fn footprint(&self, p: &Program) -> super::memory::Footprint {
        // Values live from their op to their last reader, each its own array.
        let mut f = super::memory::Footprint::default();
        let (peak, _) = crate::ir::liveness::peak(p.prepared().graph());
        f.add("values", peak, true);
        f.add("weights", super::weight_bytes(p), false);
        f
    }
}

struct Compiled {
    prepared: Arc<Prepared>,
    steps: Vec<StepInfo>,
    compile_time: std::time::Duration,
}

impl Executable for Compiled {
    fn run(&mut self, x: &ArrayD<f32>) -> Result<ArrayD<f32>, GraphError> {
        let g = self.prepared.graph();
        let w = self
            .prepared
            .weights()
            .ok_or_else(|| GraphError::new(STAGE, "no weights"))?;
        let mut out = run(g, w, x.clone(), &[g.logits()])?;
        out.pop().ok_or_else(|| GraphError::new(STAGE, "no logits"))
    }

    fn steps(&self) -> &[StepInfo] {
        &self.steps
    }

    fn info(&self) -> Info {
        Info {
            threads: 1,
            kernels: "reference (ndarray, matrixmultiply)".into(),
            arena_bytes: 0,
            compile_time: self.compile_time,
            phases: Vec::new(),
            store: None,
        }
    }
}

/// Run the graph on `input` (its shape must be the graph's input shape) and
/// return the values of `targets`, in order.
pub fn run(
    g: &Graph,
    w: &BoundWeights,
    input: ArrayD<f32>,
    targets: &[NodeIndex],
) -> Result<Vec<ArrayD<f32>>, GraphError> {
    run_watching(g, w, input, targets, |_, _| false)
}

/// The first value, in schedule order, that holds a NaN or an infinity
/// though its inputs do not: the value, and its NaN and infinite counts.
pub fn first_non_finite(
    g: &Graph,
    w: &BoundWeights,
    input: ArrayD<f32>,
) -> Result<Option<(NodeIndex, usize, usize)>, GraphError> {
    let mut found = None;
    run_watching(g, w, input, &[], |i, v| {
        let nan = v.iter().filter(|x| x.is_nan()).count();
        let inf = v.iter().filter(|x| x.is_infinite()).count();
        if nan + inf > 0 {
            found = Some((i, nan, inf));
        }
        found.is_some()
    })?;
    Ok(found)
}

/// [`run`], showing `watch` every value as it is computed; it stops the run
/// by returning true.
fn run_watching(
    g: &Graph,
    w: &BoundWeights,
    input: ArrayD<f32>,
    targets: &[NodeIndex],
    mut watch: impl FnMut(NodeIndex, &ArrayD<f32>) -> bool,
) -> Result<Vec<ArrayD<f32>>, GraphError> {
    if input.shape() != g.input_shape().dims() {
        return Err(GraphError::new(
            STAGE,
            format!(
                "input: expected shape {}, found {}",
                g.input_shape(),
                input
                    .shape()
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x")
            ),
        ));
    }
    // Readers left per value; a value is dropped when it reaches zero.
    let mut readers: std::collections::HashMap<NodeIndex, usize> = g
        .order
        .iter()
        .map(|&i| (i, g.users(i).len() + usize::from(targets.contains(&i))))
        .collect();
    let mut values: std::collections::HashMap<NodeIndex, ArrayD<f32>> =
        std::collections::HashMap::new();
    let mut kept: std::collections::HashMap<NodeIndex, ArrayD<f32>> =
        std::collections::HashMap::new();
    for &i in &g.order {
        let node = g.node(i);
        let inputs = g.inputs(i);
        let y = if i == g.input {
            input.clone()
        } else {
            let args: Vec<&ArrayD<f32>> = inputs
                .iter()
                .map(|j| {
                    values
                        .get(j)
                        .ok_or_else(|| internal(g, i, "an input was freed"))
                })
                .collect::<Result<_, _>>()?;
            eval(g, i, &node.op, &args, w)?
        };
        if y.shape() != node.shape.dims() {
            return Err(internal(g, i, &format!("computed shape {:?}", y.shape())));
        }
        if watch(i, &y) {
            return Ok(Vec::new());
        }
        if targets.contains(&i) {
            kept.insert(i, y.clone());
        }
        values.insert(i, y);
        for j in inputs {
            if let Some(r) = readers.get_mut(&j) {
                *r = r.saturating_sub(1);
                if *r == usize::from(targets.contains(&j)) {
                    values.remove(&j);
                }
            }
        }
    }
    targets
        .iter()
        .map(|t| {
            kept.remove(t)
                .ok_or_else(|| GraphError::new(STAGE, format!("no value {t:?} in the graph")))
        })
        .collect()
}

fn internal(g: &Graph, i: NodeIndex, what: &str) -> GraphError {
    GraphError::new(
        STAGE,
        format!("internal error ({}): {what}", g.node(i).op.kind()),
    )
    .at(g, i)
}

fn eval(
    g: &Graph,
    i: NodeIndex,
    op: &Op,
    args: &[&ArrayD<f32>],
    w: &BoundWeights,
) -> Result<ArrayD<f32>, GraphError> {
    let name = &g.node(i).name;
    let out = &g.node(i).shape;
    // The output size is the graph's: its rule (ceil mode, dilation) lives in the IR.
    let out_hw = if out.rank() == 4 {
        (out.height(), out.width())
    } else {
        (0, 0)
    };
    let x4 = || {
        args[0]
            .view()
            .into_dimensionality::<Ix4>()
            .map_err(|_| internal(g, i, "expected a 4-d input"))
    };
    let x2 = || {
        args[0]
            .view()
            .into_dimensionality::<Ix2>()
            .map_err(|_| internal(g, i, "expected a 2-d input"))
    };
    let param = |suffix: &str| {
        w.param(name, suffix)
            .ok_or_else(|| internal(g, i, &format!("no weight `{name}.{suffix}`")))
    };
    let p1 = |suffix: &str| {
        param(suffix).and_then(|t| {
            t.view()
                .into_dimensionality::<ndarray::Ix1>()
                .map_err(|_| internal(g, i, "a 1-d weight"))
        })
    };
    Ok(match *op {
        Op::Input => args[0].clone(),
        Op::Conv2d {
            stride,
            padding,
            groups,
            dilation,
            bias,
            residual,
            relu,
            ..
        } => {
            let wt = param("weight")?
                .view()
                .into_dimensionality::<Ix4>()
                .map_err(|_| internal(g, i, "a 4-d weight"))?;
            let b = if bias { Some(p1("bias")?) } else { None };
            let mut y = kernels::conv2d(
                x4()?,
                wt,
                b,
                kernels::Window {
                    stride,
                    pad: padding,
                    dilation,
                    out: out_hw,
                },
                groups,
            );
            // The epilogue, as separate steps: the reference stays obvious.
            match residual {
                Residual::None => {}
                Residual::Add => {
                    y += &args[1]
                        .view()
                        .into_dimensionality::<Ix4>()
                        .map_err(|_| internal(g, i, "a 4-d residual"))?
                }
                Residual::PadAdd {
                    stride,
                    pad_before,
                    pad_after,
                } => {
                    let r = args[1]
                        .view()
                        .into_dimensionality::<Ix4>()
                        .map_err(|_| internal(g, i, "a 4-d residual"))?;
                    y += &kernels::shortcut_pad(r, stride, pad_before, pad_after);
                }
            }
            if relu {
                y.mapv_inplace(kernels::relu);
            }
            y.into_dyn()
        }
        Op::ScaleShift { relu, .. } => {
            // A 2-d NxF input is NxFx1x1 to the same kernel.
            let (x, shape) = as_nchw(args[0]).ok_or_else(|| internal(g, i, "scale-shift input"))?;
            let mut y = kernels::scale_shift(x.view(), p1("weight")?, p1("bias")?);
            if relu {
                y.mapv_inplace(kernels::relu);
            }
            y.into_shape_with_order(IxDyn(&shape))
                .map_err(|_| internal(g, i, "scale-shift output"))?
        }
        Op::BatchNorm { eps, .. } => {
            let (x, shape) = as_nchw(args[0]).ok_or_else(|| internal(g, i, "batch norm input"))?;
            let y = kernels::batch_norm(
                x.view(),
                p1("weight")?,
                p1("bias")?,
                p1("running_mean")?,
                p1("running_var")?,
                eps as f32,
            );
            y.into_shape_with_order(IxDyn(&shape))
                .map_err(|_| internal(g, i, "batch norm output"))?
        }
        Op::Relu => args[0].mapv(kernels::relu),
        Op::MaxPool {
            kernel,
            stride,
            padding,
            ..
        } => kernels::max_pool(x4()?, kernel, stride, padding, out_hw).into_dyn(),
        Op::AvgPool {
            kernel,
            stride,
            padding,
            ..
        } => kernels::avg_pool(x4()?, kernel, stride, padding, out_hw).into_dyn(),
        Op::GlobalAvgPool => kernels::global_avg_pool(x4()?).into_dyn(),
        Op::Add => args[0] + args[1],
        Op::ShortcutPad {
            stride,
            pad_before,
            pad_after,
        } => kernels::shortcut_pad(x4()?, stride, pad_before, pad_after).into_dyn(),
        Op::Flatten => {
            let n = args[0].shape()[0];
            let f = args[0].len() / n.max(1);
            args[0]
                .as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(&[n, f]))
                .map_err(|_| internal(g, i, "flatten"))?
        }
        Op::Linear { bias, .. } => {
            let wt = param("weight")?
                .view()
                .into_dimensionality::<Ix2>()
                .map_err(|_| internal(g, i, "a 2-d weight"))?;
            let b = if bias { Some(p1("bias")?) } else { None };
            kernels::linear(x2()?, wt, b).into_dyn()
        }
        Op::Softmax => kernels::softmax(x2()?).into_dyn(),
    })
}

/// A 4-d array as it is, or a 2-d NxF one as NxFx1x1; and its own shape.
fn as_nchw(x: &ArrayD<f32>) -> Option<(ndarray::Array4<f32>, Vec<usize>)> {
    let shape = x.shape().to_vec();
    let dims = match shape[..] {
        [n, c, h, w] => (n, c, h, w),
        [n, f] => (n, f, 1, 1),
        _ => return None,
    };
    let y = x
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(dims)
        .ok()?;
    Some((y, shape))
}
