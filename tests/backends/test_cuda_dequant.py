"""The CUDA backend's Triton dequantizers against gguf-py's numpy ones, bit for bit.

Oracle: `gguf.quants.dequantize` in float32; for bfloat16/float16 output, that result cast by
torch. Blocks are random bytes (every bit pattern of scales and quants) with finite half-precision
scale fields, and, where gguf-py can quantize the type, quantized random floats. Shapes have odd
block counts and a last program that is only partly full.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (it comes with ktx[test] on Linux x86-64)")

from ktx.backends.cuda import dequant  # after the skip: it imports triton

Q = gguf.GGMLQuantizationType

# Byte offsets of the float16 fields in each block (ggml's layouts).
F16_FIELDS = {
    Q.Q8_0: [0],
    Q.Q4_0: [0],
    Q.Q5_0: [0],
    Q.Q4_1: [0, 2],
    Q.Q5_1: [0, 2],
    Q.Q4_K: [0, 2],
    Q.Q5_K: [0, 2],
    Q.Q6_K: [208],
    Q.IQ4_NL: [0],
    Q.IQ4_XS: [0],
    Q.Q2_K: [80, 82],
    Q.Q3_K: [108],
    Q.MXFP4: [],  # an E8M0 exponent byte: every value is a finite scale
    Q.IQ2_XXS: [0],
    Q.IQ2_XS: [0],
    Q.IQ2_S: [0],
    Q.IQ3_XXS: [0],
    Q.IQ3_S: [0],
    Q.IQ1_S: [0],
    Q.IQ1_M: [54],  # d is the top nibbles of 4 scale words: byte 55 holds its exponent's top bits
    Q.TQ1_0: [52],
    Q.TQ2_0: [64],
    Q.NVFP4: [],  # E4M3 scale bytes: every value is finite
}
TYPES = list(F16_FIELDS)
QUANTIZABLE = [Q.Q8_0, Q.Q4_0, Q.Q5_0, Q.Q4_1, Q.Q5_1, Q.MXFP4]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def odd_shape(qtype: Q) -> tuple[int, int]:
    """3 rows of an odd number of blocks; the total is not a multiple of a program's blocks."""
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    return (3, block * (5 if block == 256 else 25))


def random_blocks(qtype: Q, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Random bytes, [rows, bytes per row]; a float16 field that encodes inf/NaN gets the top
    bit of its exponent cleared, so every scale is finite (subnormals included)."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = int(np.prod(shape)) // block
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        hi = raw[:, off + 1]
        if qtype == Q.IQ1_M:  # not an f16's high byte: bit 6 is d's exponent's top bit
            hi &= 0xBF
            continue
        hi[(hi & 0x7C) == 0x7C] ^= 0x40
    return raw.reshape(shape[0], -1)


def oracle(raw: np.ndarray, qtype: Q, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(gguf.quants.dequantize(raw, qtype).reshape(shape))


def check(raw: np.ndarray, qtype: Q, shape: tuple[int, ...], dtype: torch.dtype, device: str) -> None:
    got = dequant.dequantize(torch.from_numpy(raw).to(device), int(qtype), shape, dtype)
    assert got.dtype == dtype and got.shape == shape and got.device.type == device
    want = oracle(raw, qtype, shape).to(dtype)
    assert not want.isnan().any()
    differ = got.cpu() != want
    assert not differ.any(), f"{qtype.name} {dtype}: {int(differ.sum())} values differ"
    assert torch.equal(got.cpu().view(torch.uint8), want.view(torch.uint8))  # -0.0 vs 0.0 too


def test_supported_types():
    assert frozenset(int(t) for t in TYPES) == dequant.SUPPORTED


# float16 output: values past 65504 become inf, as torch's cast makes them; the interpreter's numpy
# cast warns about it.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_random_blocks_match_gguf_py(kernel_device, qtype, dtype):
    shape = odd_shape(qtype)
    check(random_blocks(qtype, shape, np.random.default_rng(int(qtype))), qtype, shape, dtype, kernel_device)


@pytest.mark.parametrize("qtype", QUANTIZABLE, ids=lambda t: t.name)
def test_quantized_floats_match_gguf_py(kernel_device, qtype):
    rng = np.random.default_rng(100 + int(qtype))
    x = rng.standard_normal((4, 512)).astype(np.float32) * 0.02
    raw = gguf.quants.quantize(x, qtype)
    for dtype in (torch.float32, torch.bfloat16):
        check(raw, qtype, x.shape, dtype, kernel_device)


def test_bfloat16_rounds_ties_to_even(kernel_device):
    # Q8_0 with q = 1 and d = 1 + k/256, k odd: halfway between two bfloat16s. Ties go to the
    # even one, up for k = 3 and 255, where a truncating cast (the interpreter's) goes down.
    raw = np.zeros((1, 34), dtype=np.uint8)
    raw[0, 2:] = 1
    for k in (1, 3, 5, 255):
        raw[0, :2] = np.array([1 + k / 256], dtype=np.float16).view(np.uint8)
        check(raw, Q.Q8_0, (1, 32), torch.bfloat16, kernel_device)


def test_flat_bytes_and_3d_shape(kernel_device):
    shape = (2, 3, 256)
    raw = random_blocks(Q.Q4_K, (6, 256), np.random.default_rng(7))
    got = dequant.dequantize(
        torch.from_numpy(raw.reshape(-1)).to(kernel_device), int(Q.Q4_K), shape, torch.float32
    )
    assert torch.equal(got.cpu(), oracle(raw, Q.Q4_K, shape))


@pytest.mark.parametrize("qtype", [Q.F32, Q.F16, Q.BF16], ids=lambda t: t.name)
def test_plain_types(kernel_device, qtype):
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    raw = gguf.quants.quantize(x, qtype).view(np.uint8)
    for dtype in DTYPES:
        check(raw, qtype, x.shape, dtype, kernel_device)


def test_wrong_byte_count_raises(kernel_device):
    raw = torch.zeros(4 * 34, dtype=torch.uint8, device=kernel_device)
    with pytest.raises(ValueError, match="bytes"):
        dequant.dequantize(raw[:-1], int(Q.Q8_0), (4, 32))
    with pytest.raises(ValueError, match="bytes"):
        dequant.dequantize(raw, int(Q.Q8_0), (8, 32))
    with pytest.raises(ValueError, match="whole blocks"):  # 3 blocks' bytes, but rows of 1.5 blocks
        dequant.dequantize(raw[: 3 * 34], int(Q.Q8_0), (2, 48))


def test_unsupported_type_raises(kernel_device):
    raw = torch.zeros(66, dtype=torch.uint8, device=kernel_device)
    with pytest.raises(NotImplementedError, match="Q8_K"):
        dequant.dequantize(raw, int(Q.Q8_K), (1, 256))
