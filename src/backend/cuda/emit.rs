//! A program as CUDA C++: one kernel per fused op (kernels with the same
//! shapes shared, named after the first value that runs them), the launch
//! sequence, the host launcher with its C entry point, and the weight
//! blob's layout. The same text is compiled by NVRTC (`--backend cuda`), by
//! nvcc into a library (`compile --emit cuda`), and by a host compiler with
//! `emu/cuda_emu.h` (the checks without a GPU).

use std::collections::HashMap;
use std::fmt::Write as _;

use super::Precision;
use crate::backend::program::{Buffer, Kind, Program, Residual, Step, WeightId};
use crate::ir::{GraphError, Stage};

const STAGE: Stage = Stage::Backend("cuda");

/// The kernel templates (`rc::` namespace), shipped beside every network.
pub const KERNELS_HEADER: &str = include_str!("resnetc_cuda.cuh");
pub const HEADER_NAME: &str = "resnetc_cuda.cuh";

/// What every network's `.cu` starts with after its comment: the header and
/// the kernels' parameter list.
pub const PREAMBLE: &str = "#include \"resnetc_cuda.cuh\"\n\n#define RC_ARGS const char* __restrict__ w, char* __restrict__ arena, const float* __restrict__ x, float* __restrict__ y, rc::Off o\n";

/// How a conv is computed on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// CUDA cores, f32 arithmetic (f32 KRSC weights).
    Simt,
    /// Tensor cores, tf32 (weights pre-rounded to tf32, f32 KRSC).
    Tf32,
    /// Tensor cores, bf16 (bf16 KRSC weights).
    Bf16,
}

/// How a weight tensor is laid out in the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pack {
    /// As it is (f32): biases, scales, shifts, fc weights.
    F32,
    /// A conv weight `O x C/g x KH x KW` as KRSC (`O x KH x KW x C/g`), in f32.
    KrscF32,
    /// The same, rounded to tf32 (what the tensor cores read).
    KrscTf32,
    /// The same, in bf16.
    KrscBf16,
}

/// One tensor's place in the weight blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub weight: WeightId,
    pub pack: Pack,
    pub offset: u64,
    pub bytes: u64,
}

/// One kernel launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// The value it computes (`input` and `logits` for the conversions).
    pub value: String,
    /// Index into [`Emitted::kernels`].
    pub kernel: usize,
    pub grid: [u32; 3],
    pub block: u32,
    /// Byte offsets: input, residual (or second input), output in the
    /// arena; weight, bias, scale, shift in the blob; -1 where unused.
    pub off: [i64; 7],
    /// What the launch writes in the arena (for dumps): offset and bytes.
    pub writes: Option<(u64, u64)>,
}

/// A distinct kernel: its name, the values it runs for, what it computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub name: String,
    pub users: Vec<String>,
    /// A comment line saying what it computes.
    pub about: String,
    /// The geometry struct's constants (convs).
    pub geom: Option<String>,
    /// The template call (`GEOM` names the geometry struct).
    pub body: String,
    /// Threads a block.
    pub block: u32,
}

impl Kernel {
    /// Its definition under `name`: the geometry struct and the `__global__`.
    pub fn source_named(&self, name: &str) -> String {
        let mut s = String::new();
        let body = match &self.geom {
            Some(g) => {
                let _ = writeln!(s, "struct g_{name} {{\n    enum {{ {g} }};\n}};");
                self.body.replace("GEOM", &format!("g_{name}"))
            }
            None => self.body.clone(),
        };
        let _ = writeln!(
            s,
            "extern \"C\" __global__ void __launch_bounds__({}) {name}(RC_ARGS) {{\n    {body};\n}}",
            self.block
        );
        s
    }

    pub fn source(&self) -> String {
        self.source_named(&self.name)
    }

    /// What makes two kernels the same, whatever their names.
    pub fn key(&self) -> (Option<&str>, &str, u32) {
        (self.geom.as_deref(), &self.body, self.block)
    }
}

