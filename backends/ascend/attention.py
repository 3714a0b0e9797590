"""Paged GQA decode on Ascend: torch_npu's fused inference attention where it applies, the
portable PyTorch decode (ktx.core.ops.paged_decode) everywhere else.

`torch_npu.npu_fused_infer_attention_score` reads a paged cache through a block table when the
query has one token per sequence (its incremental branch). ktx's pool stores a layer's keys as
[blocks, block_size, kv_heads, head_dim], which is the operator's paged "BSH" key layout
[blocks, block_size, kv_heads * head_dim] without a copy. It takes the lengths as host integers,
so the call reads seq_lens back (one small copy per layer) and cannot be captured: inside a graph
capture, and for what it does not compute (a sliding window, a logit soft-cap, sink logits, a
float32 cache, values wider than keys), the PyTorch decode runs. Its scale keyword was renamed
(`scale_value`, then `scale`): both are tried. An operator that refuses the call once (an
unsupported block size or head count on that chip) is not asked again: the PyTorch decode takes
over, with a warning. None of it has run on an NPU yet.
"""

from __future__ import annotations

import logging

import torch

from ktx.core.ops import paged_decode

log = logging.getLogger("ktx.backends.ascend")
FUSED_DTYPES = (torch.float16, torch.bfloat16)


class _Fused:
    """Whether the fused operator is still used, and the name of its scale keyword."""

    refused: str | None = None
    scale_keyword: str | None = None


def _operator():
    try:
        import torch_npu
    except ImportError:
        return None
    return getattr(torch_npu, "npu_fused_infer_attention_score", None)


def _capturing() -> bool:
    npu = getattr(torch, "npu", None)
    return npu is not None and npu.is_current_stream_capturing()


def fused_applies(q, k_cache, v_cache, window, softcap, sinks) -> bool:
    return (
        _Fused.refused is None
        and window is None
        and softcap is None
        and sinks is None
        and k_cache.dtype in FUSED_DTYPES
        and v_cache.shape[3] == k_cache.shape[3]
        and not _capturing()
    )


def _fused(op, q, k_cache, v_cache, block_table, seq_lens, scale) -> torch.Tensor:
    batch, heads, dim = q.shape
    blocks, block_size, kv_heads, _ = k_cache.shape
    kwargs = dict(
        block_table=block_table,
        actual_seq_lengths_kv=seq_lens.tolist(),
        num_heads=heads,
        num_key_value_heads=kv_heads,
        input_layout="BSH",
        block_size=block_size,
    )
    args = (
        q.to(k_cache.dtype).reshape(batch, 1, heads * dim),
        k_cache.view(blocks, block_size, kv_heads * dim),
        v_cache.view(blocks, block_size, kv_heads * dim),
    )
    for keyword in [_Fused.scale_keyword] if _Fused.scale_keyword else ["scale", "scale_value"]:
        try:
            out = op(*args, **kwargs, **{keyword: scale})[0]
        except TypeError:
            continue
        _Fused.scale_keyword = keyword
        return out.reshape(batch, heads, dim).float()
    raise TypeError("npu_fused_infer_attention_score takes neither `scale` nor `scale_value`")


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
    num_splits: int | None = None,
) -> torch.Tensor:
    """ktx.core.ops.paged_decode.gqa_decode's contract: q [B, H, D] -> [B, H, Dv] float32."""
    op = _operator()
    if op is not None and fused_applies(q, k_cache, v_cache, window, softcap, sinks):
        try:
            return _fused(op, q, k_cache, v_cache, block_table, seq_lens, scale)
        except (RuntimeError, TypeError) as e:
            _Fused.refused = str(e)
            log.warning("fused attention refused a decode step (%s): PyTorch decode from now on", e)
    return paged_decode.gqa_decode(q, k_cache, v_cache, block_table, seq_lens, scale, window, softcap, sinks)
