//! Running emitted CUDA on a GPU: NVRTC compiles the network's kernels to a
//! cubin for the device's own architecture, the driver API loads them, the
//! packed weights go to the device once, and the whole launch sequence is
//! captured in one CUDA Graph over one device arena. cudarc loads libcuda
//! and libnvrtc at run time (and panics when they are absent), so
//! [`available`] looks for them first and says what is missing.

use std::ffi::{c_char, c_int, CString};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cudarc::driver::sys as cu;
use cudarc::driver::{CudaContext, CudaFunction, CudaGraph, CudaModule, CudaSlice, CudaStream};
use cudarc::driver::{DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::sys as nvrtc;
use ndarray::ArrayD;

use super::emit::{self, Emitted};
use crate::backend::{Executable, Info, StepInfo, Strategy};
use crate::ir::{GraphError, Stage};

const STAGE: Stage = Stage::Backend("cuda");
const RUN: Stage = Stage::Run("cuda");

fn err(stage: Stage, what: impl std::fmt::Display) -> GraphError {
    GraphError::new(stage, what.to_string())
}

/// Whether this machine can run `--backend cuda`, and if not, what is missing.
pub fn available() -> Result<(), GraphError> {
    // SAFETY: only tries to open the libraries by name.
    if !unsafe { cu::is_culib_present() } {
        return Err(err(
            STAGE,
            "no CUDA driver here: libcuda.so was not found",
        )
        .help("--backend cuda needs an NVIDIA GPU with its driver; `resnetc compile --emit cuda` writes the sources without one"));
    }
    // SAFETY: as above.
    if !unsafe { nvrtc::is_culib_present() } {
        return Err(err(STAGE, "no NVRTC here: libnvrtc.so was not found").help(
            "install the CUDA toolkit's NVRTC (e.g. pip install nvidia-cuda-nvrtc) and put its lib folder on LD_LIBRARY_PATH",
        ));
    }
    match CudaContext::device_count() {
        Ok(n) if n > 0 => Ok(()),
        Ok(_) => Err(err(STAGE, "the CUDA driver sees no GPU")),
        Err(e) => Err(err(STAGE, format!("the CUDA driver: {e}"))),
    }
}

/// The launch offsets, as the kernels take them (`rc::Off`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Off([i64; 7]);

// SAFETY: plain integers, laid out as the C struct `rc::Off`.
unsafe impl DeviceRepr for Off {}

/// NVRTC: the kernels (and the templates, as a named header) to a cubin.
fn cubin(e: &Emitted, arch: &str) -> Result<Vec<u8>, GraphError> {
    let c = |s: &str| CString::new(s).map_err(|_| err(STAGE, "a NUL byte in the source"));
    let (src, name) = (c(&e.kernels_source())?, c(&format!("{}.cu", e.name))?);
    let (header, header_name) = (c(emit::KERNELS_HEADER)?, c(emit::HEADER_NAME)?);
    let headers = [header.as_ptr()];
    let header_names = [header_name.as_ptr()];
    let mut prog: nvrtc::nvrtcProgram = std::ptr::null_mut();
    let ok = |r: nvrtc::nvrtcResult, what: &str| {
        if r == nvrtc::nvrtcResult::NVRTC_SUCCESS {
            Ok(())
        } else {
            Err(err(STAGE, format!("NVRTC {what}: {r:?}")))
        }
    };
    // SAFETY: the strings live until the program is destroyed below.
    let created = unsafe {
        nvrtc::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            1,
            headers.as_ptr(),
            header_names.as_ptr(),
        )
    };
    ok(created, "create")?;
    let options: Vec<CString> = [format!("--gpu-architecture={arch}"), "--std=c++17".into()]
        .iter()
        .map(|o| CString::new(o.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|_| err(STAGE, "an option with a NUL byte"))?;
    let ptrs: Vec<*const c_char> = options.iter().map(|o| o.as_ptr()).collect();
    // SAFETY: prog was created above; the options outlive the call.
    let compiled = unsafe { nvrtc::nvrtcCompileProgram(prog, ptrs.len() as c_int, ptrs.as_ptr()) };
    let result = if compiled != nvrtc::nvrtcResult::NVRTC_SUCCESS {
        let mut size = 0usize;
        let mut log = Vec::new();
        // SAFETY: the log is read into a buffer of the size NVRTC gives.
        unsafe {
            if nvrtc::nvrtcGetProgramLogSize(prog, &mut size) == nvrtc::nvrtcResult::NVRTC_SUCCESS {
                log = vec![0u8; size.max(1)];
                nvrtc::nvrtcGetProgramLog(prog, log.as_mut_ptr() as *mut c_char);
            }
        }
        let log = String::from_utf8_lossy(&log)
            .trim_end_matches('\0')
            .to_string();
        Err(err(
            STAGE,
            format!("NVRTC could not compile the kernels: {log}"),
        ))
    } else {
        let mut size = 0usize;
        // SAFETY: as above, for the cubin.
        unsafe {
            ok(nvrtc::nvrtcGetCUBINSize(prog, &mut size), "cubin size")?;
            let mut bin = vec![0u8; size];
            ok(
                nvrtc::nvrtcGetCUBIN(prog, bin.as_mut_ptr() as *mut c_char),
                "cubin",
            )?;
            Ok(bin)
        }
    };
    // SAFETY: created above, destroyed once.
    unsafe { nvrtc::nvrtcDestroyProgram(&mut prog) };
    result
}

/// A network on the GPU: its module, weights, arena and captured graph.
pub struct Compiled {
    graph: CudaGraph,
    stream: Arc<CudaStream>,
    _module: Arc<CudaModule>,
    _functions: Vec<CudaFunction>,
    _weights: CudaSlice<u8>,
    _arena: CudaSlice<u8>,
    x: CudaSlice<f32>,
    y: CudaSlice<f32>,
    input: Vec<usize>,
    output: Vec<usize>,
    steps: Vec<StepInfo>,
    about: String,
    arena_bytes: usize,
    compile_time: Duration,
}

impl Compiled {
    pub fn new(e: &Emitted, blob: &[u8], _profile: bool) -> Result<Compiled, GraphError> {
        let start = Instant::now();
        let d = |what: &str| {
            let what = what.to_string();
            move |x: cudarc::driver::DriverError| err(STAGE, format!("{what}: {x}"))
        };
        let ctx = CudaContext::new(0).map_err(d("opening GPU 0"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(d("its compute capability"))?;
        let arch = format!("sm_{major}{minor}");
        let name = ctx.name().unwrap_or_else(|_| "a GPU".into());
        let bin = cubin(e, &arch)?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_binary(bin))
            .map_err(d("loading the kernels"))?;
        let functions: Vec<CudaFunction> = e
            .kernels
            .iter()
            .map(|k| {
                module
                    .load_function(&k.name)
                    .map_err(d(&format!("kernel {}", k.name)))
            })
            .collect::<Result<_, _>>()?;
        let stream = ctx.new_stream().map_err(d("a stream"))?;
        let weights = stream
            .clone_htod(blob)
            .map_err(d("uploading the weights"))?;
        let arena = stream
            .alloc_zeros::<u8>(e.workspace_bytes as usize)
            .map_err(d("the arena"))?;
        let x = stream
            .alloc_zeros::<f32>(e.input_shape.iter().product())
            .map_err(d("the input"))?;
        let y = stream
            .alloc_zeros::<f32>(e.output_shape.iter().product())
            .map_err(d("the output"))?;
        stream.synchronize().map_err(d("the uploads"))?;
        let ptrs = {
            let (w, _g1) = weights.device_ptr(&stream);
            let (a, _g2) = arena.device_ptr(&stream);
            let (xp, _g3) = x.device_ptr(&stream);
            let (yp, _g4) = y.device_ptr(&stream);
            [w, a, xp, yp]
        };
        // The whole sequence, once, into a graph.
        stream
            .begin_capture(cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(d("capturing the launches"))?;
        for l in &e.launches {
            let cfg = LaunchConfig {
                grid_dim: (l.grid[0], l.grid[1], l.grid[2]),
                block_dim: (l.block, 1, 1),
                shared_mem_bytes: 0,
            };
            let off = Off(l.off);
            let mut b = stream.launch_builder(&functions[l.kernel]);
            b.arg(&ptrs[0])
                .arg(&ptrs[1])
                .arg(&ptrs[2])
                .arg(&ptrs[3])
                .arg(&off);
            // SAFETY: the kernel's parameters are (w, arena, x, y, rc::Off), as
            // passed; every offset lies in the buffers it names (emit.rs).
            unsafe { b.launch(cfg) }.map_err(d(&format!("launching {}", l.value)))?;
        }
        let graph = stream
            .end_capture(cu::CUgraphInstantiate_flags(0))
            .map_err(d("instantiating the graph"))?
            .ok_or_else(|| err(STAGE, "an empty graph"))?;
        let steps = e
            .launches
            .iter()
            .map(|l| StepInfo {
                name: l.value.clone(),
                op: "kernel",
                strategy: if e.kernels[l.kernel].geom.is_some() {
                    Strategy::ImplicitGemm
                } else {
                    Strategy::Kernel
                },
                flops: 0,
            })
            .collect();
        Ok(Compiled {
            graph,
            stream,
            _module: module,
            _functions: functions,
            _weights: weights,
            _arena: arena,
            x,
            y,
            input: e.input_shape.clone(),
            output: e.output_shape.clone(),
            steps,
            about: format!("{name} ({arch}), {}", e.precision.name()),
            arena_bytes: e.workspace_bytes as usize,
            compile_time: start.elapsed(),
        })
    }
}

impl Executable for Compiled {
    fn run(&mut self, x: &ArrayD<f32>) -> Result<ArrayD<f32>, GraphError> {
        if x.shape() != self.input.as_slice() {
            return Err(err(
                RUN,
                format!(
                    "input: expected shape {:?}, found {:?}",
                    self.input,
                    x.shape()
                ),
            ));
        }
        let x = x.as_standard_layout();
        let xs = x
            .as_slice()
            .ok_or_else(|| err(RUN, "input is not contiguous"))?;
        let d = |what: &'static str| {
            move |e: cudarc::driver::DriverError| err(RUN, format!("{what}: {e}"))
        };
        self.stream
            .memcpy_htod(xs, &mut self.x)
            .map_err(d("copying the input"))?;
        self.graph.launch().map_err(d("running the graph"))?;
        let y = self
            .stream
            .clone_dtoh(&self.y)
            .map_err(d("copying the logits"))?;
        ArrayD::from_shape_vec(self.output.clone(), y).map_err(|e| err(RUN, e))
    }

    fn steps(&self) -> &[StepInfo] {
        &self.steps
    }

    fn info(&self) -> Info {
        Info {
            threads: 1,
            kernels: self.about.clone(),
            arena_bytes: self.arena_bytes,
            compile_time: self.compile_time,
            phases: Vec::new(),
            store: None,
        }
    }
}
