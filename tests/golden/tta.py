#!/usr/bin/env python3
"""Golden scores for resnetc's test-time views, computed with torchvision.

    python tests/golden/tta.py

On tests/golden/image/photo.png (400x300) and ResNet-18 with resnetc's
deterministic init (seed 11, randomized BN), writes tests/golden/tta/:

  ten_crop.npy     [1000]  Resize(256) + TenCrop(224), softmax averaged
  multi_scale.npy  [1000]  Resize(224) and Resize(256) of the whole image
                           (fully convolutional), softmax averaged
  full_flip.npy    [1000]  Resize(160), the image and its flip, averaged
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torchvision.models as tvm
from PIL import Image
from torchvision import transforms as T

HERE = Path(__file__).resolve().parent
sys.argv = [sys.argv[0], "none"]  # make.py: remake no case on import
sys.path.insert(0, str(HERE))
from make import resnetc_init  # noqa: E402

SEED = 11
NORM = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])


def resize(s):
    return T.Resize(s, interpolation=T.InterpolationMode.BILINEAR, antialias=True)


def scores(model, views):
    with torch.no_grad():
        return torch.softmax(model(torch.stack(views)), 1).mean(0).numpy().astype(np.float32)


def main():
    torch.set_num_threads(1)
    model = resnetc_init(tvm.resnet18(weights=None), SEED, randomize_bn=True).eval()
    img = Image.open(HERE / "image/photo.png").convert("RGB")
    out = HERE / "tta"
    out.mkdir(exist_ok=True)
    crops = T.TenCrop(224)(resize(256)(img))
    ten = scores(model, [NORM(T.ToTensor()(c)) for c in crops])
    np.save(out / "ten_crop.npy", ten)
    ms = [scores(model, [NORM(T.ToTensor()(resize(s)(img)))]) for s in (224, 256)]
    np.save(out / "multi_scale.npy", np.mean(ms, 0).astype(np.float32))
    full = NORM(T.ToTensor()(resize(160)(img)))
    np.save(out / "full_flip.npy", scores(model, [full, torch.flip(full, [2])]))
    print("top-1:", ten.argmax(), np.load(out / "multi_scale.npy").argmax())


if __name__ == "__main__":
    main()
