"""End-to-end generation on one machine: load time, prefill and decode tokens/s, vs the DRAM ceiling.

    python bench/generate.py [--gguf FILE] [--prompt-tokens 128] [--gen 64] [--threads N] [--hf] [--json]

Default file: the demo model. Ceiling for decode: every weight the step reads (all linear
layers in the dtype ktx holds them, plus the embedding rows) once per token at the DRAM read
bandwidth measured in this run. `--hf` also times transformers' own GGUF path on the same
prompt (slow to load: it dequantizes with numpy).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import time

import torch

from ktx.core import cpu, membw
from ktx.core.loader import load
from ktx.core.ops.linear import QuantLinear
from ktx.core.runtime.generate import prefill_and_generate
from ktx.core.runtime.sampler import SamplingParams


def weight_bytes_per_token(model) -> int:
    total = 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            if m.blocks is not None:  # GGUF-native blocks, read by the kernels
                total += m.blocks.nbytes
            elif m.weight is not None:
                total += m.weight.numel() * m.weight.element_size()
            else:
                total += m.source.data.nbytes
    return total


def hf_decode_tok_s(gguf_path: str, ids: list[int], gen: int) -> float:
    import os

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path), dtype=torch.float32
    )
    x = torch.tensor([ids])
    with torch.inference_mode():
        model.generate(x, max_new_tokens=1, do_sample=False)
        t0 = time.perf_counter()
        model.generate(x, max_new_tokens=gen, min_new_tokens=gen, do_sample=False)
        t1 = time.perf_counter()
        model.generate(x, max_new_tokens=1, do_sample=False)
        t2 = time.perf_counter()
    return (gen - 1) / ((t1 - t0) - (t2 - t1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", help="GGUF file (default: the demo model)")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--hf", action="store_true", help="also time transformers' GGUF path")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    threads = args.threads or cpu.default_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    model = load(args.gguf, cpu_threads=threads)
    ready = time.perf_counter() - t0
    text = "The history of the city begins with " * 64
    ids = model.tokenizer.encode(text)[: args.prompt_tokens]
    greedy = SamplingParams(temperature=0.0)
    prefill_and_generate(model, model.tokenizer, ids[:8], 4, sampling=greedy, ignore_eos=True)  # warm-up
    gen = prefill_and_generate(model, model.tokenizer, ids, args.gen, sampling=greedy, ignore_eos=True)
    read = membw.read_gb_s(threads)
    per_token = weight_bytes_per_token(model)
    ceiling = read * 1e9 / per_token
    row = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.node(),
        "cpu": cpu.features().get("brand", ""),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "threads": threads,
        "ready_s": round(ready, 2),
        "prompt_tokens": gen.prompt_tokens,
        "prefill_tok_s": round(gen.prefill_tok_s, 1),
        "decode_tok_s": round(gen.decode_tok_s, 2),
        "ttft_s": round(gen.ttft_s, 3),
        "weights_mb_per_token": round(per_token / 1e6, 1),
        "dram_read_gb_s": round(read, 1),
        "decode_ceiling_tok_s": round(ceiling, 1),
        "decode_fraction_of_ceiling": round(gen.decode_tok_s / ceiling, 3),
    }
    if args.hf:  # same prompt, transformers' own GGUF loader (float32 weights)
        row["hf_gguf_decode_tok_s"] = round(hf_decode_tok_s(str(model.gguf.paths[0]), ids, args.gen), 2)
    if args.json:
        print(json.dumps(row, indent=2))
        return
    for k, v in row.items():
        print(f"{k:>28}: {v}")


if __name__ == "__main__":
    main()
