//! A graph as an ONNX model: one node per IR value, named after it, with the
//! spec's `file:line:col` as its doc string; initializers under torchvision's
//! state_dict names; input `input`, output `logits` (before the softmax).

use prost::Message;

use super::proto::{
    AttributeProto, Dim, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, ValueInfoProto,
};
use crate::ir::op::{Op, Residual};
use crate::ir::Graph;
use crate::syntax::SourceMap;
use crate::weights::BoundWeights;

/// Opsets the exporter writes: Pad and Slice take their arguments as
/// inputs from 11 and 10 on; 13 is what every current runtime reads.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

pub struct ExportOptions {
    pub opset: i64,
    /// A fixed batch; `None` writes a dynamic `batch_size`.
    pub batch: Option<usize>,
    /// Extra `metadata_props` (the spec's preprocessing, its file).
    pub metadata: Vec<(String, String)>,
}

/// The model's bytes. `g` is the graph to write (BN folded or kept, as the
/// caller chose), `w` its weights.
pub fn export(
    g: &Graph,
    w: &BoundWeights,
    sources: &SourceMap,
    opts: &ExportOptions,
) -> Result<Vec<u8>, String> {
    let mut b = Builder {
        g,
        w,
        sources,
        nodes: Vec::new(),
        inits: Vec::new(),
    };
    let logits = g.logits();
    let names = |i| {
        if i == g.input {
            "input".to_string()
        } else if i == logits {
            "logits".to_string()
        } else {
            g.node(i).name.clone()
        }
    };
    for &i in &g.order {
        if i == g.input {
            continue;
        }
        let ins: Vec<String> = g.inputs(i).into_iter().map(names).collect();
        b.node(i, &ins, &names(i))?;
        if i == logits {
            break;
        }
    }
    let batch = match opts.batch {
        Some(n) => Dim::Value(n as i64),
        None => Dim::Param("batch_size".into()),
    };
    let x = &g.node(g.input).shape;
    let dims = |rest: &[usize]| {
        std::iter::once(batch.clone())
            .chain(rest.iter().map(|&d| Dim::Value(d as i64)))
            .collect::<Vec<_>>()
    };
    let y = &g.node(logits).shape;
    let graph = GraphProto {
        node: b.nodes,
        name: g.name.clone(),
        initializer: b.inits,
        input: vec![ValueInfoProto::tensor_f32("input", &dims(&x.dims()[1..]))],
        output: vec![ValueInfoProto::tensor_f32("logits", &dims(&y.dims()[1..]))],
        ..Default::default()
    };
    let mut metadata = vec![("network".to_string(), g.name.clone())];
    metadata.extend(opts.metadata.iter().cloned());
    let model = ModelProto {
        ir_version: super::ir_version(opts.opset),
        opset_import: vec![OperatorSetIdProto::onnx(opts.opset)],
        producer_name: "resnetc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{}, exported by resnetc", g.name),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect(),
        ..Default::default()
    };
    Ok(model.encode_to_vec())
}

