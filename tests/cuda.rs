//! The emitted CUDA, checked without a GPU: its text (snapshots), that nvcc
//! compiles every spec and example for sm_90 in every precision without
//! spills (tensor-core instructions where they should be), that it builds
//! into a library, and that the same source run on the CPU under
//! emu/cuda_emu.h agrees with the interpreter: f32 within 1e-4, tf32 and
//! bf16 layer by layer against a reference fed the same rounded inputs and
//! end to end by top-1 and logit cosine. The toolchains come from `.ci/run`
//! (nvcc from PyPI, g++ and boost.context from Debian); each check says so
//! and returns when its tool is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ndarray::ArrayD;
use resnetc::backend::cuda::emit::{self, ConvPath, Emitted, Pack};
use resnetc::backend::cuda::Precision;
use resnetc::backend::program::{Kind, Residual};
use resnetc::backend::Program;
use resnetc::lower::Options as BuildOptions;

const PRECISIONS: [Precision; 3] = [Precision::F32, Precision::Tf32, Precision::Bf16];

/// A scratch folder, removed when the test passes (a run leaves 230 MB of
/// sources and binaries otherwise) and kept for a look when it fails.
struct Tmp(PathBuf);

impl std::ops::Deref for Tmp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn tmp(name: &str) -> Tmp {
    let d = std::env::temp_dir().join(format!("resnetc-cuda-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Tmp(d)
}

/// The folder with nvcc: `RESNETC_CUDA_BIN`, else the one on PATH.
fn cuda_bin() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("RESNETC_CUDA_BIN") {
        let d = PathBuf::from(d);
        if d.join("nvcc").exists() {
            return Some(d);
        }
    }
    let out = Command::new("sh")
        .args(["-c", "command -v nvcc"])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p).parent().map(Path::to_path_buf))?
}

fn skip(what: &str, why: &str) {
    println!("SKIPPED {what}: {why}");
    eprintln!("SKIPPED {what}: {why}");
}

/// The emulation's folder (cuda_emu.h, emu_main.cpp).
fn emu_dir() -> PathBuf {
    common::root().join("src/backend/cuda/emu")
}

/// Whether g++ with boost.context builds the emulation here (once).
fn emulator() -> Result<(), String> {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    OK.get_or_init(|| {
        let d = tmp("probe");
        std::fs::write(
            d.join("p.cpp"),
            "#include \"cuda_emu.h\"\nint main() { return 0; }\n",
        )
        .unwrap();
        let out = Command::new("g++")
            .args(["-std=c++17", "-I"])
            .arg(emu_dir())
            .arg(d.join("p.cpp"))
            .args(["-lboost_context", "-o"])
            .arg(d.join("p"))
            .output()
            .map_err(|e| format!("no g++ ({e})"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "g++ with boost.context does not build here (apt-get install g++ libboost-context-dev): {}",
                String::from_utf8_lossy(&out.stderr).lines().next().unwrap_or("")
            ))
        }
    })
    .clone()
}

/// A spec at an input size and batch, with random weights (randomized BN)
/// and the interpreter's logits for a fixed input.
struct Case {
    program: Program,
    x: ArrayD<f32>,
    want: ArrayD<f32>,
    label: String,
}

fn case(spec: &str, size: usize, batch: usize) -> Case {
    case_hw(spec, (size, size), batch)
}

fn case_hw(spec: &str, (height, width): (usize, usize), batch: usize) -> Case {
    let path = common::root().join(spec);
    let g = common::compile_with(
        &path,
        &BuildOptions {
            batch,
            input: Some([3, height, width]),
        },
    );
    let x = ArrayD::from_shape_fn(g.input_shape().dims().to_vec(), |d| {
        ((d[0] * 31 + d[1] * 17 + d[2] * 7 + d[3] * 3) % 23) as f32 / 11.0 - 1.0
    });
    let (w, want) = common::finite_run(&g, &x, 7);
    Case {
        program: common::program(&g, &w, 2),
        x,
        want,
        label: format!("{spec} at {height}x{width}, batch {batch}"),
    }
}

