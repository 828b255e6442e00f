//! The ops of the IR. Each op owns its shape rule, its parameters and its cost.

use serde::{Deserialize, Serialize};

use super::shape::Shape;

/// PyTorch's default BatchNorm epsilon.
pub const BN_EPS: f64 = 1e-5;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Input,
    /// Convolution, optionally with a fused epilogue:
    /// `out = relu?(conv(x) + bias + residual)`, where the residual is a
    /// second input read as-is or through the option A stride and zero-pad.
    Conv2d {
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        /// Spacing of the kernel's taps (1: a dense kernel).
        #[serde(default = "one", skip_serializing_if = "is_one")]
        dilation: usize,
        bias: bool,
        #[serde(default, skip_serializing_if = "Residual::is_none")]
        residual: Residual,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        relu: bool,
    },
    /// A BN that could not fold: `relu?(x * scale + shift)` per channel.
    ScaleShift {
        channels: usize,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        relu: bool,
    },
    BatchNorm {
        channels: usize,
        eps: f64,
    },
    Relu,
    MaxPool {
        kernel: usize,
        stride: usize,
        padding: usize,
        /// PyTorch's `ceil_mode`: round the output size up.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ceil: bool,
    },
    AvgPool {
        kernel: usize,
        stride: usize,
        padding: usize,
        /// PyTorch's `ceil_mode`: round the output size up.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ceil: bool,
    },
    GlobalAvgPool,
    Add,
    /// The paper's option A shortcut: keep every `stride`-th pixel and zero-pad
    /// the new channels, `pad_before` ahead of the old ones and `pad_after` behind.
    ShortcutPad {
        stride: usize,
        pad_before: usize,
        pad_after: usize,
    },
    Flatten,
    Linear {
        in_features: usize,
        out_features: usize,
        bias: bool,
    },
    Softmax,
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

/// How a fused conv reads its residual input (the second input).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Residual {
    #[default]
    None,
    /// Added element by element.
    Add,
    /// The option A shortcut: every `stride`-th pixel, zero channels around.
    PadAdd {
        stride: usize,
        pad_before: usize,
        pad_after: usize,
    },
}

impl Residual {
    pub fn is_none(&self) -> bool {
        *self == Residual::None
    }

    /// The shape of the residual input as the epilogue reads it.
    pub fn read_shape(&self, r: &Shape) -> Shape {
        match *self {
            Residual::PadAdd {
                stride,
                pad_before,
                pad_after,
            } if r.rank() == 4 && stride > 0 => Shape::nchw(
                r.batch(),
                r.channels() + pad_before + pad_after,
                r.height().div_ceil(stride),
                r.width().div_ceil(stride),
            ),
            _ => r.clone(),
        }
    }
}

/// Why an op cannot take the shapes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    pub expected: String,
    pub found: String,
    pub help: Option<String>,
}

impl ShapeError {
    fn new(expected: impl Into<String>, found: impl Into<String>) -> ShapeError {
        ShapeError {
            expected: expected.into(),
            found: found.into(),
            help: None,
        }
    }
    fn help(mut self, h: impl Into<String>) -> ShapeError {
        self.help = Some(h.into());
        self
    }
}

/// What a parameter tensor is for: trainable, or a BN running statistic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    Weight,
    Bias,
    RunningMean,
    RunningVar,
}

impl ParamKind {
    pub fn trainable(self) -> bool {
        matches!(self, ParamKind::Weight | ParamKind::Bias)
    }
}

/// One parameter tensor of an op, named as in a torchvision state_dict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub suffix: &'static str,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
}

impl ParamSpec {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }
}

/// Output size of a sliding window (`kernel` its extent, dilation
/// included), `None` when the window does not fit. With `ceil`, PyTorch's
/// `ceil_mode`: rounded up, but the last window must start inside the
/// input or the left padding.
pub fn window_out(
    size: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    ceil: bool,
) -> Option<usize> {
    let padded = size.checked_add(padding.checked_mul(2)?)?;
    if padded < kernel || stride == 0 {
        return None;
    }
    let span = padded - kernel;
    let mut out = if ceil {
        span.div_ceil(stride)
    } else {
        span / stride
    } + 1;
    if ceil && (out - 1) * stride >= size + padding {
        out -= 1;
    }
    Some(out)
}

/// A kernel's extent with its dilation: `d * (k - 1) + 1`.
pub fn extent(kernel: usize, dilation: usize) -> usize {
    dilation
        .saturating_mul(kernel.saturating_sub(1))
        .saturating_add(1)
}