/// A program as CUDA.
#[derive(Clone, Debug)]
pub struct Emitted {
    /// The network's C identifier (the entry point is `NAME_forward`).
    pub name: String,
    pub precision: Precision,
    pub kernels: Vec<Kernel>,
    pub launches: Vec<Launch>,
    pub slots: Vec<Slot>,
    pub weight_bytes: u64,
    pub workspace_bytes: u64,
    pub input_shape: Vec<usize>,
    pub output_shape: Vec<usize>,
    /// The conv path each conv took, by value (for listings and tests).
    pub conv_paths: Vec<(String, ConvPath)>,
}

/// A C identifier for a value name: `layer1.0.conv1` -> `layer1_0_conv1`.
pub fn ident(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 'v');
    }
    s
}

const NONE: i64 = -1;

/// The widest count a kernel's `int` constants may take.
fn fits(s: &Step, what: &str, v: usize) -> Result<i64, GraphError> {
    i32::try_from(v).map(i64::from).map_err(|_| {
        s.error(
            STAGE,
            format!("{what} {v} does not fit the kernels' 32-bit indices"),
        )
    })
}

struct Builder<'a> {
    p: &'a Program,
    precision: Precision,
    /// The arena's element type.
    t: &'static str,
    elem: u64,
    kernels: Vec<Kernel>,
    by_source: HashMap<String, usize>,
    launches: Vec<Launch>,
    slots: Vec<Slot>,
    slot_of: HashMap<(WeightId, Pack), usize>,
    blob: u64,
    conv_paths: Vec<(String, ConvPath)>,
}

