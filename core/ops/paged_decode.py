"""Paged decode attention in plain PyTorch, for accelerators without their own kernels (Ascend
without its fused operator, XPU without Triton).

Same contract as the Triton kernels of backends/cuda/paged_attention.py (q [B, H, D] against
the pool through block_table [B, max_blocks] and seq_lens [B], both on the device), and like
them it reads no value back to the host: every row gathers its table's full width of blocks and
masks what lies past its length, so a captured graph can replay it with new table contents. The
cost is the gather: B x max_blocks x block_size rows per layer, the whole pool's width inside a
graph (whose table is as wide as the pool). That is fine for the sizes these backends are tried
at; a backend that cares brings a kernel.
"""

from __future__ import annotations

import torch


def _rows(cache: torch.Tensor, block_table: torch.Tensor) -> torch.Tensor:
    """cache [NB, BS, ...] -> each row's blocks in table order, [B, max_blocks * BS, ...]."""
    got = cache[block_table.long()]  # [B, MB, BS, ...]
    return got.reshape(block_table.shape[0], -1, *cache.shape[2:])


def _visible(seq_lens: torch.Tensor, width: int, window: int | None) -> torch.Tensor:
    """[B, width] bool: the keys row b's query (at position seq_lens[b] - 1) reads."""
    pos = torch.arange(width, device=seq_lens.device)
    lens = seq_lens.long()[:, None]
    seen = pos < lens
    if window is not None:
        seen &= (lens - 1) - pos < window
    return seen


def gqa_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    *,
    num_splits: int | None = None,  # the kernels' launch option: nothing to split here
) -> torch.Tensor:
    """q [B, H, D]; k_cache [NB, BS, KVH, D], v_cache [NB, BS, KVH, Dv] -> [B, H, Dv] float32."""
    batch, heads, dim = q.shape
    kv_heads = k_cache.shape[2]
    k = _rows(k_cache, block_table).float()  # [B, S, KVH, D]
    v = _rows(v_cache, block_table).float()
    qg = q.float().view(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.einsum("bkgd,bskd->bkgs", qg, k) * scale
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    seen = _visible(seq_lens, k.shape[1], window)
    scores = scores.masked_fill(~seen[:, None, None, :], float("-inf"))
    v = v.masked_fill(~seen[:, :, None, None], 0)  # a weight of 0 times a stale NaN is NaN
    if sinks is not None:  # a logit per head that joins the softmax without a value (gpt-oss)
        sink = sinks.float().view(1, kv_heads, heads // kv_heads, 1).expand(batch, -1, -1, 1)
        scores = torch.cat([scores, sink], dim=-1)
    probs = scores.softmax(-1)[..., : k.shape[1]]
    return torch.einsum("bkgs,bskd->bkgd", probs, v).reshape(batch, heads, v.shape[-1])


def mla_decode(
    q_lat: torch.Tensor,
    q_pe: torch.Tensor,
    cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    rank: int,
    *,
    num_splits: int | None = None,
) -> torch.Tensor:
    """q_lat [B, H, rank], q_pe [B, H, P]; cache [NB, BS, rank + P] -> o_lat [B, H, rank] float32."""
    latent = _rows(cache, block_table).float()  # [B, S, rank + P]
    c, k_pe = latent[..., :rank], latent[..., rank:]
    scores = torch.einsum("bhr,bsr->bhs", q_lat.float(), c) + torch.einsum("bhp,bsp->bhs", q_pe.float(), k_pe)
    scores = scores * scale
    seen = _visible(seq_lens, latent.shape[1], None)
    scores = scores.masked_fill(~seen[:, None, :], float("-inf"))
    c = c.masked_fill(~seen[:, :, None], 0)  # a weight of 0 times a stale NaN is NaN
    return torch.einsum("bhs,bsr->bhr", scores.softmax(-1), c)
