"""What the XPU and Ascend backends add beyond the CUDA backend's code, checked without their
hardware.

- The portable PyTorch paged decode (ktx.core.ops.paged_decode), which the Ascend backend and
  an XPU without Triton use, against the references of backends/cuda/paged_attention.py, with
  tables as wide as a graph's (stray blocks full of NaN past each row's length).
- The Ascend backend's call of torch_npu's fused attention. torch_npu is not installed here, so a
  stand-in module answers the call as its documentation describes it (paged "BSH" keys
  [blocks, block_size, kv_heads * head_dim], a block table, host lengths, `scale` or the older
  `scale_value`) by the PyTorch reference. This checks ktx's side of the call (layouts, head
  grouping, lengths, the keyword, when it applies, what a refusal does), not the operator.
- torch_npu's host-function launch driving StreamExperts, with a stand-in stream that runs each
  callable at once: the CPU experts equal the CPU layer, and each stream is subscribed once.
- Which models a decode graph may capture (unqueued_experts).
"""

from __future__ import annotations

import contextlib
import math
import sys
import types

import pytest
import torch
from moe_calls import random_call
from test_paged_attention import LENGTHS, paged_pool, widened

from ktx.backends.ascend import attention as ascend_attention
from ktx.backends.ascend.host_moe import NpuHostFuncs
from ktx.backends.cuda import paged_attention as pa
from ktx.backends.cuda.graphs import unqueued_experts
from ktx.backends.cuda.host_moe import StreamExperts
from ktx.core.loader import load
from ktx.core.ops import paged_decode
from ktx.core.ops.moe import Experts

TOL = dict(atol=1e-5, rtol=1e-5)


def gqa_case(dtype=torch.float32, heads=8, kv_heads=2, dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    (k, v), table, lens = paged_pool(LENGTHS, 16, ((kv_heads, dim), (kv_heads, dim)), dtype, "cpu", seed)
    q = 2 * torch.randn(len(LENGTHS), heads, dim, generator=g)
    return q, k, v, table, lens


# -- the portable decode ------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "softcap"), [(None, None), (40, None), (None, 2.0), (7, 3.0)])
@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 2), (4, 4), (6, 1)])
def test_portable_gqa_decode_matches_the_reference(window, softcap, heads, kv_heads):
    q, k, v, table, lens = gqa_case(heads=heads, kv_heads=kv_heads)
    wide = widened(table, k.shape[0], k.shape[0])  # a graph's table: the pool's width
    got = paged_decode.gqa_decode(q, k, v, wide, lens, 0.125, window, softcap)
    want = pa.gqa_decode_reference(q, k, v, table, lens, 0.125, window, softcap)
    assert got.dtype == torch.float32 and not got.isnan().any()
    torch.testing.assert_close(got, want, **TOL)


def test_portable_gqa_decode_with_sinks_and_a_bfloat16_cache():
    q, k, v, table, lens = gqa_case(torch.bfloat16)
    sinks = torch.randn(8, generator=torch.Generator().manual_seed(3))
    got = paged_decode.gqa_decode(q, k, v, table, lens, 0.125, 40, None, sinks)
    want = pa.gqa_decode_reference(q, k, v, table, lens, 0.125, 40, None, sinks)
    torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("heads", [1, 16])
def test_portable_mla_decode_matches_the_reference(heads):
    g = torch.Generator().manual_seed(1)
    rank, rope = 48, 16
    (cache,), table, lens = paged_pool(LENGTHS, 16, ((rank + rope,),), torch.float32, "cpu")
    q_lat = torch.randn(len(LENGTHS), heads, rank, generator=g)
    q_pe = torch.randn(len(LENGTHS), heads, rope, generator=g)
    scale = 1 / math.sqrt(rank + rope)
    got = paged_decode.mla_decode(q_lat, q_pe, cache, widened(table, 12, cache.shape[0]), lens, scale, rank)
    want = pa.mla_decode_reference(q_lat, q_pe, cache, table, lens, scale, rank)
    torch.testing.assert_close(got, want, **TOL)


