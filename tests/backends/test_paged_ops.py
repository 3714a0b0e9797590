"""The attention operators' paged decode path (what runs on a GPU) against their PyTorch path.

On an accelerator, a step where every sequence adds one token runs attention through the
backend's paged kernels: K/V written to the pool by slot, read through block tables. Here
the operators are made to take that path on the CPU (Triton's interpreter runs the CUDA
backend's kernels), over a batch of two sequences of different lengths, and the logits are
compared with the ordinary path's. KTX_EXACT=1 and float32 caches: summation order only.
"""

from __future__ import annotations

import pytest
import torch
from hf_oracle import random_ids

from ktx.core.loader import load
from ktx.core.ops.attention import Attention
from ktx.core.ops.mla import MLAAttention
from ktx.core.runtime import SequenceKV, forward_step, make_pool, prefill
from ktx.core.runtime.context import Segment

TOL = 1e-4


def decode(model, prompts, steps):
    pool = make_pool(model, 256, block_size=8)
    seqs = [SequenceKV() for _ in prompts]
    last = [int(prefill(model, pool, s, p).argmax()) for s, p in zip(seqs, prompts, strict=True)]
    out = []
    for _ in range(steps):
        logits = forward_step(
            model, pool, [Segment(s, s.length, 1) for s in seqs], torch.tensor(last, dtype=torch.long)
        )
        out.append(logits.cpu())
        last = logits.argmax(-1).tolist()
    return torch.stack(out)


@pytest.mark.parametrize("name", ["qwen3moe", "deepseek-v3", "gemma3"])
def test_paged_decode_matches_the_pytorch_path(name, kernel_device, tiny_gguf, exact_kernels, monkeypatch):
    model = load(tiny_gguf(name, "q8_0"))
    prompts = [random_ids(500, 13, seed=1), random_ids(500, 22, seed=2)]  # 2 and 3 blocks of 8
    with torch.inference_mode():
        expected = decode(model, prompts, 6)

        from ktx.backends.cuda import kernels as cuda_kernels

        calls = []

        def counting(name):
            def run(*args, **kwargs):
                calls.append(name)
                return getattr(cuda_kernels, name)(*args, **kwargs)

            return run

        fake = type("Kernels", (), {k: staticmethod(counting(k)) for k in ("gqa_decode", "mla_decode")})
        monkeypatch.setattr("ktx.core.backend.kernels", lambda device_type: fake)
        for cls in (Attention, MLAAttention):
            monkeypatch.setattr(cls, "accelerated", property(lambda self: True))
        model.__dict__.pop("_ktx_step_plan", None)  # the step plan is built for the placement
        got = decode(model, prompts, 6)
    layers = model.config.num_hidden_layers
    assert len(calls) == 6 * layers  # every decode step, every layer, took the paged kernels
    assert (got - expected).abs().max().item() <= TOL
