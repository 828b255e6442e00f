#!/usr/bin/env python3
"""resnetc beside every CPU peer, on the same torchvision weights and inputs.

Usage (from the repository root; `cargo build --release` first):

    benches/peers.sh                       # makes benches/.venv from PyPI, then runs this
    benches/.venv/bin/python benches/compare_peers.py \
        [--nets resnet18,resnet50] [--batches 1,8] [--threads 2] [--iters 20] \
        [--rounds 3] [--json OUT.json] [--precision f32|bf16]

Peers, each on the model of compare_onnxruntime.py (torchvision's, seed 0,
BatchNorm statistics randomized, eval mode; the same .safetensors for
resnetc and the same ONNX export for the runtimes that read ONNX):

  ort         onnxruntime, CPUExecutionProvider, all graph optimizations,
              --threads intra-op threads, sequential.
  ov-f32      OpenVINO, LATENCY hint, one stream, --threads threads,
              INFERENCE_PRECISION_HINT f32.
  ov-default  OpenVINO as it ships: its default precision (bf16 on CPUs with
              AVX512_BF16 or AMX, f32 elsewhere; the table says which).
  torch       PyTorch, torch.jit.trace then torch.jit.freeze, inference mode,
              torch.set_num_threads(--threads).
  resnetc     `resnetc bench SPEC --json` (it times itself; its own warm-up).

Every round times each peer and then resnetc, seconds apart, so that a
shared host's drift hits all of them alike; the table gives each one's
median over the rounds and resnetc's ratio to the fastest f32 peer of the
same round (the median over rounds: below 1, resnetc is faster), and the
ratio of resnetc's best round to the fastest f32 peer's best (a noisy host
only slows runs down, and resnetc's processes, new each round, draw the
noise afresh while the peers' stay in this one). Each peer's
logits are checked against PyTorch's eager output, resnetc's too (`resnetc
run` on the same input), so a fast wrong answer shows.

Exit status 0; 1 if a command failed or an agreement is worse than --tol.
"""

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_onnxruntime as base  # noqa: E402  (the model, export and resnetc helpers)

ROOT = base.ROOT


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def time_calls(f, warmup, iters, batch):
    for _ in range(warmup):
        y = f()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        y = f()
        times.append((time.perf_counter() - t0) * 1000.0)
    return base.latency_stats(times, batch), y


class Ort:
    name, f32 = "ort", True

    def __init__(self, onnx_path, threads):
        self.sess = base.ort_session(onnx_path, threads)
        self.input = self.sess.get_inputs()[0].name

    def run(self, x):
        return lambda: self.sess.run(None, {self.input: x})[0]


class OpenVino:
    def __init__(self, onnx_path, threads, f32):
        import openvino as ov

        self.name, self.f32 = ("ov-f32", True) if f32 else ("ov-default", None)
        core = ov.Core()
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(threads),
        }
        if f32:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        self.model = core.compile_model(str(onnx_path), "CPU", config)
        # An ov.Type; its name (f32, bf16...), not its repr.
        hint = self.model.get_property("INFERENCE_PRECISION_HINT")
        self.precision = getattr(hint, "to_string", lambda: str(hint))()
        if not f32:
            self.f32 = self.precision.lower().endswith("f32")
            self.name = f"ov-default ({self.precision})"
        self.req = self.model.create_infer_request()

    def run(self, x):
        def once():
            self.req.infer({0: x})
            return self.req.get_output_tensor(0).data.copy()

        return once


class Torch:
    name, f32 = "torch", True

    def __init__(self, model, threads, batch):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            traced = torch.jit.trace(model, torch.zeros(batch, 3, 224, 224))
            self.model = torch.jit.freeze(traced)

    def run(self, x):
        xt = torch.from_numpy(x)

        def once():
            with torch.inference_mode():
                return self.model(xt).numpy()

        return once


def agreement(got, want):
    scale = float(np.abs(want).max())
    err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max()) / scale
    return err, bool((got.argmax(1) == want.argmax(1)).all())


