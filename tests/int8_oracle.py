"""Oracles for the CPU kernels over GGUF-native weights.

- Weights: gguf-py's numpy dequantizers.
- Activations: the int8 scheme written out in numpy from its definition (per run of values,
  d = max|x| / 127, q = round-half-even(x * (127 / max|x|)), in float32 like the kernels; a
  run is 16 values, or 256 for Q4_K and Q5_K (integer sub-block scales, as llama.cpp's Q8_K), so
  the expected product is a float64 matmul of the dequantized weights with the dequantized
  activations; only summation order separates it from the kernels.
"""

from __future__ import annotations

import gguf as gguf_py
import numpy as np

from ktx.core import _kernels

T = gguf_py.GGMLQuantizationType
PLAIN = {T.F32: np.float32, T.F16: np.float16}


def int8_types() -> set[int]:
    """Types whose products take int8 activations (the rest multiply float32)."""
    return set(_kernels.int8_types())


def random_weights(ggml_type, rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """rows x cols of `ggml_type` as GGUF bytes (uint8 [rows, row_bytes]): random blocks whose
    half-precision scale fields stay finite (sign and magnitude both vary)."""
    if ggml_type in PLAIN:
        return np.ascontiguousarray(rng.standard_normal((rows, cols)).astype(PLAIN[ggml_type]).view(np.uint8))
    if ggml_type == T.BF16:
        x = rng.standard_normal((rows, cols), dtype=np.float32)
        return np.ascontiguousarray((x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8))
    block, size = gguf_py.GGML_QUANT_SIZES[ggml_type]
    raw = rng.integers(0, 256, size=(rows * cols // block, size), dtype=np.uint8)
    raw[:, 1::2] &= 0xBB  # f16 exponents below all-ones wherever the scales sit: no inf/NaN
    if ggml_type == T.MXFP4:  # an E8M0 exponent byte: scales 2^-16 .. 2^7, products stay finite
        raw[:, 0] = rng.integers(112, 136, size=raw.shape[0])
    return np.ascontiguousarray(raw.reshape(rows, -1))


def dequantize(raw: np.ndarray, ggml_type, rows: int, cols: int) -> np.ndarray:
    if ggml_type in PLAIN:
        return raw.view(PLAIN[ggml_type]).reshape(rows, cols).astype(np.float64)
    return gguf_py.quants.dequantize(raw, ggml_type).reshape(rows, cols).astype(np.float64)


RUN_256 = {T.Q4_K, T.Q5_K}


def run_of(ggml_type) -> int:
    """Activation values per scale in products with weights of this type."""
    return 256 if ggml_type in RUN_256 else 16


def quantize_act(x: np.ndarray, run: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x [n, cols] float32 -> (q int8 [n, cols], d [n, cols/16], s = d * sum(q) [n, cols/16]):
    one scale per `run` values, given for each group of 16."""
    g = x.astype(np.float32).reshape(x.shape[0], -1, run)
    amax = np.abs(g).max(-1)
    safe = np.where(amax > 0, amax, np.float32(1))
    inv = np.where(amax > 0, np.float32(127) / safe, np.float32(0)).astype(np.float32)
    q = np.rint(g * inv[..., None]).astype(np.int8).reshape(x.shape[0], -1, 16)
    d = np.repeat((amax / np.float32(127)).astype(np.float32), run // 16, axis=-1)
    s = (d * q.astype(np.int32).sum(-1).astype(np.float32)).astype(np.float32)
    return q.reshape(x.shape), d, s


def fake_quant(x: np.ndarray, run: int = 16) -> np.ndarray:
    """The activations as the int8 kernels see them, dequantized, float64."""
    q, d, _ = quantize_act(x, run)
    return (q.reshape(x.shape[0], -1, 16).astype(np.float64) * d[..., None]).reshape(x.shape)


def step_allowance(x: np.ndarray, w: np.ndarray, run: int = 16) -> np.ndarray:
    """Per output [n, rows]: the change one rounding step of one activation can make (its
    run's d times the largest |w| of the row). Activations computed in float32 by the kernel
    and float64 by the oracle can round to neighbouring int8 values when x * 127 / max|x|
    lands within float32 noise of .5; a wrong scale or layout moves outputs by far more."""
    _, d, _ = quantize_act(x, run)
    return d.max(-1)[:, None] * np.abs(w).max(-1)[None, :]
