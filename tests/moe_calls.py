"""Random calls of one routed-experts layer (ops/moe.py Experts), for the tests that drive it
directly: each token picks k distinct experts, with weights in [0, 1)."""

from __future__ import annotations

import torch


def random_call(layer, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x [n, hidden], ids [n, k], weights [n, k]) for `layer` (loaded: its `parts` are read)."""
    g = torch.Generator().manual_seed(seed)
    n_experts, hidden = layer.parts["gate"][0].shape[0], layer.parts["down"][0].shape[1]
    k = int(layer.config.num_experts_per_tok)
    x = torch.randn(n, hidden, generator=g)
    ids = torch.stack([torch.randperm(n_experts, generator=g)[:k] for _ in range(n)])
    return x, ids, torch.rand(n, k, generator=g)
