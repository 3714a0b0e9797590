"""One conformance suite for every accelerator backend: cuda, rocm, xpu, ascend.

Each backend's kernel module (what `ktx.core.backend.kernels` hands the operators) is held to
the same oracles: dequantization bit-exact with gguf-py (claimed types by its own kernel, the
others through the CPU fallback), paged decode attention against the PyTorch reference,
CPU experts run in its stream order equal to the CPU MoE layer, a replayed graph equal to the
eager step, and logits of three architectures (MLA, GQA MoE, dense) equal to the all-CPU run.

Where the backend's hardware is present the suite runs there. Elsewhere (CI) CPU tensors stand
in for the device: Triton kernels (cuda, rocm, and xpu when Triton is installed) run in Triton's
interpreter, the stream's host callbacks are called directly in order, and the operators are made
to take their accelerator paths. What only the hardware can run (a real stream, graph capture)
is skipped, saying so.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import types
from importlib.util import find_spec

import gguf
import numpy as np
import pytest
import torch
from hf_oracle import random_ids
from moe_calls import random_call
from test_cuda_dequant import TYPES, odd_shape, oracle, random_blocks
from test_paged_attention import LENGTHS, paged_pool, tolerance
from test_paged_ops import decode

from ktx.core.loader import load
from ktx.core.ops.attention import Attention
from ktx.core.ops.base import dequant_to
from ktx.core.ops.mla import MLAAttention
from ktx.core.ops.moe import Experts

Q = gguf.GGMLQuantizationType
# each backend's marker selects it in its nox session (ROCm's torch answers as torch.cuda)
BACKENDS = [
    pytest.param("cuda", marks=pytest.mark.cuda),
    pytest.param("rocm", marks=pytest.mark.cuda),
    pytest.param("xpu", marks=pytest.mark.xpu),
    pytest.param("ascend", marks=pytest.mark.npu),
]
TRITON = {"cuda", "rocm"}  # their modules import Triton; xpu's only when it is installed
TOL = 1e-4


def _hardware(name: str) -> str | None:
    """The backend's own device when it is here, else None (CPU tensors stand in)."""
    if name in ("cuda", "rocm") and torch.cuda.is_available():
        return "cuda" if bool(torch.version.hip) == (name == "rocm") else None
    if name == "xpu" and hasattr(torch, "xpu") and torch.xpu.is_available():
        return "xpu"
    if name == "ascend" and find_spec("torch_npu") is not None:
        import torch_npu  # noqa: F401 - adds torch.npu

        return "npu" if torch.npu.is_available() else None
    return None


@pytest.fixture(params=BACKENDS)
def backend(request):
    name = request.param
    if name in TRITON and find_spec("triton") is None:
        # ktx[test] brings triton on Linux x86-64 (CI); elsewhere it has no wheel, and these two
        # kernel modules are Triton code through and through: nothing of them can run
        pytest.skip(f"{name}'s kernels are Triton code and triton is not installed")
    kern = importlib.import_module(f"ktx.backends.{name}.kernels")
    device = _hardware(name)
    return types.SimpleNamespace(name=name, kern=kern, device=device or "cpu", stand_in=device is None)


class _Raw:
    """A GGUF tensor as dequant_to reads it: its blocks, type and shape."""

    def __init__(self, raw: np.ndarray, qtype: Q, shape: tuple[int, ...]):
        self.raw, self.type, self.shape = raw.reshape(-1), qtype, shape

    def dequantize(self, dtype=torch.float32) -> torch.Tensor:
        return oracle(self.raw, self.type, self.shape).to(dtype)


def test_every_backend_fills_the_decode_seam(backend):
    """Paged decode, a step's end and graph capture: every backend has them (its own kernels or
    the portable PyTorch ones), so the tests below hold each backend to them without exception."""
    for name in ("gqa_decode", "mla_decode", "finish_step", "GraphRunner"):
        assert callable(getattr(backend.kern, name, None)), f"{backend.name} lacks {name}"
    device_type = {"ascend": "npu", "xpu": "xpu"}.get(backend.name, "cuda")  # ROCm's torch: "cuda"
    runner_device = backend.kern.GraphRunner.DEVICE_TYPE
    assert runner_device == device_type


def test_dequantize_is_bit_exact_for_every_type(backend, monkeypatch):
    claimed = set(getattr(backend.kern, "DEQUANT_TYPES", ()))
    assert claimed <= {int(t) for t in TYPES}  # what it claims is what the oracle knows
    assert bool(claimed) == hasattr(backend.kern, "dequantize")
    monkeypatch.setattr("ktx.core.backend.kernels", lambda device_type: backend.kern)
    device = torch.device(backend.device)
    for qtype in TYPES:  # claimed: the backend's kernel; the others: the CPU's, then a copy
        shape = odd_shape(qtype)
        raw = random_blocks(qtype, shape, np.random.default_rng(int(qtype)))
        got = dequant_to(_Raw(raw, qtype, shape), device)
        want = oracle(raw, qtype, shape)
        assert got.dtype == torch.float32 and got.device.type == device.type
        assert torch.equal(got.cpu().view(torch.int32), want.view(torch.int32)), qtype.name


