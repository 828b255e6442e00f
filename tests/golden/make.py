#!/usr/bin/env python3
"""Golden outputs for resnetc's interpreter, computed with PyTorch.

Usage (from the repository root, with the reference venv):

    /root/ref-venv/bin/python tests/golden/make.py

Writes, under tests/golden/:

  <case>/case.json            spec, input [C,H,W], batch, weights, about
  <case>/input.npy            float32 [B,C,H,W], seeded torch.randn
  <case>/logits.npy           float32 [B,classes], eval mode, BEFORE softmax
  <case>/weights.safetensors  only for the CIFAR cases (PyTorch init)
  image/photo.{png,jpg}       a synthetic photo-like 400x300 RGB image
  image/photo_{png,jpg}.npy   its torchvision ImageNet preprocessing [3,224,224]
  resnet20_pad_after.rn       ResNet-20 with option A padding "after"

Cases whose case.json says {"init": {"seed": S, "randomize_bn": true}} carry
no weights: resnetc regenerates them with the deterministic init below
(`resnetc_init`), which is reproduced bit-for-bit from the spec of the
algorithm in tests/golden/README.md.

Then it reloads every case from disk, recomputes the logits and checks them.
"""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.models as tvm
from safetensors.torch import load_file, save_file
from torchvision.models.resnet import Bottleneck

torch.set_num_threads(1)  # small forward passes; keep CPU use modest

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
MASK = (1 << 64) - 1


# --------------------------------------------------------------------------
# Deterministic init (mirrored by resnetc in Rust)
# --------------------------------------------------------------------------

