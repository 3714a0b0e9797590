"""A layer's operators compiled into the CPU kernels' decoder blocks (core/kernels/blocks.h).

On the CPU, a decode step's Python costs more than its small products: about a dozen
operator calls per layer at several microseconds each. Where a layer's attention and gated
MLP are ktx operators holding GGUF-native weights on the CPU, the step plan hands each half
to one C++ call that runs the same kernels in the same order (so its results equal the
operators'). DeepSeek's multi-head latent attention (mla_block) and the MoE layers (router,
routed experts on their MoeLayer, shared experts: moe_block) have blocks of their own.
Anything else (an accelerator, dequantized weights, experts split with a GPU) returns None
here and runs through the operators.

The blocks point into the operators' tensors and the GGUF mmap; `keep` holds them so they live
as long as the block, even if an operator is unloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .. import _kernels
from ..ops.attention import Attention
from ..ops.mla import MLAAttention
from ..ops.mlp import GatedMLP
from ..ops.moe import Experts, Gate, MoE
from ..ops.norm import RMSNorm


@dataclass
class Block:
    kernel: Any  # _kernels.AttnBlock | _kernels.MlaBlock | _kernels.MlpBlock | _kernels.MoeBlock
    keep: tuple  # what the kernel's pointers point into
    max_tokens: int | None = None  # attention: the longest segment it takes (None: any)


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
    if type(attn) is not Attention or attn.accelerated or attn.rope is None or attn.gated:
        return None
    lins = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj)
    norms = [_norm(n) for n in (norm, post_norm, attn.q_norm, attn.k_norm)]
    if not _native(*lins) or None in norms or norm is None:
        return None
    (n1, e1, k1), (n2, e2, k2), (nq, eq, kq), (nk, ek, kk) = norms
    if (nq == 0) != (nk == 0) or (nq and eq != ek):
        return None  # one epsilon for both per-head norms
    freqs = attn.rope.freqs
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
        sinks=_ptr(attn.sinks),
        rope_dim=freqs.numel() * 2,  # GLM-4.x rotates half of each head
        qk_norm_full=attn.qk_norm_full,
    )
    keep = (*k1, *k2, *kq, *kk, freqs, *(lin.blocks for lin in lins), *(lin.bias for lin in lins), attn.sinks)
    return Block(kernel, keep)


def mla_block(norm, attn, post_norm) -> Block | None:
    """The absorbed MLA of attn (its CPU decode path, in the same kernel order) as one call."""
    if type(attn) is not MLAAttention or attn.accelerated or attn.absorb == "never" or post_norm is not None:
        return None
    if attn.k_heads is None or attn.v_heads is None or attn.rope is None or norm is None:
        return None  # kv_b's older joint form, or widths the kernels do not take: the operator
    lora = attn.q_proj is None
    lins = (attn.q_b_proj, attn.q_a_proj) if lora else (attn.q_proj,)
    lins = (*lins, attn.kv_a_proj_with_mqa, attn.o_proj)
    norms = [_norm(n) for n in (norm, attn.q_a_layernorm if lora else None, attn.kv_a_layernorm)]
    if (
        not _native(*lins)
        or any(lin.bias is not None for lin in lins)
        or None in norms
        or lins[0].exact_kernels != attn.exact
    ):
        return None
    (n1, e1, k1), (nqa, eqa, kqa), (nkv, ekv, kkv) = norms
    (k_b, k_stride), (v_b, v_stride) = attn.k_heads, attn.v_heads
    freqs = attn.rope.freqs
    kernel = _kernels.MlaBlock(
        hidden=lins[0].qmatrix.cols if not lora else attn.q_a_proj.qmatrix.cols,
        norm=n1,
        norm_eps=e1,
        q=lins[0].qmatrix,
        q_a=attn.q_a_proj.qmatrix if lora else None,
        q_a_norm=nqa,
        q_a_eps=eqa,
        kv_a=attn.kv_a_proj_with_mqa.qmatrix,
        kv_norm=nkv,
        kv_eps=ekv,
        k_b=k_b,
        k_b_stride=k_stride,
        v_b=v_b,
        v_b_stride=v_stride,
        o=attn.o_proj.qmatrix,
        heads=attn.heads,
        nope=attn.nope,
        rope_dim=attn.rope_dim,
        rank=attn.rank,
        v_dim=attn.v_dim,
        rope_freqs=freqs.data_ptr(),
        rope_scale=attn.rope.scale,
        scale=attn.scale,
        exact=attn.exact,
        threads=attn.threads,
    )
    heads_data = tuple(attn.tensor(f"{attn.key}.attn_{p}_b.weight").raw for p in ("k", "v"))
    keep = (*k1, *kqa, *kkv, freqs, *(lin.blocks for lin in lins), *heads_data)
    return Block(kernel, keep, attn.paged_max_tokens)


def _gated(mlp) -> tuple | None:
    """(gate, up, down) of a GatedMLP the kernels run as one gated product and a down
    product (GGUF-native on the CPU, no down bias), or None."""
    if not isinstance(mlp, GatedMLP) or mlp.accelerated or not mlp._fused():
        return None
    lins = (mlp.gate_proj, mlp.up_proj, mlp.down_proj)
    return lins if _native(*lins) and mlp.down_proj.bias is None else None


def mlp_block(norm, mlp, post_norm) -> Block | None:
    lins = _gated(mlp)
    norms = [_norm(n) for n in (norm, post_norm)]
    if lins is None or None in norms or norm is None:
        return None
    gate, up, down = lins
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


def moe_block(norm, moe, post_norm) -> Block | None:
    """A MoE layer whose router, experts and shared experts all run on the CPU kernels."""
    if type(moe) is not MoE or moe.accelerated or norm is None:
        return None
    gate, experts = moe.gate, moe.experts
    shared = moe.shared_experts if moe.shared_experts is not None else moe.shared_expert
    if (
        not isinstance(gate, Gate)
        or getattr(gate, "router", None) is None
        or "route" in vars(gate)  # watched (runtime/profile.count_routing): the operators route
        or not isinstance(experts, Experts)
        or experts.kernel is None
        or experts.gpu_w is not None
        or experts.cpu_off
        or moe.shared_expert_gate is not None  # Qwen2-MoE's sigmoid gate: the operators
    ):
        return None
    norms = [_norm(n) for n in (norm, post_norm)]
    if None in norms:
        return None
    (n1, e1, k1), (n2, e2, k2) = norms
    parts, act, exact, threads, keep = (None, None, None), 0, False, 1, ()
    if shared is not None:
        lins = _gated(shared)
        if lins is None:
            return None
        parts = tuple(lin.qmatrix for lin in lins)
        act, exact, threads = shared.act, lins[0].exact_kernels, lins[0].threads
        keep = tuple(lin.blocks for lin in lins)
    kernel = _kernels.MoeBlock(
        hidden=experts.kernel.hidden,
        norm=n1,
        norm_eps=e1,
        post_norm=n2,
        post_eps=e2,
        router=gate.router,
        experts=experts.kernel._layer,
        shared_gate=parts[0],
        shared_up=parts[1],
        shared_down=parts[2],
        act=act,
        exact=exact,
        threads=threads,
    )
    return Block(kernel, (*k1, *k2, gate.weight, gate.bias, experts.kernel, *keep))
