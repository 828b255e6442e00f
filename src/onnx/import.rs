//! Pretrained weights from an ONNX model, bound to a spec by structure.
//!
//! Both graphs are walked from the input. Each IR value is matched to the
//! ONNX node that reads what its inputs were matched to: a conv to a `Conv`
//! (BN after it, or folded into its bias), a BN to a `BatchNormalization`
//! (or, where the model folded it, to an identity carrying the conv's
//! bias), an fc to a `Gemm` or a `MatMul` + `Add`, and the weightless ops
//! to theirs. Layout-only nodes (`Identity`, `Transpose`, `Reshape`,
//! `Flatten`, `Squeeze`, `Unsqueeze`, `Dropout`, `Cast`) are looked through.
//! Names and positions never decide a match alone; every mismatch is listed.

use std::collections::{HashMap, HashSet};

use ndarray::{ArrayD, IxDyn};
use petgraph::stable_graph::NodeIndex;
use prost::Message;

use super::proto::{ModelProto, NodeProto, TensorProto};
use crate::ir::op::Op;
use crate::ir::Graph;
use crate::weights::Weights;

const LAYOUT: &[&str] = &[
    "Identity",
    "Transpose",
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Dropout",
    "Cast",
];

/// ONNX ops that carry weights: each must be matched, or it is "extra".
const WEIGHTED: &[&str] = &["Conv", "Gemm", "MatMul", "BatchNormalization"];

/// The model's initializers bound to `g`'s state_dict keys.
pub fn weights_for(bytes: &[u8], file: &str, g: &Graph) -> Result<Weights, String> {
    let model = ModelProto::decode(bytes)
        .map_err(|e| format!("`{file}`: not an ONNX model (protobuf: {e})"))?;
    let graph = model
        .graph
        .ok_or_else(|| format!("`{file}`: the ONNX model has no graph"))?;
    let mut consts: HashMap<&str, &TensorProto> = HashMap::new();
    for t in &graph.initializer {
        consts.insert(&t.name, t);
    }
    for n in &graph.node {
        if n.op_type == "Constant" {
            if let (Some(out), Some(t)) = (
                n.output.first(),
                n.attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref()),
            ) {
                consts.insert(out, t);
            }
        }
    }
    let input = graph
        .input
        .iter()
        .map(|v| v.name.as_str())
        .find(|n| !consts.contains_key(n))
        .ok_or_else(|| format!("`{file}`: the ONNX graph has no input that is not a constant"))?;
    let mut m = Matcher {
        file,
        g,
        nodes: &graph.node,
        consts,
        producer: HashMap::new(),
        consumers: HashMap::new(),
        used: HashSet::new(),
        out: Weights::default(),
        errors: Vec::new(),
    };
    for (k, n) in graph.node.iter().enumerate() {
        for o in &n.output {
            m.producer.insert(o.as_str(), k);
        }
        for i in &n.input {
            m.consumers.entry(i.as_str()).or_default().push(k);
        }
    }
    m.walk(input);
    for (k, n) in graph.node.iter().enumerate() {
        if WEIGHTED.contains(&n.op_type.as_str()) && !m.used.contains(&k) {
            m.errors.push(format!(
                "extra: ONNX {} `{}` matches no layer of the spec",
                n.op_type,
                label(n)
            ));
        }
    }
    if m.errors.is_empty() {
        Ok(m.out)
    } else {
        Err(format!(
            "`{file}` does not fit `{}` ({} problem{}):\n  {}",
            g.name,
            m.errors.len(),
            if m.errors.len() == 1 { "" } else { "s" },
            m.errors.join("\n  ")
        ))
    }
}

fn label(n: &NodeProto) -> String {
    if n.name.is_empty() {
        n.output.first().cloned().unwrap_or_default()
    } else {
        n.name.clone()
    }
}

