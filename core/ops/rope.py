"""Rotary position embedding in llama.cpp's two layouts.

Frequencies come from transformers' own RoPE initialisers (default, linear, YaRN, llama3 ...),
so every scaling variant matches the oracle; llama.cpp's `rope_freqs` tensor (llama 3 scaling
stored as per-dimension factors) divides them when present. `interleaved` rotates adjacent
pairs (llama.cpp NORM: llama, DeepSeek); otherwise the two halves (NEOX: Qwen, Gemma).
"""

from __future__ import annotations

import torch
from torch import nn

from . import cpu_kernels


def inv_freq(config, dim: int, layer_type: str | None = None) -> tuple[torch.Tensor, float]:
    params = config.rope_parameters
    if layer_type is not None and layer_type in params:  # Gemma 3: one RoPE per layer type
        params = params[layer_type]
    else:
        layer_type = None
    kind = params.get("rope_type", "default")
    if kind == "default":
        theta = params["rope_theta"]
        dim = int(dim * params.get("partial_rotary_factor", 1.0))  # GLM-4.x: half of each head
        return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    kwargs = {"layer_type": layer_type} if layer_type is not None else {}
    freq, scale = ROPE_INIT_FUNCTIONS[kind](config, "cpu", **kwargs)
    return freq.float(), float(scale)


class Rope:
    def __init__(self, freqs: torch.Tensor, scale: float, interleaved: bool):
        self.freqs, self.scale, self.interleaved = freqs.float().contiguous(), scale, interleaved
        self._on: dict[torch.device, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # x: [T, heads, dim] float32; positions: [T] (any device: moved to x's). Partial
        # rotary (GLM-4.x): only the first 2 * len(freqs) values of each head turn.
        rot = 2 * self.freqs.numel()
        if rot < x.shape[-1]:
            return torch.cat((self(x[..., :rot], positions), x[..., rot:]), dim=-1)
        freqs = self._on.get(x.device)
        if freqs is None:
            freqs = self._on[x.device] = self.freqs.to(x.device)
        angles = positions.to(x.device, torch.float32)[:, None] * freqs[None, :]  # [T, dim/2]
        cos = (angles.cos() * self.scale)[:, None, :]
        sin = (angles.sin() * self.scale)[:, None, :]
        if self.interleaved:
            x1, x2 = x[..., 0::2], x[..., 1::2]
            out = torch.empty_like(x)
            out[..., 0::2] = x1 * cos - x2 * sin
            out[..., 1::2] = x2 * cos + x1 * sin
            return out
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    def rotate_(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x rotated: in place by the CPU kernel where it fits (float32 on the CPU, unit last
        stride, int64 positions on the CPU), else a new tensor from the reference above."""
        if (
            x.dtype == torch.float32
            and x.is_cpu
            and x.dim() == 3
            and x.stride(2) == 1
            and positions.dtype == torch.int64
            and positions.is_cpu
            and positions.is_contiguous()
        ):
            cpu_kernels.rope_(
                x[..., : 2 * self.freqs.numel()], positions, self.freqs, self.scale, self.interleaved
            )
            return x
        return self(x, positions)


class NoRotary(nn.Module):
    """Replaces the model's shared rotary module: ktx attention rotates q/k itself."""

    def __init__(self, key=None, gguf=None, config=None, orig=None, device="cpu", **kwargs):
        super().__init__()

    def forward(self, *args, **kwargs):
        return None
