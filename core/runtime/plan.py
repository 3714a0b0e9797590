"""A step as one walk over the operators, built once per model.

transformers' decoder layers are the structure (and, through `model(...)`, the oracle), but
calling them on every step costs a chain of nn.Module calls per layer: hooks, keyword plumbing,
tuple returns, residual tensors. The plan reads that structure once: for each layer it keeps
its operators' `forward` (or `add_to`) functions and the pattern that joins them, and a step
is then a short loop over those functions. The same walk runs eagerly on the CPU and is what a
graph captures on an accelerator.

On the CPU, where a layer's operators hold GGUF-native weights, each half of the layer is
one call into the kernels' decoder blocks (runtime/cpu_blocks.py): the same kernels in the
same order, without the Python between them.

A layer class not in LAYER_KINDS, or a layer whose parts are not ktx operators where the
pattern needs them, is called as the module it is: slower, never wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..ops.base import Operator
from ..ops.norm import RMSNorm
from .context import current

PRE_NORM = "pre_norm"  # x += attn(norm1(x)); x += mlp(norm2(x))
SANDWICH = "sandwich"  # x += norm2(attn(norm1(x))); x += norm4(mlp(norm3(x)))   (Gemma 3)

# transformers decoder-layer class -> how its parts are joined (their forward, as of
# transformers 5: tests/core/test_models.py compares every architecture with it).
LAYER_KINDS = {
    "LlamaDecoderLayer": PRE_NORM,
    "MistralDecoderLayer": PRE_NORM,
    "Qwen2DecoderLayer": PRE_NORM,
    "Qwen3DecoderLayer": PRE_NORM,
    "MixtralDecoderLayer": PRE_NORM,
    "Qwen2MoeDecoderLayer": PRE_NORM,
    "Qwen3MoeDecoderLayer": PRE_NORM,
    "DeepseekV2DecoderLayer": PRE_NORM,
    "DeepseekV3DecoderLayer": PRE_NORM,
    "GptOssDecoderLayer": PRE_NORM,
    "Glm4MoeDecoderLayer": PRE_NORM,
    "MiniMaxM2DecoderLayer": PRE_NORM,
    "Qwen3NextDecoderLayer": PRE_NORM,  # attention or a gated DeltaNet (linear_attn) per layer
    "Qwen3_5MoeDecoderLayer": PRE_NORM,
    "Gemma3DecoderLayer": SANDWICH,
}
# The parts of each kind: (attention norm, post-attention norm, MLP norm, post-MLP norm).
NORMS = {
    PRE_NORM: ("input_layernorm", None, "post_attention_layernorm", None),
    SANDWICH: (
        "input_layernorm",
        "post_attention_layernorm",
        "pre_feedforward_layernorm",
        "post_feedforward_layernorm",
    ),
}


def direct(module: nn.Module) -> Callable:
    """What the walk calls for a module: an operator's own forward (no nn.Module.__call__),
    unless hooks are attached to it (device hops), which only the module call runs."""
    if isinstance(module, Operator) and not (module._forward_hooks or module._forward_pre_hooks):
        return module.forward
    return module


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


@dataclass
class LayerStep:
    """One decoder layer's operators in the order a step visits them."""

    attn_norm: Callable
    attn: Callable  # [1, T, hidden] -> ([1, T, hidden], None)
    post_attn_norm: RMSNorm | None
    mlp_norm: Callable
    mlp: Callable  # [T, hidden] -> [T, hidden]
    post_mlp_norm: RMSNorm | None
    layer_idx: int = -1
    attn_block: Any = None  # the CPU kernels' fused halves where they fit (cpu_blocks.Block)
    mlp_block: Any = None

    def __call__(
        self, x: torch.Tensor, positions: torch.Tensor, fused: bool = False, attn_tokens: int = 0
    ) -> torch.Tensor:
        # x: [T, hidden], updated in place (each residual add writes into it). fused: x is a
        # contiguous float32 CPU tensor (the MLP block fits); attn_tokens: the step's longest
        # segment, when the cache is a float32 host pool (else 0): the attention block fits if
        # it takes segments that long
        block = self.attn_block
        if (
            attn_tokens
            and block is not None
            and (block.max_tokens is None or attn_tokens <= block.max_tokens)
        ):
            self._attn_block(x)
        else:
            a = self.attn(self.attn_norm(x)[None])[0][0]
            if self.post_attn_norm is None:
                x.add_(a)
            else:
                self.post_attn_norm.add_to(x, a)
        if fused and self.mlp_block is not None:
            self.mlp_block.kernel.forward(x.data_ptr(), x.shape[0])
            return x
        m = self.mlp(self.mlp_norm(x))
        if self.post_mlp_norm is None:
            x.add_(m)
        else:
            self.post_mlp_norm.add_to(x, m)
        return x

    def _attn_block(self, x: torch.Tensor) -> None:
        ctx = current()
        seq, table, pos = ctx.cpu_rows
        stores = [t.data_ptr() for t in ctx.pool.layers[self.layer_idx]]  # MLA: one latent store
        cache = (table.data_ptr(), table.shape[1], ctx.pool.block_size)
        kernel = self.attn_block.kernel
        kernel.forward(x.data_ptr(), x.shape[0], *stores, *cache, seq.data_ptr(), pos.data_ptr())


