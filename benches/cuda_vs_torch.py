#!/usr/bin/env python3
"""The CUDA backend on a GPU: golden agreement, then ResNet-50 against PyTorch.

Run by benches/cuda_device.sh (which finds the binary and NVRTC):

    python3 benches/cuda_vs_torch.py --resnetc target/release/resnetc --out out/cuda

1. Golden cases (tests/golden, logits from PyTorch on the CPU): `resnetc run
   --backend cuda` in f32 on every case, tf32 and bf16 on two; the largest
   error of the largest logit, the cosine and top-1 agreement.
2. ResNet-50 (specs/resnet50_v1_5.rn, torchvision's layout) at batch 1, 32
   and 256 in f32, tf32 and bf16: `resnetc bench --backend cuda --json`
   (its latency includes copying the input from the host and the logits
   back) against PyTorch eager on the same GPU (channels_last, cuDNN with
   benchmark mode, the same precision, input already on the device), the
   two alternating config by config. Prints one table, writes JSON.
Needs numpy; torch (and torchvision if present) for part 2.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def why(err):
    """The headline of resnetc's error output."""
    lines = [l.strip(" ×") for l in err.splitlines() if "×" in l or l.startswith("error")]
    return (lines or err.strip().splitlines() or ["failed"])[0]


def sh(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    return r.returncode, r.stdout, r.stderr


def golden(resnetc, out, deadline):
    rows = []
    cases = sorted(d for d in os.listdir(os.path.join(ROOT, "tests/golden"))
                   if os.path.exists(os.path.join(ROOT, "tests/golden", d, "case.json")))
    for case in cases:
        d = os.path.join(ROOT, "tests/golden", case)
        c = json.load(open(os.path.join(d, "case.json")))
        if isinstance(c["weights"], str):
            w = os.path.join(d, c["weights"])
        else:
            w = os.path.join(out, case + ".safetensors")
            init = c["weights"]["init"]
            cmd = [resnetc, "init", c["spec"], "-o", w, "--seed", str(init["seed"])]
            if init.get("randomize_bn"):
                cmd.append("--randomize-bn")
            code, _, err = sh(cmd)
            if code:
                rows.append((case, "-", f"init failed: {err.strip()}"))
                continue
        want = np.load(os.path.join(d, "logits.npy"))
        precisions = ["f32"] + (["tf32", "bf16"] if case in ("resnet50_64", "cifar_resnet56") else [])
        for p in precisions:
            if time.time() > deadline:
                rows.append((case, p, "skipped: out of time"))
                continue
            y = os.path.join(out, f"{case}_{p}.npy")
            code, _, err = sh([resnetc, "run", c["spec"], "--weights", w, "--input",
                               os.path.join(d, "input.npy"), "--output", y, "--top", "0",
                               "--backend", "cuda", "--precision", p])
            if code:
                rows.append((case, p, "failed: " + why(err)))
                continue
            got = np.load(y)
            rel = float(np.abs(got - want).max() / np.abs(want).max())
            cos = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
            top1 = bool((got.argmax(1) == want.argmax(1)).all())
            rows.append((case, p, f"error {rel:.2e} of the largest logit, cosine {cos:.6f}, top-1 {'agrees' if top1 else 'DIFFERS'}"))
    return rows


def torch_model(torch):
    try:
        import torchvision
        return torchvision.models.resnet50()
    except ImportError:
        pass
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, planes, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
            self.c2, self.b2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes)
            self.c3, self.b3 = nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4)
            self.down = None
            if stride != 1 or cin != planes * 4:
                self.down = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))

        def forward(self, x):
            r = x if self.down is None else self.down(x)
            y = torch.relu(self.b1(self.c1(x)))
            y = torch.relu(self.b2(self.c2(y)))
            return torch.relu(self.b3(self.c3(y)) + r)

    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for planes, n, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for i in range(n):
            layers.append(Bottleneck(cin, planes, stride if i == 0 else 1))
            cin = planes * 4
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)]
    return nn.Sequential(*layers)


def bench_torch(torch, model, batch, precision, iters):
    torch.backends.cudnn.benchmark = True
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    m = model.to("cuda", dtype).to(memory_format=torch.channels_last).eval()
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(5):
            m(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            m(x)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resnetc", required=True)
    ap.add_argument("--out", default="out/cuda")
    ap.add_argument("--budget", type=float, default=280, help="seconds for the whole run")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    deadline = t0 + args.budget
    report = {"golden": [], "bench": []}
    print("golden cases through --backend cuda")
    for case, p, what in golden(args.resnetc, args.out, t0 + 0.35 * args.budget):
        print(f"  {case:<20} {p:<5} {what}")
        report["golden"].append({"case": case, "precision": p, "result": what})
    try:
        import torch
        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False
    model = torch_model(torch) if have_torch else None
    rows = []
    for batch in [1, 32, 256]:
        for p in ["f32", "tf32", "bf16"]:
            if time.time() > deadline - 20:
                rows.append((batch, p, None, None, "out of time"))
                continue
            iters = {1: 50, 32: 20, 256: 8}[batch]
            code, out, err = sh([args.resnetc, "bench", "specs/resnet50_v1_5.rn", "--backend", "cuda",
                                 "--precision", p, "--batch", str(batch), "--iters", str(iters), "--json"])
            ours = json.loads(out)["latency_ms"]["median"] if code == 0 else None
            theirs = bench_torch(torch, model, batch, p, iters) if have_torch else None
            note = "" if code == 0 else why(err)
            rows.append((batch, p, ours, theirs, note))
            report["bench"].append({"batch": batch, "precision": p, "resnetc_ms": ours, "torch_ms": theirs, "note": note})
    print("\nResNet-50 (v1.5, 224x224), resnetc --backend cuda against PyTorch eager (channels_last, cuDNN)")
    print(f"{'batch':>5} {'prec':<5} {'resnetc ms':>10} {'img/s':>9} {'torch ms':>9} {'img/s':>9} {'ratio':>6}")
    for batch, p, ours, theirs, note in rows:
        f = lambda v: f"{v:10.3f}" if v else f"{'-':>10}"
        ips = lambda v: f"{batch / v * 1e3:9.0f}" if v else f"{'-':>9}"
        ratio = f"{ours / theirs:6.2f}" if ours and theirs else f"{'-':>6}"
        print(f"{batch:>5} {p:<5} {f(ours)} {ips(ours)} {f(theirs).strip():>9} {ips(theirs)} {ratio} {note}")
    json.dump(report, open(os.path.join(args.out, "cuda_device.json"), "w"), indent=1)
    print(f"\n{time.time() - t0:.0f} s; {os.path.join(args.out, 'cuda_device.json')}")


if __name__ == "__main__":
    sys.exit(main())
