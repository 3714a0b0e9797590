"""Random ggml blocks made directly, without quantizing floats: fast enough for 400 GB benchmark files.

Every block dequantizes to values of mean ~0 and standard deviation ~`std` (0.02, a typical
weight scale). The quantized values are uniform random over their range; the scales are set so
that the block's offset cancels:
- Q8_0: d * q with q uniform in [-127, 127]: symmetric already.
- Q4_K / Q5_K: d * sc * q - dmin * m with q uniform in [0, 15] / [0, 31]; m = sc and
  dmin = 7.5 * d / 15.5 * d make each sub-block d * sc * (q - mean(q)).
- Q6_K: d * sc * (q - 32), q uniform in [0, 63] (mean 31.5): each sub-block's int8 scale gets a
  random sign, so the half-step bias averages out.
- Q5_0: d * (q - 16) (mean -0.5 d): random sign of d per block. Q5_1: d * q + m, m = -15.5 d.
- IQ4_NL / IQ4_XS: random code-book indices (and IQ4_XS sub-block scales); the non-linear book
  is near zero-mean. Not written by `ktx synth`; `ktx bench moe` uses them.
- the low-bit types (IQ1_S/M, IQ2_XXS/XS/S, IQ3_XXS/S, TQ1_0/TQ2_0): random bytes (grid indices,
  signs, sub-block scales all valid whatever their bits), with the f16 `d` set so the values
  have std about `std` (measured on a sample at d = 1).
- MXFP4: random E2M1 codes (symmetric book) under an E8M0 exponent picked per block from the
  two nearest the scale that gives `std` (book rms ~5.85).
- F32 / F16 / BF16: Gaussian values.
Byte layouts are ggml's (block_q4_K etc.); a test dequantizes them with gguf-py as well.
"""

from __future__ import annotations

import numpy as np

from ..gguf.constants import BLOCK_SIZES, I_QUANTS, TERNARY, GGMLType

SYNTH_TYPES = (
    GGMLType.F32,
    GGMLType.F16,
    GGMLType.BF16,
    GGMLType.Q8_0,
    GGMLType.Q4_K,
    GGMLType.Q5_K,
    GGMLType.Q6_K,
    GGMLType.Q5_0,
    GGMLType.Q5_1,
    GGMLType.MXFP4,
    *I_QUANTS,
    *TERNARY,
)
LOW_BIT = (*I_QUANTS, *TERNARY)
# Where each low-bit type keeps its f16 d (IQ1_M: none, see _set_d).
_D_AT = {GGMLType.TQ1_0: 52, GGMLType.TQ2_0: 64, GGMLType.IQ1_M: None}


def _f16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float16).view(np.uint8).reshape(*np.shape(x), 2)