/// Where an IR value was matched: an ONNX tensor, or the option A shortcut
/// of one (matched through the weightless ops that build it).
#[derive(Clone, Debug, PartialEq)]
enum At {
    Tensor(String),
    Derived(String),
}

struct Matcher<'a> {
    file: &'a str,
    g: &'a Graph,
    nodes: &'a [NodeProto],
    consts: HashMap<&'a str, &'a TensorProto>,
    producer: HashMap<&'a str, usize>,
    consumers: HashMap<&'a str, Vec<usize>>,
    used: HashSet<usize>,
    out: Weights,
    errors: Vec<String>,
}

impl<'a> Matcher<'a> {
    /// The first input of `n` that is not a constant.
    fn data_input(&self, n: &'a NodeProto) -> Option<&'a str> {
        n.input
            .iter()
            .map(String::as_str)
            .find(|i| !i.is_empty() && !self.consts.contains_key(i))
    }

    /// `t` with layout-only producers looked through.
    fn canonical(&self, mut t: &'a str) -> &'a str {
        for _ in 0..64 {
            let Some(&k) = self.producer.get(t) else {
                break;
            };
            let n = &self.nodes[k];
            if !LAYOUT.contains(&n.op_type.as_str()) {
                break;
            }
            match self.data_input(n) {
                Some(x) => t = x,
                None => break,
            }
        }
        t
    }

    /// Whether `t` is computed from `from` through weightless nodes only.
    fn derives(&self, t: &'a str, from: &str, depth: usize) -> bool {
        if self.canonical(t) == from {
            return true;
        }
        if depth == 0 {
            return false;
        }
        let Some(&k) = self.producer.get(t) else {
            return false;
        };
        let n = &self.nodes[k];
        !WEIGHTED.contains(&n.op_type.as_str())
            && n.input
                .iter()
                .filter(|i| !self.consts.contains_key(i.as_str()))
                .any(|i| self.derives(i, from, depth - 1))
    }

    /// Unused nodes of one of `ops` whose data input is (canonically) `t`.
    fn readers(&self, t: &str, ops: &[&str]) -> Vec<usize> {
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut frontier = vec![t.to_string()];
        // Readers of t, or of a layout-only node of t.
        while let Some(x) = frontier.pop() {
            if !seen.insert(x.clone()) {
                continue;
            }
            for &k in self.consumers.get(x.as_str()).into_iter().flatten() {
                let n = &self.nodes[k];
                if LAYOUT.contains(&n.op_type.as_str()) {
                    frontier.extend(n.output.iter().cloned());
                } else if ops.contains(&n.op_type.as_str())
                    && !self.used.contains(&k)
                    && self.data_input(n).map(|d| self.canonical(d)) == Some(t)
                {
                    found.push(k);
                }
            }
        }
        found.sort_unstable();
        found.dedup();
        found
    }

    fn tensor(&mut self, name: &str, what: &str) -> Option<ArrayD<f32>> {
        let Some(t) = self.consts.get(name) else {
            self.errors
                .push(format!("{what}: `{name}` is not an initializer"));
            return None;
        };
        let dims: Option<Vec<usize>> = t.dims.iter().map(|&d| usize::try_from(d).ok()).collect();
        match (t.to_f32(), dims) {
            (Some(v), Some(d)) => ArrayD::from_shape_vec(IxDyn(&d), v).ok(),
            _ => {
                self.errors.push(format!(
                    "{what}: `{name}` is not a float32 tensor held in the file (data type {}, dims {:?})",
                    t.data_type, t.dims
                ));
                None
            }
        }
    }

    fn put(&mut self, key: String, t: ArrayD<f32>) {
        self.out.insert(key, t);
    }

    fn int_attr(n: &NodeProto, name: &str, default: i64) -> i64 {
        n.attribute
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.i)
            .unwrap_or(default)
    }

    fn ints_attr(n: &NodeProto, name: &str) -> Vec<i64> {
        n.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.clone())
            .unwrap_or_default()
    }

