"""Linear layer over GGUF weights.

Default (`weights: dequant`): dequantized once at load to `dtype` (float32) — the reference
path and, until the quantized CPU GEMV kernels land (the CPU MoE kernel issue), the fast one.
`weights: gguf` keeps the GGUF blocks (no copy, mmap-backed) and dequantizes per call, for
layers too large to hold dequantized.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Operator


class QuantLinear(Operator):
    def __init__(
        self,
        key,
        gguf,
        config,
        orig=None,
        device="cpu",
        weights: str = "dequant",
        dtype: str = "float32",
        **kwargs,
    ):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        if weights not in ("dequant", "gguf"):
            raise ValueError(f"QuantLinear weights must be 'dequant' or 'gguf', not {weights!r}")
        self.mode, self.dtype = weights, getattr(torch, dtype)
        self.in_features = getattr(orig, "in_features", None)
        self.out_features = getattr(orig, "out_features", None)
        self.weight = self.weight_t = self.bias = None
        self.source = None

    def _weight_name(self) -> str:
        name = f"{self.key}.weight"
        if self.key == "output" and not self.has(name):  # tied embeddings
            return "token_embd.weight"
        return name

    def load(self) -> None:
        name = self._weight_name()
        self.source = self.tensor(name)
        if self.mode == "dequant":
            # Held as [in, out]: `x @ w_t` streams it at ~70% of DRAM bandwidth on the CPU,
            # where F.linear's GEMV over [out, in] reaches ~40% (measured with torch 2.13).
            self.weight_t = self.dequant(name, self.dtype).T.contiguous()
            self.weight = self.weight_t.T
        if self.has(f"{self.key}.bias"):
            self.bias = self.dequant(f"{self.key}.bias", self.dtype)

    def unload(self) -> None:
        self.weight = self.weight_t = self.bias = self.source = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]
        if self.weight_t is None:
            w = self.source.dequantize(torch.float32).to(self.device)
            return F.linear(x.to(w.dtype), w, self.bias)
        y = torch.matmul(x.to(self.weight_t.dtype), self.weight_t)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"key={self.key}, mode={self.mode}"