def bench_net(name, args, tmp):
    spec, builder = base.NETS[name]
    log(f"== {name} ({spec}): weights and ONNX export")
    model = base.build_model(builder)
    w_path, onnx_path = tmp / f"{name}.safetensors", tmp / f"{name}.onnx"
    base.save_weights(model, w_path)
    base.export_onnx(model, onnx_path)
    rows, errors = [], []
    for batch in args.batches:
        x = base.make_input(batch)
        with torch.no_grad():
            want = model(torch.from_numpy(x)).numpy()
        peers = [Ort(onnx_path, args.threads), OpenVino(onnx_path, args.threads, True),
                 OpenVino(onnx_path, args.threads, False), Torch(model, args.threads, batch)]
        rounds = {p.name: [] for p in peers}
        rounds["resnetc"] = []
        agree = {}
        for r in range(args.rounds):
            log(f"   batch {batch}, round {r + 1}/{args.rounds}")
            for p in peers:
                stats, y = time_calls(p.run(x), args.warmup, args.iters, batch)
                rounds[p.name].append(stats["median"])
                agree[p.name] = agreement(y, want)
            res, err = base.resnetc_bench(args.exe, spec, w_path, batch, args.threads,
                                          args.iters, ["--precision", args.precision])
            if err:
                errors.append(err)
                break
            rounds["resnetc"].append(res["median"])
        x_path, y_path = tmp / f"x{batch}.npy", tmp / f"y{batch}.npy"
        np.save(x_path, x)
        cosine = None
        a, err = base.resnetc_agreement(args.exe, spec, w_path, args.threads, x_path, y_path,
                                        want, ["--precision", args.precision])
        if err:
            errors.append(err)
        else:
            agree["resnetc"] = (a["max_abs_diff_over_max_abs_ort"], a["top1_same"])
            cosine = a["min_logit_cosine"]
        n = min(len(v) for v in rounds.values())
        f32_names = [p.name for p in peers if p.f32]
        ratios = [rounds["resnetc"][i] / min(rounds[k][i] for k in f32_names)
                  for i in range(n)]
        fastest = min(f32_names, key=lambda k: np.median(rounds[k][:n]) if n else 0)
        # Noise here only slows a run down (this host's is one-sided: a whole
        # process at up to 1.7x), so each engine's best round is its speed
        # with the least noise in it: reported beside the median.
        best = (min(rounds["resnetc"][:n]) / min(min(rounds[k][:n]) for k in f32_names)
                if n else None)
        rows.append({
            "net": name, "batch": batch,
            "median_ms": {k: float(np.median(v[:n])) if n else None for k, v in rounds.items()},
            "rounds_ms": rounds,
            "ratio_to_fastest_f32": float(np.median(ratios)) if ratios else None,
            "best_ratio_to_fastest_f32": best,
            "fastest_f32_peer": fastest,
            "agreement_vs_torch": agree,
            "resnetc_min_cosine": cosine,
        })
    return rows, errors


def print_table(rows):
    names = list(rows[0]["median_ms"].keys()) if rows else []
    header = (["net", "batch"] + [f"{k} ms" for k in names]
              + ["resnetc/fastest f32", "best rounds' ratio"])
    lines = []
    for r in rows:
        cells = [r["net"], str(r["batch"])]
        for k in names:
            v = r["median_ms"].get(k)
            cells.append("-" if v is None else f"{v:.2f}")
        ratio = r["ratio_to_fastest_f32"]
        cells.append("-" if ratio is None else f"{ratio:.2f} ({r['fastest_f32_peer']})")
        best = r["best_ratio_to_fastest_f32"]
        cells.append("-" if best is None else f"{best:.2f}")
        lines.append(cells)
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    print(fmt(header))
    print(fmt(["-" * w for w in widths]))
    for l in lines:
        print(fmt(l))
    print("\nagreement with PyTorch eager (max |y - torch| / max |torch|):")
    for r in rows:
        parts = [f"{k} {e:.1e}{'' if same else ' top1!'}"
                 for k, (e, same) in r["agreement_vs_torch"].items()]
        print(f"  {r['net']} b{r['batch']}: " + ", ".join(parts))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default="resnet18,resnet50")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--json")
    ap.add_argument("--exe", type=Path, default=base.EXE)
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"],
                    help="resnetc's; bf16 is checked by top-1 and a logit cosine >= 0.999")
    args = ap.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    if not args.exe.exists():
        log(f"error: {args.exe} is missing: run `cargo build --release` first")
        return 2
    rows, errors = [], []
    with tempfile.TemporaryDirectory(prefix="resnetc-peers-") as d:
        for name in args.nets.split(","):
            r, e = bench_net(name, args, Path(d))
            rows += r
            errors += e
    print_table(rows)
    info = base.machine_info()
    print(f"\n{info.get('cpu')}, {info.get('usable_cpus')} usable CPUs, "
          f"{' '.join(info.get('isa', []))}; {args.threads} threads, {args.rounds} alternating "
          f"rounds of {args.iters} runs; {datetime.datetime.now().isoformat(timespec='minutes')}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in base.versions(args.exe).items()))
    try:
        import openvino
        print(f"openvino {openvino.__version__}")
    except ImportError:
        pass
    print(f"resnetc precision {args.precision}; its smallest logit cosine to PyTorch: "
          + ", ".join(f"{r['net']} b{r['batch']} {r['resnetc_min_cosine']:.6f}" for r in rows
                      if r["resnetc_min_cosine"] is not None))

    def off(r, e, same):
        if args.precision == "bf16":
            return not same or (r["resnetc_min_cosine"] or 0.0) < 0.999
        return e > args.tol or not same

    bad = [f"{r['net']} b{r['batch']} {k}" for r in rows
           for k, (e, same) in r["agreement_vs_torch"].items()
           if k == "resnetc" and off(r, e, same)]
    limit = "top-1 or cosine 0.999" if args.precision == "bf16" else args.tol
    for e in errors + [f"agreement worse than {limit}: {b}" for b in bad]:
        log(f"error: {e}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "machine": info}, indent=1))
    return 1 if errors or bad else 0


if __name__ == "__main__":
    sys.exit(main())
