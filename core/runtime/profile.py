"""Routing profiles: how often each layer's router picks each expert, over some text.

`--gpu-experts N` keeps the N busiest experts of each layer on the GPU; a profile recorded on
text like the intended use says which those are (`ktx profile`). The same counts tell a
benchmark whether its routing is realistic: random weights with a bias can send every token
to the same few experts, which makes prefill look fast.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def count_routing(model: torch.nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """While inside, every routing decision of every MoE layer is counted:
    {layer key ("blk.3"): [n_experts] int64 counts}."""
    from ..ops.moe import Gate

    counts: dict[str, torch.Tensor] = {}
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    for gate in gates:
        key, n_experts = gate.key.rsplit(".", 1)[0], gate.weight.shape[0]
        counts[key] = torch.zeros(n_experts, dtype=torch.int64)

        def counted(x, _route=gate.route, _counts=counts[key], _n=n_experts):
            ids, weights = _route(x)
            _counts += torch.bincount(ids.reshape(-1).cpu(), minlength=_n)
            return ids, weights

        gate.route = counted  # an instance attribute shadows the method
    # the step plan is rebuilt on the way in and out: a CPU MoE block routes in C++, past
    # gate.route (runtime/cpu_blocks.moe_block leaves a counted gate to the operators)
    model.__dict__.pop("_ktx_step_plan", None)
    try:
        yield counts
    finally:
        for gate in gates:
            del gate.route
        model.__dict__.pop("_ktx_step_plan", None)


def spread(counts: dict[str, torch.Tensor]) -> dict[str, float]:
    """How evenly tokens spread over experts, over all layers: the least share of experts any
    layer used, the largest load of one expert relative to an even share, and the mean
    normalised entropy (1.0 = perfectly even)."""
    if not counts:
        return {}
    used, peak, entropy = [], [], []
    for c in counts.values():
        total = int(c.sum())
        if total == 0:
            continue
        p = c.double() / total
        used.append(float((c > 0).double().mean()))
        peak.append(float(p.max() * len(c)))
        nz = p[p > 0]
        entropy.append(float(-(nz * nz.log()).sum() / math.log(len(c))))
    if not used:
        return {}
    return {
        "min_experts_used": min(used),
        "max_load_vs_even": max(peak),
        "mean_entropy": sum(entropy) / len(entropy),
    }