@dataclass
class ModuleStep:
    """A layer the plan does not know: called as the module it is."""

    layer: nn.Module

    def __call__(
        self, x: torch.Tensor, positions: torch.Tensor, fused: bool = False, attn_tokens: int = 0
    ) -> torch.Tensor:
        out = self.layer(x[None], attention_mask=None, position_ids=positions[None], position_embeddings=None)
        return (out[0] if isinstance(out, tuple) else out)[0]


def layer_step(layer: nn.Module, fused: bool = True) -> LayerStep | ModuleStep:
    kind = LAYER_KINDS.get(type(layer).__name__)
    if kind is None or _hooked(layer):
        return ModuleStep(layer)
    norm1, norm2, norm3, norm4 = (getattr(layer, n) if n else None for n in NORMS[kind])
    attn = layer.self_attn if hasattr(layer, "self_attn") else layer.linear_attn
    mlp = layer.mlp
    # ktx attention takes the flat row and the step's context; the post norms add into the
    # residual themselves (RMSNorm.add_to)
    if not isinstance(attn, Operator) or any(
        n is not None and (not isinstance(n, RMSNorm) or _hooked(n)) for n in (norm2, norm4)
    ):
        return ModuleStep(layer)
    step = LayerStep(direct(norm1), direct(attn), norm2, direct(norm3), direct(mlp), norm4, attn.layer_idx)
    if getattr(attn, "tensor_out", False):  # a linear attention returns the tensor alone
        step.attn = lambda x, f=step.attn: (f(x), None)
    if not isinstance(mlp, Operator):  # transformers' own MoE blocks want [batch, seq, hidden]
        step.mlp = _batched(mlp)
    elif getattr(mlp, "tuple_out", False):  # (hidden, router scores), as gpt-oss's layer unpacks
        step.mlp = lambda x, f=step.mlp: f(x)[0]
    if fused:
        from . import cpu_blocks  # imports the operators, which import this package

        step.attn_block = cpu_blocks.attn_block(norm1, attn, norm2) or cpu_blocks.mla_block(
            norm1, attn, norm2
        )
        step.mlp_block = cpu_blocks.mlp_block(norm3, mlp, norm4) or cpu_blocks.moe_block(norm3, mlp, norm4)
    return step


def _batched(module: nn.Module) -> Callable:
    return lambda x: module(x[None])[0]


class StepPlan:
    """embeddings -> layers -> final norm -> LM head, for one model."""

    def __init__(self, model: nn.Module, fused: bool = True):
        """fused: use the CPU decoder blocks where they fit (False: every operator is called,
        as `ktx bench e2e --breakdown` times them)."""
        inner, config = model.model, model.config
        self.embed = direct(inner.embed_tokens)
        self.layers = [layer_step(layer, fused) for layer in inner.layers[: config.num_hidden_layers]]
        self.norm = direct(inner.norm)
        self.lm_head = direct(model.lm_head)
        # Every layer is two CPU blocks that take any step (no PyTorch work of any size in it)
        self.all_blocks = all(
            isinstance(s, LayerStep)
            and s.mlp_block is not None
            and s.attn_block is not None
            and s.attn_block.max_tokens is None
            for s in self.layers
        )
        self.softcap = getattr(config, "final_logit_softcapping", None)

    @classmethod
    def of(cls, model: nn.Module) -> StepPlan:
        """The model's plan, built on first use."""
        plan = model.__dict__.get("_ktx_step_plan")
        if plan is None:
            plan = model.__dict__["_ktx_step_plan"] = cls(model)
        return plan

    def __call__(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        keep: torch.Tensor | None = None,
        hidden: bool = False,
    ) -> torch.Tensor:
        """input_ids, positions: [T] -> logits [len(keep) or T, vocab]; hidden: the final norm's
        output [.., hidden_size] instead (what embeddings pool)."""
        x = self.embed(input_ids[None])[0]  # [T, hidden]
        ctx = current()
        fused = x.is_cpu and x.dtype == torch.float32 and x.is_contiguous()
        attn_tokens = 0
        if fused and ctx is not None and ctx.pool.host_float32:
            attn_tokens = max(s.length for s in ctx.segments)
        for step in self.layers:
            x = step(x, positions, fused, attn_tokens)
        if keep is not None:  # the norm is per row: only the kept rows need it
            x = x[keep.to(x.device)]
        if hidden:
            return self.norm(x)
        logits = self.lm_head(self.norm(x))
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits
