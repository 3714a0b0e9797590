"""Re-encodings of GGUF blocks as int8 values with float32 scales (and, for Q4_K, offsets),
the layout the CPU GEMV kernel (ktx.core._kernels.gemv_i8) reads: W = s * q - o per group.

Each one reproduces gguf's dequantized floats exactly, element by element:
- Q8_0, Q4_0 (q-8), Q5_0 (q-16): one fp16 scale per 32 values; the integers fit int8.
- Q6_K: s = d * sc per 16 values (an fp16 times a 6-bit int: exact in float32), q - 32.
- Q4_K: s = d * sc and o = dmin * m per 32 values, q in 0..15 — the same products gguf forms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constants import GGMLType

REPACKABLE = (GGMLType.Q8_0, GGMLType.Q5_0, GGMLType.Q4_0, GGMLType.Q6_K, GGMLType.Q4_K)


@dataclass
class Int8Weights:
    q: np.ndarray  # int8 [rows, cols]
    scales: np.ndarray  # float32 [rows, cols / group]
    offsets: np.ndarray | None  # float32 [rows, cols / group], subtracted (Q4_K); None: none
    group: int  # 16 or 32 values per scale

    def pointers(self) -> tuple[int, int, int]:
        """(q, scales, offsets or 0) addresses for the kernel, computed once (numpy's .ctypes is slow)."""
        if not hasattr(self, "_ptrs"):
            o = self.offsets.ctypes.data if self.offsets is not None else 0
            self._ptrs = (self.q.ctypes.data, self.scales.ctypes.data, o)
        return self._ptrs

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.scales.nbytes + (self.offsets.nbytes if self.offsets is not None else 0)

    def widen(self):
        """The float32 weights as a torch tensor, widened with PyTorch's threads (prefill)."""
        import torch

        rows, cols = self.q.shape
        w = (
            torch.from_numpy(self.q).view(rows, -1, self.group).float()
            * torch.from_numpy(self.scales)[:, :, None]
        )
        if self.offsets is not None:
            w -= torch.from_numpy(self.offsets)[:, :, None]
        return w.view(rows, cols)

    def dequantize(self) -> np.ndarray:
        rows, cols = self.q.shape
        w = self.q.reshape(rows, -1, self.group).astype(np.float32) * self.scales[:, :, None]
        if self.offsets is not None:
            w -= self.offsets[:, :, None]
        return w.reshape(rows, cols)


def _f16(b: np.ndarray) -> np.ndarray:
    return b.copy().view(np.float16)[:, 0].astype(np.float32)


def _q4_k_scales(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # 8 six-bit scales and mins packed in 12 bytes (llama.cpp's get_scale_min_k4)
    scale = np.empty((sc.shape[0], 8), np.uint8)
    mins = np.empty((sc.shape[0], 8), np.uint8)
    scale[:, :4], mins[:, :4] = sc[:, 0:4] & 63, sc[:, 4:8] & 63
    scale[:, 4:] = (sc[:, 8:12] & 0x0F) | ((sc[:, 0:4] >> 6) << 4)
    mins[:, 4:] = (sc[:, 8:12] >> 4) | ((sc[:, 4:8] >> 6) << 4)
    return scale.astype(np.float32), mins.astype(np.float32)


def to_int8(raw: np.ndarray, ggml_type: GGMLType, rows: int, cols: int) -> Int8Weights:
    """raw blocks of a [rows, cols] tensor -> its exact int8 re-encoding."""
    ggml_type = GGMLType(ggml_type)
    per_block = 256 if ggml_type in (GGMLType.Q6_K, GGMLType.Q4_K) else 32
    b = np.ascontiguousarray(raw).view(np.uint8).reshape(rows * (cols // per_block), -1)
    offsets, group = None, 32
    if ggml_type == GGMLType.Q8_0:
        q, scales = b[:, 2:34].view(np.int8), _f16(b[:, :2])
    elif ggml_type == GGMLType.Q4_0:
        qs = b[:, 2:18]
        q, scales = np.concatenate((qs & 0x0F, qs >> 4), axis=1).astype(np.int8) - np.int8(8), _f16(b[:, :2])
    elif ggml_type == GGMLType.Q5_0:
        qh = b[:, 2:6].copy().view("<u4")[:, 0]
        qs = b[:, 6:22]
        low = np.concatenate((qs & 0x0F, qs >> 4), axis=1).astype(np.int16)
        high = ((qh[:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int16) << 4
        q, scales = ((low | high) - 16).astype(np.int8), _f16(b[:, :2])
    elif ggml_type == GGMLType.Q6_K:
        ql, qh = b[:, :128].reshape(-1, 2, 64), b[:, 128:192].reshape(-1, 2, 32)
        parts = (
            (ql[:, :, :32] & 0x0F) | ((qh & 3) << 4),
            (ql[:, :, 32:] & 0x0F) | (((qh >> 2) & 3) << 4),
            (ql[:, :, :32] >> 4) | (((qh >> 4) & 3) << 4),
            (ql[:, :, 32:] >> 4) | (((qh >> 6) & 3) << 4),
        )  # each [blocks, 2 halves, 32]; value order: half, part, l
        q = (np.stack(parts, axis=2).astype(np.int16) - 32).astype(np.int8).reshape(-1, 256)
        d = _f16(b[:, 208:210])
        scales = d[:, None] * b[:, 192:208].view(np.int8).astype(np.float32)  # [blocks, 16]
        group = 16
    elif ggml_type == GGMLType.Q4_K:
        d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
        sc, mn = _q4_k_scales(b[:, 4:16])
        qs = b[:, 16:144].reshape(-1, 4, 32)
        q = np.stack((qs & 0x0F, qs >> 4), axis=2).astype(np.int8).reshape(-1, 256)
        scales, offsets = d[:, None] * sc, dmin[:, None] * mn  # [blocks, 8]
    else:
        raise ValueError(f"{ggml_type.name} blocks have no exact int8 re-encoding here")
    n_groups = cols // group
    return Int8Weights(
        np.ascontiguousarray(q).reshape(rows, cols),
        np.ascontiguousarray(scales, dtype=np.float32).reshape(rows, n_groups),
        None if offsets is None else np.ascontiguousarray(offsets, dtype=np.float32).reshape(rows, n_groups),
        group,
    )
