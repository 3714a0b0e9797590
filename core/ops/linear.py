"""Linear layer over GGUF weights.

`weights` (a rule kwarg) picks how the weights are held:
- `auto` (default): on the CPU the GGUF blocks stay where they are (a view of the mmap, no
  copy) and every product runs on the C++ kernels over the native blocks
  (core/kernels/qmatmul.h): activations are quantized to int8 (one scale per 16 values, per
  256 for Q4_K/Q5_K) for the types with an int8 form, as llama.cpp does; KTX_EXACT=1 (or
  `exact: true`) keeps them float32.
  Prefill chunks take the same kernels (AVX-512: 16 tokens per register), which measured ~15%
  faster than dequantizing for PyTorch's float32 GEMM on the demo. On other devices, as
  `dequant`.
- `dequant`: dequantized once at load to `dtype`: the reference path. `dtype` defaults to
  float32 on the CPU and bfloat16 on an accelerator (dequantized there by the backend's
  kernel, bit-exact, then rounded once).
- `gguf`: the GGUF blocks are kept as they are and dequantized per call: on the CPU from the
  mmap (PyTorch); on an accelerator they are uploaded and expanded by the backend's kernel
  before each product, the 4-bit weight-only option for GPUs too small for bf16 weights
  (Q4_K is 4.5 bits per weight; a call costs one extra pass over the weights, ~2x the time of
  bf16 weights, and a bfloat16 temporary as large as the matrix, which the memory plan counts).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _kernels, cpu
from ..cpu_moe import exact_default
from ..models.names import tied
from . import cpu_kernels
from .base import Operator

# Steps of at most this many tokens run PyTorch's own ops on one thread (runtime.generate):
# the kernels' pool needs the cores, and PyTorch has little to do.
GEMV_MAX_TOKENS = 16
MODES = ("auto", "dequant", "gguf")


def fused_linears(linears, x: torch.Tensor) -> list[torch.Tensor] | None:
    """x [n, cols] -> [x @ W_i.T + b_i] float32 for QuantLinears held natively on the CPU (one
    width, one `exact` setting): x is quantized once and all products run as one job. None if
    any of them is held otherwise (the caller runs them one by one)."""
    first = linears[0]
    if any(
        lin.qmatrix is None
        or lin.exact_kernels != first.exact_kernels
        or lin.qmatrix.cols != first.qmatrix.cols
        for lin in linears
    ):
        return None
    if x.dim() != 2 or x.shape[1] != first.qmatrix.cols:
        raise ValueError(f"input {tuple(x.shape)} does not fit weights of {first.qmatrix.cols} columns")
    x = x.float().contiguous()
    n = x.shape[0]
    ys = [torch.empty(n, lin.rows) for lin in linears]
    cpu_kernels.linear(
        [lin.qmatrix for lin in linears],
        x,
        ys,
        [lin.bias.data_ptr() if lin.bias is not None else 0 for lin in linears],
        first.exact_kernels,
        first.threads,
    )
    return ys


class QuantLinear(Operator):
    def __init__(
        self,
        key,
        gguf,
        config,
        orig=None,
        device="cpu",
        weights: str = "auto",
        dtype: str | None = None,
        exact: bool | None = None,
        **kwargs,
    ):
        super().__init__(key, gguf, config, orig, device, **kwargs)
        if weights not in MODES:
            raise ValueError(f"QuantLinear weights must be one of {', '.join(MODES)}, not {weights!r}")
        self.mode = weights
        self.dtype = getattr(torch, dtype or ("bfloat16" if self.accelerated else "float32"))
        self.exact = exact
        self.in_features = getattr(orig, "in_features", None)
        self.out_features = getattr(orig, "out_features", None)
        self.weight = self.weight_t = self.bias = self.source = self.blocks = self.device_blocks = None
        self.qmatrix = None  # the kernels' handle on `blocks` (native CPU mode)
        self.bias_ptr = 0

    def load(self) -> None:
        name = tied(f"{self.key}.weight", self.gguf.tensors)
        self.source = t = self.tensor(name)
        rows, cols = t.shape[0], t.shape[-1]
        # F32 too: PyTorch's matmul would make a row's result depend on the rows beside it (the
        # kernels' batch-invariant mode keeps a decode row as it is alone; Qwen's F32 shared-expert
        # gate once made batched server answers differ from single runs)
        native = self.device.type == "cpu" and cols % 32 == 0 and len(t.shape) == 2
        if self.accelerated:
            if self.mode == "gguf":
                self.device_blocks = torch.from_numpy(t.raw.copy()).to(self.device)
            else:  # [out, in], as cuBLAS takes it
                self.weight = self.dequant(name, self.dtype)
        elif self.mode == "auto" and native:
            self.blocks = t.raw
            self.rows = rows
            self.qmatrix = _kernels.QMatrix(int(t.type), self.blocks.ctypes.data, rows, cols)
            self.threads = cpu.default_threads()  # read once (sysfs): KTX_THREADS or physical cores
            self.exact_kernels = exact_default() if self.exact is None else bool(self.exact)
        elif self.mode in ("auto", "dequant"):
            # Held as [in, out]: `x @ w_t` streams it at ~70% of DRAM bandwidth on the CPU,
            # where F.linear's GEMV over [out, in] reaches ~40% (measured with torch 2.13).
            self.weight_t = self.dequant(name, self.dtype).T.contiguous()
            self.weight = self.weight_t.T
        if self.has(f"{self.key}.bias"):
            self.bias = self.dequant(f"{self.key}.bias", self.dtype)
        self.bias_ptr = self.bias.data_ptr() if self.qmatrix is not None and self.bias is not None else 0

    def unload(self) -> None:
        self.weight = self.weight_t = self.bias = self.source = self.blocks = self.device_blocks = None
        self.qmatrix, self.bias_ptr = None, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]
        if self.accelerated:
            return self._forward_device(x)
        if self.qmatrix is not None:
            flat = x.reshape(-1, x.shape[-1])
            if flat.shape[1] != self.qmatrix.cols:
                raise ValueError(
                    f"input {tuple(x.shape)} does not fit weights of {self.qmatrix.cols} columns"
                )
            if flat.dtype != torch.float32 or not flat.is_contiguous():
                flat = flat.float().contiguous()
            y = torch.empty(flat.shape[0], self.rows)
            cpu_kernels.linear1(self.qmatrix, flat, y, self.bias_ptr, self.exact_kernels, self.threads)
            return y.view(*x.shape[:-1], self.rows)
        if self.weight_t is None:
            w = self.source.dequantize(torch.float32).to(self.device)
            return F.linear(x.to(w.dtype), w, self.bias)
        y = torch.matmul(x.to(self.weight_t.dtype), self.weight_t)
        return y + self.bias if self.bias is not None else y

    def _forward_device(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] (any float dtype) -> [..., out] in x's dtype; the product in self.dtype
        w = self.weight
        if w is None:  # weights: gguf -> expand the blocks on the device for this call
            from ..backend import kernels

            t, kern = self.source, kernels(self.device.type)
            w = kern.dequantize(self.device_blocks, int(t.type), tuple(t.shape), self.dtype)
        return F.linear(x.to(self.device, self.dtype), w, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        if self.accelerated:
            form = f"gguf/{self.source.type.name}" if self.weight is None else str(self.dtype)
            return f"key={self.key}, weights={self.device}, {form}"
        held = f"gguf-native/{self.source.type.name}" if self.blocks is not None else self.mode
        return f"key={self.key}, weights={held}"
