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

use super::Module;
use crate::ir::Op;

pub fn run(m: &mut Module) -> Result<bool, String> {
    let mut changed = false;
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
        let bn_name = m.graph.node(bn).name.clone();
        let scale_shift = match &mut m.weights {
            Some(w) => {
                let mut take = |s: &str| {
                    w.take(&format!("{bn_name}.{s}"))
                        .ok_or_else(|| format!("no weight `{bn_name}.{s}`"))
                };
                let (g, b, mean, var) = (
                    take("weight")?,
                    take("bias")?,
                    take("running_mean")?,
                    take("running_var")?,
                );
                let s: Vec<f64> = g
                    .iter()
                    .zip(var.iter())
                    .map(|(&g, &v)| g as f64 / (v as f64 + eps).sqrt())
                    .collect();
                Some((s, b, mean))
            }
            None => None,
        };
        let foldable = m.graph.users(producer) == [bn]
            && match m.graph.node(producer).op {
                Op::Conv2d { residual, relu, .. } => residual.is_none() && !relu,
                Op::Linear { .. } => true,
                _ => false,
            };
        if foldable {
            let name = m.graph.node(producer).name.clone();
            let had_bias = match &mut m.graph.node_mut(producer).op {
                Op::Conv2d { bias, .. } | Op::Linear { bias, .. } => std::mem::replace(bias, true),
                _ => true,
            };
            if let (Some(w), Some((s, beta, mean))) = (&mut m.weights, scale_shift) {
                let mut weight = w
                    .take(&format!("{name}.weight"))
                    .ok_or_else(|| format!("no weight `{name}.weight`"))?;
                for (o, mut row) in weight.axis_iter_mut(Axis(0)).enumerate() {
                    row.mapv_inplace(|v| (v as f64 * s[o]) as f32);
                }
                let old_bias = if had_bias {
                    w.take(&format!("{name}.bias"))
                        .ok_or_else(|| format!("no weight `{name}.bias`"))?
                } else {
                    ArrayD::zeros(vec![channels])
                };
                let bias = ArrayD::from_shape_fn(vec![channels], |d| {
                    let o = d[0];
                    ((old_bias[o] as f64 - mean[o] as f64) * s[o] + beta[o] as f64) as f32
                });
                w.put(format!("{name}.weight"), weight);
                w.put(format!("{name}.bias"), bias);
            }
            m.graph.replace_uses(bn, producer);
            m.graph.remove(bn);
        } else {
            m.graph.node_mut(bn).op = Op::ScaleShift {
                channels,
                relu: false,
            };
            if let (Some(w), Some((s, beta, mean))) = (&mut m.weights, scale_shift) {
                let scale = ArrayD::from_shape_fn(vec![channels], |d| s[d[0]] as f32);
                let shift = ArrayD::from_shape_fn(vec![channels], |d| {
                    (beta[d[0]] as f64 - mean[d[0]] as f64 * s[d[0]]) as f32
                });
                w.put(format!("{bn_name}.weight"), scale);
                w.put(format!("{bn_name}.bias"), shift);
            }
        }
        changed = true;
    }
    Ok(changed)
}
