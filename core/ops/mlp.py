"""The gated MLP of every dense layer and shared expert: down(act(gate(x)) * up(x)).

Its projections are the replaced module's children (QuantLinear by the default rules). On the
CPU, with gate and up held as GGUF blocks, one kernel call multiplies both and applies the
activation (x quantized once, one job on the pool); elsewhere, or for an activation the
kernels lack, it runs the replaced module's own math.
"""

from __future__ import annotations

import torch

from . import cpu_kernels
from .base import Operator, adopt


class GatedMLP(Operator):
    def __init__(self, key, gguf, config, orig=None, device="cpu", **kwargs):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        adopt(self, orig, ("gate_proj", "up_proj", "down_proj"))
        self.act_fn = getattr(orig, "act_fn", None)
        if self.gate_proj is None or self.up_proj is None or self.down_proj is None or self.act_fn is None:
            raise ValueError(
                f"{key}: GatedMLP replaces modules with gate_proj, up_proj, down_proj and act_fn"
            )
        name = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
        self.act = cpu_kernels.act_code(name)

    def _fused(self) -> bool:
        g, u = self.gate_proj, self.up_proj
        return (
            self.act is not None
            and getattr(g, "qmatrix", None) is not None
            and getattr(u, "qmatrix", None) is not None
            and g.bias is None
            and u.bias is None
            and g.exact_kernels == u.exact_kernels
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., hidden] -> [..., hidden]
        if x.device.type != "cpu" or not self._fused():
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        flat = x.reshape(-1, x.shape[-1]).float().contiguous()
        g = self.gate_proj
        if flat.shape[1] != g.qmatrix.cols:
            raise ValueError(
                f"{self.key}: input {tuple(x.shape)} does not fit weights of {g.qmatrix.cols} columns"
            )
        h = torch.empty(flat.shape[0], g.rows)
        cpu_kernels.gated_linear(
            g.qmatrix, self.up_proj.qmatrix, flat, h, self.act, g.exact_kernels, g.threads
        )
        return self.down_proj(h).reshape(x.shape).to(x.dtype)
