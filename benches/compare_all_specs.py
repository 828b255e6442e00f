#!/usr/bin/env python3
"""Every spec and example, resnetc beside onnxruntime, in alternating rounds.

Usage (from the repository root; `cargo build --release` first; any Python
with numpy and onnxruntime, e.g. benches/.venv from benches/peers.sh or
.ci/venv):

    python benches/compare_all_specs.py [--threads 2] [--iters 10] [--rounds 3]
        [--only resnet18,resnet20] [--cifar-batch 64] [--min-ms 400] [--json OUT.json]
        [--precision f32|bf16]

For each `specs/**/*.rn` and `examples/*.rn`: `resnetc init --randomize-bn`
writes its weights, `resnetc export` the same network and weights as ONNX
(BN folded, dynamic batch), and onnxruntime (CPUExecutionProvider, all
optimizations, --threads intra-op threads) runs that file in-process while
`resnetc bench --weights` times resnetc (at least --iters runs and
--min-ms of work a side): batch 1 for every net, and
--cifar-batch for the 32x32 ones, as CIFAR nets are evaluated. Each round
times onnxruntime then resnetc; the table gives the medians over rounds and
the median of the rounds' ratios (below 1: resnetc is faster), the ratio
of the two best rounds (noise only slows a run down, and resnetc's
processes, new each round, draw it afresh), and the strategy mix resnetc
chose. The logits are compared too (`resnetc run`):
the largest difference over the largest logit, and with `--precision bf16`
(resnetc's; onnxruntime stays f32) also the smallest logit cosine.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
EXE = ROOT / "target" / "release" / "resnetc"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(*cmd):
    p = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"`{' '.join(map(str, cmd))}` exited {p.returncode}:\n{p.stderr[-2000:]}")
    return p.stdout


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def ort_median(sess, x, iters, warmup=2):
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(warmup):
        y = sess.run(None, feed)[0]
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        y = sess.run(None, feed)[0]
        t.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(t)), y


def resnetc_bench(spec, weights, batch, threads, iters, precision="f32"):
    out = json.loads(sh(EXE, "bench", spec, "--weights", weights, "--batch", batch,
                        "--threads", threads, "--iters", iters, "--json", "--profile",
                        "--precision", precision))
    mix = {}
    for layer in out.get("layers", []):
        mix[layer["how"]] = mix.get(layer["how"], 0.0) + layer["ms"]
    total = sum(mix.values()) or 1.0
    shares = ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in
                       sorted(mix.items(), key=lambda kv: -kv[1]) if v / total >= 0.05)
    return out["latency_ms"]["median"], shares


def specs(only):
    paths = sorted((ROOT / "specs").rglob("*.rn")) + sorted((ROOT / "examples").glob("*.rn"))
    if only:
        keep = set(only.split(","))
        paths = [p for p in paths if p.stem in keep]
    return paths


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--iters", type=int, default=10, help="the fewest timed runs a side")
    ap.add_argument("--min-ms", type=float, default=400.0,
                    help="at least this much timed work a side and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cifar-batch", type=int, default=64)
    ap.add_argument("--only")
    ap.add_argument("--json")
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    args = ap.parse_args()
    if not EXE.exists():
        log(f"error: {EXE} is missing: run `cargo build --release` first")
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="resnetc-all-") as d:
        tmp = Path(d)
        for spec in specs(args.only):
            rel = spec.relative_to(ROOT)
            w, m = tmp / f"{spec.stem}.safetensors", tmp / f"{spec.stem}.onnx"
            sh(EXE, "init", rel, "-o", w, "--randomize-bn")
            sh(EXE, "export", rel, "--weights", w, "-o", m)
            sess = session(m, args.threads)
            shape = sess.get_inputs()[0].shape  # [batch, C, H, W]
            c, h, wd = (int(v) for v in shape[1:])
            batches = [1] + ([args.cifar_batch] if h <= 32 else [])
            for b in batches:
                rng = np.random.default_rng(b)
                x = rng.standard_normal((b, c, h, wd), dtype=np.float32)
                o, r, ratios = [], [], []
                # Enough runs for --min-ms of timed work a side: a 32x32 net
                # at batch 1 takes under a millisecond, and a handful of
                # runs of it measures the wake-up, not the net.
                t_one, _ = ort_median(sess, x, 1, warmup=1)
                iters = int(min(1000, max(args.iters, args.min_ms / max(t_one, 1e-3))))
                for k in range(args.rounds):
                    t_ort, y = ort_median(sess, x, iters)
                    t_rc, mix = resnetc_bench(rel, w, b, args.threads, iters, args.precision)
                    o.append(t_ort)
                    r.append(t_rc)
                    ratios.append(t_rc / t_ort)
                np.save(tmp / "x.npy", x)
                sh(EXE, "run", rel, "--weights", w, "--threads", args.threads, "--input",
                   tmp / "x.npy", "--output", tmp / "y.npy", "--top", "0",
                   "--precision", args.precision)
                got = np.load(tmp / "y.npy")
                err = float(np.abs(got - y).max() / np.abs(y).max())
                g64, y64 = got.astype(np.float64), y.astype(np.float64)
                cos = float(((g64 * y64).sum(1) / (np.linalg.norm(g64, axis=1)
                                                  * np.linalg.norm(y64, axis=1))).min())
                row = {"spec": str(rel), "batch": b, "ort_ms": float(np.median(o)),
                       "resnetc_ms": float(np.median(r)), "ratio": float(np.median(ratios)),
                       "best_ratio": min(r) / min(o), "mix": mix, "agreement": err, "cosine": cos}
                log(f"{rel} b{b}: ort {row['ort_ms']:.2f} ms, resnetc {row['resnetc_ms']:.2f} ms,"
                    f" ratio {row['ratio']:.2f}, best {row['best_ratio']:.2f} ({mix}); agreement {err:.1e}, cosine {cos:.6f}")
                rows.append(row)
            del sess
    print(f"resnetc precision {args.precision}")
    print("| spec | batch | onnxruntime ms | resnetc ms | ratio | best rounds' ratio "
          "| resnetc's time by strategy | agreement | cosine |")
    print("|---|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| `{r['spec']}` | {r['batch']} | {r['ort_ms']:.2f} | {r['resnetc_ms']:.2f} | "
              f"{r['ratio']:.2f} | {r['best_ratio']:.2f} | {r['mix']} | {r['agreement']:.1e} "
              f"| {r['cosine']:.6f} |")
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    print(f"\n{cpu}, {args.threads} threads, onnxruntime {ort.__version__}, {args.rounds} "
          f"alternating rounds; {datetime.datetime.now().isoformat(timespec='minutes')}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
