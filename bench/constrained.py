"""The per-step cost of grammar-constrained decoding (structured outputs, tool calls) against a
decode step of the same model, measured in the same run.

For a JSON schema it times, per generated token: llguidance's mask (compute_bitmask), turning it
into masked logits (GrammarState.mask), and advancing the matcher; then one unconstrained decode
step of the model (the batch of 1 that makes the mask's share largest). The ceiling printed is the
machine's DRAM read bandwidth and the decode step's fraction of it, so the two can be compared
with bench/generate.py's figures.

    python bench/constrained.py                 # the demo model (Gemma 3, 262k vocabulary)
    python bench/constrained.py --gguf F.gguf --tokens 64 --json out.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time

import torch

from ktx.core import cpu, membw
from ktx.core.bench.e2e import machine
from ktx.core.loader import load
from ktx.core.runtime.context import Segment
from ktx.core.runtime.generate import forward_step, make_pool, prefill
from ktx.core.runtime.grammar import Grammar, token_table
from ktx.core.runtime.kv_cache import SequenceKV

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
            "required": ["street", "city"],
        },
    },
    "required": ["name", "age", "email", "tags", "address"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="model file (default: the demo model)")
    ap.add_argument("--tokens", type=int, default=64, help="constrained tokens to time")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    threads = cpu.default_threads()
    read = membw.read_gb_s(threads)
    model = load(args.gguf) if args.gguf else load()
    tok = model.tokenizer

    t0 = time.perf_counter()
    token_table(tok)
    table_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    grammar = Grammar.json_schema(tok, SCHEMA)
    compile_s = time.perf_counter() - t0

    pool = make_pool(model, 4096)
    seq = SequenceKV()
    logits = prefill(model, pool, seq, tok.encode("Write a person as JSON:"))
    state = grammar.start()
    mask_ms, apply_ms, accept_ms, step_ms = [], [], [], []
    for _ in range(args.tokens):
        t0 = time.perf_counter()
        state.allowed()
        t1 = time.perf_counter()
        masked = state.mask(logits)
        token = int(masked.argmax())  # the sampler's work, not the grammar's
        if token in tok.eos_token_ids or state.done:
            break
        t2 = time.perf_counter()
        state.accept(token)
        t3 = time.perf_counter()
        logits = forward_step(model, pool, [Segment(seq, seq.length, 1)], torch.tensor([token]))[0]
        t4 = time.perf_counter()
        mask_ms.append((t1 - t0) * 1e3)
        apply_ms.append((t2 - t1) * 1e3 - mask_ms[-1])  # mask() computes the bitmask again
        accept_ms.append((t3 - t2) * 1e3)
        step_ms.append((t4 - t3) * 1e3)

    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    per_token = med(mask_ms) + max(med(apply_ms), 0.0) + med(accept_ms)
    step = med(step_ms)
    weights = bytes_per_token(model.gguf)
    out = {
        "what": "bench/constrained.py: JSON-schema constrained decoding, per token vs one decode step",
        "date": datetime.date.today().isoformat(),
        "cpu": cpu.features().get("brand", ""),
        "isa": cpu.isa(),
        "threads": threads,
        "commit": machine()["commit"],
        "python": platform.python_version(),
        "model": args.gguf or "demo (Gemma 3 270M Q4_K_M)",
        "vocab": tok.vocab_size,
        "token_table_s": round(table_s, 3),
        "schema_compile_ms": round(compile_s * 1e3, 2),
        "tokens": len(step_ms),
        "mask_ms": round(med(mask_ms), 4),
        "apply_ms": round(max(med(apply_ms), 0.0), 4),
        "accept_ms": round(med(accept_ms), 4),
        "grammar_ms_per_token": round(per_token, 4),
        "decode_step_ms": round(step, 3),
        "grammar_share_of_step": round(per_token / step, 4),
        "dram_read_gb_s": round(read, 1),
        "weight_gb_per_token": round(weights / 1e9, 4),
        "decode_step_fraction_of_dram": round(weights / (step / 1e3) / 1e9 / read, 3),
    }
    print(f"CPU {out['cpu']} ({out['isa']}, {threads} threads); DRAM read {read:.1f} GB/s")
    print(f"vocabulary {tok.vocab_size}: token table {table_s:.2f} s once, ", end="")
    print(f"schema compiled in {compile_s * 1e3:.1f} ms")
    print(
        f"per token: mask {out['mask_ms']:.3f} ms + apply {out['apply_ms']:.3f} ms + accept "
        f"{out['accept_ms']:.3f} ms = {per_token:.3f} ms; decode step {step:.2f} ms "
        f"({out['decode_step_fraction_of_dram']:.0%} of DRAM read) -> grammar "
        f"{per_token / step:.1%} of a step"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def bytes_per_token(gf) -> float:
    """Weight bytes one decode token reads: the routed experts' share its top-k picks (from the
    GGUF's expert counts), every other matrix whole, the embedding table not at all (one row),
    unless it is also the output head."""
    arch = gf.metadata.get("general.architecture", "")
    n = int(gf.metadata.get(f"{arch}.expert_count") or 0)
    k = int(gf.metadata.get(f"{arch}.expert_used_count") or 0)
    total = 0.0
    for name, t in gf.tensors.items():
        if name == "token_embd.weight" and "output.weight" in gf.tensors:
            continue
        total += t.nbytes * (k / n if "_exps." in name and n else 1)
    return total


if __name__ == "__main__":
    main()
