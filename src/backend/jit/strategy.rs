//! How each conv is lowered, chosen by named eligibility rules that can be
//! overridden for experiments (`--conv-strategy`).

use crate::ir::op::Residual;
use crate::ir::{Graph, Op};
use petgraph::stable_graph::NodeIndex;

use super::blocked;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConvStrategy {
    /// 1x1, stride 1, no padding: the input is already the GEMM's B matrix
    /// (packed, no im2col).
    Direct1x1,
    /// 1x1 with a stride, no padding: the input subsampled into a scratch
    /// buffer (a tenth of it or less), then as direct-1x1.
    Strided1x1,
    /// Any conv: im2col into packed B, then the GEMM.
    Im2col,
    /// The whole network on channel-blocked maps (16 channels a vector),
    /// every conv direct; the default where the network allows it
    /// (AVX-512 or AVX2, channels in multiples of 16, no groups:
    /// `blocked_layout`).
    Blocked,
}

impl ConvStrategy {
    pub fn name(self) -> &'static str {
        match self {
            ConvStrategy::Direct1x1 => "direct-1x1",
            ConvStrategy::Strided1x1 => "strided-1x1",
            ConvStrategy::Im2col => "im2col",
            ConvStrategy::Blocked => "blocked",
        }
    }

    /// Whether this strategy can compute `op`.
    pub fn eligible(self, op: &Op) -> bool {
        matches!(
            (self, op),
            (
                ConvStrategy::Direct1x1,
                Op::Conv2d {
                    kernel: 1,
                    stride: 1,
                    padding: 0,
                    ..
                },
            ) | (
                ConvStrategy::Strided1x1,
                Op::Conv2d {
                    kernel: 1,
                    padding: 0,
                    ..
                },
            ) | (ConvStrategy::Im2col, Op::Conv2d { .. })
        )
    }
}

/// Whether the network up to `last` (its logits) can run on channel-blocked
/// maps, and if not, why: AVX-512 or AVX2 with FMA; every map but the input a multiple of 16
/// channels; the input read only as convs' main input (the stem reads it
/// planar), not as a residual; convs
/// ungrouped with an added (not zero-padded) residual; and no op outside
/// conv, max pool, ReLU, add, global average pool and the head.
pub fn blocked_layout(g: &Graph, last: NodeIndex) -> Result<(), String> {
    if !blocked::supported() {
        return Err("blocked maps need AVX-512 or AVX2 with FMA".into());
    }
    for &i in &g.order {
        let n = g.node(i);
        let ins = g.inputs(i);
        let why = |what: &str| Err(format!("`{}` ({}): {what}", n.name, n.op.kind()));
        // The input stays planar: only a conv's main input may be it (a
        // residual is read in the output's layout).
        let planar_ok =
            matches!(n.op, Op::Conv2d { .. }) && !ins.iter().skip(1).any(|&j| j == g.input);
        if ins.contains(&g.input) && !planar_ok {
            return why("reads the network's input, which only a conv can read planar");
        }
        if i != g.input && n.shape.rank() == 4 {
            let spatial = n.shape.height() * n.shape.width() > 1;
            if !n.shape.channels().is_multiple_of(blocked::BLOCK) {
                return why("channels not a multiple of 16");
            }
            if i == last && spatial {
                return why("the output is a map, not logits");
            }
        }
        match n.op {
            Op::Input | Op::MaxPool { .. } | Op::Relu | Op::Add | Op::GlobalAvgPool => {}
            Op::Conv2d {
                groups, residual, ..
            } => {
                if groups != 1 || matches!(residual, Residual::PadAdd { .. }) {
                    return why("grouped, or an option A residual");
                }
                if !blocked_geom(g, i).is_some_and(|geom| blocked::eligible(&geom)) {
                    return why("a stride the direct kernel has no variant for");
                }
            }
            Op::Flatten | Op::Linear { .. } | Op::Softmax => {
                let map = |j: &NodeIndex| {
                    let x = &g.node(*j).shape;
                    x.rank() == 4 && x.height() * x.width() > 1
                };
                if ins.first().is_none_or(map) {
                    return why("reads a map, whose blocked layout differs");
                }
            }
            _ => return why("runs on planar maps only"),
        }
        if i == last {
            break;
        }
    }
    Ok(())
}

/// Conv `i`'s geometry on blocked maps (its input planar if it is the
/// network's input).
pub fn blocked_geom(g: &Graph, i: NodeIndex) -> Option<blocked::Geom> {
    let n = g.node(i);
    let Op::Conv2d {
        in_channels,
        out_channels,
        kernel,
        stride,
        padding,
        ..
    } = n.op
    else {
        return None;
    };
    let input = *g.inputs(i).first()?;
    let x = &g.node(input).shape;
    Some(blocked::Geom {
        c: in_channels,
        h: x.height(),
        w: x.width(),
        o: out_channels,
        kernel,
        stride,
        pad: padding,
        oh: n.shape.height(),
        ow: n.shape.width(),
        input: if input == g.input {
            blocked::Input::Planar
        } else {
            blocked::Input::Blocked
        },
    })
}

/// Preference order when nothing is forced.
pub const PREFERENCE: &[ConvStrategy] = &[
    ConvStrategy::Direct1x1,
    ConvStrategy::Strided1x1,
    ConvStrategy::Im2col,
];

/// The strategy for a conv: the forced one if eligible, else the first eligible.
pub fn choose(op: &Op, forced: Option<ConvStrategy>) -> ConvStrategy {
    if let Some(f) = forced {
        // `blocked` is a layout for the whole network, not a per-conv choice.
        if f != ConvStrategy::Blocked && f.eligible(op) {
            return f;
        }
    }
    PREFERENCE
        .iter()
        .copied()
        .find(|s| s.eligible(op))
        .unwrap_or(ConvStrategy::Im2col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::Residual;

    fn conv(kernel: usize, stride: usize, padding: usize) -> Op {
        Op::Conv2d {
            in_channels: 8,
            out_channels: 8,
            kernel,
            stride,
            padding,
            groups: 1,
            bias: false,
            residual: Residual::None,
            relu: false,
        }
    }

    #[test]
    fn rules() {
        assert_eq!(choose(&conv(1, 1, 0), None), ConvStrategy::Direct1x1);
        assert_eq!(choose(&conv(1, 2, 0), None), ConvStrategy::Strided1x1);
        assert_eq!(choose(&conv(1, 2, 1), None), ConvStrategy::Im2col);
        assert_eq!(choose(&conv(3, 1, 1), None), ConvStrategy::Im2col);
        assert_eq!(
            choose(&conv(1, 1, 0), Some(ConvStrategy::Im2col)),
            ConvStrategy::Im2col
        );
        // A forced strategy that cannot apply falls back to the rules.
        assert_eq!(
            choose(&conv(3, 1, 1), Some(ConvStrategy::Direct1x1)),
            ConvStrategy::Im2col
        );
    }
}
