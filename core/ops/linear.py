"""Linear layer over GGUF weights.

`weights` (a rule kwarg) picks how the weights are held:
- `auto` (default): Q8_0, Q5_0, Q4_0, Q6_K and Q4_K weights stay 8-bit (int8 with float32
  scales per 16 or 32 values, plus offsets for Q4_K: an exact re-encoding) and decode-sized
  inputs go through the C++ GEMV (ktx.core._kernels.gemv_i8), which reads ~30% of float32's
  bytes; other types are dequantized once, as with `dequant`.
- `dequant`: dequantized once at load to `dtype` (float32): the reference path.
- `gguf`: the GGUF blocks stay in the mmap (no copy) and are dequantized per call, for layers
  too large to hold dequantized.
Every path computes in float32 activations, so they agree up to summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _kernels, cpu
from ..gguf.repack import REPACKABLE, Int8Weights, to_int8
from ..models.names import tied
from .base import Operator

GEMV_MAX_TOKENS = 16  # above this, a float32 GEMM on the dequantized weights is faster
MODES = ("auto", "dequant", "gguf")


def int8_gemv(w: Int8Weights, x: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """x: [n, in] -> x @ W.T [n, out] float32, through the C++ kernel (W = s * q - o)."""
    x = x.float().contiguous()
    rows = w.q.shape[0]
    y = torch.empty(x.shape[0], rows, dtype=torch.float32)
    q, scales, offsets = w.pointers()
    _kernels.gemv_i8(
        q,
        scales,
        offsets,
        w.group,
        rows,
        x.shape[1],
        x.data_ptr(),
        x.shape[0],
        y.data_ptr(),
        threads or cpu.default_threads(),
    )
    return y


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
        self.weight = self.weight_t = self.bias = self.source = self.int8 = None

    def load(self) -> None:
        name = tied(f"{self.key}.weight", self.gguf.tensors)
        self.source = t = self.tensor(name)
        rows, cols = t.shape[0], t.shape[-1]
        eight_bit = t.type in REPACKABLE and cols % 32 == 0 and self.device.type == "cpu"
        if self.mode == "auto" and eight_bit:
            self.int8 = to_int8(t.data, t.type, rows, cols)
            self.threads = cpu.default_threads()  # read once (sysfs): KTX_THREADS or physical cores
        elif self.mode in ("auto", "dequant"):
            # Held as [in, out]: `x @ w_t` streams it at ~70% of DRAM bandwidth on the CPU,
            # where F.linear's GEMV over [out, in] reaches ~40% (measured with torch 2.13).
            self.weight_t = self.dequant(name, self.dtype).T.contiguous()
            self.weight = self.weight_t.T
        if self.has(f"{self.key}.bias"):
            self.bias = self.dequant(f"{self.key}.bias", self.dtype)

    def unload(self) -> None:
        self.weight = self.weight_t = self.bias = self.source = self.int8 = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]
        if self.int8 is not None:
            flat = x.reshape(-1, x.shape[-1])
            if flat.shape[0] <= GEMV_MAX_TOKENS:
                y = int8_gemv(self.int8, flat, self.threads)
            else:  # prefill chunks: widen once (exact) and use the float32 GEMM
                y = F.linear(flat.float(), self.int8.widen())
            y = y + self.bias if self.bias is not None else y
            return y.reshape(*x.shape[:-1], y.shape[-1])
        if self.weight_t is None:
            w = self.source.dequantize(torch.float32).to(self.device)
            return F.linear(x.to(w.dtype), w, self.bias)
        y = torch.matmul(x.to(self.weight_t.dtype), self.weight_t)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        held = f"int8/{self.int8.group}" if self.int8 is not None else self.mode
        return f"key={self.key}, weights={held}"
