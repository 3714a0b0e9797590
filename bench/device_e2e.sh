#!/usr/bin/env bash
# Issue 5 on the device machine (1x H100, 16-core AMX Xeon): the cuda-marked tests, then the
# end-to-end benchmark on synthetic files: DeepSeek-V2-Lite-shaped Q4_K_M (all 27 layers) and
# DeepSeek-V3-shaped cut to 6 layers (5 MoE). Run from the repository root once ktx is
# installed; results go to $OUT (the device tool's folder that comes back) or bench/results/device.
#   bash bench/device_e2e.sh            # GEN=128 PROMPTS=512,2048,8192 by default
set -euo pipefail
out=${OUT:-bench/results/device}
mkdir -p "$out"
prompts=${PROMPTS:-512,2048,8192}
gen=${GEN:-128}
export KTX_COMMIT=${KTX_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}

python -m pytest -q -m cuda tests/backends 2>&1 | tee "$out/cuda-tests.txt" || true
nvidia-smi --query-gpu=name,memory.total --format=csv > "$out/gpu.txt" || true

for spec in "v2-lite:" "v3:6"; do
  preset=${spec%%:*}
  layers=${spec#*:}
  file=/tmp/$preset${layers:+-${layers}l}.gguf
  [ -f "$file" ] || ktx synth --preset "$preset" ${layers:+--layers "$layers"} -o "$file" -q
  for graph in --cuda-graph ""; do
    tag=$preset${layers:+-${layers}l}${graph:+-graph}
    ktx bench e2e --gguf "$file" --device cuda --prompt "$prompts" --gen "$gen" $graph --json \
      > "$out/e2e-$tag.json" 2> "$out/e2e-$tag.log" || echo "e2e $tag failed: see $out/e2e-$tag.log"
  done
done
echo "results in $out"
