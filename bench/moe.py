"""MoE-layer throughput on the CPU kernels at a real model's shapes: `ktx bench moe` as a script.

    python bench/moe.py --preset v2-lite --type q4_k [--tokens 1,16] [--json] [--plot out.png]

Options, columns and notes: `python bench/moe.py --help`.
"""

import sys

from ktx.core.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "moe", *sys.argv[1:]]))