struct Builder<'a> {
    g: &'a Graph,
    w: &'a BoundWeights,
    sources: &'a SourceMap,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl Builder<'_> {
    /// An initializer for a parameter of value `name`, under its state_dict key.
    fn param(&mut self, name: &str, suffix: &str) -> Result<String, String> {
        let key = format!("{name}.{suffix}");
        let t = self
            .w
            .param(name, suffix)
            .ok_or_else(|| format!("no weight `{key}` bound"))?;
        let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        let data: Vec<f32> = t.iter().copied().collect();
        self.inits.push(TensorProto::f32(&key, &dims, &data));
        Ok(key)
    }

    /// A constant the graph needs (shapes, pads): an initializer too.
    fn ints(&mut self, name: String, v: &[i64]) -> String {
        self.inits
            .push(TensorProto::i64(&name, &[v.len() as i64], v));
        name
    }

    fn push(&mut self, i: petgraph::stable_graph::NodeIndex, mut n: NodeProto) {
        n.doc_string = self.sources.locate(self.g.node(i).span);
        self.nodes.push(n);
    }

    fn node(
        &mut self,
        i: petgraph::stable_graph::NodeIndex,
        ins: &[String],
        out: &str,
    ) -> Result<(), String> {
        let node = self.g.node(i);
        let name = node.name.clone();
        let first = ins.first().cloned().unwrap_or_default();
        let two = |v: usize| [v as i64, v as i64];
        match node.op {
            Op::Input => {}
            Op::Conv2d {
                kernel,
                stride,
                padding,
                groups,
                dilation,
                bias,
                residual,
                relu,
                ..
            } => {
                let mut inputs = vec![first, self.param(&name, "weight")?];
                if bias {
                    inputs.push(self.param(&name, "bias")?);
                }
                // A fused epilogue (only at -O2) comes apart into its nodes.
                let fused = !residual.is_none() || relu;
                let conv_out = if fused {
                    format!("{name}.conv")
                } else {
                    out.to_string()
                };
                let attrs = vec![
                    AttributeProto::ints("kernel_shape", &two(kernel)),
                    AttributeProto::ints("strides", &two(stride)),
                    AttributeProto::ints("pads", &[padding as i64; 4]),
                    AttributeProto::ints("dilations", &two(dilation)),
                    AttributeProto::int("group", groups as i64),
                ];
                self.push(i, NodeProto::new("Conv", &name, inputs, [&conv_out], attrs));
                let mut cur = conv_out;
                if let Some(r) = ins.get(1) {
                    let r = match residual {
                        Residual::PadAdd {
                            stride,
                            pad_before,
                            pad_after,
                        } => self.option_a(
                            i,
                            r,
                            &format!("{name}.shortcut"),
                            (stride, pad_before, pad_after),
                        ),
                        _ => r.clone(),
                    };
                    let next = if relu {
                        format!("{name}.add")
                    } else {
                        out.to_string()
                    };
                    self.push(
                        i,
                        NodeProto::new("Add", &format!("{name}.add"), [cur, r], [&next], vec![]),
                    );
                    cur = next;
                }
                if relu {
                    self.push(
                        i,
                        NodeProto::new("Relu", &format!("{name}.relu"), [cur], [out], vec![]),
                    );
                }
            }
            Op::BatchNorm { eps, .. } => {
                let inputs = vec![
                    first,
                    self.param(&name, "weight")?,
                    self.param(&name, "bias")?,
                    self.param(&name, "running_mean")?,
                    self.param(&name, "running_var")?,
                ];
                let attrs = vec![AttributeProto::float("epsilon", eps as f32)];
                self.push(
                    i,
                    NodeProto::new("BatchNormalization", &name, inputs, [out], attrs),
                );
            }
            Op::ScaleShift { channels, relu } => {
                // A BN that could not fold (it precedes its conv): written
                // as a BatchNormalization of mean 0 and variance 1 - eps,
                // so it keeps its state_dict names and binds back as a BN.
                let eps = crate::ir::op::BN_EPS;
                let zeros = vec![0.0f32; channels];
                let ones = vec![(1.0 - eps) as f32; channels];
                let c = [channels as i64];
                let mean = format!("{name}.running_mean");
                let var = format!("{name}.running_var");
                self.inits.push(TensorProto::f32(&mean, &c, &zeros));
                self.inits.push(TensorProto::f32(&var, &c, &ones));
                let inputs = vec![
                    first,
                    self.param(&name, "weight")?,
                    self.param(&name, "bias")?,
                    mean,
                    var,
                ];
                let bn_out = if relu {
                    format!("{name}.bn")
                } else {
                    out.to_string()
                };
                let attrs = vec![AttributeProto::float("epsilon", eps as f32)];
                self.push(
                    i,
                    NodeProto::new("BatchNormalization", &name, inputs, [&bn_out], attrs),
                );
                if relu {
                    self.push(
                        i,
                        NodeProto::new("Relu", &format!("{name}.relu"), [bn_out], [out], vec![]),
                    );
                }
            }
            Op::Relu => self.push(i, NodeProto::new("Relu", &name, [first], [out], vec![])),
            Op::MaxPool {
                kernel,
                stride,
                padding,
                ceil,
            } => {
                // Ceil mode as explicit end padding (-inf for a max pool):
                // what Caffe's exporters write, read alike by every runtime.
                let x = &self.g.node(self.g.inputs(i)[0]).shape;
                let end = |size: usize, out: usize| {
                    ((out - 1) * stride + kernel).saturating_sub(size + padding) as i64
                };
                let (eh, ew) = if ceil {
                    (
                        end(x.height(), node.shape.height()),
                        end(x.width(), node.shape.width()),
                    )
                } else {
                    (padding as i64, padding as i64)
                };
                let p = padding as i64;
                let attrs = vec![
                    AttributeProto::ints("kernel_shape", &two(kernel)),
                    AttributeProto::ints("strides", &two(stride)),
                    AttributeProto::ints("pads", &[p, p, eh, ew]),
                ];
                self.push(i, NodeProto::new("MaxPool", &name, [first], [out], attrs));
            }
            Op::AvgPool {
                kernel,
                stride,
                padding,
                ceil,
            } => {
                let attrs = vec![
                    AttributeProto::ints("kernel_shape", &two(kernel)),
                    AttributeProto::ints("strides", &two(stride)),
                    AttributeProto::ints("pads", &[padding as i64; 4]),
                    AttributeProto::int("ceil_mode", i64::from(ceil)),
                    AttributeProto::int("count_include_pad", 1),
                ];
                self.push(
                    i,
                    NodeProto::new("AveragePool", &name, [first], [out], attrs),
                );
            }
            Op::GlobalAvgPool => self.push(
                i,
                NodeProto::new("GlobalAveragePool", &name, [first], [out], vec![]),
            ),
            Op::Add => self.push(i, NodeProto::new("Add", &name, ins.to_vec(), [out], vec![])),
            Op::ShortcutPad {
                stride,
                pad_before,
                pad_after,
            } => {
                let padded = self.option_a(i, &first, &name, (stride, pad_before, pad_after));
                self.push(
                    i,
                    NodeProto::new("Identity", &format!("{name}.out"), [padded], [out], vec![]),
                );
            }
            Op::Flatten => {
                let attrs = vec![AttributeProto::int("axis", 1)];
                self.push(i, NodeProto::new("Flatten", &name, [first], [out], attrs));
            }
            Op::Linear { bias, .. } => {
                let mut inputs = vec![first, self.param(&name, "weight")?];
                if bias {
                    inputs.push(self.param(&name, "bias")?);
                }
                let attrs = vec![AttributeProto::int("transB", 1)];
                self.push(i, NodeProto::new("Gemm", &name, inputs, [out], attrs));
            }
            Op::Softmax => {
                let attrs = vec![AttributeProto::int("axis", 1)];
                self.push(i, NodeProto::new("Softmax", &name, [first], [out], attrs));
            }
        }
        Ok(())
    }

    /// Option A: every `stride`-th pixel (`Slice` with steps), then the new
    /// channels zero-padded around the old ones (`Pad` on the channel axis).
    /// Returns the padded tensor's name.
    fn option_a(
        &mut self,
        i: petgraph::stable_graph::NodeIndex,
        x: &str,
        name: &str,
        (stride, before, after): (usize, usize, usize),
    ) -> String {
        let s = stride as i64;
        let starts = self.ints(format!("{name}.starts"), &[0, 0]);
        let ends = self.ints(format!("{name}.ends"), &[i64::MAX, i64::MAX]);
        let axes = self.ints(format!("{name}.axes"), &[2, 3]);
        let steps = self.ints(format!("{name}.steps"), &[s, s]);
        let sliced = format!("{name}.slice");
        self.push(
            i,
            NodeProto::new(
                "Slice",
                &sliced,
                [x.to_string(), starts, ends, axes, steps],
                [&sliced],
                vec![],
            ),
        );
        let pads = self.ints(
            format!("{name}.pads"),
            &[0, before as i64, 0, 0, 0, after as i64, 0, 0],
        );
        let padded = format!("{name}.pad");
        self.push(
            i,
            NodeProto::new("Pad", &padded, [sliced, pads], [&padded], vec![]),
        );
        padded
    }
}