def test_paged_decode_matches_the_reference(backend):
    kern = backend.kern
    from ktx.backends.cuda import paged_attention as pa

    g = torch.Generator().manual_seed(1)
    (k, v), table, lens = paged_pool(LENGTHS, 16, ((2, 64), (2, 64)), torch.bfloat16, backend.device)
    q = (2 * torch.randn(len(LENGTHS), 8, 64, generator=g)).to(backend.device)
    args = (q, k, v, table, lens, 1 / 8, 40, 2.0)
    torch.testing.assert_close(
        kern.gqa_decode(*args, num_splits=3), pa.gqa_decode_reference(*args), **tolerance(torch.bfloat16)
    )
    rank, rope, heads = 64, 16, 4
    (cache,), table, lens = paged_pool(LENGTHS, 16, ((rank + rope,),), torch.float32, backend.device)
    q_lat = torch.randn(len(LENGTHS), heads, rank, generator=g).to(backend.device)
    q_pe = torch.randn(len(LENGTHS), heads, rope, generator=g).to(backend.device)
    scale = 1 / math.sqrt(rank + rope)
    got = kern.mla_decode(q_lat, q_pe, cache, table, lens, scale, rank)
    ref = pa.mla_decode_reference(q_lat, q_pe, cache, table, lens, scale, rank)
    torch.testing.assert_close(got, ref, **tolerance(torch.float32))


@pytest.fixture(scope="module")
def experts_layer(tiny_gguf):
    model = load(tiny_gguf("qwen3moe"), device="cpu")
    return next(m for m in model.modules() if isinstance(m, Experts) and m.kernel is not None)


@pytest.mark.usefixtures("exact_kernels")
def test_stream_ordered_experts_equal_the_cpu_layer(backend, experts_layer, monkeypatch):
    kern, layer = backend.kern, experts_layer
    call = random_call(layer, 5)
    expected = layer.kernel(*call)
    host_funcs = getattr(kern, "HOST_FUNCS", None)
    if host_funcs is None:
        # no stream callbacks (xpu): the MoE layer's generic path, submitted before the shared
        # experts and awaited after them
        assert getattr(kern, "stream_experts", None) is None
        layer.submit(*call)
        assert torch.equal(layer.sync(), expected)
        return
    from ktx.backends.cuda.host_moe import StreamExperts

    if backend.stand_in:  # the stream's host callbacks, called directly and in order
        callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        monkeypatch.setattr(host_funcs, "launch_on", lambda device, fn, arg: callback(fn)(arg))
    runner = StreamExperts(layer.kernel, torch.device(backend.device), host_funcs)
    runner.submit(*(t.to(backend.device) for t in call))
    got = runner.sync()
    if not backend.stand_in:
        kern.finish_step(torch.device(backend.device))
    runner.check()
    assert torch.equal(got.cpu(), expected)


@pytest.mark.parametrize("arch", ["qwen3moe", "qwen3"])  # CPU experts in the graph; a dense model
def test_a_replayed_graph_equals_the_eager_step(backend, arch, tiny_gguf):
    if backend.stand_in:
        # a capture records a real device stream; CPU tensors have none to record (CI): this
        # runs in the backend's nox session on its hardware
        pytest.skip(f"graph capture needs {backend.name} hardware")
    from ktx.core.runtime.generate import prefill_and_generate

    model = load(tiny_gguf(arch), device=backend.device)
    ids = random_ids(500, 12)
    eager = prefill_and_generate(model, model.tokenizer, ids, 8, use_cuda_graph=False).tokens
    graphed = prefill_and_generate(model, model.tokenizer, ids, 8, use_cuda_graph=True).tokens
    assert graphed == eager


@pytest.mark.usefixtures("exact_kernels")
@pytest.mark.parametrize("arch", ["deepseek-v3", "qwen3moe", "qwen3"])  # MLA, GQA MoE, dense
def test_logits_equal_the_all_cpu_run(backend, arch, tiny_gguf, monkeypatch):
    gguf_path = tiny_gguf(arch, "q8_0")
    prompts = [random_ids(500, 13, seed=1), random_ids(500, 22, seed=2)]
    with torch.inference_mode():
        model = load(gguf_path)
        expected = decode(model, prompts, 4)
        if not backend.stand_in:  # the real hybrid placement: bfloat16 weights and cache there
            got = decode(load(gguf_path, device=backend.device), prompts, 4)
            scale = expected.abs().max()
            assert (got - expected).abs().max() <= 2e-2 * scale
            return
        # stand-in: the same model (loaded for the CPU: float32 weights), its attention made to
        # take the accelerator's path, every kernel lookup answered by the backend's module
        calls = []
        kern = types.SimpleNamespace(**vars(backend.kern))
        for name in ("gqa_decode", "mla_decode"):
            real = getattr(kern, name)
            setattr(kern, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
        monkeypatch.setattr("ktx.core.backend.kernels", lambda device_type: kern)
        for cls in (Attention, MLAAttention):
            monkeypatch.setattr(cls, "accelerated", property(lambda self: True))
        model.__dict__.pop("_ktx_step_plan", None)  # the step plan is built for the placement
        got = decode(model, prompts, 4)
    # the backend's paged decode ran in every decode step of every layer
    assert len(calls) == 4 * model.config.num_hidden_layers
    assert (got - expected).abs().max().item() <= TOL