    fn walk(&mut self, input: &'a str) {
        let g = self.g;
        let mut at: HashMap<NodeIndex, At> = HashMap::new();
        at.insert(g.input, At::Tensor(input.to_string()));
        // A conv's ONNX bias that a BN of the spec must carry (the model
        // folded the BN): conv value -> bias.
        let mut carried: HashMap<NodeIndex, ArrayD<f32>> = HashMap::new();
        for &i in &g.order {
            if i == g.input {
                continue;
            }
            let node = g.node(i);
            let ins: Vec<NodeIndex> = g.inputs(i);
            let Some(x) = ins.first().and_then(|p| at.get(p)).cloned() else {
                continue; // an input already failed to match: reported there
            };
            let x_name = match &x {
                At::Tensor(t) | At::Derived(t) => self.canonical_owned(t),
            };
            let name = node.name.clone();
            let what = format!("`{name}` ({})", node.op.kind());
            let found = match node.op {
                Op::Input => continue,
                Op::Conv2d { .. } => self.conv(i, &x_name, &what, &mut carried),
                Op::BatchNorm { channels, eps } => {
                    match self
                        .readers(&x_name, &["BatchNormalization"])
                        .first()
                        .copied()
                    {
                        Some(k) => {
                            self.used.insert(k);
                            self.batch_norm(&name, k, eps, &what);
                            self.nodes[k].output.first().cloned()
                        }
                        None => {
                            // Folded in the model: an identity with the conv's bias.
                            let bias = ins
                                .first()
                                .and_then(|p| carried.remove(p))
                                .unwrap_or_else(|| ArrayD::zeros(IxDyn(&[channels])));
                            let c = IxDyn(&[channels]);
                            self.put(format!("{name}.weight"), ArrayD::ones(c.clone()));
                            self.put(format!("{name}.bias"), bias);
                            self.put(format!("{name}.running_mean"), ArrayD::zeros(c.clone()));
                            self.put(
                                format!("{name}.running_var"),
                                ArrayD::from_elem(c, (1.0 - eps) as f32),
                            );
                            Some(x_name.clone())
                        }
                    }
                }
                Op::Relu => self.one(&x_name, &["Relu"], &what),
                Op::MaxPool { .. } => self.one(&x_name, &["MaxPool"], &what),
                Op::AvgPool { .. } => self.one(&x_name, &["AveragePool"], &what),
                Op::GlobalAvgPool => {
                    let pools = ["GlobalAveragePool", "AveragePool", "ReduceMean"];
                    let x = ins.first().map(|&p| &g.node(p).shape);
                    let one_pixel = x.is_some_and(|s| s.rank() == 4 && s.height() * s.width() == 1);
                    if one_pixel && self.readers(&x_name, &pools).is_empty() {
                        // Over one pixel the pool is an identity, which a
                        // model may have left out.
                        Some(x_name.clone())
                    } else {
                        self.one(&x_name, &pools, &what)
                    }
                }
                Op::Flatten => Some(x_name.clone()),
                Op::Softmax => {
                    // A model may end at its logits: then nothing to match.
                    let r = self.readers(&x_name, &["Softmax", "LogSoftmax"]);
                    match r.first() {
                        Some(&k) => {
                            self.used.insert(k);
                            self.nodes[k].output.first().cloned()
                        }
                        None => Some(x_name.clone()),
                    }
                }
                Op::ShortcutPad { .. } => {
                    at.insert(i, At::Derived(x_name.clone()));
                    continue;
                }
                Op::Add => {
                    let y = ins.get(1).and_then(|p| at.get(p)).cloned();
                    self.add(&x, y.as_ref(), &what)
                }
                Op::Linear { .. } => self.linear(&name, &x_name, &what),
                Op::ScaleShift { .. } => {
                    self.errors.push(format!(
                        "{what}: a legalized graph cannot bind ONNX weights"
                    ));
                    None
                }
            };
            if let Some(t) = found {
                at.insert(i, At::Tensor(t));
            }
        }
    }

