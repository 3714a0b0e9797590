"""The C++ MoE router (core/kernels/routing.h) against the reference `route` of core/ops/moe.py
(PyTorch), for every scoring and group scheme the architectures use."""

from __future__ import annotations

import pytest
import torch

from ktx.core import _kernels
from ktx.core.gguf import GGMLType
from ktx.core.ops.moe import route

SCHEMES = {  # (experts, top_k, route kwargs): Qwen/Mixtral, DeepSeek-V2 (greedy, group-limited), V3
    "softmax": (16, 4, dict(scoring="softmax", norm=True)),
    "softmax-scaled": (64, 6, dict(scoring="softmax", norm=False, scale=2.5)),
    "softmax-group-max": (64, 6, dict(scoring="softmax", group="max", n_group=8, topk_group=3, scale=16.0)),
    "sigmoid-bias-top2sum": (
        64,
        8,
        dict(scoring="sigmoid", group="top2sum", n_group=8, topk_group=4, norm=True, scale=2.5),
    ),
}
GROUPS = {None: 0, "max": 1, "top2sum": 2}


def _router(w, bias, k, kw):
    return _kernels.Router(
        _kernels.QMatrix(int(GGMLType.F32), w.data_ptr(), w.shape[0], w.shape[1]),
        bias.data_ptr() if bias is not None else 0,
        k,
        0 if kw["scoring"] == "softmax" else 1,
        GROUPS[kw.get("group")],
        kw.get("n_group", 1),
        kw.get("topk_group", 1),
        kw.get("norm", False),
        kw.get("scale", 1.0),
        2,
    )


@pytest.mark.parametrize("scheme", SCHEMES)
def test_router_matches_the_reference(scheme):
    experts, k, kw = SCHEMES[scheme]
    g = torch.Generator().manual_seed(len(scheme))
    hidden, n = 256, 33
    w = torch.randn(experts, hidden, generator=g) / 16
    x = torch.randn(n, hidden, generator=g)
    bias = torch.randn(experts, generator=g) * 0.1 if kw["scoring"] == "sigmoid" else None
    ids = torch.empty(n, k, dtype=torch.int64)
    weights = torch.empty(n, k)
    _router(w, bias, k, kw).forward(x.data_ptr(), n, ids.data_ptr(), weights.data_ptr())
    ref_ids, ref_weights = route(torch.nn.functional.linear(x, w), k, bias=bias, **kw)
    assert torch.equal(ids, ref_ids)  # random scores: no ties, so the same experts in the same order
    torch.testing.assert_close(weights, ref_weights, rtol=1e-5, atol=1e-6)


def test_router_logit_bias_gives_gpt_oss_routing():
    # gpt-oss: logits + bias, top-k of the logits, softmax over those k; the router computes it
    # as softmax over all experts renormalised over the chosen k (the same weights)
    g = torch.Generator().manual_seed(7)
    experts, k, hidden, n = 32, 4, 256, 17
    w = torch.randn(experts, hidden, generator=g) / 16
    logit_bias = torch.randn(experts, generator=g)
    x = torch.randn(n, hidden, generator=g)
    router = _kernels.Router(
        _kernels.QMatrix(int(GGMLType.F32), w.data_ptr(), experts, hidden),
        0, k, 0, 0, 1, 1, True, 1.0, 2, logit_bias.data_ptr(),
    )  # fmt: skip
    ids = torch.empty(n, k, dtype=torch.int64)
    weights = torch.empty(n, k)
    router.forward(x.data_ptr(), n, ids.data_ptr(), weights.data_ptr())
    logits = torch.nn.functional.linear(x, w, logit_bias)
    top, ref_ids = logits.topk(k, dim=-1)  # transformers' GptOssTopKRouter
    assert torch.equal(ids, ref_ids)
    torch.testing.assert_close(weights, top.softmax(-1), rtol=1e-5, atol=1e-6)


def test_router_rejects_a_spec_it_cannot_run():
    w = torch.zeros(10, 64)
    with pytest.raises(ValueError, match="groups must split"):
        _router(w, None, 2, dict(scoring="softmax", group="max", n_group=4, topk_group=2))
    with pytest.raises(ValueError, match="top_k"):
        _router(w, None, 11, dict(scoring="softmax"))