/// The emitted files of `e` (and its weights) in `dir`.
fn write(e: &Emitted, p: &Program, dir: &Path) {
    std::fs::write(dir.join(format!("{}.cu", e.name)), e.kernels_source()).unwrap();
    std::fs::write(dir.join(format!("{}_host.cu", e.name)), e.host_source()).unwrap();
    std::fs::write(dir.join(format!("{}.h", e.name)), e.header()).unwrap();
    std::fs::write(dir.join(emit::HEADER_NAME), emit::KERNELS_HEADER).unwrap();
    if p.prepared().weights().is_some() {
        let values = p
            .weight_values(resnetc::ir::Stage::Backend("test"))
            .unwrap();
        std::fs::write(dir.join("w.bin"), e.weights(&values)).unwrap();
    }
}

/// Build the emulation of the network written in `dir`.
fn build_emu(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let bin = dir.join("emu");
    let out = Command::new("g++")
        .args(["-std=c++17", "-O1", "-I"])
        .arg(emu_dir())
        .arg("-I")
        .arg(dir)
        .arg(format!("-DRESNETC_HOST=\"{name}_host.cu\""))
        .arg(emu_dir().join("emu_main.cpp"))
        .args(["-lboost_context", "-o"])
        .arg(&bin)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("g++: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(bin)
}

/// Run a built emulation on the case's input; its logits (and per-launch
/// dumps in `dir/dumps` when asked for).
fn run_emu(bin: &Path, c: &Case, dir: &Path, dump: bool) -> Result<ArrayD<f32>, String> {
    let x: Vec<u8> = c.x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("x.bin"), x).unwrap();
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg(dir.join("w.bin"))
        .arg(dir.join("x.bin"))
        .arg(dir.join("y.bin"));
    if dump {
        cmd.arg(&dumps);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "the emulation: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let y: Vec<f32> = std::fs::read(dir.join("y.bin"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(ArrayD::from_shape_vec(c.want.shape().to_vec(), y).unwrap())
}

/// Write, build and run `e` under the emulation.
fn emulate(e: &Emitted, c: &Case, dir: &Path, dump: bool) -> Result<ArrayD<f32>, String> {
    write(e, &c.program, dir);
    let bin = build_emu(dir, &e.name)?;
    run_emu(&bin, c, dir, dump)
}

/// max |a - b| / max |b|
fn rel(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter()
        .zip(b.iter())
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let n = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[test]
fn without_a_gpu_the_cuda_backend_says_what_is_missing() {
    if resnetc::backend::cuda::device::available().is_ok() {
        return skip("the no-GPU error", "this machine has a GPU");
    }
    let c = case("specs/cifar/resnet20.rn", 32, 1);
    let b = resnetc::backend::by_name("cuda", &Default::default()).unwrap();
    let err = b.compile(&c.program).err().expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("backend `cuda`") && (msg.contains("libcuda") || msg.contains("GPU")),
        "{msg}"
    );
    // And it lists the reason among its checks, without touching CUDA.
    assert!(!b.check(&c.program).is_empty());
}

#[test]
fn emitted_cuda_snapshots() {
    for (spec, precision) in [
        ("specs/cifar/resnet20.rn", Precision::F32),
        ("specs/resnet50.rn", Precision::Bf16),
    ] {
        let p = Program::lower(common::optimized(&common::root().join(spec), 2)).unwrap();
        let e = emit::emit(&p, precision).unwrap();
        let text = format!(
            "{}\n// ---- {}_host.cu\n{}",
            e.kernels_source(),
            e.name,
            e.host_source()
        );
        insta::assert_snapshot!(format!("cuda_{}_{}", e.name, precision.name()), text);
    }
}

#[test]
fn convs_take_the_tensor_cores_where_their_channels_allow() {
    let p = Program::lower(common::optimized(
        &common::root().join("specs/resnet50.rn"),
        2,
    ))
    .unwrap();
    for (precision, tc) in [
        (Precision::F32, ConvPath::Simt),
        (Precision::Tf32, ConvPath::Tf32),
        (Precision::Bf16, ConvPath::Bf16),
    ] {
        let e = emit::emit(&p, precision).unwrap();
        assert_eq!(e.conv_paths.len(), 53);
        for (name, path) in &e.conv_paths {
            // The stem reads 3 channels: not whole 16-byte chunks.
            let want = if name == "conv1" { ConvPath::Simt } else { tc };
            assert_eq!(*path, want, "{name} in {precision:?}");
        }
        // One kernel for the many convs of one shape: 53 convs, far fewer kernels.
        assert!(e.kernels.len() < 40, "{}", e.kernels.len());
    }
    // Grouped convs run on the CUDA cores.
    let p = Program::lower(common::optimized(
        &common::root().join("examples/resnext50_32x4d.rn"),
        2,
    ))
    .unwrap();
    let e = emit::emit(&p, Precision::Bf16).unwrap();
    assert!(e
        .conv_paths
        .iter()
        .filter(|(n, _)| n.ends_with("conv2"))
        .all(|(_, p)| *p == ConvPath::Simt));
}

/// nvcc for sm_90 on `file` in `dir`: ptxas's registers and shared memory
/// per kernel (spills and warnings as errors), and how many tensor-core
/// instructions the SASS holds (`None` without cuobjdump).
fn nvcc(bin: &Path, dir: &Path, file: &str) -> Result<(String, Option<usize>), String> {
    let out = Command::new(bin.join("nvcc"))
        .args([
            "-arch=sm_90",
            "-cubin",
            "-Xptxas",
            "-v,--warn-on-spills,--warning-as-error",
            "-o",
        ])
        .arg(dir.join("k.cubin"))
        .arg(dir.join(file))
        .output()
        .map_err(|x| x.to_string())?;
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    if !out.status.success() {
        return Err(log);
    }
    if log
        .lines()
        .any(|l| l.contains("spill stores") && !l.contains(" 0 bytes spill stores"))
    {
        return Err(format!("register spills:\n{log}"));
    }
    let mut summary = String::new();
    let mut name = String::new();
    for l in log.lines() {
        if let Some(i) = l.find("Compiling entry function '") {
            name = l[i + 26..].split('\'').next().unwrap_or("").to_string();
        }
        if let Some(i) = l.find("Used ") {
            summary.push_str(&format!("    {name}: {}\n", &l[i..]));
        }
    }
    let hmma = if bin.join("cuobjdump").exists() && bin.join("nvdisasm").exists() {
        let out = Command::new(bin.join("cuobjdump"))
            .arg("-sass")
            .arg(dir.join("k.cubin"))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .output()
            .map_err(|x| x.to_string())?;
        Some(String::from_utf8_lossy(&out.stdout).matches("HMMA").count())
    } else {
        None
    };
    Ok((summary, hmma))
}

/// Every spec and example in every precision: their kernels, each distinct
/// one once (one shape of one op is one kernel wherever it appears, as
/// within a network), compiled together a precision; and two networks'
/// files as they are written.
#[test]
fn every_spec_compiles_for_sm_90_in_every_precision_without_spills() {
    let Some(bin) = cuda_bin() else {
        return skip(
            "nvcc checks",
            "no nvcc (set RESNETC_CUDA_BIN to a CUDA bin folder; .ci/run installs one)",
        );
    };
    let programs: Vec<(PathBuf, Program)> = common::all_specs()
        .into_iter()
        .map(|s| {
            let p = Program::lower(common::optimized(&s, 2)).unwrap();
            (s, p)
        })
        .collect();
    let jobs: Vec<Precision> = PRECISIONS.to_vec();
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for (t, precision) in jobs.iter().enumerate() {
            let (programs, results, bin) = (&programs, &results, &bin);
            sc.spawn(move || {
                let mut seen = std::collections::HashSet::new();
                let mut text = format!(
                    "// every distinct kernel of every spec, {}\n{}",
                    precision.name(),
                    emit::PREAMBLE
                );
                let (mut kernels, mut tc) = (0, false);
                for (_, p) in programs {
                    let e = emit::emit(p, *precision).unwrap();
                    tc |= e.conv_paths.iter().any(|(_, c)| *c != ConvPath::Simt);
                    for k in &e.kernels {
                        let (g, body, block) = k.key();
                        if seen.insert((g.map(String::from), body.to_string(), block)) {
                            text.push_str(&format!(
                                "// {} ({})\n{}",
                                k.about,
                                e.name,
                                k.source_named(&format!("k{kernels}"))
                            ));
                            kernels += 1;
                        }
                    }
                }
                let dir = tmp(&format!("nvcc{t}"));
                std::fs::write(dir.join(emit::HEADER_NAME), emit::KERNELS_HEADER).unwrap();
                std::fs::write(dir.join("all.cu"), text).unwrap();
                let r = nvcc(bin, &dir, "all.cu");
                results.lock().unwrap().push((*precision, kernels, tc, r));
            });
        }
    });
    let mut failures = Vec::new();
    for (precision, kernels, tc, r) in results.into_inner().unwrap() {
        match r {
            Ok((summary, hmma)) => {
                println!("{} specs and examples, {}: {kernels} distinct kernels compile for sm_90, 0 spills", programs.len(), precision.name());
                print!("{summary}");
                match (tc, hmma) {
                    (true, Some(0)) => {
                        failures.push(format!("{}: no HMMA in the SASS", precision.name()))
                    }
                    (false, Some(h)) if h > 0 => {
                        failures.push(format!("{}: HMMA on the f32 path", precision.name()))
                    }
                    (_, Some(h)) => println!("  {h} HMMA instructions in the SASS"),
                    (_, None) => println!("  (no cuobjdump: the SASS was not read)"),
                }
            }
            Err(log) => failures.push(format!("{}: {log}", precision.name())),
        }
    }
    // Two networks as compile --emit cuda writes them.
    for (spec, precision) in [
        ("specs/cifar/resnet20.rn", Precision::Tf32),
        ("specs/resnet50_v1_5.rn", Precision::Bf16),
    ] {
        let p = Program::lower(common::optimized(&common::root().join(spec), 2)).unwrap();
        let e = emit::emit(&p, precision).unwrap();
        let dir = tmp("nvcc-file");
        write(&e, &p, &dir);
        if let Err(log) = nvcc(&bin, &dir, &format!("{}.cu", e.name)) {
            failures.push(format!("{spec} {}: {log}", precision.name()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn nvcc_builds_a_library_a_user_can_link() {
    let Some(bin) = cuda_bin() else {
        return skip(
            "the library build",
            "no nvcc (set RESNETC_CUDA_BIN; .ci/run installs one)",
        );
    };
    let dir = tmp("lib");
    let out = Command::new(env!("CARGO_BIN_EXE_resnetc"))
        .args(["compile", "specs/cifar/resnet20.rn", "--emit", "cuda", "-o"])
        .arg(&*dir)
        .current_dir(common::root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "resnet20.cu",
        "resnet20_host.cu",
        "resnet20.h",
        "resnetc_cuda.cuh",
        "resnet20.weights",
    ] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let out = Command::new(bin.join("nvcc"))
        .args(["-shared", "-Xcompiler", "-fPIC", "-arch=sm_90", "-o"])
        .arg(dir.join("libresnet20.so"))
        .arg(dir.join("resnet20_host.cu"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nm = Command::new("nm")
        .arg("-D")
        .arg(dir.join("libresnet20.so"))
        .output();
    if let Ok(nm) = nm {
        let syms = String::from_utf8_lossy(&nm.stdout);
        for s in [
            "resnet20_forward",
            "resnet20_weight_bytes",
            "resnet20_workspace_bytes",
        ] {
            assert!(syms.contains(s), "{s} not exported");
        }
    }
}

#[test]
fn emulated_networks_agree_with_the_interpreter() {
    if let Err(why) = emulator() {
        return skip("the emulated runs", &why);
    }
    let cases = [
        ("specs/cifar/resnet20.rn", 32, 2),
        ("specs/cifar/resnet56.rn", 32, 1),
        ("specs/resnet18.rn", 64, 1),
        ("specs/resnet50.rn", 64, 1),
        ("specs/resnet50_v1_5.rn", 64, 1),
        ("examples/preact_resnet164.rn", 32, 1),
        // Ceil-mode max pool and biased projections; dilated 3x3 convs.
        ("examples/open_nsfw.rn", 64, 1),
        ("examples/resnet50_dilated.rn", 32, 1),
    ];
    let jobs: Vec<_> = cases
        .iter()
        .flat_map(|c| PRECISIONS.map(|p| (*c, p)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for t in 0..2 {
            let (jobs, next, failures) = (&jobs, &next, &failures);
            sc.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(((spec, size, batch), precision)) = jobs.get(i) else {
                    break;
                };
                let c = case(spec, *size, *batch);
                let e = emit::emit(&c.program, *precision).unwrap();
                let got = match emulate(&e, &c, &tmp(&format!("agree{t}")), false) {
                    Ok(y) => y,
                    Err(why) => {
                        failures.lock().unwrap().push(format!("{}: {why}", c.label));
                        continue;
                    }
                };
                let err = rel(&got, &c.want);
                let classes = c.want.shape()[1];
                let (g, w) = (got.as_slice().unwrap(), c.want.as_slice().unwrap());
                let cos = cosine(g, w);
                let top1 = g
                    .chunks(classes)
                    .zip(w.chunks(classes))
                    .all(|(a, b)| argmax(a) == argmax(b));
                println!(
                    "{} {}: max error {err:.2e} of the largest logit, cosine {cos:.7}, top-1 {}",
                    c.label,
                    precision.name(),
                    if top1 { "agrees" } else { "differs" }
                );
                let ok = match precision {
                    Precision::F32 => err <= 1e-4,
                    _ => cos >= 0.999 && top1,
                };
                if !ok {
                    failures.lock().unwrap().push(format!(
                        "{} {}: error {err:e}, cosine {cos}, top-1 {top1}",
                        c.label,
                        precision.name()
                    ));
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A dump's values as f32 (the arena's element type).
fn values(bytes: &[u8], bf16: bool) -> Vec<f32> {
    if bf16 {
        bytes
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect()
    } else {
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
}

/// Every tensor-core conv of a network against its definition in f64, fed
/// the inputs it was fed (the emulation's dumps, already rounded) and the
/// weights as packed (rounded too): what remains is the accumulation.
fn layers_match(spec: &str, size: usize, precision: Precision) -> Result<usize, String> {
    let c = case(spec, size, 1);
    let e = emit::emit(&c.program, precision).unwrap();
    let dir = tmp(&format!("layers-{}-{}", precision.name(), size));
    emulate(&e, &c, &dir, true)?;
    let bf16 = precision == Precision::Bf16;
    let blob = std::fs::read(dir.join("w.bin")).unwrap();
    let dump =
        |i: usize| std::fs::read(dir.join("dumps").join(format!("{i}.bin"))).unwrap_or_default();
    // The launch that last wrote `offset` before launch i.
    let writer = |i: usize, offset: i64| {
        (0..i).rev().find(|&j| {
            e.launches[j]
                .writes
                .is_some_and(|(o, _)| o as i64 == offset)
        })
    };
    let mut checked = 0;
    for (li, l) in e.launches.iter().enumerate() {
        let Some(step) = c.program.steps.iter().find(|s| s.at.value == l.value) else {
            continue;
        };
        let Kind::Conv {
            geom: g, epilogue, ..
        } = &step.kind
        else {
            continue;
        };
        if e.conv_paths
            .iter()
            .any(|(n, p)| n == &l.value && *p == ConvPath::Simt)
        {
            continue;
        }
        let x = values(&dump(writer(li, l.off[0]).ok_or("no input")?), bf16);
        let res = match epilogue.residual {
            Some(_) => Some(values(
                &dump(writer(li, l.off[1]).ok_or("no residual")?),
                bf16,
            )),
            None => None,
        };
        let got = values(&dump(li), bf16);
        let slot = |off: i64| {
            e.slots
                .iter()
                .find(|s| s.offset as i64 == off)
                .ok_or("no slot")
        };
        let ws = slot(l.off[3])?;
        let w = values(
            &blob[ws.offset as usize..(ws.offset + ws.bytes) as usize],
            ws.pack == Pack::KrscBf16,
        );
        let bias = if l.off[4] >= 0 {
            let b = slot(l.off[4])?;
            values(
                &blob[b.offset as usize..(b.offset + b.bytes) as usize],
                false,
            )
        } else {
            vec![0.0; g.o]
        };
        let round = |v: f32| {
            if precision == Precision::Tf32 {
                emit::to_tf32(v)
            } else {
                v
            }
        };
        let k = g.kernel * g.kernel * g.c;
        let mut want = vec![0.0f64; got.len()];
        for n in 0..g.n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let m = (n * g.oh + oy) * g.ow + ox;
                    for o in 0..g.o {
                        let mut s = 0.0f64;
                        for ky in 0..g.kernel {
                            for kx in 0..g.kernel {
                                let (iy, ix) = (
                                    (oy * g.stride + ky) as isize - g.pad as isize,
                                    (ox * g.stride + kx) as isize - g.pad as isize,
                                );
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xb = ((n * g.h + iy as usize) * g.w + ix as usize) * g.c;
                                let wb = o * k + (ky * g.kernel + kx) * g.c;
                                for ch in 0..g.c {
                                    s += round(x[xb + ch]) as f64 * w[wb + ch] as f64;
                                }
                            }
                        }
                        s += bias[o] as f64;
                        match (&epilogue.residual, &res) {
                            (Some(Residual::Add(_)), Some(r)) => s += r[m * g.o + o] as f64,
                            (
                                Some(Residual::PadAdd {
                                    buffer,
                                    stride,
                                    pad_before,
                                    ..
                                }),
                                Some(r),
                            ) => {
                                let (rc, rh, rw) = (
                                    buffer.shape.channels(),
                                    buffer.shape.height(),
                                    buffer.shape.width(),
                                );
                                if o >= *pad_before && o - pad_before < rc {
                                    s += r[((n * rh + oy * stride) * rw + ox * stride) * rc + o
                                        - pad_before]
                                        as f64;
                                }
                            }
                            _ => {}
                        }
                        if epilogue.relu && s < 0.0 {
                            s = 0.0;
                        }
                        want[m * g.o + o] = s;
                    }
                }
            }
        }
        let scale = want.iter().fold(1e-6f64, |a, v| a.max(v.abs()));
        // bf16 outputs are rounded to 8 bits; tf32 outputs are f32 sums.
        let tol = if bf16 { 1.0 / 256.0 } else { 1e-4 };
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            if (*a as f64 - b).abs() > tol * b.abs() + 1e-4 * scale {
                return Err(format!(
                    "{spec} {}: `{}` element {i}: {a} against {b}",
                    precision.name(),
                    l.value
                ));
            }
        }
        checked += 1;
    }
    Ok(checked)
}

#[test]
fn tensor_core_layers_match_a_reference_fed_the_same_rounded_inputs() {
    if let Err(why) = emulator() {
        return skip("the per-layer checks", &why);
    }
    for (spec, size, precision, convs) in [
        ("specs/cifar/resnet20.rn", 32, Precision::Tf32, 18),
        ("specs/cifar/resnet20.rn", 32, Precision::Bf16, 18),
        ("specs/resnet18.rn", 32, Precision::Bf16, 19),
    ] {
        let n = layers_match(spec, size, precision).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, convs, "{spec} {precision:?}: convs checked");
    }
}

/// The emulation must catch a kernel that skips a synchronization: the
/// header with one line taken out, on ResNet-20.
#[test]
fn a_missing_barrier_or_wait_is_caught() {
    if let Err(why) = emulator() {
        return skip("the negative check", &why);
    }
    let c = case("specs/cifar/resnet20.rn", 32, 1);
    let intact = emit::emit(&c.program, Precision::Bf16).unwrap();
    let ok = emulate(&intact, &c, &tmp("intact"), false).unwrap();
    assert!(cosine(ok.as_slice().unwrap(), c.want.as_slice().unwrap()) > 0.999);
    for (kernel, line) in [
        ("conv_tc(", "__syncthreads();"),
        ("conv_tc(", "cp_async_wait<STAGES - 2>();"),
        ("conv_simt(", "__syncthreads();"),
    ] {
        let header = emit::KERNELS_HEADER;
        let at = header.find(kernel).unwrap();
        let cut = at + header[at..].find(line).unwrap();
        let broken = format!("{}{}", &header[..cut], &header[cut + line.len()..]);
        let precision = if kernel == "conv_simt(" {
            Precision::F32
        } else {
            Precision::Bf16
        };
        let e = emit::emit(&c.program, precision).unwrap();
        let dir = tmp("broken");
        write(&e, &c.program, &dir);
        std::fs::write(dir.join(emit::HEADER_NAME), &broken).unwrap();
        let bin = build_emu(&dir, &e.name).unwrap();
        // An abort (divergent barrier) or wrong numbers: either is caught.
        let caught = match run_emu(&bin, &c, &dir, false) {
            Ok(y) => rel(&y, &c.want) > 0.05,
            Err(_) => true,
        };
        assert!(caught, "taking `{line}` out of {kernel}) went unnoticed");
    }
}

/// A non-square input (what `--tta full=S` runs): the emulated CUDA
/// network equals the interpreter, as the CPU backends do (tests/eval.rs).
#[test]
fn emulated_non_square_input_agrees() {
    if let Err(why) = emulator() {
        return skip("the emulated non-square run", &why);
    }
    let c = case_hw("specs/resnet18.rn", (48, 80), 1);
    let e = emit::emit(&c.program, Precision::F32).unwrap();
    let got = emulate(&e, &c, &tmp("nonsquare"), false).unwrap();
    let err = rel(&got, &c.want);
    println!("{} f32: max error {err:.2e} of the largest logit", c.label);
    assert!(err <= 1e-4, "{}: {err:e}", c.label);
}
