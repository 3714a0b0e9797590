"""RMSNorm with the GGUF weight as the multiplier (llama.cpp already folded Gemma's 1 + w)."""

from __future__ import annotations

import torch

from .base import Operator


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight).to(x.dtype)


class RMSNorm(Operator):
    def __init__(self, key, gguf, config, orig=None, device="cpu", **kwargs):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        eps = getattr(orig, "variance_epsilon", None) or getattr(orig, "eps", None)
        self.eps = float(eps if eps is not None else config.rms_norm_eps)
        self.weight = None

    def load(self) -> None:
        self.weight = self.dequant(f"{self.key}.weight")

    def unload(self) -> None:
        self.weight = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)
