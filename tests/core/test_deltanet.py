"""Qwen3-Next's gated DeltaNet layers: the recurrent state per sequence.

test_models.py holds the tiny Qwen3-Next against transformers (logits, and 32 greedy tokens
after a prefill in chunks of 5, which carries the state across chunks into decode). Here: two
sequences decoded in one step each equal to the sequence alone; a sequence that continues
without its state is refused; the server's prefix cache is off for such a model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hf_oracle import random_ids
from tiny_models import make_tiny

from ktx.core.convert.hf_to_gguf import convert_hf
from ktx.core.loader import load
from ktx.core.models.errors import ModelError
from ktx.core.runtime.context import Segment
from ktx.core.runtime.generate import forward_step, make_pool
from ktx.core.runtime.kv_cache import SequenceKV, has_recurrent_layers

pytestmark = pytest.mark.usefixtures("exact_kernels")


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return make_tiny("qwen3next", tmp_path_factory.mktemp("q3n") / "hf")


@pytest.fixture(scope="module")
def model(hf_dir):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KTX_EXACT", "1")
        return load(convert_hf(hf_dir, hf_dir.parent / "m.gguf", "f32", progress=False).path)


def test_the_legacy_fused_input_projection_gives_the_same_logits(model, hf_dir):
    # llama.cpp's first Qwen3-Next files hold in_proj_qkvz as one ssm_in tensor (rows grouped per
    # key head); today's split it into attn_qkv and attn_gate. Both must read the same.
    path = convert_hf(hf_dir, hf_dir.parent / "legacy.gguf", "f32", progress=False, legacy_qkvz=True).path
    legacy = load(path)
    names = set(legacy.gguf.tensors)
    assert "blk.0.ssm_in.weight" in names and "blk.0.attn_qkv.weight" not in names
    ids = torch.tensor([random_ids(512, 12)])
    with torch.inference_mode():
        err = (legacy(ids).logits - model(ids).logits).abs().max().item()
    assert err <= 1e-5, f"max |legacy - split| = {err:.3g}"


def _prefill(model, pool, ids):
    seq = SequenceKV()
    logits = forward_step(model, pool, [Segment(seq, 0, len(ids))], torch.tensor(ids))[0]
    return seq, logits


def test_two_sequences_in_one_step_each_equal_the_sequence_alone(model):
    a_ids, b_ids = random_ids(512, 11, seed=1), random_ids(512, 6, seed=2)
    # alone: each prefilled, then decoding 4 tokens of its own
    alone = {}
    for name, ids in (("a", a_ids), ("b", b_ids)):
        pool = make_pool(model, 256)
        seq, logits = _prefill(model, pool, ids)
        rows = []
        for _ in range(4):
            token = int(logits.argmax())
            logits = forward_step(model, pool, [Segment(seq, seq.length, 1)], torch.tensor([token]))[0]
            rows.append(logits)
        alone[name] = torch.stack(rows)
    # together: both prefilled in one step, then decoded in steps of one token each
    pool = make_pool(model, 256)
    sa, sb = SequenceKV(), SequenceKV()
    logits = forward_step(
        model, pool, [Segment(sa, 0, len(a_ids)), Segment(sb, 0, len(b_ids))], torch.tensor(a_ids + b_ids)
    )
    got = {"a": [], "b": []}
    for _ in range(4):
        tokens = [int(logits[0].argmax()), int(logits[1].argmax())]
        logits = forward_step(
            model, pool, [Segment(sa, sa.length, 1), Segment(sb, sb.length, 1)], torch.tensor(tokens)
        )
        got["a"].append(logits[0])
        got["b"].append(logits[1])
    for name in ("a", "b"):
        err = (torch.stack(got[name]) - alone[name]).abs().max().item()
        assert err <= 1e-4, f"sequence {name}: max |batched - alone| = {err:.3g}"


def test_the_decode_kernel_equals_the_pytorch_recurrence(model, isa, monkeypatch):
    # decode tokens on the C++ step (conv, recurrence, gated norm) against the PyTorch path,
    # whose recurrence is transformers' own
    from ktx.core.ops.deltanet import GatedDeltaNet

    ids = random_ids(512, 7, seed=3)

    def run(kernel: bool) -> torch.Tensor:
        with monkeypatch.context() as mp:
            if not kernel:
                mp.setattr(GatedDeltaNet, "_kernel_fits", lambda self, x: False)
            pool = make_pool(model, 256)
            seq, _ = _prefill(model, pool, ids)
            rows = []
            for token in (7, 99, 3, 250, 41):
                rows.append(
                    forward_step(model, pool, [Segment(seq, seq.length, 1)], torch.tensor([token]))[0]
                )
            return torch.stack(rows)

    got, expected = run(True), run(False)
    err = ((got - expected).abs().max() / expected.abs().max()).item()
    assert err <= 1e-5, f"max relative |kernel - PyTorch| = {err:.3g}"


@pytest.mark.parametrize("tiled", [False, True], ids=["grouped", "tiled"])
def test_the_decode_kernel_step_against_transformers_recurrence(tiled, isa):
    # one token through cpu_kernels.deltanet_step against the definition: causal conv + SiLU,
    # transformers' recurrent rule with each value head on its key head (h / r grouped, as
    # transformers; h % nk tiled, as llama.cpp stores Qwen3.5), gated RMSNorm
    from transformers.models.qwen3_next.modeling_qwen3_next import torch_recurrent_gated_delta_rule

    from ktx.core.ops import cpu_kernels

    nk, dk, nv, dv, K, eps = 2, 32, 4, 32, 4, 1e-6
    C = 2 * nk * dk + nv * dv
    gen = torch.Generator().manual_seed(5)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    mixed, conv_state, conv_w = r(C), r(C, K - 1), 0.3 * r(C, K)
    b, a, z, norm_w = r(nv), r(nv), r(nv * dv), r(dv)
    a_neg, dt_bias = -torch.rand(nv, generator=gen) - 0.5, r(nv)
    a[0] = 30.0  # softplus's linear range (above 20)
    beta, g = torch.sigmoid(b), a_neg * F.softplus(a + dt_bias)
    state = 0.1 * r(nv, dk, dv)
    # the definition
    x = F.silu((torch.cat([conv_state, mixed[:, None]], 1) * conv_w).sum(1))
    q, k, v = x[: nk * dk].view(nk, dk), x[nk * dk : 2 * nk * dk].view(nk, dk), x[2 * nk * dk :].view(nv, dv)
    heads = [h % nk if tiled else h // (nv // nk) for h in range(nv)]
    q, k = q[heads], k[heads]
    o, s_new = torch_recurrent_gated_delta_rule(
        q[None, None],
        k[None, None],
        v[None, None],
        g=g[None, None],
        beta=beta[None, None],
        initial_state=state[None].clone(),
        output_final_state=True,
        use_qk_l2norm_in_kernel=True,
    )
    o = o[0, 0]
    expected = (
        o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + eps) * norm_w * F.silu(z.view(nv, dv))
    ).reshape(-1)
    conv_next = torch.cat([conv_state[:, 1:], mixed[:, None]], 1)
    # the kernel (states in place)
    got = cpu_kernels.deltanet_step(
        mixed, conv_state, conv_w, b, a, a_neg, dt_bias, state, z, norm_w, eps, (nk, dk, nv, dv), tiled, 2
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, s_new[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(conv_state, conv_next, rtol=0, atol=0)


def test_decode_rows_are_bit_identical_alone_and_batched(hf_dir):
    # what the server's batched greedy decoding rests on (it runs the kernels batch-invariant for
    # its batch size): a decode row's logits do not depend on the other rows of its step, to the
    # bit. The tiny model's 4 value heads put a row's b and a off the vector lanes PyTorch's
    # elementwise ops use, which once made them differ by an ulp (and the server's text differ).
    # Q8_0, as the server test serves it: the f32 file's matrices go through PyTorch's matmul.
    from ktx.core import _kernels

    model = load(convert_hf(hf_dir, hf_dir.parent / "q8.gguf", "q8_0", progress=False).path)

    prompts = [random_ids(512, n, seed=s) for n, s in ((11, 1), (6, 2), (9, 3))]
    before = _kernels.batch_invariant_rows()
    _kernels.set_batch_invariant_rows(4)
    try:
        alone = []
        for ids in prompts:
            pool = make_pool(model, 256)
            seq, _ = _prefill(model, pool, ids)
            alone.append(
                torch.stack(
                    [
                        forward_step(model, pool, [Segment(seq, seq.length, 1)], torch.tensor([t]))[0]
                        for t in (5, 77, 300)
                    ]
                )
            )
        pool = make_pool(model, 512)
        seqs = [_prefill(model, pool, ids)[0] for ids in prompts]
        rows = []
        for t in (5, 77, 300):
            segs = [Segment(q, q.length, 1) for q in seqs]
            rows.append(forward_step(model, pool, segs, torch.tensor([t] * len(seqs))))
        together = torch.stack(rows, dim=1)  # [sequence, step, vocab]
    finally:
        _kernels.set_batch_invariant_rows(before)
    for i in range(len(prompts)):
        assert torch.equal(together[i], alone[i]), f"sequence {i}: batched decode differs from alone"


def test_a_sequence_without_its_state_is_refused(model):
    pool = make_pool(model, 256)
    seq, _ = _prefill(model, pool, random_ids(512, 9))
    # what a prefix cache would hand over: the KV blocks and length, but no recurrent state
    copy = SequenceKV(blocks=list(seq.blocks), length=seq.length)
    with pytest.raises(ModelError, match="recurrent state"):
        forward_step(model, pool, [Segment(copy, copy.length, 1)], torch.tensor([5]))
    # the sequence itself goes on; freeing it frees its states with its blocks
    forward_step(model, pool, [Segment(seq, seq.length, 1)], torch.tensor([5]))
    assert seq.__dict__.get("ktx_recurrent")
    pool.free(seq)
    assert "ktx_recurrent" not in seq.__dict__


def test_the_server_keeps_no_prefix_cache_for_a_model_with_recurrent_layers(model, tmp_path):
    from ktx.server.engine import Engine

    assert has_recurrent_layers(model)
    assert not Engine(model, cache_tokens=256).cache.enabled
    gguf = convert_hf(make_tiny("qwen3moe", tmp_path / "hf"), tmp_path / "m.gguf", "f32", progress=False).path
    other = load(gguf)
    assert not has_recurrent_layers(other)
    assert Engine(other, cache_tokens=256).cache.enabled


def test_the_memory_plan_counts_one_sequence_of_recurrent_state(model):
    # three gated-DeltaNet layers of the tiny model: S [4 heads][32][32] and 3 conv inputs of
    # 2 * 2 * 32 + 4 * 32 channels each, float32
    per_layer = 4 * (4 * 32 * 32 + (2 * 2 * 32 + 4 * 32) * 3)
    assert model.memory_plan.parts[("cpu", "recurrent state, per sequence")] == 3 * per_layer
