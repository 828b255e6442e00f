//! What each op costs. Ops own these rules; reports only add them up.
//!
//! Conventions (stated in every report):
//! - MACs: multiply-adds of conv and fc only, the paper's Table 1 "FLOPs".
//! - FLOPs: 2 per MAC, plus 1 per bias add, 2 per element for inference BN
//!   (scale and shift), 1 per element for ReLU and residual add, k*k - 1
//!   compares per max-pool output, k*k per avg-pool output (adds and a divide),
//!   H*W per global-pool output, 4 per softmax element (max, subtract-exp,
//!   sum, divide). Padding and flatten move data and cost no FLOPs.
//! - Bytes: f32 values; an op reads its inputs and weights and writes its output.

use serde::Serialize;

use super::op::Op;
use super::shape::Shape;

/// Bytes of one value element (resnetc computes in f32).
pub const ELEM_BYTES: u64 = 4;

/// FLOPs by the kind of work, so that reports can show what others omit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Flops {
    /// 2 x MACs of conv and fc.
    pub conv_fc: u64,
    pub bias: u64,
    pub batch_norm: u64,
    pub relu: u64,
    pub add: u64,
    pub pool: u64,
    pub softmax: u64,
}

impl Flops {
    pub fn total(&self) -> u64 {
        [
            self.conv_fc,
            self.bias,
            self.batch_norm,
            self.relu,
            self.add,
            self.pool,
            self.softmax,
        ]
        .iter()
        .fold(0u64, |a, &b| a.saturating_add(b))
    }

    pub fn add(&mut self, o: &Flops) {
        self.conv_fc = self.conv_fc.saturating_add(o.conv_fc);
        self.bias = self.bias.saturating_add(o.bias);
        self.batch_norm = self.batch_norm.saturating_add(o.batch_norm);
        self.relu = self.relu.saturating_add(o.relu);
        self.add = self.add.saturating_add(o.add);
        self.pool = self.pool.saturating_add(o.pool);
        self.softmax = self.softmax.saturating_add(o.softmax);
    }
}

/// The cost of one op at its shapes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Trainable parameters (weights and biases, BN gamma and beta).
    pub params: u64,
    /// BN running mean and variance.
    pub bn_stats: u64,
    pub macs: u64,
    pub flops: Flops,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl Cost {
    pub fn add(&mut self, o: &Cost) {
        self.params = self.params.saturating_add(o.params);
        self.bn_stats = self.bn_stats.saturating_add(o.bn_stats);
        self.macs = self.macs.saturating_add(o.macs);
        self.flops.add(&o.flops);
        self.bytes_read = self.bytes_read.saturating_add(o.bytes_read);
        self.bytes_written = self.bytes_written.saturating_add(o.bytes_written);
    }

    pub fn weight_bytes(&self) -> u64 {
        self.params
            .saturating_add(self.bn_stats)
            .saturating_mul(ELEM_BYTES)
    }
}

impl Op {
    /// The cost of this op reading `inputs` and writing `out`.
    pub fn cost(&self, inputs: &[&Shape], out: &Shape) -> Cost {
        let n = out.numel();
        let params = self.trainable_params();
        let all_params: u64 = self.params().iter().map(|p| p.numel()).sum();
        let macs = self.macs(out);
        let mut flops = Flops::default();
        match *self {
            Op::Conv2d {
                bias,
                residual,
                relu,
                ..
            } => {
                flops.conv_fc = macs.saturating_mul(2);
                flops.bias = if bias { n } else { 0 };
                flops.add = if residual.is_none() { 0 } else { n };
                flops.relu = if relu { n } else { 0 };
            }
            Op::Linear { bias, .. } => {
                flops.conv_fc = macs.saturating_mul(2);
                if bias {
                    flops.bias = n;
                }
            }
            Op::ScaleShift { relu, .. } => {
                flops.batch_norm = 2 * n;
                flops.relu = if relu { n } else { 0 };
            }
            Op::BatchNorm { .. } => flops.batch_norm = 2 * n,
            Op::Relu => flops.relu = n,
            Op::Add => flops.add = n,
            Op::MaxPool { kernel, .. } => flops.pool = n * (kernel * kernel) as u64 - n,
            Op::AvgPool { kernel, .. } => flops.pool = n * (kernel * kernel) as u64,
            Op::GlobalAvgPool => {
                let x = inputs.first().map_or(1, |s| s.height() * s.width()) as u64;
                flops.pool = n * x;
            }
            Op::Softmax => flops.softmax = 4 * n,
            Op::Input | Op::ShortcutPad { .. } | Op::Flatten => {}
        }
        // A fused option A residual reads only the pixels it keeps.
        let read: u64 = match self {
            Op::Conv2d { residual, .. } if inputs.len() == 2 => {
                inputs[0].numel()
                    + residual
                        .read_shape(inputs[1])
                        .numel()
                        .min(inputs[1].numel())
            }
            _ => inputs.iter().map(|s| s.numel()).sum::<u64>(),
        } + all_params;
        Cost {
            params,
            bn_stats: all_params - params,
            macs,
            flops,
            bytes_read: if matches!(self, Op::Input) {
                0
            } else {
                read * ELEM_BYTES
            },
            bytes_written: if matches!(self, Op::Input) {
                0
            } else {
                n * ELEM_BYTES
            },
        }
    }
}
