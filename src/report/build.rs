//! Build a [`Report`] from a graph: per-layer costs, grouped by stem, stage
//! and head, with totals. Costs come from the ops; this only adds up.

use serde::Serialize;

use crate::ir::cost::{Cost, Flops};
use crate::ir::{liveness, Graph, Op, Shape};

/// The version of the JSON schema (see docs/report.md).
pub const SCHEMA: &str = "resnetc.report/1";

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub network: String,
    pub spec: String,
    pub batch: usize,
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    /// Conv and fc layers on the main path (the 50 of ResNet-50).
    pub depth: usize,
    pub totals: Totals,
    /// Stem, each stage, head: in order.
    pub groups: Vec<Group>,
    /// Every block of every stage.
    pub blocks: Vec<Group>,
    /// Every value but the input, in execution order.
    pub layers: Vec<Layer>,
    pub conventions: Conventions,
    /// The same network after the optimizer, when it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimized: Option<Optimized>,
}

/// Totals of the optimized graph: what a backend runs.
#[derive(Clone, Debug, Serialize)]
pub struct Optimized {
    pub opt_level: u8,
    pub values: usize,
    pub values_before: usize,
    pub params: u64,
    pub bn_running_stats: u64,
    pub macs: u64,
    pub flops: u64,
    pub weight_bytes: u64,
    pub activation_bytes_sum: u64,
    pub peak_activation_bytes: u64,
    /// The memory plan's arena: all activations, with reuse.
    pub arena_bytes: u64,
    /// What `run` on `run_backend` holds (arena, weights, input, logits...):
    /// the figure it checks against the memory available.
    pub run_backend: String,
    pub run_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    /// Trainable parameters (what torchvision counts).
    pub params: u64,
    /// BN running means and variances.
    pub bn_running_stats: u64,
    /// Parameters once each foldable BN is folded into the conv before it.
    pub params_bn_folded: u64,
    pub macs: u64,
    pub flops: u64,
    pub flops_by_kind: Flops,
    /// Parameters and BN statistics as f32.
    pub weight_bytes: u64,
    /// Every value, input included, as f32.
    pub activation_bytes_sum: u64,
    /// Most bytes of values live at one step (no reuse between values).
    pub peak_activation_bytes: u64,
    /// The value computed at the peak step.
    pub peak_at: String,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// `stem`, `layer1`, `layer1.0`, `head`.
    pub name: String,
    /// The paper's name of a stage (`conv2_x`), or the block kind of a block.
    pub label: String,
    /// The block a stage repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
    pub blocks: usize,
    pub output: Vec<usize>,
    pub cost: CostRow,
}

#[derive(Clone, Debug, Serialize)]
pub struct Layer {
    pub name: String,
    pub op: String,
    /// The group (`stem`, `layer3`, `head`) and block (`layer3.4`) it belongs to.
    pub group: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block: Option<String>,
    pub output: Vec<usize>,
    pub cost: CostRow,
}