# -- torch_npu's fused attention, as documented ----------------------------------------------


def documented_fused_attention(scale_keyword: str):
    """npu_fused_infer_attention_score's paged incremental branch as its documentation states it,
    computed by the reference; records each call's keywords."""
    calls = []

    def op(query, key, value, *, block_table, actual_seq_lengths_kv, num_heads, num_key_value_heads,
           input_layout, block_size, **rest):  # fmt: skip
        if set(rest) != {scale_keyword}:
            raise TypeError(f"unexpected keyword arguments {sorted(rest)}")
        assert input_layout == "BSH" and isinstance(actual_seq_lengths_kv, list)
        assert query.dtype == key.dtype == value.dtype and query.is_contiguous()
        batch, one, hidden = query.shape
        blocks, bs, kv_hidden = key.shape
        assert one == 1 and bs == block_size and hidden % num_heads == 0
        dim = hidden // num_heads
        assert kv_hidden == num_key_value_heads * dim
        k = key.view(blocks, bs, num_key_value_heads, dim)
        v = value.view(blocks, bs, num_key_value_heads, dim)
        lens = torch.tensor(actual_seq_lengths_kv, dtype=torch.int32)
        q = query.view(batch, num_heads, dim).float()
        out = pa.gqa_decode_reference(q, k, v, block_table, lens, rest[scale_keyword])
        calls.append(rest)
        return out.to(query.dtype).reshape(batch, 1, hidden), torch.empty(0)

    return op, calls


@pytest.fixture
def fake_torch_npu(monkeypatch):
    """A torch_npu module (and torch.npu) with nothing in it yet; the fused operator's state reset."""
    module = types.ModuleType("torch_npu")
    module.npu = types.SimpleNamespace(is_current_stream_capturing=lambda: False)
    monkeypatch.setitem(sys.modules, "torch_npu", module)
    monkeypatch.setattr(torch, "npu", module.npu, raising=False)
    monkeypatch.setattr(ascend_attention._Fused, "refused", None)
    monkeypatch.setattr(ascend_attention._Fused, "scale_keyword", None)
    return module


@pytest.mark.parametrize("keyword", ["scale", "scale_value"])
@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 2), (4, 4)])
def test_fused_attention_is_called_in_its_documented_layout(fake_torch_npu, keyword, heads, kv_heads):
    fake_torch_npu.npu_fused_infer_attention_score, calls = documented_fused_attention(keyword)
    q, k, v, table, lens = gqa_case(torch.bfloat16, heads, kv_heads)
    got = ascend_attention.gqa_decode(q, k, v, table, lens, 0.125)
    # the operator ran, in the cache's dtype: the query is rounded to bfloat16 first
    want = pa.gqa_decode_reference(q.bfloat16(), k, v, table, lens, 0.125).bfloat16().float()
    assert len(calls) == 1 and calls[0] == {keyword: 0.125}
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    ascend_attention.gqa_decode(q, k, v, table, lens, 0.125)
    assert len(calls) == 2  # the keyword found is remembered


@pytest.mark.parametrize(
    "case",
    ["window", "softcap", "sinks", "float32 cache", "capturing"],
)
def test_what_the_fused_attention_does_not_compute_takes_the_pytorch_decode(fake_torch_npu, case):
    fake_torch_npu.npu_fused_infer_attention_score, calls = documented_fused_attention("scale")
    q, k, v, table, lens = gqa_case(torch.float32 if case == "float32 cache" else torch.bfloat16)
    options = dict(window=40 if case == "window" else None, softcap=2.0 if case == "softcap" else None)
    if case == "sinks":
        options["sinks"] = torch.zeros(8)
    if case == "capturing":
        fake_torch_npu.npu.is_current_stream_capturing = lambda: True
    got = ascend_attention.gqa_decode(q, k, v, table, lens, 0.125, **options)
    assert calls == []
    torch.testing.assert_close(got, pa.gqa_decode_reference(q, k, v, table, lens, 0.125, **options), **TOL)