    fn canonical_owned(&self, t: &str) -> String {
        // `canonical` borrows from the model; names from the walk are owned.
        match self.producer.get_key_value(t) {
            Some((k, _)) => self.canonical(k).to_string(),
            None => t.to_string(),
        }
    }

    /// The one unused node of `ops` reading `x`, its output.
    fn one(&mut self, x: &str, ops: &[&str], what: &str) -> Option<String> {
        match self.readers(x, ops).first().copied() {
            Some(k) => {
                self.used.insert(k);
                self.nodes[k].output.first().cloned()
            }
            None => {
                self.errors.push(format!(
                    "structure: {what} reads `{x}`, but no {} of the model does",
                    ops.join(" or ")
                ));
                None
            }
        }
    }

    fn conv(
        &mut self,
        i: NodeIndex,
        x: &str,
        what: &str,
        carried: &mut HashMap<NodeIndex, ArrayD<f32>>,
    ) -> Option<String> {
        let g = self.g;
        let node = g.node(i);
        let Op::Conv2d {
            stride,
            padding,
            groups,
            dilation,
            bias,
            ..
        } = node.op
        else {
            return None;
        };
        let want = node.op.params()[0].shape.clone();
        let cands = self.readers(x, &["Conv"]);
        let shape_of = |m: &Self, k: usize| -> Option<Vec<usize>> {
            let w = m.nodes[k].input.get(1)?;
            let t = m.consts.get(w.as_str())?;
            t.dims.iter().map(|&d| usize::try_from(d).ok()).collect()
        };
        let fits = |m: &Self, k: usize| {
            let n = &m.nodes[k];
            let s = Self::ints_attr(n, "strides");
            let d = Self::ints_attr(n, "dilations");
            shape_of(m, k).as_deref() == Some(want.as_slice())
                && (s.is_empty() || s.iter().all(|&v| v == stride as i64))
                && (d.is_empty() || d.iter().all(|&v| v == dilation as i64))
                && Self::int_attr(n, "group", 1) == groups as i64
        };
        let Some(k) = cands.iter().copied().find(|&k| fits(self, k)) else {
            let found: Vec<String> = cands
                .iter()
                .map(|&k| format!("`{}` {:?}", label(&self.nodes[k]), shape_of(self, k)))
                .collect();
            self.errors.push(if found.is_empty() {
                format!("missing: {what} (weight {want:?}) reads `{x}`, but no Conv of the model does")
            } else {
                format!(
                    "shape: {what} wants weight {want:?}, stride {stride}, dilation {dilation}, groups {groups}; the Convs reading `{x}` are {}",
                    found.join(", ")
                )
            });
            return None;
        };
        self.used.insert(k);
        let n = &self.nodes[k];
        let pads = Self::ints_attr(n, "pads");
        if pads.iter().any(|&p| p != padding as i64) && !pads.is_empty() {
            self.errors.push(format!(
                "structure: {what} pads {padding}, the model's `{}` pads {pads:?}",
                label(n)
            ));
        }
        let name = node.name.clone();
        let w = n.input.get(1).cloned().unwrap_or_default();
        let mut weight = self.tensor(&w, what)?;
        let mut onnx_bias = match n.input.get(2).filter(|b| !b.is_empty()) {
            Some(b) => Some(self.tensor(&b.clone(), what)?),
            None => None,
        };
        let mut out = n.output.first().cloned()?;
        let spec_bn_follows = g
            .users(i)
            .iter()
            .any(|&c| matches!(g.node(c).op, Op::BatchNorm { .. }));
        if !spec_bn_follows {
            // The model may keep a BN the spec folded: fold it here.
            if let Some(&b) = self.readers(&out.clone(), &["BatchNormalization"]).first() {
                let bn = &self.nodes[b];
                let eps = bn
                    .attribute
                    .iter()
                    .find(|a| a.name == "epsilon")
                    .and_then(|a| a.f)
                    .unwrap_or(1e-5) as f64;
                let t: Vec<Option<ArrayD<f32>>> = (1..5)
                    .map(|j| {
                        let name = bn.input.get(j).cloned().unwrap_or_default();
                        self.tensor(&name, what)
                    })
                    .collect();
                let o = weight.shape().first().copied().unwrap_or(0);
                let fits = |a: &ArrayD<f32>| a.len() == o;
                if !(t.iter().flatten().all(fits) && onnx_bias.as_ref().is_none_or(fits)) {
                    self.errors.push(format!(
                        "shape: the model's BatchNormalization `{}` after {what} does not have {o} values per tensor",
                        label(bn)
                    ));
                    return None;
                }
                if let [Some(gamma), Some(beta), Some(mean), Some(var)] = &t[..] {
                    let per = weight.len() / o.max(1);
                    let mut b0 = onnx_bias
                        .take()
                        .unwrap_or_else(|| ArrayD::zeros(IxDyn(&[o])));
                    let ws = weight.as_slice_mut()?;
                    for c in 0..o {
                        let s = gamma[c] as f64 / (var[c] as f64 + eps).sqrt();
                        for v in &mut ws[c * per..(c + 1) * per] {
                            *v = (*v as f64 * s) as f32;
                        }
                        b0[c] = ((b0[c] as f64 - mean[c] as f64) * s + beta[c] as f64) as f32;
                    }
                    onnx_bias = Some(b0);
                }
                self.used.insert(b);
                out = self.nodes[b].output.first().cloned()?;
            }
        }
        self.put(format!("{name}.weight"), weight);
        match (bias, onnx_bias) {
            (true, Some(b)) => self.put(format!("{name}.bias"), b),
            (true, None) => {
                let o = want[0];
                self.put(format!("{name}.bias"), ArrayD::zeros(IxDyn(&[o])));
            }
            (false, Some(b)) if spec_bn_follows => {
                carried.insert(i, b);
            }
            (false, Some(_)) => self.errors.push(format!(
                "structure: the model's Conv `{}` has a bias, {what} has none (and no BN to carry it): write `bias = true`",
                label(&self.nodes[k])
            )),
            (false, None) => {}
        }
        Some(out)
    }