def splitmix64(x):
    """SplitMix64 finaliser on a uint64 numpy array (wrapping arithmetic)."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def fnv1a64(key: str) -> int:
    h = 0xCBF29CE484222325
    for b in key.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def stream_base(seed: int, key: str) -> int:
    return int(splitmix64(np.uint64((seed & MASK) ^ fnv1a64(key))))


def uniforms(seed: int, key: str, n: int) -> np.ndarray:
    """u(seed, key, i) for i = 0..n-1: float64 in (0, 1]."""
    base = np.uint64(stream_base(seed, key))
    with np.errstate(over="ignore"):
        z = splitmix64(base + np.arange(n, dtype=np.uint64))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def normals(seed: int, key: str, n: int) -> np.ndarray:
    """Box-Muller: element j uses u(2j) and u(2j+1).

    log and cos go through Python's math module (the C library's log/cos,
    which Rust's f64::ln/cos also call): numpy's vectorised float64 log
    differs from libm's by one ulp on ~0.3% of inputs.
    """
    u = uniforms(seed, key, 2 * n)
    u1, u2 = u[0::2].tolist(), u[1::2].tolist()
    two_pi = 2.0 * math.pi
    r = np.fromiter(map(math.log, u1), dtype=np.float64, count=n)
    c = np.fromiter((math.cos(two_pi * x) for x in u2), dtype=np.float64, count=n)
    return np.sqrt(-2.0 * r) * c


def resnetc_init(model: nn.Module, seed: int, randomize_bn: bool) -> nn.Module:
    """Fill every parameter and BN running stat of `model` by state_dict key.

    conv weight [O, I/g, kh, kw]: normal * sqrt(2 / (O*kh*kw))   (kaiming fan_out)
    conv bias:                    (2u - 1) / sqrt((I/g)*kh*kw)
    fc weight [O, I], fc bias:    (2u - 1) / sqrt(I)
    BN (randomize_bn):            weight 0.5 + u, bias (u - 0.5) * 0.4,
                                  running_mean (u - 0.5) * 0.4, running_var 0.5 + u
    BN (otherwise):               1, 0, 0, 1
    Element order is row-major; float64 throughout, float32 at the end.
    num_batches_tracked is left alone.
    """
    filled = set()

    def put(key, tensor, values):
        assert values.shape == tuple(tensor.shape), key
        with torch.no_grad():
            tensor.copy_(torch.from_numpy(values.astype(np.float32)))
        filled.add(key)

    for name, m in model.named_modules():
        p = f"{name}." if name else ""
        if isinstance(m, nn.Conv2d):
            o, ig, kh, kw = m.weight.shape
            n = m.weight.numel()
            std = math.sqrt(2.0 / (o * kh * kw))
            put(p + "weight", m.weight,
                (normals(seed, p + "weight", n) * std).reshape(m.weight.shape))
            if m.bias is not None:
                bound = math.sqrt(ig * kh * kw)
                put(p + "bias", m.bias, (2.0 * uniforms(seed, p + "bias", o) - 1.0) / bound)
        elif isinstance(m, nn.Linear):
            o, i = m.weight.shape
            s = math.sqrt(i)
            put(p + "weight", m.weight,
                ((2.0 * uniforms(seed, p + "weight", o * i) - 1.0) / s).reshape(o, i))
            if m.bias is not None:
                put(p + "bias", m.bias, (2.0 * uniforms(seed, p + "bias", o) - 1.0) / s)
        elif isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            if randomize_bn:
                vals = {
                    "weight": 0.5 + uniforms(seed, p + "weight", c),
                    "bias": (uniforms(seed, p + "bias", c) - 0.5) * 0.4,
                    "running_mean": (uniforms(seed, p + "running_mean", c) - 0.5) * 0.4,
                    "running_var": 0.5 + uniforms(seed, p + "running_var", c),
                }
            else:
                vals = {"weight": np.ones(c), "bias": np.zeros(c),
                        "running_mean": np.zeros(c), "running_var": np.ones(c)}
            for k, v in vals.items():
                put(p + k, getattr(m, k), v)
        else:
            own = list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False))
            assert not own, f"resnetc_init: no rule for {type(m).__name__} {name!r}"

    keys = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert keys == filled, sorted(keys ^ filled)
    return model


# --------------------------------------------------------------------------
# Models (module names = resnetc value names = torchvision state_dict keys)
# --------------------------------------------------------------------------

def option_a(x, stride, out_channels, pad):
    """Option A shortcut: subsample by `stride`, zero-pad the new channels,
    split evenly before and after ("split") or all after ("after")."""
    if stride != 1:
        x = x[:, :, ::stride, ::stride]
    p = out_channels - x.shape[1]
    if p:
        before = p // 2 if pad == "split" else 0
        x = F.pad(x, (0, 0, 0, 0, before, p - before))
    return x


class CifarBlock(nn.Module):
    def __init__(self, cin, cout, stride, pad):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride, self.cout, self.pad = stride, cout, pad

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + option_a(x, self.stride, self.cout, self.pad))


class CifarResNet(nn.Module):
    """He et al. 2015 section 4.2: depth 6n+2, option A shortcuts."""

    def __init__(self, n, pad="split", num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, (cout, s) in enumerate([(16, 1), (32, 2), (64, 2)], 1):
            blocks = []
            for j in range(n):
                blocks.append(CifarBlock(cin, cout, s if j == 0 else 1, pad))
                cin = cout
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class PreActBottleneck(nn.Module):
    """He et al. 2016: BN-ReLU before each conv; projection (1x1, no BN) on
    relu(bn1(x)) where the shape changes; identity on the raw x; no ReLU
    after the add."""

    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

    def forward(self, x):
        pre = F.relu(self.bn1(x))
        sc = x if self.downsample is None else self.downsample(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + sc


class PreActResNet164(nn.Module):
    def __init__(self, num_classes=10, n=18):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        cin = 16
        for i, (planes, s) in enumerate([(16, 1), (32, 2), (64, 2)], 1):
            blocks = []
            for j in range(n):
                blocks.append(PreActBottleneck(cin, planes, s if j == 0 else 1))
                cin = planes * PreActBottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def to_v1(model):
    """Paper layout: move each bottleneck's stride from the 3x3 to the first 1x1."""
    for m in model.modules():
        if isinstance(m, Bottleneck):
            m.conv1.stride, m.conv2.stride = m.conv2.stride, (1, 1)
    return model


def torch_init(model):
    """torchvision's ResNet init: kaiming normal (fan_out, relu) convs, BN 1/0,
    Linear keeps nn.Linear's default. Call under torch.manual_seed."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def randomize_bn_torch(model):
    """weight ~ U(0.5,1.5), bias ~ U(-0.2,0.2), running_mean ~ U(-0.2,0.2),
    running_var ~ U(0.5,1.5), BN by BN in module order (global torch RNG)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model


# open_nsfw's PyTorch model lives with the count references.
sys.path.insert(0, str(ROOT / "tests" / "reference"))
from counts import OpenNsfw  # noqa: E402


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------