impl Builder<'_> {
    /// The arena byte offset of a buffer (its f32 index, in `T` elements).
    fn at(&self, b: &Buffer) -> i64 {
        (b.index() as u64 * self.elem) as i64
    }

    fn weight(&mut self, id: WeightId, pack: Pack) -> i64 {
        if let Some(&i) = self.slot_of.get(&(id, pack)) {
            return self.slots[i].offset as i64;
        }
        let elems: u64 = self.p.weights[id.0]
            .shape
            .iter()
            .map(|&d| d as u64)
            .product();
        let bytes = elems * if pack == Pack::KrscBf16 { 2 } else { 4 };
        let offset = self.blob.div_ceil(256) * 256;
        self.blob = offset + bytes;
        self.slots.push(Slot {
            weight: id,
            pack,
            offset,
            bytes,
        });
        self.slot_of.insert((id, pack), self.slots.len() - 1);
        offset as i64
    }

    /// The kernel with this body (made if new, named after `value`).
    fn kernel(
        &mut self,
        value: &str,
        about: String,
        geom: Option<String>,
        body: String,
        block: u32,
    ) -> usize {
        let key = format!("{}{body}", geom.as_deref().unwrap_or(""));
        if let Some(&k) = self.by_source.get(&key) {
            self.kernels[k].users.push(value.to_string());
            return k;
        }
        let mut name = ident(value);
        while self.kernels.iter().any(|k| k.name == name) {
            name.push('_');
        }
        self.kernels.push(Kernel {
            name,
            users: vec![value.to_string()],
            about,
            geom,
            body,
            block,
        });
        self.by_source.insert(key, self.kernels.len() - 1);
        self.kernels.len() - 1
    }

    fn launch(
        &mut self,
        value: &str,
        kernel: usize,
        grid: [u32; 3],
        off: [i64; 7],
        writes: Option<&Buffer>,
    ) {
        let block = self.kernels[kernel].block;
        let writes = writes.map(|b| (self.at(b) as u64, b.len() as u64 * self.elem));
        self.launches.push(Launch {
            value: value.to_string(),
            kernel,
            grid,
            block,
            off,
            writes,
        });
    }

    /// A one-thread-an-element kernel over `len` elements.
    fn elementwise(
        &mut self,
        s: &Step,
        len: usize,
        about: String,
        body: String,
        off: [i64; 7],
        writes: Option<&Buffer>,
    ) -> Result<(), GraphError> {
        let blocks = fits(s, "a grid of", len.div_ceil(256))?;
        let k = self.kernel(&s.at.value, about, None, body, 256);
        self.launch(&s.at.value, k, [blocks as u32, 1, 1], off, writes);
        Ok(())
    }

    fn conv(&mut self, s: &Step) -> Result<(), GraphError> {
        let Kind::Conv {
            geom: g,
            weight,
            epilogue,
        } = &s.kind
        else {
            return Ok(());
        };
        let chunk = match self.precision {
            Precision::Bf16 => 8,
            _ => 4,
        };
        let path = match self.precision {
            _ if g.groups != 1 || g.c % chunk != 0 => ConvPath::Simt,
            Precision::F32 => ConvPath::Simt,
            Precision::Tf32 => ConvPath::Tf32,
            Precision::Bf16 => ConvPath::Bf16,
        };
        self.conv_paths.push((s.at.value.clone(), path));
        let pack = match path {
            ConvPath::Simt => Pack::KrscF32,
            ConvPath::Tf32 => Pack::KrscTf32,
            ConvPath::Bf16 => Pack::KrscBf16,
        };
        let m = g.n * g.oh * g.ow;
        fits(s, "an output of", m * g.o)?;
        fits(s, "an input of", g.n * g.h * g.w * g.c)?;
        let (res, rc, rh, rw, rs, rb, res_off) = match &epilogue.residual {
            None => (0, 0, 0, 0, 1, 0, NONE),
            Some(Residual::Add(b)) => (1, 0, 0, 0, 1, 0, self.at(b)),
            Some(Residual::PadAdd {
                buffer,
                stride,
                pad_before,
                ..
            }) => (
                2,
                buffer.shape.channels(),
                buffer.shape.height(),
                buffer.shape.width(),
                *stride,
                *pad_before,
                self.at(buffer),
            ),
        };
        let geom = format!(
            "N = {}, C = {}, H = {}, W = {}, O = {}, KH = {}, KW = {}, S = {}, P = {}, D = {}, OH = {}, OW = {}, GROUPS = {}, BIAS = {}, RELU = {}, RES = {res}, RC = {rc}, RH = {rh}, RW = {rw}, RS = {rs}, RB = {rb}",
            g.n, g.c, g.h, g.w, g.o, g.kernel, g.kernel, g.stride, g.pad, g.dilation, g.oh, g.ow, g.groups,
            u8::from(epilogue.bias.is_some()),
            u8::from(epilogue.relu),
        );
        let (body, block, grid) = match path {
            ConvPath::Simt => (
                format!("rc::conv_simt<{}, GEOM>(w, arena, o)", self.t),
                256,
                [m.div_ceil(64), (g.o / g.groups).div_ceil(64), g.groups],
            ),
            ConvPath::Tf32 => (
                "rc::conv_tc<rc::TF32, GEOM>(w, arena, o)".into(),
                128,
                [m.div_ceil(64), g.o.div_ceil(64), 1],
            ),
            ConvPath::Bf16 => (
                "rc::conv_tc<rc::BF16, GEOM>(w, arena, o)".into(),
                128,
                [m.div_ceil(64), g.o.div_ceil(64), 1],
            ),
        };
        let about = format!(
            "conv {}x{} /{} pad {}{}, {} -> {} channels{}, {} -> {}{}{}{} ({})",
            g.kernel,
            g.kernel,
            g.stride,
            g.pad,
            if g.dilation > 1 {
                format!(" dilation {}", g.dilation)
            } else {
                String::new()
            },
            g.c,
            g.o,
            if g.groups > 1 {
                format!(" in {} groups", g.groups)
            } else {
                String::new()
            },
            dims(&s.inputs[0].shape.0),
            dims(&s.output.shape.0),
            if epilogue.bias.is_some() {
                " + bias"
            } else {
                ""
            },
            match epilogue.residual {
                None => "",
                Some(Residual::Add(_)) => " + residual",
                Some(Residual::PadAdd { .. }) => " + option A residual",
            },
            if epilogue.relu { ", relu" } else { "" },
            match path {
                ConvPath::Simt => "CUDA cores, f32",
                ConvPath::Tf32 => "tensor cores, tf32",
                ConvPath::Bf16 => "tensor cores, bf16",
            }
        );
        let wt = self.weight(*weight, pack);
        let bias = epilogue.bias.map_or(NONE, |b| self.weight(b, Pack::F32));
        let grid = [
            fits(s, "a grid of", grid[0])? as u32,
            fits(s, "a grid of", grid[1])? as u32,
            grid[2] as u32,
        ];
        let k = self.kernel(&s.at.value, about, Some(geom), body, block);
        let off = [
            self.at(&s.inputs[0]),
            res_off,
            self.at(&s.output),
            wt,
            bias,
            NONE,
            NONE,
        ];
        self.launch(&s.at.value, k, grid, off, Some(&s.output));
        Ok(())
    }

    /// The logits (or whatever the program ends with) to the caller's y.
    fn write_output(&mut self, s: &Step) -> Result<(), GraphError> {
        let b = &s.output;
        let (n, c, hw) = (
            b.shape.batch(),
            b.shape.channels(),
            b.shape.height() * b.shape.width(),
        );
        let len = b.len();
        fits(s, "an output of", len)?;
        let blocks = fits(s, "a grid of", len.div_ceil(256))?;
        let k = self.kernel(
            "logits",
            format!(
                "the output {} to the caller's y (f32, NCHW)",
                dims(&b.shape.0)
            ),
            None,
            format!("rc::to_output<{}, {n}, {c}, {hw}>(arena, y, o)", self.t),
            256,
        );
        let off = [self.at(b), NONE, NONE, NONE, NONE, NONE, NONE];
        self.launch("logits", k, [blocks as u32, 1, 1], off, None);
        Ok(())
    }
}

