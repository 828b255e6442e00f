#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the CUDA backend's agreement and speed,
# in one run of under five minutes. Needs the resnetc binary (built here if
# cargo is present, else RESNETC_BIN or target/release/resnetc), NVRTC (from
# the CUDA toolkit or PyTorch's wheels; found below) and, for the speed
# table, PyTorch with torchvision (or without: the script builds ResNet-50
# itself).
#
#   benches/cuda_device.sh [OUT_DIR]
#
# 1. The golden cases (tests/golden, logits made by PyTorch) through
#    `resnetc run --backend cuda` in f32, tf32 and bf16: the largest error
#    of the largest logit, the logit cosine and top-1 agreement.
# 2. ResNet-50 (torchvision's layout) at batch 1, 32 and 256 in f32, tf32
#    and bf16 against PyTorch eager (channels_last, cuDNN, the same
#    precision), alternating in rounds: images/s and latency.
# It prints one table and writes OUT_DIR/cuda_device.json.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-out/cuda}
mkdir -p "$out"
start=$(date +%s)

bin=${RESNETC_BIN:-}
if [ -z "$bin" ]; then
    if command -v cargo >/dev/null 2>&1; then
        cargo build --release -q && bin=target/release/resnetc
    elif [ -x out/device/resnetc ]; then
        bin=out/device/resnetc
    else
        bin=target/release/resnetc
    fi
fi
[ -x "$bin" ] || { echo "no resnetc binary (set RESNETC_BIN)"; exit 1; }

# NVRTC: the toolkit's, else PyTorch's wheel's.
py=${PYTHON:-python3}
for d in "$(dirname "$(command -v nvcc 2>/dev/null || echo /usr/local/cuda/bin/nvcc)")/../lib64" \
         /usr/local/cuda/lib64 \
         $("$py" -c 'import site, glob; print(" ".join(glob.glob(site.getsitepackages()[0] + "/nvidia/*/lib")))' 2>/dev/null); do
    if ls "$d"/libnvrtc.so* >/dev/null 2>&1; then
        export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
    fi
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"

"$py" benches/cuda_vs_torch.py --resnetc "$bin" --out "$out" --budget $((280 - ($(date +%s) - start)))
echo "cuda_device.sh: $(( $(date +%s) - start )) s"