impl Op {
    /// The short name used in the textual IR.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Conv2d { .. } => "conv2d",
            Op::ScaleShift { .. } => "scale_shift",
            Op::BatchNorm { .. } => "batch_norm",
            Op::Relu => "relu",
            Op::MaxPool { .. } => "max_pool",
            Op::AvgPool { .. } => "avg_pool",
            Op::GlobalAvgPool => "global_avg_pool",
            Op::Add => "add",
            Op::ShortcutPad { .. } => "shortcut_pad",
            Op::Flatten => "flatten",
            Op::Linear { .. } => "linear",
            Op::Softmax => "softmax",
        }
    }

    pub fn arity(&self) -> usize {
        match self {
            Op::Input => 0,
            Op::Add => 2,
            Op::Conv2d { residual, .. } if !residual.is_none() => 2,
            _ => 1,
        }
    }

    /// The output shape for these input shapes.
    pub fn infer(&self, inputs: &[&Shape]) -> Result<Shape, ShapeError> {
        if inputs.len() != self.arity() {
            return Err(ShapeError::new(
                format!("{} input(s)", self.arity()),
                format!("{}", inputs.len()),
            ));
        }
        let x = match inputs.first() {
            Some(x) => *x,
            None => return Err(ShapeError::new("an input", "none")),
        };
        let spatial = |what: &str| -> Result<(), ShapeError> {
            if x.rank() != 4 {
                return Err(ShapeError::new(
                    format!("a 4-d NxCxHxW input to {what}"),
                    format!("{x}"),
                ));
            }
            Ok(())
        };
        let out = match *self {
            Op::Input => x.clone(),
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                groups,
                dilation,
                residual,
                ..
            } => {
                spatial("conv")?;
                if dilation == 0 {
                    return Err(ShapeError::new("a dilation of at least 1", "0"));
                }
                if x.channels() != in_channels {
                    return Err(ShapeError::new(
                        format!("{in_channels} input channels"),
                        format!("{}", x.channels()),
                    ));
                }
                if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
                    return Err(ShapeError::new(
                        format!("channels divisible by groups = {groups}"),
                        format!("{in_channels} input and {out_channels} output channels"),
                    )
                    .help("both the input and the output channels must be multiples of `groups`"));
                }
                let (h, w) = window(x, extent(kernel, dilation), stride, padding, false, "conv")?;
                let out = Shape::nchw(x.batch(), out_channels, h, w);
                if let Some(r) = inputs.get(1) {
                    let read = residual.read_shape(r);
                    if read != out {
                        return Err(ShapeError::new(
                            format!("a residual that reads as {out}"),
                            format!("{r}, read as {read}"),
                        ));
                    }
                }
                out
            }
            Op::ScaleShift { channels, .. } => {
                // NCHW, or NxF where a BN after a flatten was legalized.
                if x.rank() != 4 && x.rank() != 2 {
                    return Err(ShapeError::new(
                        "a 4-d NxCxHxW or 2-d NxF input to scale-shift",
                        format!("{x}"),
                    ));
                }
                if x.channels() != channels {
                    return Err(ShapeError::new(
                        format!("{channels} channels"),
                        format!("{}", x.channels()),
                    ));
                }
                x.clone()
            }
            Op::BatchNorm { channels, .. } => {
                // NCHW (BatchNorm2d) or NxF after an fc (BatchNorm1d).
                if x.rank() != 4 && x.rank() != 2 {
                    return Err(ShapeError::new(
                        "a 4-d NxCxHxW or 2-d NxF input to batch norm",
                        format!("{x}"),
                    ));
                }
                if x.channels() != channels {
                    return Err(ShapeError::new(
                        format!("{channels} channels"),
                        format!("{}", x.channels()),
                    ));
                }
                x.clone()
            }
            Op::Relu => x.clone(),
            Op::Softmax => {
                if x.rank() != 2 {
                    return Err(
                        ShapeError::new("a flat NxF input to softmax", format!("{x}"))
                            .help("add `flatten` (and usually `fc`) before `softmax`"),
                    );
                }
                x.clone()
            }
            Op::MaxPool {
                kernel,
                stride,
                padding,
                ceil,
            }
            | Op::AvgPool {
                kernel,
                stride,
                padding,
                ceil,
            } => {
                spatial("pooling")?;
                if padding * 2 > kernel {
                    return Err(ShapeError::new(
                        format!("padding at most half the kernel ({})", kernel / 2),
                        format!("padding {padding}"),
                    ));
                }
                let (h, w) = window(x, kernel, stride, padding, ceil, "pooling")?;
                Shape::nchw(x.batch(), x.channels(), h, w)
            }
            Op::GlobalAvgPool => {
                spatial("global average pooling")?;
                Shape::nchw(x.batch(), x.channels(), 1, 1)
            }
            Op::Add => {
                let y = inputs[1];
                if x != y {
                    return Err(ShapeError::new(
                        format!("two inputs of one shape ({x})"),
                        format!("{x} and {y}"),
                    ));
                }
                x.clone()
            }
            Op::ShortcutPad {
                stride,
                pad_before,
                pad_after,
            } => {
                spatial("the option A shortcut")?;
                if stride == 0 {
                    return Err(ShapeError::new("a stride of at least 1", "0"));
                }
                Shape::nchw(
                    x.batch(),
                    x.channels() + pad_before + pad_after,
                    x.height().div_ceil(stride),
                    x.width().div_ceil(stride),
                )
            }
            Op::Flatten => {
                let features: usize = x.dims()[1..].iter().product();
                Shape(vec![x.batch(), features])
            }
            Op::Linear {
                in_features,
                out_features,
                ..
            } => {
                if x.rank() != 2 {
                    return Err(ShapeError::new("a flat NxF input to fc", format!("{x}"))
                        .help("add `flatten` before `fc`"));
                }
                if x.dims()[1] != in_features {
                    return Err(ShapeError::new(
                        format!("{in_features} input features"),
                        format!("{}", x.dims()[1]),
                    ));
                }
                Shape(vec![x.batch(), out_features])
            }
        };
        match out.checked_numel() {
            Some(_) => Ok(out),
            None => Err(ShapeError::new(
                "a tensor of at most 2^40 elements",
                format!("{out}"),
            )),
        }
    }

    /// Parameter tensors, in torchvision's state_dict order.
    pub fn params(&self) -> Vec<ParamSpec> {
        let p = |suffix, shape, kind| ParamSpec {
            suffix,
            shape,
            kind,
        };
        match *self {
            Op::Conv2d {
                in_channels,
                out_channels,
                kernel,
                groups,
                bias,
                ..
            } => {
                let mut v = vec![p(
                    "weight",
                    vec![out_channels, in_channels / groups.max(1), kernel, kernel],
                    ParamKind::Weight,
                )];
                if bias {
                    v.push(p("bias", vec![out_channels], ParamKind::Bias));
                }
                v
            }
            Op::ScaleShift { channels, .. } => vec![
                p("weight", vec![channels], ParamKind::Weight),
                p("bias", vec![channels], ParamKind::Bias),
            ],
            Op::BatchNorm { channels, .. } => vec![
                p("weight", vec![channels], ParamKind::Weight),
                p("bias", vec![channels], ParamKind::Bias),
                p("running_mean", vec![channels], ParamKind::RunningMean),
                p("running_var", vec![channels], ParamKind::RunningVar),
            ],
            Op::Linear {
                in_features,
                out_features,
                bias,
            } => {
                let mut v = vec![p(
                    "weight",
                    vec![out_features, in_features],
                    ParamKind::Weight,
                )];
                if bias {
                    v.push(p("bias", vec![out_features], ParamKind::Bias));
                }
                v
            }
            _ => Vec::new(),
        }
    }

    /// Trainable parameters (what `torch.nn.Module.parameters()` counts).
    pub fn trainable_params(&self) -> u64 {
        self.params()
            .iter()
            .filter(|p| p.kind.trainable())
            .map(ParamSpec::numel)
            .sum()
    }

    /// Multiply-adds of conv and fc, the paper's Table 1 "FLOPs".
    pub fn macs(&self, out: &Shape) -> u64 {
        self.checked_macs(out).unwrap_or(u64::MAX)
    }

    /// [`Op::macs`], or `None` if the count does not fit in 64 bits.
    pub fn checked_macs(&self, out: &Shape) -> Option<u64> {
        let per_output = match *self {
            Op::Conv2d {
                in_channels,
                kernel,
                groups,
                ..
            } => ((in_channels / groups.max(1)) as u64)
                .checked_mul(kernel as u64)?
                .checked_mul(kernel as u64)?,
            Op::Linear { in_features, .. } => in_features as u64,
            _ => return Some(0),
        };
        out.checked_numel()?.checked_mul(per_output)
    }

    /// True for ops the paper counts as layers (conv and fc): "ResNet-50" has 50.
    pub fn is_weighted_layer(&self) -> bool {
        matches!(self, Op::Conv2d { .. } | Op::Linear { .. })
    }
}

fn window(
    x: &Shape,
    kernel: usize,
    stride: usize,
    padding: usize,
    ceil: bool,
    what: &str,
) -> Result<(usize, usize), ShapeError> {
    if kernel == 0 || stride == 0 {
        return Err(ShapeError::new(
            "a kernel and stride of at least 1",
            format!("kernel {kernel}, stride {stride}"),
        ));
    }
    match (
        window_out(x.height(), kernel, stride, padding, ceil),
        window_out(x.width(), kernel, stride, padding, ceil),
    ) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(ShapeError::new(
            format!(
                "an input of at least {k}x{k} pixels (with padding) for a {k}x{k} {what}",
                k = kernel
            ),
            format!("{}x{} pixels with padding {padding}", x.height(), x.width()),
        )
        .help("the spatial size shrank to zero: use a larger input or fewer strided layers")),
    }
}