CASES = [
    # name, spec, builder, input [C,H,W], batch, seed, weights ("file" | "init"), about
    ("cifar_resnet20", "specs/cifar/resnet20.rn", lambda: CifarResNet(3), [3, 32, 32], 2, 0,
     "file", "CIFAR ResNet-20 (option A, padding split before/after) with PyTorch's "
             "init and randomized BN, weights loaded from safetensors."),
    ("cifar_resnet56", "specs/cifar/resnet56.rn", lambda: CifarResNet(9), [3, 32, 32], 2, 1,
     "file", "CIFAR ResNet-56 (n = 9, option A) with PyTorch's init and randomized BN, "
             "weights loaded from safetensors."),
    ("resnet18_64", "specs/resnet18.rn", lambda: tvm.resnet18(weights=None), [3, 64, 64], 2, 1,
     "init", "torchvision ResNet-18 (basic blocks, projection shortcuts) at 64x64 with "
             "resnetc's deterministic init."),
    ("resnet50_64", "specs/resnet50.rn", lambda: to_v1(tvm.resnet50(weights=None)),
     [3, 64, 64], 2, 2,
     "init", "ResNet-50 in the paper's layout (stride on the first 1x1 of each bottleneck) "
             "at 64x64 with resnetc's deterministic init."),
    ("resnet50_v1_5_64", "specs/resnet50_v1_5.rn", lambda: tvm.resnet50(weights=None),
     [3, 64, 64], 2, 3,
     "init", "torchvision ResNet-50 (v1.5: stride on the 3x3) at 64x64 with resnetc's "
             "deterministic init."),
    ("preact_resnet164", "examples/preact_resnet164.rn", lambda: PreActResNet164(),
     [3, 32, 32], 2, 4,
     "init", "Pre-activation ResNet-164 (projection on relu(bn1(x)) without BN, raw identity, "
             "no ReLU after the add, final bn + relu) with resnetc's deterministic init."),
    ("resnet20_pad_after", "tests/golden/resnet20_pad_after.rn",
     lambda: CifarResNet(3, pad="after"), [3, 32, 32], 2, 5,
     "init", "CIFAR ResNet-20 with option A padding all new channels after the old ones "
             "(shortcut A(pad = \"after\")) with resnetc's deterministic init."),
    ("open_nsfw_64", "examples/open_nsfw.rn", lambda: OpenNsfw(), [3, 64, 64], 2, 6,
     "init", "open_nsfw's layout (biased convs without BN, biased projections, a ceil-mode "
             "max pool: 32 -> 16 where floor gives 15) with resnetc's deterministic init."),
    ("resnet50_dilated_64", "examples/resnet50_dilated.rn",
     lambda: tvm.resnet50(weights=None, replace_stride_with_dilation=[False, True, True]),
     [3, 64, 64], 2, 7,
     "init", "torchvision ResNet-50 with replace_stride_with_dilation=[False, True, True] "
             "(dilation 2 and 4) at 64x64 with resnetc's deterministic init."),
]

# `make.py NAME...` remakes only those cases (the others' files stay as they are).
ONLY = set(sys.argv[1:])


def input_for(seed, batch, chw):
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(batch, *chw, generator=g, dtype=torch.float32)


def build(name, builder, seed, kind):
    """The model for a case, with its weights, in eval mode."""
    if kind == "file":
        torch.manual_seed(seed)
        model = randomize_bn_torch(torch_init(builder()))
    else:
        torch.manual_seed(12345)  # irrelevant: resnetc_init overwrites everything
        model = resnetc_init(builder(), seed, randomize_bn=True)
    return model.eval()


def logits_of(model, x):
    with torch.no_grad():
        return model(x).contiguous().numpy().astype(np.float32)


def write_pad_after_spec():
    src = (ROOT / "specs/cifar/resnet20.rn").read_text()
    assert "  shortcut A\n" in src and "network resnet20 {" in src
    out = src.replace("  shortcut A\n", '  shortcut A(pad = "after")\n', 1)
    out = out.replace("network resnet20 {", "network resnet20_pad_after {", 1)
    out = ("# Generated by tests/golden/make.py from specs/cifar/resnet20.rn: the option A\n"
           "# shortcut appends the new zero channels after the old ones (Torch's original\n"
           "# CIFAR code) instead of splitting them before and after.\n") + out
    (GOLDEN / "resnet20_pad_after.rn").write_text(out)


def resnetc_binary():
    for b in ("release", "debug"):
        p = ROOT / "target" / b / "resnetc"
        if p.exists():
            return p
    return None


