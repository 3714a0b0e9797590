"""Exact re-encodings of GGUF blocks as int8 values with one float32 scale per 32, the layout
the CPU GEMV kernel (ktx.core._kernels.gemv_i8) reads.

Q8_0 (fp16 d, int8 q), Q4_0 (d, 4-bit q, value d*(q-8)) and Q5_0 (d, 5-bit q, value d*(q-16))
all hold 32 values with one fp16 scale: the integers fit int8 unchanged and fp16 -> float32 is
exact, so d * q reproduces gguf's dequantized floats bit for bit.
"""

from __future__ import annotations

import numpy as np

from .constants import GGMLType

REPACKABLE = (GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.Q4_0)


def to_int8(raw: np.ndarray, ggml_type: GGMLType, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """raw blocks of a [rows, cols] tensor -> (int8 [rows, cols], float32 scales [rows, cols / 32])."""
    ggml_type = GGMLType(ggml_type)
    blocks = np.ascontiguousarray(raw).view(np.uint8).reshape(rows * (cols // 32), -1)
    scales = blocks[:, :2].copy().view(np.float16)[:, 0].astype(np.float32).reshape(rows, -1)
    if ggml_type == GGMLType.Q8_0:
        q = blocks[:, 2:34].view(np.int8)
    elif ggml_type == GGMLType.Q4_0:
        qs = blocks[:, 2:18]
        q = (np.concatenate((qs & 0x0F, qs >> 4), axis=1).astype(np.int8) - 8).astype(np.int8)
    elif ggml_type == GGMLType.Q5_0:
        qh = blocks[:, 2:6].copy().view("<u4")[:, 0]
        qs = blocks[:, 6:22]
        low = np.concatenate((qs & 0x0F, qs >> 4), axis=1).astype(np.int16)
        high = ((qh[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int16) << 4
        q = ((low | high) - 16).astype(np.int8)
    else:
        raise ValueError(f"{ggml_type.name} blocks cannot be re-encoded exactly as int8 with per-32 scales")
    return np.ascontiguousarray(q).reshape(rows, cols), np.ascontiguousarray(scales)
