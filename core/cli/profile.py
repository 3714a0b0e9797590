"""`ktx profile`: record which experts each MoE layer's router picks (for --gpu-experts)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .model_args import add_model_flags, load_model

EXAMPLES = """\
examples:
  ktx profile --gguf model.gguf --prompts my-prompts.txt -o profile.json
  ktx chat --gguf model.gguf --device cuda --gpu-experts 8 --profile profile.json

The prompts file holds one prompt per line (\\n inside a line is a line break); each is run
through the model (prefill only) and every routing decision is counted. The JSON holds, per
layer ("blk.3"), the number of times each expert was picked.
"""

DEFAULT_PROMPTS = (
    "Explain how a transformer language model generates text, step by step.",
    "def quicksort(xs):\n    # sort a list of integers and return a new list\n",
    "Translate to French: The weather is lovely today and we are going to the beach.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What is the derivative of x^3 * sin(x)? Show the product rule.",
    "List five tips for writing clear technical documentation.",
)


def add_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "profile",
        help="record how often each expert is routed to (for --gpu-experts)",
        description="Run prompts through the model and count, per MoE layer, how often the router "
        "picks each expert. --gpu-experts N with --profile keeps each layer's N busiest on the GPU.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prompts", type=Path, help="text file, one prompt per line (default: a mixed set)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the profile JSON to write")
    add_model_flags(p, sampling=False)  # the router's choices do not depend on sampling
    p.add_argument(
        "--chunk-size", type=int, default=512, metavar="N", help="prefill chunk in tokens (default 512)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..runtime.generate import make_pool, prefill
    from ..runtime.kv_cache import SequenceKV
    from ..runtime.profile import count_routing, spread

    if args.prompts is not None:
        lines = args.prompts.read_text().splitlines()
        prompts = [line.replace("\\n", "\n") for line in lines if line.strip()]
        if not prompts:
            raise ValueError(f"{args.prompts}: no prompts in it (one per line)")
    else:
        prompts = list(DEFAULT_PROMPTS)
    model = load_model(args)
    encoded = [model.tokenizer.encode(p) for p in prompts]
    pool = make_pool(model, max(len(e) for e in encoded) + 1)
    with torch.inference_mode(), count_routing(model) as counts:
        if not counts:
            raise ValueError(f"{model.arch.variant} has no MoE layers: nothing to profile")
        for ids in encoded:
            seq = SequenceKV()
            prefill(model, pool, seq, ids, args.chunk_size)
            pool.free(seq)
    record = {
        "gguf": str(args.gguf or "demo"),
        "prompts": len(prompts),
        "tokens": sum(map(len, encoded)),
        "experts_per_token": int(model.config.num_experts_per_tok),
        "layers": {key: c.tolist() for key, c in counts.items()},
    }
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    s = spread(counts)
    print(
        f"{record['tokens']} tokens, {len(counts)} MoE layers -> {args.output}; every layer routed to at "
        f"least {s['min_experts_used']:.0%} of its experts; the busiest expert got "
        f"{s['max_load_vs_even']:.1f}x an even share",
        file=sys.stderr,
    )
    return 0
