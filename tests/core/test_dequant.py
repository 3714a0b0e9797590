"""Dequantization (C++) against gguf-py's numpy dequantizers, bit for bit, on every kernel path.

Oracle: `gguf.quants.dequantize`. For bfloat16 output the oracle is gguf-py's float32 result
rounded to nearest even by torch. NaN compares equal to NaN (payloads carry no meaning);
every other value must have the same bits.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch

import ktx.core.gguf as kg
from ktx.core.gguf import BLOCK_SIZES, DEQUANT_TYPES, GGMLType

TYPES = sorted(DEQUANT_TYPES, key=int)


def oracle(raw: np.ndarray, gtype: GGMLType, shape) -> np.ndarray:
    if gtype == GGMLType.BF16:  # gguf-py takes BF16 as bytes, like the block types
        raw = raw.view(np.uint8)
    return gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(gtype))).reshape(shape)


def assert_same_bits(ours: torch.Tensor, ref: np.ndarray, what: str) -> None:
    ours_np = ours.float().numpy() if ours.dtype == torch.bfloat16 else ours.numpy()
    assert ours_np.shape == ref.shape, what
    nan_ours, nan_ref = np.isnan(ours_np), np.isnan(ref)
    assert np.array_equal(nan_ours, nan_ref), f"{what}: NaN positions differ"
    if ours.dtype == torch.bfloat16:
        expected = torch.from_numpy(np.array(ref)).to(torch.bfloat16).view(torch.int16).numpy()
        got = ours.view(torch.int16).numpy()
    else:
        expected, got = ref.view(np.uint32), ours_np.view(np.uint32)
    diff = (expected != got) & ~nan_ref
    assert not diff.any(), f"{what}: {int(diff.sum())} values differ, first at {np.argwhere(diff)[0]}"


def random_blocks(gtype: GGMLType, n_blocks: int, rng: np.random.Generator, finite: bool) -> np.ndarray:
    """Random bytes for n_blocks blocks; with finite=True the half-precision scales are made
    finite (random bytes often encode inf/NaN there, which would only test NaN handling)."""
    _, type_size = BLOCK_SIZES[gtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    if finite:
        # Every f16 field: clear the top exponent bit so the exponent is below 0x1f.
        for off in F16_FIELDS[gtype]:
            raw[:, off + 1] &= 0xBF
        if gtype == GGMLType.F32:
            raw[:, 3] &= 0xBF
        if gtype == GGMLType.BF16:
            raw[:, 1] &= 0xBF
    return raw


# Byte offsets of half-precision fields in each block type (ggml's layouts).
F16_FIELDS = {
    GGMLType.F32: [],
    GGMLType.F16: [0],
    GGMLType.BF16: [],
    GGMLType.Q4_0: [0],
    GGMLType.Q4_1: [0, 2],
    GGMLType.Q5_0: [0],
    GGMLType.Q5_1: [0, 2],
    GGMLType.Q8_0: [0],
    GGMLType.Q2_K: [80, 82],
    GGMLType.Q3_K: [108],
    GGMLType.Q4_K: [0, 2],
    GGMLType.Q5_K: [0, 2],
    GGMLType.Q6_K: [208],
    GGMLType.IQ4_NL: [0],
    GGMLType.IQ4_XS: [0],
    GGMLType.MXFP4: [],  # an E8M0 exponent byte: every value is a finite scale
    GGMLType.IQ2_XXS: [0],
    GGMLType.IQ2_XS: [0],
    GGMLType.IQ2_S: [0],
    GGMLType.IQ3_XXS: [0],
    GGMLType.IQ3_S: [0],
    GGMLType.IQ1_S: [0],
    GGMLType.IQ1_M: [54],  # d is the top nibbles of 4 scale words: its exponent's top bit is byte 55's bit 6
    GGMLType.TQ1_0: [52],
    GGMLType.TQ2_0: [64],
    GGMLType.NVFP4: [],  # E4M3 scale bytes: every value is finite
}


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # gguf-py on NaN scales
@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("finite", [True, False], ids=["finite", "any-bits"])
@pytest.mark.parametrize("gtype", TYPES, ids=lambda t: t.name)
def test_random_blocks_match_gguf_py(isa, gtype, finite, dtype):
    rng = np.random.default_rng(int(gtype) * 7919 + finite)
    block, type_size = BLOCK_SIZES[gtype]
    rows, cols = 37, block * (7 if block > 1 else 100)  # odd row count: threads get uneven slices
    raw = random_blocks(gtype, rows * cols // block, rng, finite).reshape(rows, cols // block * type_size)
    if gtype in (GGMLType.F32, GGMLType.F16):
        raw = raw.view(np.float32 if gtype == GGMLType.F32 else np.float16)
    ref = oracle(raw, gtype, (rows, cols))
    for threads in (1, 2, 5):
        ours = kg.dequantize(raw, gtype, (rows, cols), dtype, threads=threads)
        assert_same_bits(ours, ref, f"{gtype.name} on {isa} with {threads} threads")


def test_every_half_precision_value(isa):
    raw = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    ours = kg.dequantize(raw, GGMLType.F16, raw.shape)
    assert_same_bits(ours, raw.astype(np.float32), f"F16 on {isa}")


def _digests(f32: np.ndarray) -> tuple[str, str]:
    """sha256 of a float32 array's bits and of its bfloat16 rounding (what assert_same_bits
    compares): the oracle of 268 M values is kept as these, not as 1 GB of floats."""
    import hashlib

    bf16 = torch.from_numpy(np.array(f32)).to(torch.bfloat16).view(torch.int16).numpy()
    return hashlib.sha256(f32.tobytes()).hexdigest(), hashlib.sha256(bf16.tobytes()).hexdigest()


@pytest.fixture(scope="module")
def demo_oracle(demo_gguf) -> dict[str, tuple[str, str]]:
    with kg.open(demo_gguf) as f:
        return {t.name: _digests(oracle(t.data, t.type, t.shape)) for t in f}


@pytest.mark.parametrize("isa_name", ["scalar", "avx2", "avx512"])
def test_every_tensor_of_the_demo_model(demo_gguf, demo_oracle, isa_name):
    """Every tensor of a real llama.cpp file, on each kernel path this CPU has, both outputs."""
    from ktx.core import cpu

    if isa_name not in cpu.supported_isas():
        pytest.skip(f"this CPU cannot run the {isa_name} kernels")
    seen = set()
    with cpu.forced_isa(isa_name), kg.open(demo_gguf) as f:
        for t in f:
            got = (t.dequantize(), t.dequantize(torch.bfloat16))
            digests = (
                _digests(got[0].numpy())[0],
                _digests(got[1].float().numpy())[1] if not torch.isnan(got[1]).any() else "",
            )
            if digests != demo_oracle[t.name]:  # recompute the oracle to say where they differ
                ref = oracle(t.data, t.type, t.shape)
                assert_same_bits(got[0], ref, f"{t.name} ({t.type.name}) on {isa_name}")
                assert_same_bits(got[1], ref, f"{t.name} ({t.type.name}) bf16 on {isa_name}")
            seen.add(t.type)
    assert seen == {GGMLType.F32, GGMLType.Q5_0, GGMLType.Q8_0, GGMLType.Q4_K, GGMLType.Q6_K}


def test_out_parameter_and_errors():
    rng = np.random.default_rng(1)
    raw = random_blocks(GGMLType.Q8_0, 4, rng, finite=True)
    out = torch.empty(4, 32)
    assert kg.dequantize(raw, GGMLType.Q8_0, (4, 32), out=out) is out
    assert_same_bits(out, oracle(raw, GGMLType.Q8_0, (4, 32)), "out=")
    with pytest.raises(ValueError, match="do not hold"):
        kg.dequantize(raw, GGMLType.Q8_0, (4, 64))
    with pytest.raises(ValueError, match="out must be"):
        kg.dequantize(raw, GGMLType.Q8_0, (4, 32), out=torch.empty(4, 16))
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        kg.dequantize(raw, GGMLType.Q8_0, (4, 32), torch.float16)
    with pytest.raises(NotImplementedError, match="Q8_K"):
        kg.dequantize(raw, GGMLType.Q8_K, (4, 32))
