"""Linear layer over GGUF weights.

`weights` (a rule kwarg) picks how the weights are held:
- `auto` (default): Q8_0, Q5_0 and Q4_0 weights stay 8-bit (int8 with a float32 scale per 32
  values, an exact re-encoding) and decode-sized inputs go through the C++ GEMV
  (ktx.core._kernels.gemv_i8), which reads ~28% of float32's bytes; other types are
  dequantized once, as with `dequant`.
- `dequant`: dequantized once at load to `dtype` (float32): the reference path.
- `gguf`: the GGUF blocks stay in the mmap (no copy) and are dequantized per call, for layers
  too large to hold dequantized.
Every path computes in float32 activations, so they agree up to summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _kernels, cpu
from ..gguf.repack import REPACKABLE, to_int8
from .base import Operator

GEMV_MAX_TOKENS = 16  # above this, a float32 GEMM on the dequantized weights is faster
MODES = ("auto", "dequant", "gguf")


class QuantLinear(Operator):
    def __init__(
        self,
        key,
        gguf,
        config,
        orig=None,
        device="cpu",
        weights: str = "auto",
        dtype: str = "float32",
        **kwargs,
    ):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        if weights not in MODES:
            raise ValueError(f"QuantLinear weights must be one of {', '.join(MODES)}, not {weights!r}")
        self.mode, self.dtype = weights, getattr(torch, dtype)
        self.in_features = getattr(orig, "in_features", None)
        self.out_features = getattr(orig, "out_features", None)
        self.weight = self.weight_t = self.bias = self.source = self.q8 = self.scales = None

    def _weight_name(self) -> str:
        name = f"{self.key}.weight"
        if self.key == "output" and not self.has(name):  # tied embeddings
            return "token_embd.weight"
        return name

    def load(self) -> None:
        name = self._weight_name()
        self.source = t = self.tensor(name)
        rows, cols = t.shape[0], t.shape[-1]
        eight_bit = t.type in REPACKABLE and cols % 32 == 0 and self.device.type == "cpu"
        if self.mode == "auto" and eight_bit:
            self.q8, self.scales = to_int8(
                t.data, t.type, rows, cols
            )  # int8 [rows, cols], f32 [rows, cols/32]
        elif self.mode in ("auto", "dequant"):
            # Held as [in, out]: `x @ w_t` streams it at ~70% of DRAM bandwidth on the CPU,
            # where F.linear's GEMV over [out, in] reaches ~40% (measured with torch 2.13).
            self.weight_t = self.dequant(name, self.dtype).T.contiguous()
            self.weight = self.weight_t.T
        if self.has(f"{self.key}.bias"):
            self.bias = self.dequant(f"{self.key}.bias", self.dtype)

    def unload(self) -> None:
        self.weight = self.weight_t = self.bias = self.source = self.q8 = self.scales = None

    def _gemv(self, x: torch.Tensor) -> torch.Tensor:
        # x: [n, in] float32 -> [n, out]
        x = x.float().contiguous()
        rows = self.q8.shape[0]
        y = torch.empty(x.shape[0], rows, dtype=torch.float32)
        _kernels.gemv_i8(
            self.q8.ctypes.data,
            self.scales.ctypes.data,
            rows,
            x.shape[1],
            x.data_ptr(),
            x.shape[0],
            y.data_ptr(),
            cpu.default_threads(),
        )
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]
        if self.q8 is not None:
            flat = x.reshape(-1, x.shape[-1])
            if flat.shape[0] <= GEMV_MAX_TOKENS:
                y = self._gemv(flat)
            else:
                # prefill chunks: widen once (exact: int8 * float32 scale) and use the GEMM
                q, sc = torch.from_numpy(self.q8), torch.from_numpy(self.scales)
                w = (q.view(q.shape[0], -1, 32).float() * sc[:, :, None]).view(q.shape)
                y = F.linear(flat.float(), w)
            y = y + self.bias if self.bias is not None else y
            return y.reshape(*x.shape[:-1], y.shape[-1])
        if self.weight_t is None:
            w = self.source.dequantize(torch.float32).to(self.device)
            return F.linear(x.to(w.dtype), w, self.bias)
        y = torch.matmul(x.to(self.weight_t.dtype), self.weight_t)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        held = "q8_0" if self.q8 is not None else self.mode
        return f"key={self.key}, weights={held}"
