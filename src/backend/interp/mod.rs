//! The reference interpreter: walks the schedule, runs each op's plain kernel,
//! frees each value after its last reader.

pub mod kernels;

use ndarray::{ArrayD, Ix2, Ix4, IxDyn};
use petgraph::stable_graph::NodeIndex;

use super::RunError;
use crate::ir::op::Residual;
use crate::ir::{Graph, Op};
use crate::weights::BoundWeights;

/// Run the graph on `input` (its shape must be the graph's input shape) and
/// return the values of `targets`, in order.
pub fn run(
    g: &Graph,
    w: &BoundWeights,
    input: ArrayD<f32>,
    targets: &[NodeIndex],
) -> Result<Vec<ArrayD<f32>>, RunError> {
    if input.shape() != g.input_shape().dims() {
        return Err(RunError(format!(
            "input: expected shape {}, found {}",
            g.input_shape(),
            input
                .shape()
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x")
        )));
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
                .ok_or_else(|| RunError(format!("no value {:?} in the graph", t)))
        })
        .collect()
}

fn internal(g: &Graph, i: NodeIndex, what: &str) -> RunError {
    RunError(format!(
        "internal error at `{}` ({}): {what}",
        g.node(i).name,
        g.node(i).op.kind()
    ))
}

fn eval(
    g: &Graph,
    i: NodeIndex,
    op: &Op,
    args: &[&ArrayD<f32>],
    w: &BoundWeights,
) -> Result<ArrayD<f32>, RunError> {
    let name = &g.node(i).name;
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
            let mut y = kernels::conv2d(x4()?, wt, b, stride, padding, groups);
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
                y.mapv_inplace(|v| v.max(0.0));
            }
            y.into_dyn()
        }
        Op::ScaleShift { relu, .. } => {
            let mut y = kernels::scale_shift(x4()?, p1("weight")?, p1("bias")?);
            if relu {
                y.mapv_inplace(|v| v.max(0.0));
            }
            y.into_dyn()
        }
        Op::BatchNorm { eps, .. } => {
            // A 2-d NxF input is NxFx1x1 to the same kernel.
            let x = args[0].view();
            let shape = x.shape().to_vec();
            let x = x
                .to_shape((
                    shape[0],
                    shape[1],
                    *shape.get(2).unwrap_or(&1),
                    *shape.get(3).unwrap_or(&1),
                ))
                .map_err(|_| internal(g, i, "batch norm input"))?;
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
        Op::Relu => args[0].mapv(|v| v.max(0.0)),
        Op::MaxPool {
            kernel,
            stride,
            padding,
        } => kernels::max_pool(x4()?, kernel, stride, padding).into_dyn(),
        Op::AvgPool {
            kernel,
            stride,
            padding,
        } => kernels::avg_pool(x4()?, kernel, stride, padding).into_dyn(),
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

/// The logits: the input of a final softmax, else the output.
pub fn logits_node(g: &Graph) -> NodeIndex {
    match g.node(g.output).op {
        Op::Softmax => g.inputs(g.output).first().copied().unwrap_or(g.output),
        _ => g.output,
    }
}