/// A cost as written in reports: FLOPs as one number and by kind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CostRow {
    pub params: u64,
    pub bn_stats: u64,
    pub macs: u64,
    pub flops: u64,
    pub flops_by_kind: Flops,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl From<Cost> for CostRow {
    fn from(c: Cost) -> Self {
        CostRow {
            params: c.params,
            bn_stats: c.bn_stats,
            macs: c.macs,
            flops: c.flops.total(),
            flops_by_kind: c.flops,
            bytes_read: c.bytes_read,
            bytes_written: c.bytes_written,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Conventions {
    pub macs: &'static str,
    pub flops: &'static str,
    pub params: &'static str,
    pub memory: &'static str,
}

pub const CONVENTIONS: Conventions = Conventions {
    macs: "multiply-adds of conv and fc layers only (the paper's Table 1 \"FLOPs\")",
    flops: "2 per MAC; 1 per bias add; 2 per element for inference batch norm; 1 per element for ReLU and residual add; k*k-1 per max-pool output, k*k per avg-pool output, H*W per global-pool output; 4 per softmax element",
    params: "trainable weights and biases (torchvision's count); BN running statistics counted apart",
    memory: "f32; a value is live from the op that writes it to the last op that reads it; no reuse between values",
};

/// Which group a node belongs to: the stage named by its first path
/// component, else stem (before the first stage) or head.
fn group_of(g: &Graph, name: &str, seen_stage: bool) -> (String, Option<String>) {
    let first = name.split('.').next().unwrap_or(name);
    if g.stages.iter().any(|s| s.name == first) {
        let block = name.splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
        return (first.to_string(), Some(block));
    }
    (if seen_stage { "head" } else { "stem" }.to_string(), None)
}

/// The paper's stage names: conv1 is the stem, so stages are conv2_x, conv3_x...
pub fn paper_label(index: usize) -> String {
    format!("conv{}_x", index + 2)
}

pub fn build(g: &Graph, spec: &str) -> Report {
    let mut layers = Vec::new();
    let mut totals = Cost::default();
    let mut seen_stage = false;
    let mut activation_sum = 0u64;
    for (i, n) in g.nodes() {
        activation_sum += n.shape.numel() * crate::ir::cost::ELEM_BYTES;
        if i == g.input {
            continue;
        }
        let inputs: Vec<&Shape> = g.inputs(i).iter().map(|&j| &g.node(j).shape).collect();
        let cost = n.op.cost(&inputs, &n.shape);
        totals.add(&cost);
        let (group, block) = group_of(g, &n.name, seen_stage);
        seen_stage |= block.is_some();
        layers.push(Layer {
            name: n.name.clone(),
            op: n.op.kind().to_string(),
            group,
            block,
            output: n.shape.dims().to_vec(),
            cost: cost.into(),
        });
    }
    let groups = groups(g, &layers);
    let blocks = blocks(g, &layers);
    let (peak, step) = liveness::peak(g);
    Report {
        schema: SCHEMA,
        network: g.name.clone(),
        spec: spec.to_string(),
        batch: g.input_shape().batch(),
        input: g.input_shape().dims().to_vec(),
        output: g.output_shape().dims().to_vec(),
        depth: g.depth(),
        totals: Totals {
            params: totals.params,
            bn_running_stats: totals.bn_stats,
            params_bn_folded: params_bn_folded(g),
            macs: totals.macs,
            flops: totals.flops.total(),
            flops_by_kind: totals.flops,
            weight_bytes: totals.weight_bytes(),
            activation_bytes_sum: activation_sum,
            peak_activation_bytes: peak,
            peak_at: g
                .order
                .get(step)
                .map(|&i| g.node(i).name.clone())
                .unwrap_or_default(),
            bytes_read: totals.bytes_read,
            bytes_written: totals.bytes_written,
        },
        groups,
        blocks,
        layers,
        conventions: CONVENTIONS,
        optimized: None,
    }
}

/// Add the optimized graph's totals to a report of the spec's graph.
pub fn with_optimized(
    mut r: Report,
    prepared: &crate::passes::Prepared,
    level: u8,
    (run_backend, run_bytes): (&str, u64),
) -> Report {
    let opt = prepared.graph();
    let o = build(opt, &r.spec);
    r.optimized = Some(Optimized {
        opt_level: level,
        values: opt.len(),
        values_before: r.layers.len() + 1,
        params: o.totals.params,
        bn_running_stats: o.totals.bn_running_stats,
        macs: o.totals.macs,
        flops: o.totals.flops,
        weight_bytes: o.totals.weight_bytes,
        activation_bytes_sum: o.totals.activation_bytes_sum,
        peak_activation_bytes: o.totals.peak_activation_bytes,
        arena_bytes: prepared.plan().arena_bytes,
        run_backend: run_backend.to_string(),
        run_bytes,
    });
    r
}

fn sum_rows<'a>(rows: impl Iterator<Item = &'a Layer>) -> (CostRow, Option<Vec<usize>>) {
    let mut c = CostRow::default();
    let mut last = None;
    for l in rows {
        c.params += l.cost.params;
        c.bn_stats += l.cost.bn_stats;
        c.macs = c.macs.saturating_add(l.cost.macs);
        c.flops = c.flops.saturating_add(l.cost.flops);
        c.flops_by_kind.add(&l.cost.flops_by_kind);
        c.bytes_read = c.bytes_read.saturating_add(l.cost.bytes_read);
        c.bytes_written = c.bytes_written.saturating_add(l.cost.bytes_written);
        last = Some(l.output.clone());
    }
    (c, last)
}

fn groups(g: &Graph, layers: &[Layer]) -> Vec<Group> {
    let mut out = Vec::new();
    let mut names = vec![("stem".to_string(), "stem".to_string(), None, 0)];
    for (i, s) in g.stages.iter().enumerate() {
        names.push((
            s.name.clone(),
            paper_label(i),
            Some(s.block.clone()),
            s.blocks,
        ));
    }
    names.push(("head".to_string(), "head".to_string(), None, 0));
    for (name, label, block, blocks) in names {
        let (cost, last) = sum_rows(layers.iter().filter(|l| l.group == name));
        let Some(output) = last else { continue };
        out.push(Group {
            name,
            label,
            block,
            blocks,
            output,
            cost,
        });
    }
    out
}

fn blocks(g: &Graph, layers: &[Layer]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for l in layers {
        let Some(b) = &l.block else { continue };
        if out.last().is_some_and(|o| &o.name == b) {
            continue;
        }
        let (cost, last) = sum_rows(layers.iter().filter(|m| m.block.as_ref() == Some(b)));
        let kind = g
            .stages
            .iter()
            .find(|s| s.name == l.group)
            .map(|s| s.block.clone())
            .unwrap_or_default();
        out.push(Group {
            name: b.clone(),
            label: kind,
            block: None,
            blocks: 1,
            output: last.unwrap_or_default(),
            cost,
        });
    }
    out
}

/// Parameters after BN folding: a BN whose input is a conv or fc read by
/// nothing else folds into it (the conv gains a bias if it had none); any
/// other BN stays as a per-channel scale and shift. Running statistics vanish.
pub fn params_bn_folded(g: &Graph) -> u64 {
    let mut total = 0u64;
    for (i, n) in g.nodes() {
        match n.op {
            Op::BatchNorm { channels, .. } => {
                let producer = g.inputs(i).first().copied();
                let foldable = producer.map(|p| {
                    let op = &g.node(p).op;
                    let single_user = g.users(p).len() == 1;
                    match op {
                        Op::Conv2d { bias, .. } | Op::Linear { bias, .. } if single_user => {
                            Some(*bias)
                        }
                        _ => None,
                    }
                });
                total += match foldable.flatten() {
                    Some(true) => 0,
                    Some(false) => channels as u64,
                    None => 2 * channels as u64,
                };
            }
            _ => total += n.op.trainable_params(),
        }
    }
    total
}
