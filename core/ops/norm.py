"""RMSNorm with the GGUF weight as the multiplier (llama.cpp already folded Gemma's 1 + w)."""

from __future__ import annotations

import torch

from . import cpu_kernels
from .base import Operator


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference: float32 math, the input's dtype out."""
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * weight).to(x.dtype)


def _kernel_fits(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous()


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
        if _kernel_fits(x) and self.weight.device.type == "cpu":
            return cpu_kernels.rms_norm(x, self.weight, self.eps)
        return rms_norm(x, self.weight, self.eps)

    def add_to(self, residual: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """residual += norm(x), in place (Gemma's norm after attention and after the MLP)."""
        if _kernel_fits(x) and _kernel_fits(residual) and self.weight.device.type == "cpu":
            return cpu_kernels.rms_norm(x, self.weight, self.eps, out=residual, accumulate=True)
        return residual.add_(self.forward(x))
