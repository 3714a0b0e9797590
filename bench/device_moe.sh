#!/usr/bin/env bash
# The AMX tests and the MoE-layer tables of issue 4 on the device machine (16 cores, AMX).
# Run from the repository root once ktx is installed there; results go to $OUT (the device
# tool's folder that comes back) or bench/results/device.
#   bash bench/device_moe.sh
set -euo pipefail
out=${OUT:-bench/results/device}
mkdir -p "$out"
threads=${THREADS:-$(python -c "from ktx.core import cpu; print(cpu.default_threads())")}

# AMX: the tile self-test, and every kernel test on the real tile instructions
python -m pytest -q -m amx tests/core/test_cpu.py tests/core/test_qmatmul.py tests/core/test_cpu_moe.py \
  2>&1 | tee "$out/amx-tests.txt"

# Decode to prefill, AMX beside AVX-512, V2-Lite- and V3-shaped layers
for preset in v2-lite v3; do
  for isa in amx avx512; do
    KTX_ISA=$isa ktx bench moe --preset "$preset" --type q4_k --tokens 1,4,16,64,256,1024 \
      --threads "$threads" --json > "$out/moe-$preset-q4_k-$isa.json"
  done
done
echo "results in $out"
