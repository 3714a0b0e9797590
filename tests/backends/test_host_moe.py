"""The CPU experts in a GPU stream's order (backends/cuda/host_moe.py), run here with the stream
replaced by direct calls of the same C callbacks, and the recovery of a step that fails between
starting the CPU experts and awaiting them.

Oracle: the CPU MoE layer called directly (CpuMoE.__call__) on the same input."""

from __future__ import annotations

import contextlib
import ctypes
import types

import pytest
import torch
from moe_calls import random_call

from ktx.core.loader import load
from ktx.core.ops.moe import Experts

pytestmark = pytest.mark.usefixtures("exact_kernels")


@pytest.fixture(scope="module")
def experts_layer(tiny_gguf):
    model = load(tiny_gguf("qwen3moe"), device="cpu")
    return next(m for m in model.modules() if isinstance(m, Experts) and m.kernel is not None)


@pytest.fixture
def direct_stream(monkeypatch):
    """host_moe's stream calls, made here: each host callback runs at once, in order; the
    devices made current around each launch are recorded."""
    pytest.importorskip("ktx.backends.cuda.host_moe")
    from ktx.backends.cuda import host_moe

    current: list = []
    callback = ctypes.CFUNCTYPE(None, ctypes.c_void_p)

    @contextlib.contextmanager
    def device(d):
        current.append(torch.device(d))
        yield

    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda d=None: types.SimpleNamespace(cuda_stream=0))
    monkeypatch.setattr(host_moe.CUDA_HOST_FUNCS, "launch", lambda stream, fn, arg: callback(fn)(arg))
    return host_moe, current


def test_stream_experts_recover_from_a_step_that_failed_before_sync(experts_layer, direct_stream):
    host_moe, current = direct_stream
    runner = host_moe.StreamExperts(experts_layer.kernel, torch.device("cpu"))
    first, second = random_call(experts_layer, 1), random_call(experts_layer, 2)
    runner.submit(*first)  # ... and the step raises here: no sync
    runner.submit(*second)  # the next step
    got = runner.sync()
    runner.check()
    assert torch.equal(got, experts_layer.kernel(*second))
    assert current and set(current) == {torch.device("cpu")}  # every launch under the runner's device
    with pytest.raises(RuntimeError, match="nothing was submitted"):
        runner.sync()


def test_experts_recover_from_a_step_that_failed_before_sync(experts_layer):
    """The background CPU runner (experts beside a device without stream callbacks)."""
    first, second = random_call(experts_layer, 3), random_call(experts_layer, 4)
    expected = experts_layer.kernel(*second)
    experts_layer.submit(*first)  # the shared experts raise: MoE.forward cancels
    experts_layer.cancel()
    experts_layer.submit(*first)  # no cancel at all: the next submit drops it
    experts_layer.submit(*second)
    assert torch.equal(experts_layer.sync(), expected)
