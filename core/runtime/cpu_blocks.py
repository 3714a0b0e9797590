"""A layer's operators compiled into the CPU kernels' decoder blocks (core/kernels/blocks.h).

On the CPU, a decode step's Python costs more than its small products: about a dozen
operator calls per layer at several microseconds each. Where a layer's attention and gated
MLP are ktx operators holding GGUF-native weights on the CPU, the step plan hands each half
to one C++ call that runs the same kernels in the same order (so its results equal the
operators'). Anything else (an accelerator, dequantized weights, MLA, MoE) returns None here
and runs through the operators.

The blocks point into the operators' tensors and the GGUF mmap; `keep` holds them so they live
as long as the block, even if an operator is unloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import _kernels
from ..ops.attention import Attention
from ..ops.mlp import GatedMLP
from ..ops.norm import RMSNorm


@dataclass
class Block:
    kernel: Any  # _kernels.AttnBlock | _kernels.MlpBlock
    keep: tuple  # what the kernel's pointers point into


def _norm(n) -> tuple[int, float, tuple]:
    """(weight pointer, eps, keep) of an RMSNorm on the CPU, (0, 0, ()) for none; None if unfit."""
    if n is None:
        return 0, 0.0, ()
    w = getattr(n, "weight", None)
    if not isinstance(n, RMSNorm) or w is None or w.device.type != "cpu" or w.dtype != torch.float32:
        return None
    return w.data_ptr(), n.eps, (w,)


def _native(*linears) -> bool:
    return all(getattr(lin, "qmatrix", None) is not None for lin in linears) and (
        len({lin.exact_kernels for lin in linears}) == 1
    )


def _ptr(t: torch.Tensor | None) -> int:
    return t.data_ptr() if t is not None else 0


def attn_block(norm, attn, post_norm) -> Block | None:
    if type(attn) is not Attention or attn.accelerated or attn.rope is None:
        return None
    lins = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)
    norms = [_norm(n) for n in (norm, post_norm, attn.q_norm, attn.k_norm)]
    if not _native(*lins) or None in norms or norm is None:
        return None
    (n1, e1, k1), (n2, e2, k2), (nq, eq, kq), (nk, ek, kk) = norms
    if (nq == 0) != (nk == 0) or (nq and eq != ek):
        return None  # one epsilon for both per-head norms
    freqs = attn.rope.freqs
    if freqs.numel() * 2 != attn.head_dim:
        return None  # partial rotary: not in the block
    q, k, v, o = lins
    kernel = _kernels.AttnBlock(
        hidden=q.qmatrix.cols,
        norm=n1,
        norm_eps=e1,
        post_norm=n2,
        post_eps=e2,
        q=q.qmatrix,
        k=k.qmatrix,
        v=v.qmatrix,
        o=o.qmatrix,
        q_bias=_ptr(q.bias),
        k_bias=_ptr(k.bias),
        v_bias=_ptr(v.bias),
        o_bias=_ptr(o.bias),
        q_norm=nq,
        k_norm=nk,
        qk_eps=eq,
        heads=attn.heads,
        kv_heads=attn.kv_heads,
        head_dim=attn.head_dim,
        rope_freqs=freqs.data_ptr(),
        rope_scale=attn.rope.scale,
        rope_interleaved=attn.rope.interleaved,
        scale=attn.scale,
        window=attn.window or 0,
        softcap=attn.softcap or 0.0,
        exact=q.exact_kernels,
        threads=attn.threads,
    )
    keep = (*k1, *k2, *kq, *kk, freqs, *(lin.blocks for lin in lins), *(lin.bias for lin in lins))
    return Block(kernel, keep)


def mlp_block(norm, mlp, post_norm) -> Block | None:
    if not isinstance(mlp, GatedMLP) or mlp.accelerated or not mlp._fused():
        return None
    gate, up, down = mlp.gate_proj, mlp.up_proj, mlp.down_proj
    norms = [_norm(n) for n in (norm, post_norm)]
    if not _native(gate, up, down) or down.bias is not None or None in norms or norm is None:
        return None
    (n1, e1, k1), (n2, e2, k2) = norms
    kernel = _kernels.MlpBlock(
        hidden=gate.qmatrix.cols,
        inter=gate.qmatrix.rows,
        norm=n1,
        norm_eps=e1,
        post_norm=n2,
        post_eps=e2,
        gate=gate.qmatrix,
        up=up.qmatrix,
        down=down.qmatrix,
        act=mlp.act,
        exact=gate.exact_kernels,
        threads=gate.threads,
    )
    return Block(kernel, (*k1, *k2, gate.blocks, up.blocks, down.blocks))
