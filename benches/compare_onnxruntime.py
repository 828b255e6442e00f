#!/usr/bin/env python3
"""Side-by-side latency of resnetc and ONNX Runtime on the same ResNets.

Usage (from the repository root; build resnetc first with `cargo build --release`):

    /root/ref-venv/bin/python benches/compare_onnxruntime.py \
        [--nets resnet18,resnet50] [--batches 1,8] [--threads 2] [--iters 30] \
        [--warmup 3] [--json OUT.json] [--keep DIR] [--ort-only] [--no-check]

For each network (torchvision's model beside the resnetc spec of the same
layout: resnet18 -> specs/resnet18.rn, resnet50 -> specs/resnet50_v1_5.rn, ...):

  1. torch.manual_seed(0); torchvision's own init, then every BatchNorm
     randomized (so that BN folding is exercised by the agreement check);
     eval mode. The state_dict goes to a .safetensors file (torchvision's key
     names, which resnetc reads) and the model to ONNX (opset 17, the legacy
     TorchScript exporter, dynamic batch axis), both in one temp dir.
  2. ONNX Runtime, CPUExecutionProvider, intra-op threads = --threads,
     inter-op threads 1, sequential execution, all graph optimizations:
     --warmup untimed runs, then --iters timed runs of a seeded random
     float32 input [B,3,224,224]; median / p10 / p90 latency in ms.
  3. resnetc: `target/release/resnetc bench SPEC --batch B --threads T
     --iters N --weights W --json`, its JSON read from stdout; then, once per
     network and batch, `resnetc run SPEC --weights W --threads T --input
     X.npy --output Y.npy --top 0` on the same input as ONNX Runtime, and the
     agreement max |resnetc - ort| / max |ort| over the logits.
  4. A table (net, batch, ORT median and p10-p90, resnetc median, ratio
     resnetc/ORT -- lower is better for resnetc --, resnetc images/s and
     GFLOP/s, agreement), then the machine, the date and the versions.
     --json OUT writes all of it.

Everything runs one thing at a time: the ONNX Runtime session of a network
is closed before resnetc starts, so the two never share the cores.

Exit status: 0, 1 if a resnetc command failed or an agreement is worse than
--tol, 2 if the resnetc binary is missing (and --ort-only was not given).
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torchvision
import torchvision.models as tvm
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
EXE = ROOT / "target" / "release" / "resnetc"

# name -> (resnetc spec with torchvision's layout, torchvision builder).
# torchvision's ResNet-50/101/152 put the stride on the 3x3 conv ("v1.5");
# ResNet-18/34 have basic blocks, where the two layouts coincide.
NETS = {
    "resnet18": ("specs/resnet18.rn", tvm.resnet18),
    "resnet34": ("specs/resnet34.rn", tvm.resnet34),
    "resnet50": ("specs/resnet50_v1_5.rn", tvm.resnet50),
    "resnet101": ("specs/resnet101_v1_5.rn", tvm.resnet101),
    "resnet152": ("specs/resnet152_v1_5.rn", tvm.resnet152),
}

MODEL_SEED = 0  # torch.manual_seed for the weights
INPUT_SEED = 1000  # numpy seed of the input, plus the batch size


def log(msg):
    """Progress goes to stderr; stdout keeps the table."""
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Model, weights, ONNX
# --------------------------------------------------------------------------


def build_model(builder):
    """torchvision's init under a fixed seed, BN randomized, eval mode.

    BN ranges as tests/golden/full_size.py: weight U(0.5,1.5), bias
    U(-0.2,0.2), running_mean U(-0.2,0.2), running_var U(0.5,1.5). With the
    default 1/0/0/1 every BN is (nearly) an identity and a wrong folding
    would go unnoticed.
    """
    torch.manual_seed(MODEL_SEED)
    model = builder(weights=None)  # no download
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def save_weights(model, path: Path):
    # The whole state_dict, num_batches_tracked (int64) included, as
    # torchvision exports do; resnetc ignores those keys.
    save_file({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()},
              str(path))


def export_onnx(model, path: Path):
    """Opset 17, one graph for every batch size (dynamic axis 0)."""
    kwargs = dict(
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        do_constant_folding=True,
    )
    # torch >= 2.5 has `dynamo`, and from 2.9 on defaults it to True (the
    # torch.export-based exporter, which needs onnxscript); the legacy
    # TorchScript exporter is enough for a ResNet.
    try:
        import inspect
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs["dynamo"] = False
    except (TypeError, ValueError):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning
        with torch.no_grad():
            torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(path), **kwargs)


def make_input(batch):
    rng = np.random.default_rng(INPUT_SEED + batch)
    return rng.standard_normal((batch, 3, 224, 224), dtype=np.float32)


# --------------------------------------------------------------------------
# ONNX Runtime
# --------------------------------------------------------------------------


def ort_session(onnx_path: Path, threads: int):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), sess_options=so,
                                providers=["CPUExecutionProvider"])


def latency_stats(times_ms, batch):
    t = np.asarray(times_ms, dtype=np.float64)
    med = float(np.median(t))
    return {
        "median": med,
        "p10": float(np.percentile(t, 10)),
        "p90": float(np.percentile(t, 90)),
        "min": float(t.min()),
        "images_per_s": batch * 1000.0 / med,
    }


def ort_bench(sess, x, warmup, iters):
    """Warm-up runs, then `iters` timed runs of sess.run on the same input.

    Returns (stats, output of the last run)."""
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        y = sess.run(None, feed)[0]
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        y = sess.run(None, feed)[0]
        times.append((time.perf_counter() - t0) * 1000.0)
    return latency_stats(times, x.shape[0]), y


# --------------------------------------------------------------------------
# resnetc
# --------------------------------------------------------------------------


def run_cmd(cmd):
    """Run a resnetc command from the repository root; (proc, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True)
    return proc, time.perf_counter() - t0


