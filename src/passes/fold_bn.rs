//! Fold batch norm into the conv or fc that feeds it.
//!
//! Contract: a `batch_norm` whose input is a conv (without an epilogue yet)
//! or an fc, read by nothing else, disappears into it:
//! `W' = W * s`, `b' = (b - mean) * s + beta` per output channel, with
//! `s = gamma / sqrt(var + eps)`; the conv gains a bias. Any other BN (after
//! an add, or on a value read twice, as in pre-activation nets) becomes a
//! `scale_shift` with scale `s` and shift `beta - mean * s`. Exact up to f32
//! rounding (computed in f64). Without weights only the graph changes.

use ndarray::{ArrayD, Axis};
use petgraph::stable_graph::NodeIndex;

use super::{fail, Module};
use crate::ir::{GraphError, Op};

/// A BN's per-channel affine form: scale `s`, and its beta and mean.
struct Affine {
    scale: Vec<f64>,
    beta: ArrayD<f32>,
    mean: ArrayD<f32>,
}

/// Take BN `bn`'s four tensors out of the weights (if any) as an affine.
fn take_affine(m: &mut Module, bn: NodeIndex, eps: f64) -> Result<Option<Affine>, GraphError> {
    let name = m.graph.node(bn).name.clone();
    let Some(w) = &mut m.weights else {
        return Ok(None);
    };
    let mut take = |s: &str| {
        w.take(&format!("{name}.{s}"))
            .ok_or_else(|| fail(&m.graph, bn, format!("no weight `{name}.{s}`")))
    };
    let (g, beta, mean, var) = (
        take("weight")?,
        take("bias")?,
        take("running_mean")?,
        take("running_var")?,
    );
    let scale = g
        .iter()
        .zip(var.iter())
        .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
        .collect();
    Ok(Some(Affine { scale, beta, mean }))
}

/// Turn BN `bn` into a `scale_shift` in place, its weights into the scale
/// (`weight`) and shift (`bias`). The legalize pass uses this at every level.
pub(crate) fn to_scale_shift(m: &mut Module, bn: NodeIndex) -> Result<(), GraphError> {
    let Op::BatchNorm { channels, eps } = m.graph.node(bn).op else {
        return Ok(());
    };
    let affine = take_affine(m, bn, eps)?;
    let name = m.graph.node(bn).name.clone();
    m.graph.node_mut(bn).op = Op::ScaleShift {
        channels,
        relu: false,
    };
    if let (Some(w), Some(Affine { scale, beta, mean })) = (&mut m.weights, affine) {
        let s = ArrayD::from_shape_fn(vec![channels], |d| scale[d[0]] as f32);
        let t = ArrayD::from_shape_fn(vec![channels], |d| {
            (beta[d[0]] as f64 - mean[d[0]] as f64 * scale[d[0]]) as f32
        });
        w.put(format!("{name}.weight"), s);
        w.put(format!("{name}.bias"), t);
    }
    Ok(())
}

pub fn run(m: &mut Module) -> Result<bool, GraphError> {
    let mut changed = false;
    let mut jobs = Vec::new();
    let bns: Vec<_> = m
        .graph
        .nodes()
        .filter(|(_, n)| matches!(n.op, Op::BatchNorm { .. }))
        .map(|(i, _)| i)
        .collect();
    for bn in bns {
        let Op::BatchNorm { channels, eps } = m.graph.node(bn).op else {
            continue;
        };
        let Some(&producer) = m.graph.inputs(bn).first() else {
            continue;
        };
        let foldable = m.graph.users(producer) == [bn]
            && match m.graph.node(producer).op {
                Op::Conv2d { residual, relu, .. } => residual.is_none() && !relu,
                Op::Linear { .. } => true,
                _ => false,
            };
        changed = true;
        if !foldable {
            to_scale_shift(m, bn)?;
            continue;
        }
        let affine = take_affine(m, bn, eps)?;
        let name = m.graph.node(producer).name.clone();
        let had_bias = match &mut m.graph.node_mut(producer).op {
            Op::Conv2d { bias, .. } | Op::Linear { bias, .. } => std::mem::replace(bias, true),
            _ => true,
        };
        if let (Some(w), Some(Affine { scale, beta, mean })) = (&mut m.weights, affine) {
            let missing = |k: &str| fail(&m.graph, producer, format!("no weight `{k}`"));
            let key = format!("{name}.weight");
            let weight = w.take(&key).ok_or_else(|| missing(&key))?;
            let old_bias = if had_bias {
                let key = format!("{name}.bias");
                w.take(&key).ok_or_else(|| missing(&key))?
            } else {
                ArrayD::zeros(vec![channels])
            };
            let bias = ArrayD::from_shape_fn(vec![channels], |d| {
                let o = d[0];
                ((old_bias[o] as f64 - mean[o] as f64) * scale[o] + beta[o] as f64) as f32
            });
            w.put(format!("{name}.bias"), bias);
            jobs.push((key, weight, scale));
        }
        m.graph.replace_uses(bn, producer);
        m.graph.remove(bn);
    }
    if let Some(w) = &mut m.weights {
        for (key, weight) in scale_all(jobs) {
            w.put(key, weight);
        }
    }
    Ok(changed)
}

/// A weight tensor to scale, row by row (a row an output channel's).
type Job = (String, ArrayD<f32>, Vec<f64>);

/// Scale every job's tensor, on every core: memory-bound, and a deep
/// net's weights are hundreds of MB (ResNet-152: 21 ms on one core, 13 on two).
fn scale_all(mut jobs: Vec<Job>) -> Vec<(String, ArrayD<f32>)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Largest first, each to the least loaded share.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.1.len()));
    let mut shares: Vec<(usize, Vec<Job>)> = (0..cores.min(jobs.len()).max(1))
        .map(|_| (0, Vec::new()))
        .collect();
    for job in jobs {
        if let Some(share) = shares.iter_mut().min_by_key(|s| s.0) {
            share.0 += job.1.len();
            share.1.push(job);
        }
    }
    let scale = |share: Vec<Job>| -> Vec<(String, ArrayD<f32>)> {
        share
            .into_iter()
            .map(|(key, mut weight, scale)| {
                for (o, mut row) in weight.axis_iter_mut(Axis(0)).enumerate() {
                    let s = scale[o];
                    row.mapv_inplace(|v| (v as f64 * s) as f32);
                }
                (key, weight)
            })
            .collect()
    };
    let mut shares = shares.into_iter().map(|s| s.1);
    let first = shares.next().unwrap_or_default();
    std::thread::scope(|sc| {
        let others: Vec<_> = shares.map(|share| sc.spawn(move || scale(share))).collect();
        let mut out = scale(first);
        for h in others {
            // A panic in a share (none is expected) resurfaces here.
            match h.join() {
                Ok(v) => out.extend(v),
                Err(e) => std::panic::resume_unwind(e),
            }
        }
        out
    })
}
