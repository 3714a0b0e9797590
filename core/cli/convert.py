"""`ktx convert`: a Hugging Face model folder -> one GGUF file, the way llama.cpp writes it."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..convert import ARCHES, OUT_TYPES, convert_hf
from .output import human_bytes

EXAMPLES = """\
examples:
  ktx convert ~/hf/DeepSeek-V2-Lite -o v2-lite-q4_k_m.gguf --type q4_k_m
  ktx convert ~/hf/Qwen3-30B-A3B -o qwen3-30b-a3b-q8_0.gguf --type q8_0
  ktx convert ./tiny-llama -o tiny.gguf --type f32      every value exact

types:
  f32 f16 bf16 q8_0     every matrix in that type (norms, biases, routers stay F32)
  q4_k_m                llama-quantize's Q4_K_M mix: Q4_K, with Q6_K for output and for half
                        of attn_v / ffn_down; rows that do not fill 256-value blocks fall back
                        to Q5_0 / Q8_0 (or F16), as llama-quantize does
  q6_k                  Q6_K everywhere (same fallbacks)"""


def run(args: argparse.Namespace) -> int:
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    out = args.output or Path(f"{Path(args.hf_dir).resolve().name}-{args.type}.gguf")
    result = convert_hf(
        args.hf_dir,
        out,
        args.type,
        progress=not args.quiet and sys.stderr.isatty(),
        legacy_mla=args.legacy_mla,
        name=args.name,
        tokenizer_pre=args.tokenizer_pre,
    )
    types = ", ".join(f"{n} {t}" for t, n in sorted(result.types.items(), key=lambda kv: -kv[1]))
    size = human_bytes(result.nbytes)
    print(f"{result.path}: {result.arch} ({result.model_type}), {result.tensors} tensors, {size}")
    print(f"  types: {types}")
    tok = result.tokenizer
    print(f"  tokenizer: {tok.get('model')} ({tok.get('tokens')} tokens, pre {tok.get('pre')})")
    if result.fallbacks:
        wanted = sorted({f"{w}->{g}" for _, w, g in result.fallbacks})
        print(
            f"  {len(result.fallbacks)} tensors fell back (rows do not fill the blocks): {', '.join(wanted)}"
        )
    return 0


def add_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "convert",
        help="convert a Hugging Face model folder to GGUF (llama.cpp's layout)",
        description="Convert a Hugging Face model folder (config.json, *.safetensors, tokenizer.json) "
        "to one GGUF file with llama.cpp's architecture names, metadata keys, tensor names and "
        "transforms, reading one tensor at a time. Architectures (model_type): "
        + ", ".join(f"{k} -> {v}" for k, v in ARCHES.items())
        + ".",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("hf_dir", metavar="HF_DIR", help="the Hugging Face model folder")
    p.add_argument("-o", "--output", type=Path, help="the GGUF file to write (default: HF_DIR name + type)")
    p.add_argument(
        "--type",
        choices=OUT_TYPES,
        default="f16",
        help="tensor type (default: f16; q4_k_m is llama-quantize's mix; mxfp4: MXFP4 routed experts, "
        "Q8_0 elsewhere)",
    )
    p.add_argument(
        "--legacy-mla",
        action="store_true",
        help="DeepSeek: write attn_kv_b as llama.cpp did before splitting it into attn_k_b/attn_v_b",
    )
    p.add_argument("--name", help="general.name (default: the folder name)")
    p.add_argument("--tokenizer-pre", help="tokenizer.ggml.pre for byte-level BPE (default: by architecture)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "-v", "--verbose", action="store_true", help="log each tensor that falls back to another type"
    )
    p.set_defaults(run=run)