def fail_text(cmd, proc):
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return (f"`{' '.join(str(c) for c in cmd)}` exited {proc.returncode}"
            + "".join(f"\n    {line}" for line in tail))


def parse_json_stdout(text):
    """The JSON object printed by `resnetc bench --json` (pretty-printed or not).

    The whole of stdout first; failing that, the last object that starts a
    line and decodes (in case something else is printed around it)."""
    try:
        obj = json.loads(text)
        if isinstance(obj, dict):
            return obj
    except json.JSONDecodeError:
        pass
    decoder = json.JSONDecoder()
    starts = [i for i, c in enumerate(text) if c == "{" and (i == 0 or text[i - 1] == "\n")]
    for i in reversed(starts):
        try:
            obj, _ = decoder.raw_decode(text, i)
            if isinstance(obj, dict):
                return obj
        except json.JSONDecodeError:
            continue
    raise ValueError("no JSON object on stdout")


def num(v):
    """A finite float, or None (missing key, null, a string...)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def normalize_bench(raw, batch):
    """The fields the table needs from resnetc's JSON, missing ones as None.

    Expected: {"network", "batch", "threads", "compile_ms",
    "latency_ms": {"median", "p10", "p90"}, "images_per_s", "gflops",
    "peak_share"}; "latency_ms" as a bare number is read as the median."""
    lat = raw.get("latency_ms")
    if isinstance(lat, dict):
        median, p10, p90 = num(lat.get("median")), num(lat.get("p10")), num(lat.get("p90"))
    else:
        median, p10, p90 = num(lat), None, None
    ips = num(raw.get("images_per_s"))
    if ips is None and median:
        ips = batch * 1000.0 / median
    return {
        "median": median, "p10": p10, "p90": p90,
        "images_per_s": ips,
        "gflops": num(raw.get("gflops")),  # achieved GFLOP/s
        "peak_share": num(raw.get("peak_share")),  # share of the machine's peak, may be null
        "compile_ms": num(raw.get("compile_ms")),
    }


def resnetc_bench(exe, spec, weights, batch, threads, iters, extra=()):
    cmd = [exe, "bench", spec, "--batch", batch, "--threads", threads,
           "--iters", iters, "--weights", weights, "--json", *extra]
    proc, _ = run_cmd(cmd)
    if proc.returncode != 0:
        return None, fail_text(cmd, proc)
    try:
        raw = parse_json_stdout(proc.stdout)
    except ValueError as e:
        return None, f"`{' '.join(str(c) for c in cmd)}`: {e}; stdout was:\n{proc.stdout[-2000:]}"
    return {"raw": raw, **normalize_bench(raw, batch)}, None


def resnetc_agreement(exe, spec, weights, threads, x_path, y_path, want, extra=()):
    """`resnetc run` on the input ORT saw; its logits against ORT's.

    `run` uses its default backend (the one `bench` times) and the same
    thread count, since the split of the work can change the rounding."""
    cmd = [exe, "run", spec, "--weights", weights, "--threads", threads, "--input", x_path,
           "--output", y_path, "--top", "0", *extra]
    proc, wall = run_cmd(cmd)
    if proc.returncode != 0:
        return None, fail_text(cmd, proc)
    got = np.load(y_path)
    if got.shape != want.shape:
        return None, f"resnetc logits have shape {list(got.shape)}, ORT's {list(want.shape)}"
    scale = float(np.abs(want).max())
    g64, w64 = got.astype(np.float64), want.astype(np.float64)
    err = float(np.abs(g64 - w64).max()) / scale
    cosine = (g64 * w64).sum(1) / (np.linalg.norm(g64, axis=1) * np.linalg.norm(w64, axis=1))
    return {
        "max_abs_diff_over_max_abs_ort": err,
        "min_logit_cosine": float(cosine.min()),
        "max_abs_ort": scale,
        "top1_same": bool((got.argmax(1) == want.argmax(1)).all()),
        "run_wall_s": wall,  # the whole process: loading and compiling included
    }, None


# --------------------------------------------------------------------------
# Machine, versions, table
# --------------------------------------------------------------------------


def machine_info():
    info = {"cpu": platform.processor() or platform.machine(),
            "logical_cpus": os.cpu_count(), "os": platform.platform()}
    try:
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
        for key, field in (("model name", "cpu"), ("cpu MHz", "cpu_mhz")):
            line = next((l for l in text.splitlines() if l.startswith(key)), None)
            if line:
                info[field] = line.split(":", 1)[1].strip()
        flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                      if line.startswith("flags")), [])
        # The vector extensions that bound what a conv kernel can reach.
        info["isa"] = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                                   "amx_tile", "neon", "asimd") if f in flags]
        info["virtualized"] = "hypervisor" in flags
    except OSError:
        pass
    return info


def versions(exe):
    v = {"onnxruntime": ort.__version__, "torch": torch.__version__,
         "torchvision": torchvision.__version__, "numpy": np.__version__,
         "python": platform.python_version()}
    try:
        import onnx
        v["onnx"] = onnx.__version__
    except ImportError:
        pass
    if exe.exists():
        try:
            out = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                                 timeout=30).stdout.strip()
            v["resnetc"] = out.split()[-1] if out else None
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        v["resnetc_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
            text=True, timeout=30).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
        if v["resnetc_commit"] and dirty.strip():
            v["resnetc_commit"] += "-dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return v


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def print_table(rows):
    header = ["net", "batch", "ORT ms", "ORT p10-p90", "resnetc ms", "resnetc p10-p90",
              "resnetc/ORT", "resnetc img/s", "GFLOP/s", "peak", "agreement"]
    lines = []
    for r in rows:
        o, b, a = r["ort"], r.get("resnetc") or {}, r.get("agreement") or {}
        err = a.get("max_abs_diff_over_max_abs_ort")
        agree = "-" if err is None else f"{err:.1e}" + ("" if a.get("top1_same") else " top1!")
        lines.append([
            r["net"], str(r["batch"]),
            fmt(o["median"], ".2f"), f"{o['p10']:.1f}-{o['p90']:.1f}",
            fmt(b.get("median"), ".2f"),
            "-" if b.get("p10") is None or b.get("p90") is None
            else f"{b['p10']:.1f}-{b['p90']:.1f}",
            fmt(r.get("ratio"), ".2f"),
            fmt(b.get("images_per_s"), ".1f"),
            fmt(b.get("gflops"), ".1f"),
            "-" if b.get("peak_share") is None else f"{100 * b['peak_share']:.0f}%",
            agree,
        ])
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]

    def row(cells):  # the net left-aligned, numbers right-aligned
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    print(row(header))
    print(row(["-" * w for w in widths]))
    for l in lines:
        print(row(l))


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def merge_rounds(rounds):
    """One figure per statistic from several rounds: the median over rounds."""
    keys = [k for k, v in rounds[0].items() if isinstance(v, (int, float)) or v is None]
    out = {}
    for k in keys:
        vals = [r[k] for r in rounds if r.get(k) is not None]
        out[k] = float(np.median(vals)) if vals else None
    return out


def bench_net(name, args, tmp: Path):
    """All batches of one network, in alternating rounds: ORT, then resnetc.

    The machine's speed drifts (shared hosts), so each round times both
    sides within seconds of each other; the ratio reported is the median of
    the rounds' ratios. Rows and errors."""
    spec, builder = NETS[name]
    log(f"== {name} ({spec}): weights and ONNX export")
    model = build_model(builder)
    w_path, onnx_path = tmp / f"{name}.safetensors", tmp / f"{name}.onnx"
    save_weights(model, w_path)
    export_onnx(model, onnx_path)

    rows, errors = [], []
    for batch in args.batches:
        x = make_input(batch)
        # The export itself, against PyTorch (a wrong ONNX graph would make
        # every agreement figure meaningless).
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        x_path = tmp / f"{name}_b{batch}_x.npy"
        np.save(x_path, x)
        rows.append({"net": name, "spec": spec, "batch": batch, "x": x, "ref": ref,
                     "ort": None, "ort_vs_torch": None, "resnetc": None, "ratio": None,
                     "agreement": None, "rounds": []})
    del model

    for rnd in range(max(1, args.rounds)):
        # ONNX Runtime, every batch; its threads gone before resnetc runs.
        sess = ort_session(onnx_path, args.threads)
        for r in rows:
            batch = r["batch"]
            stats, y = ort_bench(sess, r["x"], args.warmup, args.iters)
            log(f"   round {rnd + 1} ORT     batch {batch}: median {stats['median']:.2f} ms "
                f"(p10 {stats['p10']:.2f}, p90 {stats['p90']:.2f})")
            r["rounds"].append({"ort": stats, "resnetc": None, "ratio": None})
            if rnd == 0:
                ref = r["ref"]
                r["ort_vs_torch"] = float(np.abs(y - ref).max() / np.abs(ref).max())
                if r["ort_vs_torch"] > args.tol:
                    errors.append(f"{name} batch {batch}: ORT differs from PyTorch by "
                                  f"{r['ort_vs_torch']:.1e}")
                np.save(tmp / f"{name}_b{batch}_ort.npy", y)
        del sess
        if args.ort_only:
            continue
        for r in rows:
            batch = r["batch"]
            bench, err = resnetc_bench(args.exe, spec, w_path, batch, args.threads, args.iters)
            if err:
                errors.append(f"{name} batch {batch}: resnetc bench: {err}")
                continue
            this = r["rounds"][-1]
            this["resnetc"] = bench
            if bench["median"]:
                this["ratio"] = bench["median"] / this["ort"]["median"]
            log(f"   round {rnd + 1} resnetc batch {batch}: median {fmt(bench['median'], '.2f')} ms")

    for r in rows:
        batch = r["batch"]
        del r["x"], r["ref"]
        r["ort"] = merge_rounds([t["ort"] for t in r["rounds"]])
        done = [t["resnetc"] for t in r["rounds"] if t["resnetc"]]
        if done:
            r["resnetc"] = merge_rounds(done)
        ratios = [t["ratio"] for t in r["rounds"] if t["ratio"]]
        if ratios:
            r["ratio"] = float(np.median(ratios))
        if args.check and not args.ort_only:
            want = np.load(tmp / f"{name}_b{batch}_ort.npy")
            agree, err = resnetc_agreement(args.exe, spec, w_path, args.threads,
                                           tmp / f"{name}_b{batch}_x.npy",
                                           tmp / f"{name}_b{batch}_resnetc.npy", want)
            if err:
                errors.append(f"{name} batch {batch}: resnetc run: {err}")
            else:
                r["agreement"] = agree
                e = agree["max_abs_diff_over_max_abs_ort"]
                log(f"   resnetc batch {batch}: max|resnetc - ort| / max|ort| = {e:.2e}")
                if not (e <= args.tol) or not agree["top1_same"]:
                    errors.append(f"{name} batch {batch}: resnetc and ORT differ by {e:.1e}"
                                  + ("" if agree["top1_same"] else ", top-1 differs"))
    return rows, errors


