"""The int8 GEMV kernel and the exact Q8_0/Q5_0/Q4_0 -> int8 re-encoding it reads.

Oracles: gguf-py's dequantize for the re-encoding (bit-exact), and a float64 matmul on those
dequantized weights for the kernel. The kernel sums float32 products in a different order
than float64, so it is held to 1e-5 of the largest |output| (float32 has 24 bits; rows here
have at most 1,024 terms, so accumulated rounding stays near 1e-6).
"""

from __future__ import annotations

import gguf as gguf_py
import numpy as np
import pytest
import torch

from ktx.core import _kernels
from ktx.core.gguf import GGMLType, quantize
from ktx.core.gguf.repack import REPACKABLE, to_int8


def _blocks(kind: GGMLType, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    if kind == GGMLType.Q5_0:  # our quantizer does not write Q5_0: gguf-py's does
        return gguf_py.quants.quantize(x, gguf_py.GGMLQuantizationType.Q5_0)
    return quantize(x, kind)


@pytest.mark.parametrize("kind", REPACKABLE)
def test_int8_reencoding_is_exact(kind):
    rows, cols = 7, 256
    raw = _blocks(kind, rows, cols)
    q, s = to_int8(raw, kind, rows, cols)
    expected = gguf_py.quants.dequantize(raw, gguf_py.GGMLQuantizationType(int(kind))).reshape(rows, cols)
    got = (q.reshape(rows, -1, 32).astype(np.float32) * s[:, :, None]).reshape(rows, cols)
    np.testing.assert_array_equal(got, expected)


def test_other_types_are_refused():
    with pytest.raises(ValueError, match="Q4_K"):
        to_int8(np.zeros(144, np.uint8), GGMLType.Q4_K, 1, 256)


@pytest.mark.parametrize("n_tok", [1, 3, 16])
@pytest.mark.parametrize("rows, cols", [(1, 32), (37, 640), (300, 1024)])
def test_gemv_matches_float64_reference(isa, n_tok, rows, cols):
    raw = _blocks(GGMLType.Q8_0, rows, cols, seed=rows)
    q, s = to_int8(raw, GGMLType.Q8_0, rows, cols)
    w = torch.from_numpy((q.reshape(rows, -1, 32).astype(np.float32) * s[:, :, None]).reshape(rows, cols))
    x = torch.randn(n_tok, cols, generator=torch.Generator().manual_seed(n_tok))
    y = torch.full((n_tok, rows), float("nan"))
    for threads in (1, 2):
        _kernels.gemv_i8(q.ctypes.data, s.ctypes.data, rows, cols, x.data_ptr(), n_tok, y.data_ptr(), threads)
        ref = x.double() @ w.double().T
        assert (y.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


def test_every_isa_gives_identical_sums():
    from ktx.core import cpu

    rows, cols = 50, 512
    q, s = to_int8(_blocks(GGMLType.Q8_0, rows, cols), GGMLType.Q8_0, rows, cols)
    x = torch.randn(2, cols)
    outs = []
    for name in cpu.supported_isas():
        with cpu.forced_isa(name):
            y = torch.empty(2, rows)
            _kernels.gemv_i8(q.ctypes.data, s.ctypes.data, rows, cols, x.data_ptr(), 2, y.data_ptr(), 1)
            outs.append(y)
    for y in outs[1:]:
        assert torch.equal(y, outs[0])


def test_bad_shape_is_an_error():
    q, s = np.zeros((2, 40), np.int8), np.zeros((2, 2), np.float32)
    x, y = torch.zeros(1, 40), torch.zeros(1, 2)
    with pytest.raises(ValueError, match="multiple of 32"):
        _kernels.gemv_i8(q.ctypes.data, s.ctypes.data, 2, 40, x.data_ptr(), 1, y.data_ptr(), 1)