    fn batch_norm(&mut self, name: &str, k: usize, eps: f64, what: &str) {
        let n = &self.nodes[k];
        let model_eps = n
            .attribute
            .iter()
            .find(|a| a.name == "epsilon")
            .and_then(|a| a.f)
            .map_or(1e-5, f64::from);
        let keys = ["weight", "bias", "running_mean", "running_var"];
        for (j, key) in keys.iter().enumerate() {
            let t = n.input.get(j + 1).cloned().unwrap_or_default();
            if let Some(mut v) = self.tensor(&t, what) {
                if *key == "running_var" && (model_eps - eps).abs() > 0.0 {
                    // The spec's BN uses its own eps: move the difference into the variance.
                    v.mapv_inplace(|x| (x as f64 + model_eps - eps) as f32);
                }
                self.put(format!("{name}.{key}"), v);
            }
        }
    }

    fn add(&mut self, x: &At, y: Option<&At>, what: &str) -> Option<String> {
        let y = y?;
        let cands = self.readers_any(&["Add", "Sum"]);
        let ok = |m: &Self, k: usize| {
            let ins: Vec<&str> = m.nodes[k]
                .input
                .iter()
                .filter(|i| !m.consts.contains_key(i.as_str()))
                .map(String::as_str)
                .collect();
            if ins.len() != 2 {
                return false;
            }
            let hits = |a: &At, t: &'a str| match a {
                At::Tensor(s) => m.canonical(t) == s,
                At::Derived(s) => m.derives(t, s, 8),
            };
            (hits(x, ins[0]) && hits(y, ins[1])) || (hits(x, ins[1]) && hits(y, ins[0]))
        };
        match cands.into_iter().find(|&k| ok(self, k)) {
            Some(k) => {
                self.used.insert(k);
                self.nodes[k].output.first().cloned()
            }
            None => {
                self.errors.push(format!(
                    "structure: no Add of the model joins the inputs of {what}"
                ));
                None
            }
        }
    }

    fn readers_any(&self, ops: &[&str]) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|k| !self.used.contains(k) && ops.contains(&self.nodes[*k].op_type.as_str()))
            .collect()
    }

    fn linear(&mut self, name: &str, x: &str, what: &str) -> Option<String> {
        let g = self.g;
        let node = g.find(name).map(|i| g.node(i))?;
        let params = node.op.params();
        let want = params[0].shape.clone(); // [out, in]
        let has_bias = params.len() > 1;
        let (weight, bias, out) = if let Some(k) = self.readers(x, &["Gemm"]).first().copied() {
            self.used.insert(k);
            let n = &self.nodes[k];
            let trans_b = Self::int_attr(n, "transB", 0) == 1;
            let alpha = n
                .attribute
                .iter()
                .find(|a| a.name == "alpha")
                .and_then(|a| a.f);
            let beta = n
                .attribute
                .iter()
                .find(|a| a.name == "beta")
                .and_then(|a| a.f);
            if alpha.unwrap_or(1.0) != 1.0 || beta.unwrap_or(1.0) != 1.0 {
                self.errors.push(format!(
                    "structure: the model's Gemm `{}` scales by alpha/beta, which {what} has no room for",
                    label(n)
                ));
            }
            let w = n.input.get(1).cloned().unwrap_or_default();
            let b = n.input.get(2).cloned().filter(|b| !b.is_empty());
            let mut w = self.tensor(&w, what)?;
            if !trans_b {
                w = w.t().as_standard_layout().into_owned();
            }
            let b = match b {
                Some(b) => Some(self.tensor(&b, what)?),
                None => None,
            };
            (w, b, n.output.first().cloned()?)
        } else if let Some(k) = self.readers(x, &["MatMul"]).first().copied() {
            self.used.insert(k);
            let n = &self.nodes[k];
            let w = n
                .input
                .iter()
                .find(|i| self.consts.contains_key(i.as_str()))
                .cloned();
            let w = self.tensor(&w.unwrap_or_default(), what)?;
            let w = w.t().as_standard_layout().into_owned();
            let mut out = n.output.first().cloned()?;
            let mut bias = None;
            let adds: Vec<usize> = self
                .consumers
                .get(out.as_str())
                .into_iter()
                .flatten()
                .copied()
                .filter(|&a| self.nodes[a].op_type == "Add")
                .collect();
            if let Some(&a) = adds.first() {
                let an = &self.nodes[a];
                if let Some(b) = an
                    .input
                    .iter()
                    .find(|i| self.consts.contains_key(i.as_str()))
                {
                    bias = Some(self.tensor(&b.clone(), what)?);
                    self.used.insert(a);
                    out = an.output.first().cloned()?;
                }
            }
            (w, bias, out)
        } else {
            self.errors.push(format!(
                "missing: {what} reads `{x}`, but no Gemm or MatMul of the model does"
            ));
            return None;
        };
        if weight.shape() != want.as_slice() {
            self.errors.push(format!(
                "shape: {what} wants weight {want:?}, the model's is {:?} (as [out, in])",
                weight.shape()
            ));
            return None;
        }
        self.put(format!("{name}.weight"), weight);
        if has_bias {
            let b = bias
                .map(|b| b.into_shape_with_order(IxDyn(&[want[0]])))
                .unwrap_or_else(|| Ok(ArrayD::zeros(IxDyn(&[want[0]]))));
            match b {
                Ok(b) => self.put(format!("{name}.bias"), b),
                Err(_) => self.errors.push(format!(
                    "shape: {what}'s bias in `{}` is not {} values",
                    self.file, want[0]
                )),
            }
        }
        Some(out)
    }
}