fn dims(d: &[usize]) -> String {
    d.iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// Lower `p` to CUDA in `precision`.
pub fn emit(p: &Program, precision: Precision) -> Result<Emitted, GraphError> {
    let (t, elem) = match precision {
        Precision::Bf16 => ("rc::bf16", 2),
        _ => ("float", 4),
    };
    let mut b = Builder {
        p,
        precision,
        t,
        elem,
        kernels: Vec::new(),
        by_source: HashMap::new(),
        launches: Vec::new(),
        slots: Vec::new(),
        slot_of: HashMap::new(),
        blob: 0,
        conv_paths: Vec::new(),
    };
    // The caller's NCHW f32 input into the arena, NHWC.
    let x = &p.input;
    let (n, c, hw) = (
        x.shape.batch(),
        x.shape.channels(),
        x.shape.height() * x.shape.width(),
    );
    let first = p
        .steps
        .first()
        .ok_or_else(|| GraphError::new(STAGE, "an empty network"))?;
    fits(first, "an input of", x.len())?;
    let k = b.kernel(
        "input",
        format!(
            "the caller's input {} (f32, NCHW) into the arena, NHWC",
            dims(&x.shape.0)
        ),
        None,
        format!("rc::to_nhwc<{t}, {n}, {c}, {hw}>(x, arena, o)"),
        256,
    );
    let off = [NONE, NONE, b.at(x), NONE, NONE, NONE, NONE];
    b.launch(
        "input",
        k,
        [x.len().div_ceil(256) as u32, 1, 1],
        off,
        Some(x),
    );
    let last = p.steps.len().saturating_sub(1);
    for (i, s) in p.steps.iter().enumerate() {
        let is_last = i == last;
        let out = b.at(&s.output);
        let inp = s.inputs.first().map_or(NONE, |x| b.at(x));
        let len = s.output.len();
        fits(s, "an output of", len)?;
        match &s.kind {
            Kind::Conv { .. } => b.conv(s)?,
            Kind::Linear {
                n,
                in_features,
                out_features,
                weight,
                bias,
            } => {
                let wt = b.weight(*weight, Pack::F32);
                let bo = bias.map_or(NONE, |w| b.weight(w, Pack::F32));
                // The logits go straight to the caller's y, in f32.
                let body = format!(
                    "rc::linear<{t}, {n}, {in_features}, {out_features}, {}, {}>(w, arena, y, o)",
                    bias.is_some(),
                    is_last
                );
                let about = format!(
                    "fc {in_features} -> {out_features}{}",
                    if is_last { ", to y" } else { "" }
                );
                let writes = (!is_last).then_some(&s.output);
                b.elementwise(
                    s,
                    n * out_features,
                    about,
                    body,
                    [inp, NONE, out, wt, bo, NONE, NONE],
                    writes,
                )?;
            }
            Kind::ScaleShift {
                channels,
                scale,
                shift,
                relu,
                ..
            } => {
                let (sc, sh) = (b.weight(*scale, Pack::F32), b.weight(*shift, Pack::F32));
                let body = format!("rc::scale_shift<{t}, {len}, {channels}, {relu}>(w, arena, o)");
                b.elementwise(
                    s,
                    len,
                    format!(
                        "scale-shift of {channels} channels{}",
                        if *relu { ", relu" } else { "" }
                    ),
                    body,
                    [inp, NONE, out, NONE, NONE, sc, sh],
                    Some(&s.output),
                )?;
            }
            Kind::Relu => {
                b.elementwise(
                    s,
                    len,
                    "relu".into(),
                    format!("rc::relu_map<{t}, {len}>(arena, o)"),
                    [inp, NONE, out, NONE, NONE, NONE, NONE],
                    Some(&s.output),
                )?;
            }
            Kind::Add => {
                let r = s.inputs.get(1).map_or(NONE, |x| b.at(x));
                b.elementwise(
                    s,
                    len,
                    "add".into(),
                    format!("rc::add<{t}, {len}>(arena, o)"),
                    [inp, r, out, NONE, NONE, NONE, NONE],
                    Some(&s.output),
                )?;
            }
            Kind::Flatten => {
                let x = &s.inputs[0];
                let (n, c, hw) = (
                    x.shape.batch(),
                    x.shape.channels(),
                    x.shape.height() * x.shape.width(),
                );
                if inp != out || hw > 1 {
                    b.elementwise(
                        s,
                        len,
                        "flatten to PyTorch's order".into(),
                        format!("rc::flatten<{t}, {n}, {c}, {hw}>(arena, o)"),
                        [inp, NONE, out, NONE, NONE, NONE, NONE],
                        Some(&s.output),
                    )?;
                }
            }
            Kind::MaxPool(g) | Kind::AvgPool(g) => {
                let max = matches!(s.kind, Kind::MaxPool(_));
                let body = format!(
                    "rc::pool<{t}, {max}, {}, {}, {}, {}, {}, {}, {}, {}, {}>(arena, o)",
                    g.n, g.c, g.h, g.w, g.kernel, g.stride, g.pad, g.oh, g.ow
                );
                let about = format!(
                    "{} pool {}x{} /{} pad {}",
                    if max { "max" } else { "average" },
                    g.kernel,
                    g.kernel,
                    g.stride,
                    g.pad
                );
                b.elementwise(
                    s,
                    len,
                    about,
                    body,
                    [inp, NONE, out, NONE, NONE, NONE, NONE],
                    Some(&s.output),
                )?;
            }
            Kind::GlobalAvgPool { n, c, hw } => {
                b.elementwise(
                    s,
                    n * c,
                    "global average pool".into(),
                    format!("rc::global_avg<{t}, {n}, {c}, {hw}>(arena, o)"),
                    [inp, NONE, out, NONE, NONE, NONE, NONE],
                    Some(&s.output),
                )?;
            }
            Kind::ShortcutPad {
                stride, pad_before, ..
            } => {
                let x = &s.inputs[0];
                let o = &s.output.shape;
                let body = format!(
                    "rc::shortcut_pad<{t}, {}, {}, {}, {}, {stride}, {pad_before}, {}, {}, {}>(arena, o)",
                    x.shape.batch(), x.shape.channels(), x.shape.height(), x.shape.width(), o.channels(), o.height(), o.width()
                );
                b.elementwise(
                    s,
                    len,
                    "option A shortcut".into(),
                    body,
                    [inp, NONE, out, NONE, NONE, NONE, NONE],
                    Some(&s.output),
                )?;
            }
        }
        // The fc writes the logits to y itself; any other last step is copied there.
        if is_last && !matches!(s.kind, Kind::Linear { .. }) {
            b.write_output(s)?;
        }
    }
    Ok(Emitted {
        name: ident(&p.name),
        precision,
        kernels: b.kernels,
        launches: b.launches,
        slots: b.slots,
        weight_bytes: b.blob.div_ceil(256) * 256,
        workspace_bytes: (p.arena_bytes / 4 * elem).div_ceil(256) * 256,
        input_shape: p.input.shape.dims().to_vec(),
        output_shape: p.output.shape.dims().to_vec(),
        conv_paths: b.conv_paths,
    })
}

impl Emitted {
    /// `NAME.cu`: the network's kernels (device code only: what NVRTC and
    /// the emulation compile).
    pub fn kernels_source(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "// {name}.cu: the kernels of network `{name}`, emitted by resnetc ({}).\n// Activations NHWC in one arena ({}); weights KRSC in one blob. Shapes are\n// constants; arena and blob offsets come with each launch (rc::Off).\n// {} kernels for {} launches; see {name}_host.cu for the order.\n{PREAMBLE}",
            self.precision.name(),
            if self.precision == Precision::Bf16 { "bf16" } else { "f32" },
            self.kernels.len(),
            self.launches.len(),
            name = self.name,
        );
        for k in &self.kernels {
            let _ = writeln!(s, "// {}", k.about);
            if k.users.len() > 1 {
                let _ = writeln!(s, "// runs {}", k.users.join(", "));
            }
            let _ = writeln!(s, "{}", k.source());
        }
        s
    }

    /// `NAME.h`: the C entry point.
    pub fn header(&self) -> String {
        let n = &self.name;
        format!(
            "/* {n}.h: network `{n}` as a CUDA library, emitted by resnetc ({precision}).
 *
 * Build:  nvcc -shared -Xcompiler -fPIC -arch=sm_90 -o lib{n}.so {n}_host.cu
 *
 * {n}_forward runs the network on `x` (device memory, f32, NCHW {input})
 * and writes the logits to `y` (device memory, f32, {output}), on `stream`.
 * `weights` is the file {n}.weights copied to device memory as it is
 * ({n}_weight_bytes() bytes); `workspace` is device memory of
 * {n}_workspace_bytes() bytes, for this call alone while it runs. Nothing
 * is allocated. Returns 0, or the cudaError_t of the launches.
 */
#pragma once
#include <stddef.h>
#ifndef RESNETC_EMU
#include <cuda_runtime_api.h>
#endif
#ifdef __cplusplus
extern \"C\" {{
#endif
size_t {n}_weight_bytes(void);
size_t {n}_workspace_bytes(void);
int {n}_forward(const void *weights, const float *x, float *y, void *workspace, cudaStream_t stream);
#ifdef __cplusplus
}}
#endif
",
            precision = self.precision.name(),
            input = dims(&self.input_shape),
            output = dims(&self.output_shape),
        )
    }

    /// `NAME_host.cu`: the launch sequence behind the C entry point.
    pub fn host_source(&self) -> String {
        let n = &self.name;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "// {n}_host.cu: the host launcher of network `{n}`, emitted by resnetc.\n// nvcc -shared -Xcompiler -fPIC -arch=sm_90 -o lib{n}.so {n}_host.cu\n#include \"{n}.h\"\n#include \"{n}.cu\"\n\n#ifndef RC_LAUNCH\n#define RC_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)\n#endif\n#ifndef RC_AFTER\n#define RC_AFTER(i)\n#endif\n"
        );
        let _ = writeln!(
            s,
            "extern \"C\" size_t {n}_weight_bytes(void) {{ return {}; }}",
            self.weight_bytes
        );
        let _ = writeln!(
            s,
            "extern \"C\" size_t {n}_workspace_bytes(void) {{ return {}; }}\n",
            self.workspace_bytes
        );
        let _ = writeln!(
            s,
            "extern \"C\" int {n}_forward(const void* weights, const float* x, float* y, void* workspace, cudaStream_t stream) {{\n    const char* w = (const char*)weights;\n    char* a = (char*)workspace;"
        );
        for (i, l) in self.launches.iter().enumerate() {
            let k = &self.kernels[l.kernel];
            let off: Vec<String> = l.off.iter().map(|v| v.to_string()).collect();
            let _ = writeln!(
                s,
                "    // {}\n    RC_LAUNCH({}, dim3({}, {}, {}), dim3({}), stream, w, a, x, y, rc::Off{{{}}});\n    RC_AFTER({i});",
                l.value,
                k.name,
                l.grid[0],
                l.grid[1],
                l.grid[2],
                l.block,
                off.join(", ")
            );
        }
        let _ = writeln!(s, "    return (int)cudaGetLastError();\n}}\n");
        // What the emulation's driver needs to know of the network.
        let _ = writeln!(s, "#ifdef RESNETC_EMU");
        let _ = writeln!(s, "#define RC_FORWARD {n}_forward");
        let _ = writeln!(s, "#define RC_WEIGHT_BYTES {}", self.weight_bytes);
        let _ = writeln!(s, "#define RC_WORKSPACE_BYTES {}", self.workspace_bytes);
        let _ = writeln!(
            s,
            "#define RC_INPUT_ELEMS {}",
            self.input_shape.iter().product::<usize>()
        );
        let _ = writeln!(
            s,
            "#define RC_OUTPUT_ELEMS {}",
            self.output_shape.iter().product::<usize>()
        );
        let _ = writeln!(s, "#define RC_LAUNCHES {}", self.launches.len());
        let writes: Vec<String> = self
            .launches
            .iter()
            .map(|l| match l.writes {
                Some((o, b)) => format!("{{{o}, {b}}}"),
                None => "{0, 0}".into(),
            })
            .collect();
        let _ = writeln!(
            s,
            "static const long long RC_WRITES[][2] = {{{}}};",
            writes.join(", ")
        );
        let _ = writeln!(s, "#endif");
        s
    }

    /// The weight blob, from the tensors in program order.
    pub fn weights(&self, values: &[&ndarray::ArrayD<f32>]) -> Vec<u8> {
        let mut blob = vec![0u8; self.weight_bytes as usize];
        for slot in &self.slots {
            let t = values[slot.weight.0];
            let data: Vec<f32> = match slot.pack {
                Pack::F32 => t.iter().copied().collect(),
                _ => krsc(t),
            };
            let dst = &mut blob[slot.offset as usize..(slot.offset + slot.bytes) as usize];
            match slot.pack {
                Pack::KrscBf16 => {
                    for (d, v) in dst.chunks_exact_mut(2).zip(data) {
                        d.copy_from_slice(&half::bf16::from_f32(v).to_bits().to_le_bytes());
                    }
                }
                Pack::KrscTf32 => {
                    for (d, v) in dst.chunks_exact_mut(4).zip(data) {
                        d.copy_from_slice(&to_tf32(v).to_le_bytes());
                    }
                }
                _ => {
                    for (d, v) in dst.chunks_exact_mut(4).zip(data) {
                        d.copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        blob
    }
}

/// `O x C x KH x KW` to `O x KH x KW x C`.
fn krsc(t: &ndarray::ArrayD<f32>) -> Vec<f32> {
    match t.shape() {
        &[o, c, kh, kw] => {
            let mut v = Vec::with_capacity(t.len());
            for oo in 0..o {
                for y in 0..kh {
                    for x in 0..kw {
                        for cc in 0..c {
                            v.push(t[[oo, cc, y, x]]);
                        }
                    }
                }
            }
            v
        }
        _ => t.iter().copied().collect(),
    }
}

/// f32 to tf32 as `cvt.rna.tf32.f32` does it: nearest, ties away; inf and NaN kept.
pub fn to_tf32(v: f32) -> f32 {
    let u = v.to_bits();
    if u & 0x7f80_0000 == 0x7f80_0000 {
        return v;
    }
    f32::from_bits(u.wrapping_add(0x1000) & 0xffff_e000)
}
