"""`ktx`: the entry point. Subcommands register from their modules; errors are one line.

Run as the `ktx` console script or as `python -m ktx.core.cli.main`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .. import __version__
from . import bench, chat, convert, doctor, generate, inspect, profile, rules, serve, synth

SUBCOMMANDS = (chat, generate, serve, doctor, inspect, rules, convert, synth, bench, profile)

DESCRIPTION = """\
Run huge Mixture-of-Experts models on one workstation: the routed experts on fast CPU
kernels (AMX / AVX-512 / AVX2), attention and dense layers on the accelerator."""

EXAMPLES = """\
examples:
  ktx chat                    chat with the demo model
  ktx generate --prompt Hi    one answer, with prefill/decode tokens/s
  ktx serve --web             OpenAI + Ollama APIs and a chat page on http://127.0.0.1:10002
  ktx doctor                  what this machine offers and which kernels ktx will use
  ktx inspect model.gguf      architecture, tokenizer and tensor types of a GGUF model
  ktx inspect --json | jq .   the demo model's report, for scripts
  ktx convert ~/hf/DeepSeek-V2-Lite -o v2-lite.gguf --type q4_k_m
  ktx synth --preset v3 --layers 4 -o v3-4l.gguf   random weights, real shapes (benchmarks)
  ktx bench moe --preset v2-lite --type q4_k   MoE-layer speed, decode to prefill, vs DRAM
  ktx chat --gguf m.gguf --device cuda         hybrid: experts on the CPU, the rest on the GPU
  ktx profile --gguf m.gguf -o prof.json       routing counts, for --gpu-experts N --profile
  ktx bench e2e --gguf m.gguf --prompt 512,2048 --gen 128   prefill/decode tokens/s, TTFT

environment:
  KTX_ISA=scalar|avx2|avx512|amx   force a CPU kernel path
  KTX_THREADS=N                    threads for the CPU kernels (default: one per physical core)
  KTX_EXACT=1                      CPU kernels keep activations float32 (default: int8, like llama.cpp)
  KTX_DEVICE=cpu|cuda              what --device auto picks (default: the GPU when there is one)
  KTX_PIN=1                        pin the CPU kernels' worker threads, one per allowed CPU
  KTX_DEMO_GGUF=PATH               the demo model as an assembled file (the container images)

Run 'ktx COMMAND --help' for a command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ktx",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ktx {__version__}")
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns its exit status (0 ok, 1 failed, 2 bad usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version (0) or a usage error (2, already printed)
        return 0 if e.code is None else e.code if isinstance(e.code, int) else 2
    if not hasattr(args, "run"):  # no command: show what there is
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except BrokenPipeError:
        # `ktx inspect | head`: the reader left; say nothing, and keep Python's exit-time flush
        # of stdout from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, ValueError, RuntimeError) as e:
        # GGUFError is a ValueError; its message already names the file and the byte offset.
        # (A bug elsewhere, e.g. a TypeError, still shows its traceback: that is a report to file.)
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"ktx: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