def _bytes(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    return np.frombuffer(rng.bytes(n * width), dtype=np.uint8).reshape(n, width)


def _kquant_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Packs 8 six-bit (scale, min) pairs per block into ggml's 12 bytes (get_scale_min_k4)."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    return out


def _kquant(rng: np.random.Generator, n: int, std: float, levels: int) -> tuple[np.ndarray, ...]:
    sc = rng.integers(32, 64, size=(n, 8), dtype=np.uint8)
    q_std = np.sqrt((levels**2 - 1) / 12.0)
    d = (std / (q_std * 47.5)) * rng.uniform(0.8, 1.2, size=n)
    return _f16(d), _f16(d * (levels - 1) / 2.0), _kquant_scales(sc, sc)


def _set_d(raw: np.ndarray, ggml_type: GGMLType, d: np.ndarray) -> None:
    """Writes f16 scales d [n] into the blocks' d field (IQ1_M: the top nibbles of its four
    scale words, bytes 49, 51, 53, 55)."""
    bits = np.asarray(d, dtype=np.float16).reshape(-1).view(np.uint16)
    at = _D_AT.get(ggml_type, 0)
    if at is None:
        for k in range(4):
            nib = ((bits >> (4 * k)) & 0xF).astype(np.uint8)
            raw[:, 49 + 2 * k] = (raw[:, 49 + 2 * k] & 0x0F) | (nib << 4)
    else:
        raw[:, at : at + 2] = bits.view(np.uint8).reshape(-1, 2)


def _low_bit(ggml_type: GGMLType, n: int, rng: np.random.Generator, std: float) -> np.ndarray:
    from ..gguf.quants import dequantize

    raw = _bytes(rng, n, BLOCK_SIZES[ggml_type][1]).copy()
    if ggml_type == GGMLType.TQ2_0:  # 2-bit digits of 0..2 (3 would be a +2 no quantizer writes)
        digits = rng.integers(0, 3, size=(n, 64, 4), dtype=np.uint8)
        raw[:, :64] = digits[..., 0] | digits[..., 1] << 2 | digits[..., 2] << 4 | digits[..., 3] << 6
    sample = min(n, 256)
    _set_d(raw[:sample], ggml_type, np.ones(sample))
    spread = float(dequantize(raw[:sample], ggml_type, (sample * BLOCK_SIZES[ggml_type][0],)).std())
    _set_d(raw, ggml_type, std / spread * rng.uniform(0.8, 1.2, size=n))
    return raw


def random_blocks(
    ggml_type: GGMLType, n_blocks: int, rng: np.random.Generator, std: float = 0.02
) -> np.ndarray:
    """`n_blocks` random blocks of `ggml_type` as uint8 rows of the type's block size."""
    n = n_blocks
    if ggml_type == GGMLType.Q8_0:
        d = std / np.sqrt((255**2 - 1) / 12.0) * rng.uniform(0.8, 1.2, size=n)
        qs = rng.integers(-127, 128, size=(n, 32), dtype=np.int8).view(np.uint8)
        out = np.concatenate([_f16(d), qs], axis=1)
    elif ggml_type == GGMLType.Q4_K:
        d, dmin, scales = _kquant(rng, n, std, 16)
        out = np.concatenate([d, dmin, scales, _bytes(rng, n, 128)], axis=1)
    elif ggml_type == GGMLType.Q5_K:
        d, dmin, scales = _kquant(rng, n, std, 32)
        out = np.concatenate([d, dmin, scales, _bytes(rng, n, 32), _bytes(rng, n, 128)], axis=1)
    elif ggml_type == GGMLType.Q6_K:
        sc = rng.integers(64, 128, size=(n, 16)) * rng.choice([-1, 1], size=(n, 16))
        d = std / (np.sqrt((64**2 - 1) / 12.0 + 0.25) * 96.0) * rng.uniform(0.8, 1.2, size=n)
        out = np.concatenate([_bytes(rng, n, 192), sc.astype(np.int8).view(np.uint8), _f16(d)], axis=1)
    elif ggml_type == GGMLType.Q5_0:
        d = (
            std
            / np.sqrt((32**2 - 1) / 12.0 + 0.25)
            * rng.uniform(0.8, 1.2, size=n)
            * rng.choice([-1, 1], size=n)
        )
        out = np.concatenate([_f16(d), _bytes(rng, n, 20)], axis=1)
    elif ggml_type == GGMLType.Q5_1:
        d = std / np.sqrt((32**2 - 1) / 12.0) * rng.uniform(0.8, 1.2, size=n)
        out = np.concatenate([_f16(d), _f16(-15.5 * d), _bytes(rng, n, 20)], axis=1)
    elif ggml_type in (GGMLType.IQ4_NL, GGMLType.IQ4_XS):
        # random code-book indices (and, for IQ4_XS, 6-bit sub-block scales) behind the leading
        # f16 `d`, sized so values have std about `std` (code-book rms ~65; IQ4_XS's signed
        # sub-block scales, uniform in [-32, 31], rms ~18.5)
        size = BLOCK_SIZES[ggml_type][1]
        spread = 65.0 * (18.5 if ggml_type == GGMLType.IQ4_XS else 1.0)
        d = std / spread * rng.uniform(0.8, 1.2, size=n)
        out = np.concatenate([_f16(d), _bytes(rng, n, size - 2)], axis=1)
    elif ggml_type in LOW_BIT:
        out = _low_bit(ggml_type, n, rng, std)
    elif ggml_type == GGMLType.MXFP4:
        e = np.floor(np.log2(std / 5.85)) + 128 + rng.integers(0, 2, size=(n, 1))
        out = np.concatenate([e.astype(np.uint8), _bytes(rng, n, 16)], axis=1)
    elif ggml_type == GGMLType.F32:
        out = (rng.standard_normal(n, dtype=np.float32) * std).view(np.uint8).reshape(n, 4)
    elif ggml_type == GGMLType.F16:
        out = _f16(rng.standard_normal(n, dtype=np.float32) * std)
    elif ggml_type == GGMLType.BF16:
        x = rng.standard_normal(n, dtype=np.float32) * np.float32(std)
        out = (x.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8).reshape(n, 2)
    else:
        raise NotImplementedError(f"ktx synth cannot make {ggml_type.name} blocks")
    assert out.shape == (n, BLOCK_SIZES[ggml_type][1]), (ggml_type, out.shape)
    return np.ascontiguousarray(out)


class BlockPool:
    """A few MB of random blocks per type; tensors are filled from random offsets into it.

    Copying (or rather, writing straight from) pool slices runs at disk speed, while generating
    every block afresh would not; offsets differ per tensor and per chunk, so no two experts
    share their weights in the same places.
    """

    def __init__(
        self, rng: np.random.Generator, pool_bytes: int = 32 << 20, chunk_bytes: int = 1 << 20
    ) -> None:
        self.rng, self.pool_bytes, self.chunk_bytes = rng, pool_bytes, chunk_bytes
        self._pools: dict[GGMLType, np.ndarray] = {}

    def pool(self, ggml_type: GGMLType) -> np.ndarray:
        if ggml_type not in self._pools:
            size = BLOCK_SIZES[ggml_type][1]
            self._pools[ggml_type] = random_blocks(
                ggml_type, max(1, self.pool_bytes // size), self.rng
            ).reshape(-1)
        return self._pools[ggml_type]

    def fill(self, ggml_type: GGMLType, nbytes: int):
        """Yields byte chunks (views into the pool) that add up to `nbytes` of whole blocks."""
        size = BLOCK_SIZES[ggml_type][1]
        pool = self.pool(ggml_type)
        n_pool = pool.size // size
        chunk = max(1, self.chunk_bytes // size)
        left = nbytes // size
        while left:
            n = min(chunk, left, n_pool)
            start = int(self.rng.integers(0, n_pool - n + 1))
            yield pool[start * size : (start + n) * size]
            left -= n
