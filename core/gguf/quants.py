"""Dequantize and quantize GGUF blocks with the C++ kernels (ktx.core._kernels).

`dequantize` returns a torch tensor (float32 or bfloat16); `quantize` returns raw blocks as
a numpy uint8 array shaped like gguf-py's (rows, bytes per row), ready for `GGUFWriter`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _kernels, cpu
from .constants import BLOCK_SIZES, DEQUANT_TYPES, QUANT_TYPES, GGMLType

if TYPE_CHECKING:
    import torch


def _threads(threads: int | None) -> int:
    return cpu.default_threads() if threads is None else max(1, int(threads))


def _dtype_name(dtype: Any) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in ("float32", "bfloat16"):
        raise ValueError(f"dequantize produces float32 or bfloat16, not {dtype}")
    return name


def dequantize(
    raw: np.ndarray,
    ggml_type: GGMLType | int,
    shape: tuple[int, ...],
    dtype: Any = None,
    *,
    out: torch.Tensor | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """Dequantizes the blocks in `raw` (a contiguous array, any dtype) into a tensor of `shape`.

    dtype: torch.float32 (default) or torch.bfloat16 (rounded to nearest even). `out`, if
    given, must be a contiguous CPU tensor of that shape and dtype.
    """
    import torch

    ggml_type = GGMLType(ggml_type)
    if ggml_type not in DEQUANT_TYPES:
        supported = ", ".join(sorted(t.name for t in DEQUANT_TYPES))
        raise NotImplementedError(f"ktx cannot dequantize {ggml_type.name} yet; it handles {supported}")
    name = _dtype_name(dtype if dtype is not None else (out.dtype if out is not None else "float32"))
    torch_dtype = getattr(torch, name)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    block, type_size = BLOCK_SIZES[ggml_type]
    if n % block or raw.nbytes != n // block * type_size:
        raise ValueError(
            f"{raw.nbytes} bytes of {ggml_type.name} do not hold a tensor of shape {tuple(shape)} "
            f"({n // block * type_size} bytes expected)"
        )
    if not raw.flags.c_contiguous:
        raw = np.ascontiguousarray(raw)
    if out is None:
        out = torch.empty(tuple(shape), dtype=torch_dtype)
    elif (
        out.dtype != torch_dtype or tuple(out.shape) != tuple(shape) or not out.is_contiguous() or out.is_cuda
    ):
        raise ValueError(f"out must be a contiguous CPU {torch_dtype} tensor of shape {tuple(shape)}")
    if n:
        _kernels.dequantize(
            int(ggml_type),
            raw.ctypes.data,
            raw.nbytes,
            out.data_ptr(),
            n,
            name == "bfloat16",
            _threads(threads),
        )
    return out


def quantize(x: Any, ggml_type: GGMLType | int, *, threads: int | None = None) -> np.ndarray:
    """Quantizes float data (numpy array or torch tensor) into blocks of `ggml_type`.

    Returns uint8 of shape (*x.shape[:-1], bytes per row). The last dimension must be a
    multiple of the type's block size.
    """
    ggml_type = GGMLType(ggml_type)
    if ggml_type not in QUANT_TYPES:
        supported = ", ".join(sorted(t.name for t in QUANT_TYPES))
        raise NotImplementedError(f"ktx cannot quantize to {ggml_type.name}; it writes {supported}")
    if hasattr(x, "detach"):  # torch.Tensor
        x = x.detach().to("cpu").float().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 0:
        raise ValueError("quantize needs at least one dimension")
    block, type_size = BLOCK_SIZES[ggml_type]
    if x.shape[-1] % block:
        raise ValueError(
            f"rows of {x.shape[-1]} values are not a multiple of the {ggml_type.name} block ({block})"
        )
    out = np.empty((*x.shape[:-1], x.shape[-1] // block * type_size), dtype=np.uint8)
    if x.size:
        _kernels.quantize(
            int(ggml_type), x.ctypes.data, x.size, out.ctypes.data, out.nbytes, _threads(threads)
        )
    return out