def check_names_against_ir(spec, model, batch, chw):
    """Every conv/bn/fc value in resnetc's IR must be a module with weights, and
    vice versa. Skipped when no resnetc binary has been built."""
    exe = resnetc_binary()
    if exe is None:
        return "skipped (no target/*/resnetc)"
    ir = subprocess.run(
        [str(exe), "compile", spec, "-o", "-", "-O", "0", "--batch", str(batch),
         "--input", "x".join(map(str, chw))],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout
    ir_names = set()
    for line in ir.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=" and parts[2].split("(")[0] in (
                "conv2d", "batch_norm", "scale_shift", "linear"):
            ir_names.add(parts[0])
    mod_names = {n for n, m in model.named_modules()
                 if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))}
    assert ir_names == mod_names, (spec, sorted(ir_names ^ mod_names))
    return f"names match IR ({len(ir_names)} layers)"


def make_cases():
    write_pad_after_spec()
    for name, spec, builder, chw, batch, seed, kind, about in CASES:
        if ONLY and name not in ONLY:
            continue
        d = GOLDEN / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        model = build(name, builder, seed, kind)
        x = input_for(seed, batch, chw)
        y = logits_of(model, x)
        np.save(d / "input.npy", x.numpy())
        np.save(d / "logits.npy", y)
        if kind == "file":
            sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
            for k, v in sd.items():
                assert v.dtype == (torch.int64 if k.endswith("num_batches_tracked")
                                   else torch.float32), k
            save_file(sd, str(d / "weights.safetensors"))
            weights = "weights.safetensors"
        else:
            weights = {"init": {"seed": seed, "randomize_bn": True}}
        case = {"spec": spec, "input": chw, "batch": batch, "weights": weights, "about": about}
        (d / "case.json").write_text(json.dumps(case, indent=2) + "\n")
        print(f"wrote {name}: logits {list(y.shape)}  "
              f"{check_names_against_ir(spec, model, batch, chw)}")


def verify_cases():
    """Reload every case from disk and recompute its logits."""
    print("\nverification (reload weights / regenerate init, recompute):")
    for name, spec, builder, chw, batch, seed, kind, about in CASES:
        if ONLY and name not in ONLY:
            continue
        d = GOLDEN / name
        case = json.loads((d / "case.json").read_text())
        assert (ROOT / case["spec"]).exists(), case["spec"]
        x = np.load(d / "input.npy")
        want = np.load(d / "logits.npy")
        assert x.dtype == np.float32 and list(x.shape) == [case["batch"], *case["input"]]
        assert want.dtype == np.float32 and want.shape[0] == case["batch"]
        torch.manual_seed(999)  # a different default init, to be overwritten
        model = builder()
        if case["weights"] == "weights.safetensors":
            model.load_state_dict(load_file(str(d / "weights.safetensors")), strict=True)
        else:
            init = case["weights"]["init"]
            resnetc_init(model, init["seed"], init["randomize_bn"])
        got = logits_of(model.eval(), torch.from_numpy(x))
        err = float(np.abs(got - want).max())
        assert err == 0.0, (name, err)
        print(f"  {name:20s} logits {list(want.shape)}  max|logit| = {np.abs(want).max():.6g}"
              f"  (recomputed: max diff {err:g})")


def print_init_crosscheck():
    """First values of resnetc_init(resnet18, seed 1) to compare with Rust."""
    seed = 1
    m = resnetc_init(tvm.resnet18(weights=None), seed, randomize_bn=True)
    sd = m.state_dict()
    print("deterministic init cross-check, resnet18, seed 1:")
    for key in ("conv1.weight", "fc.bias"):
        v = sd[key].flatten()[:3].numpy()
        bits = " ".join(f"0x{b:08x}" for b in v.view(np.uint32))
        print(f"  {key:13s} fnv1a64=0x{fnv1a64(key):016x} base=0x{stream_base(seed, key):016x}")
        print(f"  {'':13s} first3 = {[repr(float(f)) for f in v]}  bits = {bits}")
    print(f"  u(1, 'conv1.weight', 0..3) = {uniforms(seed, 'conv1.weight', 3).tolist()}")
    print(f"  bn1.running_var[:3] = {sd['bn1.running_var'][:3].tolist()}")


# --------------------------------------------------------------------------
# Image: a synthetic photo-like picture and its ImageNet preprocessing
# --------------------------------------------------------------------------

