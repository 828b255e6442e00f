#!/usr/bin/env bash
# The JIT under valgrind memcheck: CIFAR ResNet-20 and -56 (planar GEMM
# path) and ResNet-18 at 32x32 (blocked direct convs), each on the AVX2 and
# the portable kernel set (valgrind 3.19 has no AVX-512), one thread. Every
# run must report 0 errors.
#
#   benches/valgrind.sh [--quick]     (--quick: ResNet-20 only, as CI runs it)
#
# RESNETC_BIN names a resnetc binary to check instead of building one.
#
# Needs valgrind (Debian's package) and python3 (for the inputs).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "SKIPPED valgrind checks: no valgrind (apt-get install valgrind)"; exit 0; }
bin=${RESNETC_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release -q
    bin=target/release/resnetc
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cases="specs/cifar/resnet20.rn:32 specs/cifar/resnet56.rn:32 specs/resnet18.rn:32"
[ "${1:-}" = "--quick" ] && cases="specs/cifar/resnet20.rn:32"
sets="portable"
grep -q avx2 /proc/cpuinfo && sets="avx2 portable"
python3 - "$dir/x.npy" <<'PY'
import struct, sys
n = 3 * 32 * 32
h = "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 32, 32), }"
h += " " * ((64 - (10 + len(h) + 1) % 64) % 64) + "\n"
data = struct.pack("<%df" % n, *[((i * 7919) % 97) / 48.0 - 1.0 for i in range(n)])
open(sys.argv[1], "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode() + data)
PY
failed=0
for c in $cases; do
    spec=${c%%:*}
    "$bin" init "$spec" -o "$dir/w.safetensors" --randomize-bn >/dev/null
    for k in $sets; do
        start=$(date +%s)
        if valgrind --error-exitcode=99 --smc-check=all-non-file --log-file="$dir/vg.log" \
            "$bin" run "$spec" --weights "$dir/w.safetensors" --input "$dir/x.npy" --kernels "$k" --threads 1 --top 1 >/dev/null 2>&1; then
            verdict="ok"
        else
            verdict="FAILED"
            failed=1
        fi
        summary=$(grep "ERROR SUMMARY" "$dir/vg.log" | sed 's/==[0-9]*== //')
        printf '%-28s %-9s %-7s %s (%ss)\n' "$spec" "$k" "$verdict" "$summary" "$(( $(date +%s) - start ))"
        [ "$verdict" = ok ] || cat "$dir/vg.log" | head -60
    done
done
exit $failed
