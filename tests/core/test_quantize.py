"""Quantization (C++): blocks gguf-py reads back, error bounds on N(0,1) data, and the
reference-rounded types byte-identical to gguf-py's quantizers."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

import ktx.core.gguf as kg
from ktx.core import cpu
from ktx.core.gguf import GGMLType

# Relative RMSE (rmse / rms of the data) allowed on N(0,1) data.
MAX_REL_RMSE = {
    GGMLType.Q8_0: 0.0055,
    GGMLType.Q6_K: 0.02,
    GGMLType.Q5_K: 0.045,
    GGMLType.Q4_K: 0.085,
    GGMLType.Q4_0: 0.09,
    GGMLType.BF16: 0.004,  # 8-bit mantissa: 2^-9 / sqrt(3) ~ 0.0011 expected
    GGMLType.MXFP4: 0.14,  # E2M1 under a power-of-two scale: 0.115 measured
}
# Types whose rounding is ggml's reference rule, which gguf-py reproduces exactly.
REFERENCE_ROUNDED = [GGMLType.Q8_0, GGMLType.Q4_0, GGMLType.BF16, GGMLType.MXFP4]


def gguf_py_dequant(q: np.ndarray, t: GGMLType) -> np.ndarray:
    return gguf.quants.dequantize(q, gguf.GGMLQuantizationType(int(t)))


@pytest.fixture(scope="module")
def normal_data() -> np.ndarray:
    return np.random.default_rng(42).standard_normal((64, 4096)).astype(np.float32)


@pytest.mark.parametrize("gtype", list(MAX_REL_RMSE), ids=lambda t: t.name)
def test_error_bound_on_normal_data(isa, gtype, normal_data):
    q = kg.quantize(normal_data, gtype)
    back = gguf_py_dequant(q, gtype)  # the independent reader of our blocks
    assert back.shape == normal_data.shape
    rel = np.sqrt(np.mean((back - normal_data) ** 2)) / np.sqrt(np.mean(normal_data**2))
    assert rel <= MAX_REL_RMSE[gtype], f"{gtype.name} relative RMSE {rel:.5f} > {MAX_REL_RMSE[gtype]}"
    # Our own dequantizer reads the same values back.
    ours = kg.dequantize(q, gtype, normal_data.shape).numpy()
    assert np.array_equal(ours.view(np.uint32), back.view(np.uint32))


@pytest.mark.parametrize("gtype", REFERENCE_ROUNDED, ids=lambda t: t.name)
def test_reference_rounding_matches_gguf_py(isa, gtype, normal_data):
    data = normal_data * np.float32(3.7)
    data[0, :32] = 0.0  # an all-zero block (d = 0)
    data[1, :32] = -1.0  # ties between +/- maxima and exact halves
    data[1, 16] = 1.0
    ref = gguf.quants.quantize(data, gguf.GGMLQuantizationType(int(gtype)))
    assert np.array_equal(kg.quantize(data, gtype), ref.view(np.uint8).reshape(ref.shape[0], -1))


def test_bf16_nan_and_inf_like_ggml():
    x = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 3.4e38, 1e-40], dtype=np.float32)
    x = np.concatenate([x, np.frombuffer(np.uint32(0x7F800001).tobytes(), np.float32)])  # signalling NaN
    ref = gguf.quants.quantize(x, gguf.GGMLQuantizationType.BF16)
    assert np.array_equal(kg.quantize(x, GGMLType.BF16), ref.view(np.uint8))


@pytest.mark.parametrize("gtype", list(MAX_REL_RMSE), ids=lambda t: t.name)
def test_all_kernel_paths_write_identical_blocks(gtype, normal_data):
    """No FMA contraction and no reordered sums: every ISA produces the same bytes."""
    blocks = {}
    for isa in cpu.supported_isas():
        with cpu.forced_isa(isa):
            blocks[isa] = kg.quantize(normal_data[:8], gtype, threads=1)
    first = next(iter(blocks.values()))
    for isa, b in blocks.items():
        assert np.array_equal(b, first), f"{gtype.name}: {isa} differs"


@pytest.mark.parametrize("gtype", [GGMLType.Q4_K, GGMLType.Q5_K, GGMLType.Q6_K], ids=lambda t: t.name)
def test_k_quants_on_awkward_data(gtype):
    """Constant, all-positive, all-negative, small and huge-range super-blocks stay finite and
    close; threads do not change the result. (Far smaller values, ~1e-6, are below what the
    half-precision super-block scale can express: a limit of the format, as in llama.cpp.)"""
    rng = np.random.default_rng(3)
    rows = [
        np.zeros(256),
        np.full(256, 2.5),
        np.full(256, -0.75),
        rng.uniform(1.0, 2.0, 256),
        -rng.uniform(1.0, 2.0, 256),
        rng.standard_normal(256) * 1e-3,
        np.concatenate([rng.standard_normal(224) * 1e-3, rng.standard_normal(32) * 100.0]),
    ]
    x = np.stack(rows).astype(np.float32)
    q1 = kg.quantize(x, gtype, threads=1)
    assert np.array_equal(q1, kg.quantize(x, gtype, threads=3))
    back = gguf_py_dequant(q1, gtype)
    assert np.isfinite(back).all()
    for i, row in enumerate(x):
        scale = max(np.abs(row).max(), 1e-30)
        err = np.abs(back[i] - row).max() / scale
        assert err < 0.2, f"row {i}: max error {err:.3f} of the row's range"


def test_torch_input_and_errors():
    x = torch.randn(4, 64)
    assert np.array_equal(kg.quantize(x, GGMLType.Q8_0), kg.quantize(x.numpy(), GGMLType.Q8_0))
    with pytest.raises(ValueError, match="multiple of the Q4_K block"):
        kg.quantize(np.zeros((2, 100), np.float32), GGMLType.Q4_K)
    with pytest.raises(NotImplementedError, match="cannot quantize to Q2_K"):
        kg.quantize(np.zeros((2, 256), np.float32), GGMLType.Q2_K)