def make_photo(seed=7, w=400, h=300):
    """Smooth sky, a glowing sun, layered hills, a lake and a few soft shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = yy / (h - 1)
    sky_top, sky_bot = np.array([40, 90, 170]), np.array([200, 220, 235])
    img = sky_top + (sky_bot - sky_top) * t[..., None] ** 0.8

    # sun with a soft glow
    sx, sy = rng.uniform(0.6, 0.85) * w, rng.uniform(0.15, 0.3) * h
    d = np.hypot(xx - sx, yy - sy)
    glow = np.exp(-(d / 60.0) ** 2)[..., None]
    img = img * (1 - 0.6 * glow) + np.array([255, 230, 170]) * 0.6 * glow
    disc = np.clip(22.0 - d, 0, 1)[..., None]
    img = img * (1 - disc) + np.array([255, 248, 220]) * disc

    # soft clouds: a few wide gaussian blobs
    for _ in range(4):
        cx, cy = rng.uniform(0, w), rng.uniform(0.05, 0.35) * h
        a = np.exp(-(((xx - cx) / rng.uniform(40, 90)) ** 2 + ((yy - cy) / rng.uniform(8, 16)) ** 2))
        img = img * (1 - 0.7 * a[..., None]) + 245 * 0.7 * a[..., None]

    # layered hills, far to near, each darker and greener, with a shading gradient
    layers = [(0.55, [110, 130, 150]), (0.65, [70, 120, 70]), (0.78, [50, 95, 40])]
    for base, col in layers:
        k = rng.uniform(1.5, 3.5)
        ph = rng.uniform(0, 2 * np.pi)
        ridge = (base + 0.05 * np.sin(2 * np.pi * k * xx[0] / w + ph)
                 + 0.02 * np.sin(2 * np.pi * 3.1 * k * xx[0] / w + 2 * ph)) * h
        inside = np.clip(yy - ridge[None, :] + 0.5, 0, 1)[..., None]
        shade = (1.0 - 0.35 * np.clip((yy - ridge[None, :]) / (0.3 * h), 0, 1))[..., None]
        img = img * (1 - inside) + np.array(col) * shade * inside

    # a lake in the foreground, reflecting the sky gradient
    lake = np.exp(-(((xx - 0.3 * w) / (0.25 * w)) ** 2 + ((yy - 0.9 * h) / (0.06 * h)) ** 2))
    lake = np.clip((lake - 0.35) * 6, 0, 1)[..., None]
    water = np.array([60, 110, 160]) + 40 * np.sin(yy / 3.0)[..., None] * 0.2
    img = img * (1 - lake) + water * lake

    # a red-roofed house with soft edges
    hx, hy = 0.68 * w, 0.80 * h
    wall = (np.clip(22 - np.abs(xx - hx), 0, 1) * np.clip(16 - np.abs(yy - hy), 0, 1))[..., None]
    img = img * (1 - wall) + np.array([225, 210, 180]) * wall
    roof = (np.clip((yy - (hy - 34)) - 0.8 * np.abs(xx - hx) + 1, 0, 1)
            * np.clip((hy - 16) - yy + 1, 0, 1))[..., None]
    img = img * (1 - roof) + np.array([160, 45, 35]) * roof

    # low-frequency brightness variation (vignette); fine noise is left out to
    # keep the PNG small
    vign = 1.0 - 0.25 * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2)
    img = img * vign[..., None]
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def imagenet_preprocess(path):
    from PIL import Image
    from torchvision import transforms as T
    tf = T.Compose([
        T.Resize(256, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
        T.CenterCrop(224),
        T.ToTensor(),
        T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    with Image.open(path) as im:
        return tf(im.convert("RGB")).numpy().astype(np.float32)


def make_image():
    from PIL import Image
    d = GOLDEN / "image"
    d.mkdir(parents=True, exist_ok=True)
    pixels = make_photo()
    im = Image.fromarray(pixels, "RGB")
    im.save(d / "photo.png", optimize=True)
    im.save(d / "photo.jpg", quality=90)
    for ext in ("png", "jpg"):
        x = imagenet_preprocess(d / f"photo.{ext}")
        assert x.shape == (3, 224, 224)
        np.save(d / f"photo_{ext}.npy", x)
        size = (d / f"photo.{ext}").stat().st_size
        assert size < 100_000, (ext, size)
        print(f"wrote image/photo.{ext} ({size} bytes) and photo_{ext}.npy "
              f"(min {x.min():.4f}, max {x.max():.4f})")


def main():
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"numpy {np.__version__}")
    print_init_crosscheck()
    print()
    make_cases()
    print()
    if not ONLY:
        make_image()
    verify_cases()


if __name__ == "__main__":
    main()
