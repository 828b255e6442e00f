//! How each conv is lowered, chosen by named eligibility rules that can be
//! overridden for experiments (`--conv-strategy`).

use crate::ir::Op;

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
}

impl ConvStrategy {
    pub fn name(self) -> &'static str {
        match self {
            ConvStrategy::Direct1x1 => "direct-1x1",
            ConvStrategy::Strided1x1 => "strided-1x1",
            ConvStrategy::Im2col => "im2col",
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

/// Preference order when nothing is forced.
pub const PREFERENCE: &[ConvStrategy] = &[
    ConvStrategy::Direct1x1,
    ConvStrategy::Strided1x1,
    ConvStrategy::Im2col,
];

/// The strategy for a conv: the forced one if eligible, else the first eligible.
pub fn choose(op: &Op, forced: Option<ConvStrategy>) -> ConvStrategy {
    if let Some(f) = forced {
        if f.eligible(op) {
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
