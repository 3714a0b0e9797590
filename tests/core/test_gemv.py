"""The int8 GEMV kernel and the exact GGUF -> int8 re-encodings it reads.

Oracles: gguf-py's dequantize for the re-encodings (bit-exact), and a float64 matmul on those
dequantized weights for the kernel. The kernel sums float32 products in another order than
float64, so it is held to 1e-5 of the largest |output| (float32 has 24 bits; rows here have at
most 1,024 terms, so accumulated rounding stays near 1e-6).
"""

from __future__ import annotations

import gguf as gguf_py
import numpy as np
import pytest
import torch

from ktx.core import _kernels
from ktx.core.gguf import GGMLType, quantize
from ktx.core.gguf.repack import REPACKABLE, Int8Weights, to_int8
from ktx.core.ops.linear import int8_gemv


def _blocks(kind: GGMLType, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    if kind == GGMLType.Q5_0:  # our quantizer does not write Q5_0: gguf-py's does
        return gguf_py.quants.quantize(x, gguf_py.GGMLQuantizationType.Q5_0)
    return quantize(x, kind)


def _gemv(w: Int8Weights, x: torch.Tensor, threads: int = 1) -> torch.Tensor:
    return int8_gemv(w, x, threads)


@pytest.mark.parametrize("kind", REPACKABLE)
def test_int8_reencoding_is_exact(kind):
    rows, cols = 7, 512
    raw = _blocks(kind, rows, cols)
    expected = gguf_py.quants.dequantize(raw, gguf_py.GGMLQuantizationType(int(kind))).reshape(rows, cols)
    w = to_int8(raw, kind, rows, cols)
    np.testing.assert_array_equal(w.dequantize(), expected)
    np.testing.assert_array_equal(w.widen().numpy(), expected)  # the prefill path, in torch


def test_other_types_are_refused():
    with pytest.raises(ValueError, match="Q5_K"):
        to_int8(np.zeros(176, np.uint8), GGMLType.Q5_K, 1, 256)


@pytest.mark.parametrize("kind", REPACKABLE)
@pytest.mark.parametrize("n_tok", [1, 3, 16])
@pytest.mark.parametrize("rows, cols", [(1, 256), (37, 768), (300, 1024)])
def test_gemv_matches_float64_reference(isa, kind, n_tok, rows, cols):
    w = to_int8(_blocks(kind, rows, cols, seed=rows), kind, rows, cols)
    dense = torch.from_numpy(w.dequantize()).double()
    x = torch.randn(n_tok, cols, generator=torch.Generator().manual_seed(n_tok))
    ref = x.double() @ dense.T
    for threads in (1, 2):
        y = _gemv(w, x, threads)
        assert (y.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


@pytest.mark.parametrize("kind", [GGMLType.Q8_0, GGMLType.Q6_K, GGMLType.Q4_K])
def test_every_isa_gives_identical_sums(kind):
    from ktx.core import cpu

    rows, cols = 50, 512
    w = to_int8(_blocks(kind, rows, cols), kind, rows, cols)
    x = torch.randn(2, cols)
    outs = []
    for name in cpu.supported_isas():
        with cpu.forced_isa(name):
            outs.append(_gemv(w, x))
    for y in outs[1:]:
        assert torch.equal(y, outs[0])


def test_bad_shapes_are_errors():
    q, s = np.zeros((2, 40), np.int8), np.zeros((2, 2), np.float32)
    x, y = torch.zeros(1, 40), torch.zeros(1, 2)
    with pytest.raises(ValueError, match="multiple of 32"):
        _kernels.gemv_i8(q.ctypes.data, s.ctypes.data, 0, 32, 2, 40, x.data_ptr(), 1, y.data_ptr(), 1)
    with pytest.raises(ValueError, match="group"):
        _kernels.gemv_i8(q.ctypes.data, s.ctypes.data, 0, 8, 2, 32, x.data_ptr(), 1, y.data_ptr(), 1)