def test_a_refusing_fused_attention_is_not_asked_again(fake_torch_npu, caplog):
    asked = []

    def refuses(*args, **kwargs):
        asked.append(1)
        raise RuntimeError("blockSize 16 is not supported")

    fake_torch_npu.npu_fused_infer_attention_score = refuses
    q, k, v, table, lens = gqa_case(torch.bfloat16)
    want = pa.gqa_decode_reference(q, k, v, table, lens, 0.125)
    for _ in range(2):
        torch.testing.assert_close(ascend_attention.gqa_decode(q, k, v, table, lens, 0.125), want, **TOL)
    assert len(asked) == 1
    assert "blockSize 16 is not supported" in caplog.text


# -- torch_npu's host-function launch ---------------------------------------------------------


@pytest.fixture(scope="module")
def experts_layer(tiny_gguf):
    model = load(tiny_gguf("qwen3moe"), device="cpu")
    return next(m for m in model.modules() if isinstance(m, Experts) and m.kernel is not None)


@pytest.mark.usefixtures("exact_kernels")
def test_npu_host_launch_runs_the_cpu_experts_in_stream_order(fake_torch_npu, experts_layer):
    """The stand-in stream runs each callable at once, as the report thread would in order."""
    streams = [object(), object()]
    subscribed, launched, current = [], [], []

    @contextlib.contextmanager
    def device(d):
        current.append(torch.device(d))
        yield

    def launch(stream, fn, arg):
        assert any(s is stream for s in subscribed), "launched on a stream not subscribed"
        launched.append(stream)
        fn(arg)

    fake_torch_npu.npu.device = device
    fake_torch_npu.npu.current_stream = lambda d=None: streams[len(launched) // 4 % 2]
    fake_torch_npu.npu._subscribe_report = subscribed.append
    fake_torch_npu.npu._launch_host_func = launch
    host_funcs = NpuHostFuncs()
    assert host_funcs.available()
    runner = StreamExperts(experts_layer.kernel, torch.device("cpu"), host_funcs)
    for n in (3, 1, 5):  # 2 launches each: the first two calls on one stream, the third on another
        call = random_call(experts_layer, n)
        runner.submit(*call)
        got = runner.sync()
        runner.check()
        assert torch.equal(got, experts_layer.kernel(*call))
    assert len(launched) == 6 and subscribed == streams  # each stream subscribed once
    assert set(current) == {torch.device("cpu")}


def test_npu_host_launch_is_unavailable_without_torch_npu_or_its_calls(fake_torch_npu, monkeypatch):
    assert not NpuHostFuncs().available()  # a torch_npu without the two calls
    monkeypatch.setitem(sys.modules, "torch_npu", None)  # no torch_npu at all
    assert not NpuHostFuncs().available()


# -- which models a graph may capture ---------------------------------------------------------


def test_a_graph_holds_cpu_experts_only_where_they_can_be_queued(tiny_gguf, monkeypatch):
    moe = load(tiny_gguf("qwen3moe"), device="cpu")
    dense = load(tiny_gguf("qwen3"), device="cpu")
    # torch knows "npu" only once torch_npu is imported: a device is asked only its type here
    xpu, npu = torch.device("xpu"), types.SimpleNamespace(type="npu")
    assert unqueued_experts(dense, xpu) is None and unqueued_experts(dense, npu) is None
    assert "xpu's backend cannot queue them" in unqueued_experts(moe, xpu)
    monkeypatch.setitem(sys.modules, "torch_npu", None)
    from ktx.backends.ascend.kernels import HOST_FUNCS

    monkeypatch.setattr(HOST_FUNCS, "_ok", None)
    assert "torch_npu.npu._launch_host_func is not available" in unqueued_experts(moe, npu)
    monkeypatch.setattr(HOST_FUNCS, "_ok", True)
    assert unqueued_experts(moe, npu) is None
