"""`ktx synth`: a full-size GGUF model with random weights, for benchmarks without a download."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..convert import PRESETS, SYNTH_OUT_TYPES, synth_gguf
from ..convert.gguf_stream import tensor_nbytes
from ..convert.presets import TINY
from ..convert.synth import synth_plan
from .output import human_bytes

EXAMPLES = """\
examples:
  ktx synth --preset v3 --layers 4 -o v3-4l.gguf          DeepSeek-V3 shapes, 3 dense + 1 MoE layer
  ktx synth --preset v2-lite --type q8_0 -o v2-lite.gguf   all 27 layers
  ktx synth --arch qwen3moe --preset tiny -o tiny.gguf     a few MB, for tests
  ktx synth --preset v3 --dry-run                          size and types only
  ktx synth --preset v2-lite --experts 16 -o v2l-16e.gguf  V2-Lite shapes, 16 of its 64 experts

The weights are random (mean 0, std 0.02; norms 1; Gaussian F32 routers, so tokens spread over
the experts); tensor names, shapes, types and metadata are those `ktx convert` writes for the
real model. Blocks are generated directly, so writing runs at disk speed."""


def run(args: argparse.Namespace) -> int:
    if args.dry_run:
        cfg, plan = synth_plan(args.arch, args.preset, args.layers, args.type, args.experts)
        nbytes = sum(tensor_nbytes(shape, t) for _, shape, t in plan)
        print(f"{args.preset}: {cfg['num_hidden_layers']} layers, {len(plan)} tensors, {human_bytes(nbytes)}")
        return 0
    if args.output is None:
        print("ktx synth: error: -o/--output is required (or --dry-run)", file=sys.stderr)
        return 2
    result = synth_gguf(
        args.output,
        args.arch,
        args.preset,
        layers=args.layers,
        type=args.type,
        seed=args.seed,
        experts=args.experts,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    types = ", ".join(f"{n} {t}" for t, n in sorted(result.types.items(), key=lambda kv: -kv[1]))
    print(
        f"{result.path}: {result.arch} {result.preset}, {result.layers} layers, {result.tensors} tensors, "
        f"{human_bytes(result.nbytes)} in {result.seconds:.1f} s ({result.mb_per_s:.0f} MB/s)"
    )
    print(f"  types: {types}")
    return 0


def add_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "synth",
        help="write a random-weight GGUF with a real model's shapes (for benchmarks)",
        description="Write a GGUF model with random weights and the shapes, types and metadata of a "
        "real model (DeepSeek-V2-Lite, DeepSeek-V3, Qwen3-30B-A3B, Qwen3-Next-80B-A3B, Qwen1.5-MoE-A2.7B, "
        "Mixtral-8x7B, gpt-oss-20b/120b, GLM-4.5(-Air), MiniMax-M2) or a tiny one, optionally cut to "
        "fewer layers.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--arch", choices=sorted(TINY), help="GGUF architecture (needed for --preset tiny)")
    p.add_argument("--preset", choices=["tiny", *PRESETS], required=True, help="model shapes")
    p.add_argument("--layers", type=int, help="number of blocks (default: the model's; dense ones kept)")
    p.add_argument(
        "--experts",
        type=int,
        help="routed experts per layer (default: the model's); fewer make a smaller file with the same "
        "work per token",
    )
    p.add_argument(
        "--type",
        choices=SYNTH_OUT_TYPES,
        default="q4_k_m",
        help="tensor types (default: q4_k_m; mxfp4: MXFP4 experts and Q8_0 elsewhere, as gpt-oss ships; "
        "iq1_s / iq2_xxs: experts' gate/up IQ1_S and down IQ2_XXS (or IQ2_XXS / IQ3_XXS), the rest as "
        "q4_k_m, like the 1.6-2.2-bit DeepSeek/Kimi files)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("-o", "--output", type=Path, help="the GGUF file to write")
    p.add_argument("--dry-run", action="store_true", help="print size and layer count, write nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)
