#!/usr/bin/env python3
"""Every spec and example exported to ONNX, checked by onnx and onnxruntime.

    python tests/onnx/check.py target/debug/resnetc

For each: `resnetc init` weights, `resnetc export` (dynamic batch, BN folded;
one spec with --keep-bn), onnx.checker.check_model(full_check=True), then
onnxruntime's logits against `resnetc run --output` on the same input, at
batch 1 and 3 from the one file, at small sizes (CIFAR 32x32, ImageNet nets
64x64). Fails beyond 1e-4 of the largest logit.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

TOL = 1e-4
ROOT = Path(__file__).resolve().parents[2]


def specs():
    for d in ("specs", "specs/cifar", "examples"):
        yield from sorted((ROOT / d).glob("*.rn"))
    # Ceil-mode pools (average too), dilation, a biased projection, option A.
    yield ROOT / "tests/onnx/constructs.rn"


def sh(*args):
    r = subprocess.run([str(a) for a in args], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def main():
    exe = sys.argv[1]
    worst, n = 0.0, 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for spec in specs():
            rel = spec.relative_to(ROOT)
            ir = sh(exe, "compile", rel, "-o", "-", "-O", "0")
            size = 64 if "224" in ir.splitlines()[0] else 32
            chw = f"3x{size}x{size}"
            w = tmp / f"{spec.stem}.safetensors"
            # Random BN statistics blow 1202 layers up to inf: plain BN there.
            rand = [] if spec.stem == "resnet1202" else ["--randomize-bn"]
            sh(exe, "init", rel, "-o", w, *rand)
            keep = ["--keep-bn"] if spec.stem == "resnet50_v1_5" else []
            model = tmp / f"{spec.stem}.onnx"
            sh(exe, "export", rel, "--weights", w, "-o", model, "--input", chw, *keep)
            m = onnx.load(str(model))
            onnx.checker.check_model(m, full_check=True)
            sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
            for batch in (1, 3):
                rng = np.random.default_rng(batch)
                x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
                np.save(tmp / "x.npy", x)
                sh(exe, "run", rel, "--weights", w, "--input", tmp / "x.npy",
                   "--output", tmp / "y.npy", "--top", "1")
                want = np.load(tmp / "y.npy")
                got = sess.run(["logits"], {"input": x})[0]
                err = float(np.abs(got - want).max() / np.abs(want).max())
                worst = max(worst, err)
                flag = "" if err <= TOL else "   <-- beyond 1e-4"
                print(f"{str(rel):36s} {chw} batch {batch}{' keep-bn' if keep else ''}: "
                      f"max rel {err:.2e}{flag}")
                if err > TOL:
                    sys.exit(f"{rel}: onnxruntime and resnetc differ by {err:.2e}")
            n += 1
    print(f"{n} specs, examples and test nets: all specs and examples agree with onnxruntime {ort.__version__} "
          f"(worst {worst:.2e}); onnx {onnx.__version__} checker passes on all")


if __name__ == "__main__":
    main()
