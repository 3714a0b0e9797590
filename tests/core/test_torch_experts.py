"""The reference experts (`TorchExperts`, also what `Experts` runs off the CPU kernels): they run
where they are placed, whatever device the input comes from, and read routing back once per layer.

Oracle: each token through its k experts one by one (float64), from gguf-py's dequantized
weights (ktx.core.gguf.quants)."""

from __future__ import annotations

import pytest
import torch
from moe_calls import random_call
from torch.utils._python_dispatch import TorchDispatchMode

from ktx.core.loader import load
from ktx.core.ops.moe import Experts, TorchExperts

# The ops that read data back to the host on an accelerator, other than the one count read.
SYNCING = {"nonzero", "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive", "masked_select"}


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def _reference(layer: TorchExperts, device: str) -> TorchExperts:
    ref = TorchExperts(layer.key, layer.gguf, layer.config, None, device)
    ref.load()
    return ref


def _token_by_token(ref: TorchExperts, x, ids, weights) -> torch.Tensor:
    out = torch.zeros(x.shape, dtype=torch.float64)
    for t in range(x.shape[0]):
        for e, w in zip(ids[t].tolist(), weights[t].tolist(), strict=True):
            g, u, d = (ref.expert_weight(p, e).cpu().double() for p in ("gate", "up", "down"))
            h = x[t].double()
            out[t] += w * (d @ (torch.nn.functional.silu(g @ h) * (u @ h)))
    return out


@pytest.fixture(scope="module")
def experts_layer(tiny_gguf):
    model = load(tiny_gguf("qwen3moe"), device="cpu")
    return next(m for m in model.modules() if isinstance(m, Experts))


def test_reference_experts_match_token_by_token_and_read_routing_back_once(experts_layer):
    ref = _reference(experts_layer, "cpu")
    x, ids, weights = random_call(experts_layer, 24)
    with _Ops() as ops:
        got = ref(x, ids, weights)
    assert not SYNCING & set(ops.names), "a per-expert data-dependent op is back (a host sync each)"
    assert ops.names.count("bincount") == 1
    expected = _token_by_token(ref, x, ids, weights)
    assert (got.double() - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("placed", ["cuda", "cpu"])
def test_reference_experts_run_where_placed_for_a_gpu_input(experts_layer, placed):
    """Experts placed on the GPU (blocks uploaded, expanded there), or on the CPU with the rest
    of the model on the GPU (`backend: torch`): a GPU input gives a GPU output equal to the CPU's."""
    x, ids, weights = random_call(experts_layer, 24)
    expected = _reference(experts_layer, "cpu")(x, ids, weights)
    ref = _reference(experts_layer, placed)
    got = ref(x.cuda(), ids.cuda(), weights.cuda())
    assert got.device.type == "cuda"
    assert (got.cpu() - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    if placed == "cuda":
        assert all(b.device.type == "cuda" for b in ref._blocks.values())
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with pytest.warns(UserWarning) as syncs:
                ref(x.cuda(), ids.cuda(), weights.cuda())
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert len(syncs) == 1, [str(w.message) for w in syncs]  # the expert counts, read once
