"""The runtime on a tiny model: block pool accounting, chunked prefill, batching, stops, EOS."""

from __future__ import annotations

import pytest
import torch
from hf_oracle import random_ids
from tiny_models import make_tiny

from ktx.core.convert.hf_to_gguf import convert_hf
from ktx.core.loader import load
from ktx.core.runtime import BlockPool, CacheFullError, SequenceKV, forward_step, make_pool, prefill
from ktx.core.runtime.context import Segment
from ktx.core.runtime.generate import prefill_and_generate


@pytest.fixture(scope="module", params=["qwen3", "deepseek-v2"])
def model(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    make_tiny(request.param, d / "hf")
    convert_hf(d / "hf", d / "m.gguf", "f32", progress=False)
    return load(d / "m.gguf")


def test_chunked_prefill_equals_one_shot(model):
    ids = random_ids(model.config.vocab_size, 37)
    with torch.inference_mode():
        full = model(torch.tensor([ids])).logits[0, -1]
    for chunk in (1, 5, 16, 64):
        pool = make_pool(model, 64, block_size=8)
        seq = SequenceKV()
        got = prefill(model, pool, seq, ids, chunk_size=chunk)
        assert (got - full).abs().max().item() <= 1e-4, chunk
        assert seq.length == 37 and len(seq.blocks) == 5
        pool.free(seq)
        assert pool.used_blocks == 0 and not seq.blocks


def test_two_sequences_in_one_step_match_separate_runs(model):
    a, b = random_ids(model.config.vocab_size, 9, seed=1), random_ids(model.config.vocab_size, 6, seed=2)
    pool = make_pool(model, 64, block_size=4)
    sa, sb = SequenceKV(), SequenceKV()
    both = forward_step(model, pool, [Segment(sa, 0, 9), Segment(sb, 0, 6)], torch.tensor(a + b))
    with torch.inference_mode():
        ra, rb = model(torch.tensor([a])).logits[0, -1], model(torch.tensor([b])).logits[0, -1]
    assert (both[0] - ra).abs().max().item() <= 1e-4
    assert (both[1] - rb).abs().max().item() <= 1e-4
    # then one decode step for each, batched
    nxt = forward_step(model, pool, [Segment(sa, 9, 1), Segment(sb, 6, 1)], torch.tensor([5, 7]))
    with torch.inference_mode():
        ra, rb = model(torch.tensor([[*a, 5]])).logits[0, -1], model(torch.tensor([[*b, 7]])).logits[0, -1]
    assert (nxt[0] - ra).abs().max().item() <= 1e-4 and (nxt[1] - rb).abs().max().item() <= 1e-4


def test_pool_refuses_when_full():
    pool = BlockPool({0: ((2, 4), (2, 4))}, num_blocks=2, block_size=4)
    seq = SequenceKV()
    pool.reserve(seq, 8)
    with pytest.raises(CacheFullError, match="KV cache full"):
        pool.reserve(SequenceKV(), 1)
    pool.free(seq)
    assert pool.used_blocks == 0


def test_generation_stops_at_eos_and_stop_strings(model):
    tok = model.tokenizer
    ids = random_ids(model.config.vocab_size, 8, seed=3)
    free = prefill_and_generate(model, tok, ids, 12, ignore_eos=True)
    assert free.finish_reason == "length" and free.completion_tokens == 12
    # make the 4th greedy token the EOS: generation must end before it with reason "stop"
    eos, saved = free.tokens[3], tok.eos_token_ids
    tok.eos_token_ids = {eos}
    try:
        gen = prefill_and_generate(model, tok, ids, 12)
    finally:
        tok.eos_token_ids = saved
    assert gen.tokens == free.tokens[: free.tokens.index(eos)] and gen.finish_reason == "stop"
    # a stop string taken from the free-running text cuts the text before it
    text = free.text
    if len(text) >= 6:
        stop = text[3:6]
        cut = prefill_and_generate(model, tok, ids, 12, stop=[stop], ignore_eos=True)
        assert cut.finish_reason == "stop" and cut.text == text[: text.index(stop)]


def test_prompt_longer_than_context_is_a_clear_error(model):
    too_long = [5] * model.config.max_position_embeddings
    with pytest.raises(ValueError, match="more than the model's context"):
        prefill_and_generate(model, model.tokenizer, too_long, 4)
    with pytest.raises(ValueError, match="empty"):
        prefill_and_generate(model, model.tokenizer, [], 4)


def test_shared_pool_gets_its_blocks_back(model):
    pool = make_pool(model, 256, block_size=8)
    prefill_and_generate(model, model.tokenizer, random_ids(model.config.vocab_size, 20), 5, pool=pool)
    assert pool.used_blocks == 0


def test_chat_turns_keep_the_pool_and_its_captured_graph(model, monkeypatch):
    """Each turn of `ktx chat --cuda-graph` calls prefill_and_generate: the model's pool and the
    graph runner on it are kept, not rebuilt (a recapture per turn). A stand-in backend gives the
    CPU a GraphRunner whose steps are forward_step's."""
    import types

    import ktx.core.backend as backend

    made = []

    class Runner:
        def __init__(self, model, pool, batch_size):
            self.model, self.pool = model, pool
            made.append(self)

        def step(self, segments, tokens):
            return forward_step(self.model, self.pool, segments, tokens)

    monkeypatch.setattr(backend, "kernels", lambda kind: types.SimpleNamespace(GraphRunner=Runner))
    model.__dict__.pop("_ktx_generation_pool", None)
    vocab = model.config.vocab_size
    eager = prefill_and_generate(
        model, model.tokenizer, random_ids(vocab, 20), 6, ignore_eos=True, pool=make_pool(model, 64)
    )
    turns = [
        prefill_and_generate(
            model, model.tokenizer, random_ids(vocab, 20), 6, ignore_eos=True, use_cuda_graph=True
        )
        for _ in range(3)
    ]
    assert all(t.tokens == eager.tokens for t in turns)
    assert len(made) == 1  # one capture serves every turn
    pool = model.__dict__["_ktx_generation_pool"]
    assert made[0].pool is pool and pool.used_blocks == 0
    assert pool.num_blocks * pool.block_size >= 1024  # graph pools grow by powers of two
    # a turn that needs more than the pool holds gets a larger pool, and a new capture
    longer = min(model.config.max_position_embeddings - 8, pool.num_blocks * pool.block_size + 10)
    if longer > pool.num_blocks * pool.block_size:
        prefill_and_generate(model, model.tokenizer, [7] * longer, 2, ignore_eos=True, use_cuda_graph=True)
        assert len(made) == 2 and model.__dict__["_ktx_generation_pool"] is not pool
    model.__dict__.pop("_ktx_generation_pool", None)


def test_prefill_on_a_16_bit_pool_reads_nothing_back_from_the_device(model):
    """A 16-bit pool takes the PyTorch attention path that accelerators run. Nothing in a step
    may read a value back to the host (bool(), .item(), nonzero: each one stalls Python behind
    the stream and the CPU experts on a GPU); the ops that would are counted here on the CPU."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        names: list[str]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    layers = {m.layer_idx: m for m in model.modules() if hasattr(m, "kv_spec")}
    pool = BlockPool({i: m.kv_spec() for i, m in layers.items()}, 8, 16, torch.bfloat16)
    seq = SequenceKV()
    vocab = model.config.vocab_size
    forward_step(model, pool, [Segment(seq, 0, 20)], torch.tensor(random_ids(vocab, 20)))
    ops = Ops()
    ops.names = []
    with ops:
        forward_step(model, pool, [Segment(seq, 20, 10)], torch.tensor(random_ids(vocab, 10, seed=1)))
    assert "scaled_dot_product_attention" in ops.names or "_softmax" in ops.names  # the PyTorch path ran
    assert not {"_local_scalar_dense", "nonzero", "is_nonzero", "equal"} & set(ops.names)