def int_list(s):
    return [int(v) for v in s.split(",") if v.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default="resnet18,resnet50",
                    help=f"comma-separated, of {', '.join(NETS)} (default: resnet18,resnet50)")
    ap.add_argument("--batches", type=int_list, default=[1, 8], help="default: 1,8")
    ap.add_argument("--threads", type=int, default=2, help="for both (default: 2)")
    ap.add_argument("--iters", type=int, default=30, help="timed runs (default: 30)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating ORT/resnetc rounds; medians over rounds (default: 3)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed ORT runs first (default: 3)")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="largest agreement max|diff|/max|ort| accepted (default: 1e-4)")
    ap.add_argument("--json", type=Path, default=None, metavar="OUT",
                    help="also write everything as JSON here")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="write weights, ONNX files, inputs and outputs here, not a temp dir")
    ap.add_argument("--exe", type=Path, default=EXE, help=f"resnetc binary (default: {EXE})")
    ap.add_argument("--ort-only", action="store_true", help="ONNX Runtime alone, no resnetc")
    ap.add_argument("--no-check", dest="check", action="store_false",
                    help="skip the `resnetc run` agreement check")
    args = ap.parse_args()

    if args.iters < 1 or args.warmup < 0 or args.threads < 1 or not args.batches \
            or min(args.batches) < 1:
        ap.error("--iters, --threads and every batch must be >= 1, --warmup >= 0")
    nets = [n.strip() for n in args.nets.split(",") if n.strip()]
    unknown = [n for n in nets if n not in NETS]
    if unknown:
        ap.error(f"unknown net(s) {', '.join(unknown)}; known: {', '.join(NETS)}")
    if not args.ort_only and not args.exe.exists():
        print(f"{args.exe} not found: build it first with `cargo build --release` in {ROOT} "
              f"(or pass --ort-only)", file=sys.stderr)
        return 2

    # Only ORT's own pool should compute; torch runs once per batch, for the
    # export check.
    torch.set_num_threads(args.threads)

    started = datetime.datetime.now().astimezone()
    # Anything else busy on the machine skews both sides; say so with the figures.
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows, errors = [], []
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        for n in nets:
            r, e = bench_net(n, args, args.keep)
            rows += r
            errors += e
    else:
        with tempfile.TemporaryDirectory(prefix="resnetc-vs-ort-") as tmp:
            for n in nets:
                r, e = bench_net(n, args, Path(tmp))
                rows += r
                errors += e

    machine, vers = machine_info(), versions(args.exe)
    machine["load_avg_1min_at_start"] = load_at_start
    print(f"\nresnetc vs ONNX Runtime (CPUExecutionProvider), {args.threads} thread(s), "
          f"{args.rounds} alternating rounds of {args.iters} timed runs ({args.warmup} ORT warm-up), "
          f"input [B,3,224,224] f32; latency in ms, median of the rounds' medians; resnetc/ORT is "
          f"the median of the rounds' ratios, < 1 means resnetc is faster; agreement is "
          f"max|resnetc - ort| / max|ort| on the logits\n")
    print_table(rows)
    print()
    print(f"machine:  {machine['cpu']}"
          + (f" ({float(machine['cpu_mhz']):.0f} MHz nominal)" if "cpu_mhz" in machine else "")
          + f", {machine['logical_cpus']} logical CPUs"
          + (f" ({machine['usable_cpus']} usable)" if "usable_cpus" in machine else "")
          + (f", {' '.join(machine['isa'])}" if machine.get("isa") else "")
          + (", virtualized" if machine.get("virtualized") else ""))
    print(f"date:     {started.isoformat(timespec='seconds')}")
    if load_at_start is not None:
        print(f"load:     {load_at_start:.2f} (1-minute average at start"
              + ("; something else may have been running)" if load_at_start >= 0.5 * (
                  machine.get("usable_cpus") or machine["logical_cpus"] or 1) else ")"))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if v))
    if errors:
        print("\nproblems:")
        for e in errors:
            print(f"  - {e}")

    if args.json:
        doc = {
            "date": started.isoformat(timespec="seconds"),
            "machine": machine,
            "versions": vers,
            "settings": {"threads": args.threads, "iters": args.iters, "warmup": args.warmup,
                         "input_seed": INPUT_SEED, "model_seed": MODEL_SEED,
                         "onnx_opset": 17, "ort_graph_optimization": "ORT_ENABLE_ALL",
                         "ort_inter_op_threads": 1},
            "results": rows,
            "problems": errors,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"wrote {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
