"""GGUF blocks -> dense tensors on the GPU, with Triton.

Weights cross PCIe as quantized blocks (2-8x fewer bytes than bf16) and are expanded where they
are used. The values are gguf-py's (`gguf.quants.dequantize`, the tests' oracle) bit for bit: each
kernel repeats that numpy code's float32 steps in its order, and every launch passes
enable_fp_fusion=False, since on a GPU `d * q - m` would otherwise become one FMA (one rounding
instead of two). bfloat16 output is rounded to nearest even with integer ops, as torch's
`.to(torch.bfloat16)` does: Triton's interpreter truncates in its float->bf16 cast.

Types without a kernel raise NotImplementedError; the caller dequantizes those on the CPU.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import IQ4_NL, MXFP4

Q = GGMLQuantizationType

# Kernel output formats (the OUT constexpr); any other float dtype is cast from float32 by torch.
_OUT_KIND = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}

# Types torch reads as they are: GGUF type -> the dtype of its bytes.
_PLAIN = {Q.F32: torch.float32, Q.F16: torch.float16, Q.BF16: torch.bfloat16}


# ---- shared pieces ---------------------------------------------------------------------------
# A program expands BLOCKS blocks of QK values: a [BLOCKS, QK] tile, one row per block.


@triton.jit
def _tile(n_blocks, QK: tl.constexpr, TYPE_SIZE: tl.constexpr, BLOCKS: tl.constexpr):
    blk = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)[:, None]  # [BLOCKS, 1]
    e = tl.arange(0, QK)[None, :]  # [1, QK] index of the value within its block
    return blk, blk * TYPE_SIZE, e, blk < n_blocks


@triton.jit
def _u8(raw, off, mask):
    """Bytes at raw + off (any shape) as int32, so shifts and masks never wrap."""
    return tl.load(raw + off, mask=mask, other=0).to(tl.int32)


@triton.jit
def _i8(raw, off, mask):
    x = _u8(raw, off, mask)
    return (x ^ 0x80) - 0x80


@triton.jit
def _f16(raw, off, mask):
    """The little-endian float16 at raw + off as float32 (exact)."""
    bits = _u8(raw, off, mask) | (_u8(raw, off + 1, mask) << 8)
    return bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _store(out, blk, e, y, mask, QK: tl.constexpr, OUT: tl.constexpr):
    """y: [BLOCKS, QK] float32 -> out (float32, bfloat16 seen as int16, or float16)."""
    offs = blk * QK + e
    if OUT == 1:
        # Round to nearest even on the bits; NaN stays NaN (quiet bit set).
        v = y.to(tl.uint32, bitcast=True)
        rounded = (v + 0x7FFF + ((v >> 16) & 1)) >> 16
        bits = tl.where((v & 0x7FFFFFFF) > 0x7F800000, (v >> 16) | 0x40, rounded)
        tl.store(out + offs, bits.to(tl.int16), mask=mask)
    elif OUT == 2:
        tl.store(out + offs, y.to(tl.float16), mask=mask)
    else:
        tl.store(out + offs, y, mask=mask)


@triton.jit
def _nibble(raw, off, j, mask, HALF: tl.constexpr):
    """Nibbles laid out as ggml's Q4_0: value j < HALF is the low nibble of byte j, value
    j + HALF the high one."""
    return (_u8(raw, off + j % HALF, mask) >> (4 * (j // HALF))) & 0xF


def _pack4(values) -> int:
    """Four int8s as the bytes of one int32 (little end first)."""
    word = sum((v & 0xFF) << (8 * i) for i, v in enumerate(values))
    return word - (1 << 32) if word >= 1 << 31 else word


# IQ4's 16-entry code book as four int32 constants: the kernels pick a byte out of them, so no
# table has to live in device memory.
_IQ4_0: tl.constexpr = tl.constexpr(_pack4(IQ4_NL.kvalues[0:4]))
_IQ4_1: tl.constexpr = tl.constexpr(_pack4(IQ4_NL.kvalues[4:8]))
_IQ4_2: tl.constexpr = tl.constexpr(_pack4(IQ4_NL.kvalues[8:12]))
_IQ4_3: tl.constexpr = tl.constexpr(_pack4(IQ4_NL.kvalues[12:16]))


# MXFP4's book: E2M1 values doubled (integers), the same way.
_MX_0: tl.constexpr = tl.constexpr(_pack4(MXFP4.kvalues[0:4]))
_MX_1: tl.constexpr = tl.constexpr(_pack4(MXFP4.kvalues[4:8]))
_MX_2: tl.constexpr = tl.constexpr(_pack4(MXFP4.kvalues[8:12]))
_MX_3: tl.constexpr = tl.constexpr(_pack4(MXFP4.kvalues[12:16]))


@triton.jit
def _book_value(i, W0: tl.constexpr, W1: tl.constexpr, W2: tl.constexpr, W3: tl.constexpr):
    """Entry i (int32, 0..15) of a 16-entry int8 book held in four int32 words, as float32."""
    word = tl.where(i < 4, W0, tl.where(i < 8, W1, tl.where(i < 12, W2, W3)))
    byte = (word >> (8 * (i % 4))) & 0xFF
    return ((byte ^ 0x80) - 0x80).to(tl.float32)


@triton.jit
def _iq4_value(i):
    """IQ4 code book entry i (int32, 0..15) as float32."""
    return _book_value(i, _IQ4_0, _IQ4_1, _IQ4_2, _IQ4_3)


@triton.jit
def _e8m0_half(x):
    """An E8M0 exponent byte (int32) as 2^(x - 128): ggml's ggml_e8m0_to_fp32_half bits."""
    bits = tl.where(x < 2, 0x00200000 << x, (x - 1) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _kq_scale_min(raw, s, sb, mask):
    """The 6-bit (scale, min) of sub-block sb (0..7) from the 12 bytes at s (Q4_K, Q5_K):
    sb < 4 keeps the low 6 bits of bytes sb and sb + 4; sb >= 4 takes a nibble of byte sb + 4
    and the top two bits of bytes sb - 4 and sb."""
    i = sb % 4
    a = _u8(raw, s + i, mask)
    b = _u8(raw, s + 4 + i, mask)
    c = _u8(raw, s + 8 + i, mask)
    sc = tl.where(sb < 4, a & 63, (c & 0xF) | ((a >> 6) << 4))
    mn = tl.where(sb < 4, b & 63, (c >> 4) | ((b >> 6) << 4))
    return sc, mn


@triton.jit
def _kq_scale_offset(raw, base, sb, mask):
    """Q4_K / Q5_K header (d f16 | dmin f16 | scales u8[12]) -> sub-block sb's d * sc and
    dmin * mn, in gguf-py's order (y = (d * sc) * q - (dmin * mn))."""
    d = _f16(raw, base, mask)
    dmin = _f16(raw, base + 2, mask)
    sc, mn = _kq_scale_min(raw, base + 4, sb, mask)
    return d * sc.to(tl.float32), dmin * mn.to(tl.float32)


# ---- one kernel per type; the block layouts are ggml's (block_q4_0 ...) ---------------------


@triton.jit
def _q8_0(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | qs int8[32]; y = q * d
    blk, base, e, m = _tile(n_blocks, 32, 34, BLOCKS)
    d = _f16(raw, base, m)  # [BLOCKS, 1]
    q = _i8(raw, base + 2 + e, m)  # [BLOCKS, 32]
    _store(out, blk, e, q.to(tl.float32) * d, m, 32, OUT)


@triton.jit
def _q4_0(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | qs u8[16]; y = d * (q - 8)
    blk, base, e, m = _tile(n_blocks, 32, 18, BLOCKS)
    d = _f16(raw, base, m)
    q = _nibble(raw, base + 2, e, m, 16)
    _store(out, blk, e, d * (q - 8).to(tl.float32), m, 32, OUT)


@triton.jit
def _q4_1(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | m f16 | qs u8[16]; y = d * q + m
    blk, base, e, m = _tile(n_blocks, 32, 20, BLOCKS)
    d = _f16(raw, base, m)
    mn = _f16(raw, base + 2, m)
    q = _nibble(raw, base + 4, e, m, 16)
    _store(out, blk, e, d * q.to(tl.float32) + mn, m, 32, OUT)


@triton.jit
def _q5_0(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | qh u32 | qs u8[16]; value e's fifth bit is bit e of qh; y = d * (q - 16)
    blk, base, e, m = _tile(n_blocks, 32, 22, BLOCKS)
    d = _f16(raw, base, m)
    hi = (_u8(raw, base + 2 + e // 8, m) >> (e % 8)) & 1
    q = _nibble(raw, base + 6, e, m, 16) | (hi << 4)
    _store(out, blk, e, d * (q - 16).to(tl.float32), m, 32, OUT)


@triton.jit
def _q5_1(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | m f16 | qh u32 | qs u8[16]; y = d * q + m
    blk, base, e, m = _tile(n_blocks, 32, 24, BLOCKS)
    d = _f16(raw, base, m)
    mn = _f16(raw, base + 2, m)
    hi = (_u8(raw, base + 4 + e // 8, m) >> (e % 8)) & 1
    q = _nibble(raw, base + 8, e, m, 16) | (hi << 4)
    _store(out, blk, e, d * q.to(tl.float32) + mn, m, 32, OUT)


@triton.jit
def _iq4_nl(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # Q4_0's layout; each nibble indexes the 16-entry non-linear code book. y = d * book[q]
    blk, base, e, m = _tile(n_blocks, 32, 18, BLOCKS)
    d = _f16(raw, base, m)
    v = _iq4_value(_nibble(raw, base + 2, e, m, 16))
    _store(out, blk, e, d * v, m, 32, OUT)


@triton.jit
def _mxfp4(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # e u8 (E8M0) | qs u8[16], IQ4_NL's nibble order. y = e8m0_half(e) * book[q]
    blk, base, e, m = _tile(n_blocks, 32, 17, BLOCKS)
    d = _e8m0_half(_u8(raw, base, m))
    v = _book_value(_nibble(raw, base + 1, e, m, 16), _MX_0, _MX_1, _MX_2, _MX_3)
    _store(out, blk, e, d * v, m, 32, OUT)


@triton.jit
def _q2_k(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # scales u8[16] | qs u8[64] | d f16 | dmin f16. 16 groups of 16: scales[k] is group k's
    # scale (low nibble) and min (high). Value g*128 + s*32 + j is bits 2s..2s+1 of qs[g*32 + j].
    # y = (d * sc) * q - (dmin * mn)
    blk, base, e, m = _tile(n_blocks, 256, 84, BLOCKS)
    d = _f16(raw, base + 80, m)
    dmin = _f16(raw, base + 82, m)
    sc = _u8(raw, base + e // 16, m)
    dl = d * (sc & 0xF).to(tl.float32)
    ml = dmin * (sc >> 4).to(tl.float32)
    q = (_u8(raw, base + 16 + (e // 128) * 32 + e % 32, m) >> (2 * ((e % 128) // 32))) & 3
    _store(out, blk, e, dl * q.to(tl.float32) - ml, m, 256, OUT)


@triton.jit
def _q3_k(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # hmask u8[32] | qs u8[64] | scales u8[12] | d f16. 16 groups of 16 with 6-bit scales - 32:
    # group k's low 4 bits are nibble k // 8 of byte k % 8, its high 2 bits are bits 2*(k // 4)
    # of byte 8 + k % 4. Low two bits of a value as Q2_K; value t*32 + j subtracts 4 when bit t
    # of hmask[j] is clear. y = (d * scale) * q
    blk, base, e, m = _tile(n_blocks, 256, 110, BLOCKS)
    d = _f16(raw, base + 108, m)
    k = e // 16
    lo = (_u8(raw, base + 96 + k % 8, m) >> (4 * (k // 8))) & 0xF
    hi = (_u8(raw, base + 104 + k % 4, m) >> (2 * (k // 4))) & 3
    dl = d * ((lo | (hi << 4)) - 32).to(tl.float32)
    low = (_u8(raw, base + 32 + (e // 128) * 32 + e % 32, m) >> (2 * ((e % 128) // 32))) & 3
    keep = (_u8(raw, base + e % 32, m) >> (e // 32)) & 1
    q = low - ((keep ^ 1) << 2)
    _store(out, blk, e, dl * q.to(tl.float32), m, 256, OUT)


@triton.jit
def _q4_k(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | dmin f16 | scales u8[12] | qs u8[128]. 8 sub-blocks of 32; value sb*32 + j is
    # nibble sb % 2 of qs[(sb // 2)*32 + j]. y = (d * sc) * q - (dmin * mn)
    blk, base, e, m = _tile(n_blocks, 256, 144, BLOCKS)
    sb = e // 32
    dl, ml = _kq_scale_offset(raw, base, sb, m)
    q = (_u8(raw, base + 16 + (sb // 2) * 32 + e % 32, m) >> (4 * (sb % 2))) & 0xF
    _store(out, blk, e, dl * q.to(tl.float32) - ml, m, 256, OUT)


@triton.jit
def _q5_k(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | dmin f16 | scales u8[12] | qh u8[32] | qs u8[128]. Q4_K plus a fifth bit: bit sb
    # of qh[j] for value sb*32 + j.
    blk, base, e, m = _tile(n_blocks, 256, 176, BLOCKS)
    sb = e // 32
    dl, ml = _kq_scale_offset(raw, base, sb, m)
    lo = (_u8(raw, base + 48 + (sb // 2) * 32 + e % 32, m) >> (4 * (sb % 2))) & 0xF
    hi = (_u8(raw, base + 16 + e % 32, m) >> sb) & 1
    q = lo | (hi << 4)
    _store(out, blk, e, dl * q.to(tl.float32) - ml, m, 256, OUT)


@triton.jit
def _q6_k(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # ql u8[128] | qh u8[64] | scales i8[16] | d f16. Value g*128 + r (r < 128) takes nibble
    # r // 64 of ql[g*64 + r % 64] and bits 2*(r // 32) of qh[g*32 + r % 32] as its top two.
    # y = (d * scales[e // 16]) * (q - 32)
    blk, base, e, m = _tile(n_blocks, 256, 210, BLOCKS)
    d = _f16(raw, base + 208, m)
    dl = d * _i8(raw, base + 192 + e // 16, m).to(tl.float32)
    g = e // 128
    r = e % 128
    lo = (_u8(raw, base + g * 64 + r % 64, m) >> (4 * (r // 64))) & 0xF
    hi = (_u8(raw, base + 128 + g * 32 + r % 32, m) >> (2 * (r // 32))) & 3
    q = (lo | (hi << 4)) - 32
    _store(out, blk, e, dl * q.to(tl.float32), m, 256, OUT)


@triton.jit
def _iq4_xs(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | scales_h u16 | scales_l u8[4] | qs u8[128]. 8 sub-blocks of 32 with 6-bit scales
    # - 32 (low nibble sb % 2 of scales_l[sb // 2], high bits 2*sb of scales_h); within a
    # sub-block IQ4_NL's nibble order over its 16 bytes. y = (d * scale) * book[q]
    blk, base, e, m = _tile(n_blocks, 256, 136, BLOCKS)
    d = _f16(raw, base, m)
    sb = e // 32
    lo = (_u8(raw, base + 4 + sb // 2, m) >> (4 * (sb % 2))) & 0xF
    hi = (_u8(raw, base + 2 + sb // 4, m) >> (2 * (sb % 4))) & 3
    dl = d * ((lo | (hi << 4)) - 32).to(tl.float32)
    v = _iq4_value(_nibble(raw, base + 8 + sb * 16, e % 32, m, 16))
    _store(out, blk, e, dl * v, m, 256, OUT)


@triton.jit
def _nvfp4(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # u8 E4M3 scales[4] | qs u8[32]: sub-block s's values j < 8 in the low nibbles of qs[8s + j],
    # 8..15 in the high ones. y = e4m3_half(scale) * book[q], the scale built exactly from its bits
    blk, base, e, m = _tile(n_blocks, 64, 36, BLOCKS)
    s, j = e // 16, e % 16
    x = _u8(raw, base + s, m)
    ex, man = (x >> 3) & 0xF, x & 7
    normal = ((ex - 7 + 127) << 23 | man << 20).to(tl.float32, bitcast=True)
    d = tl.where(ex == 0, man.to(tl.float32) * 0.001953125, normal)
    d = tl.where((x == 0) | (x == 0x7F), 0.0, d * 0.5)
    q = (_u8(raw, base + 4 + 8 * s + j % 8, m) >> (4 * (j // 8))) & 0xF
    _store(out, blk, e, d * _book_value(q, _MX_0, _MX_1, _MX_2, _MX_3), m, 64, OUT)


# ---- the low-bit types -----------------------------------------------------------------------
# The i-quants index code books too large for constants: the kernels read them from small
# int8 tensors on the device (`grid`, and the 128-entry sign table `ksigns`), made from gguf-py's
# tables (see ktx/core/gguf/iq_grids.py) on first use per device.


@triton.jit
def _u16(raw, off, mask):
    return _u8(raw, off, mask) | (_u8(raw, off + 1, mask) << 8)


@triton.jit
def _u32(raw, off, mask):
    """The little-endian u32 at raw + off as int64 (no sign)."""
    return _u16(raw, off, mask).to(tl.int64) | (_u16(raw, off + 2, mask).to(tl.int64) << 16)


@triton.jit
def _signed(v, signs, j):
    """v negated where bit j of `signs` is set."""
    return tl.where(((signs >> j) & 1) != 0, -v, v)


@triton.jit
def _iq2_scale(raw, at, k, d, mask):
    # IQ2_XS / IQ2_S: nibble k // 2 of the scale bytes for group k of 8 values
    s = (_u8(raw, at + k // 4, mask) >> (4 * ((k // 2) % 2))) & 0xF
    return d * (0.5 + s.to(tl.float32)) * 0.25


@triton.jit
def _iq2_xxs(raw, out, n_blocks, grid, ksigns, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | 8 x (u32 grid bytes, u32 4 x 7 sign bits + scale << 28)
    blk, base, e, m = _tile(n_blocks, 256, 66, BLOCKS)
    d = _f16(raw, base, m)
    ib, grp, j = e // 32, (e % 32) // 8, e % 8
    aux = _u32(raw, base + 6 + 8 * ib, m)
    db = d * (0.5 + (aux >> 28).to(tl.float32)) * 0.25
    g = tl.load(grid + _u8(raw, base + 2 + 8 * ib + grp, m) * 8 + j, mask=m, other=0).to(tl.float32)
    signs = tl.load(ksigns + ((aux >> (7 * grp)) & 127), mask=m, other=0).to(tl.int32) & 0xFF
    _store(out, blk, e, _signed(db * g, signs, j), m, 256, OUT)


@triton.jit
def _iq2_xs(raw, out, n_blocks, grid, ksigns, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | u16 qs[32] (9-bit grid index | 7 sign bits << 9) | u8 scales[8]
    blk, base, e, m = _tile(n_blocks, 256, 74, BLOCKS)
    d = _f16(raw, base, m)
    k, j = e // 8, e % 8
    q = _u16(raw, base + 2 + 2 * k, m)
    db = _iq2_scale(raw, base + 66, k, d, m)
    g = tl.load(grid + (q & 511) * 8 + j, mask=m, other=0).to(tl.float32)
    signs = tl.load(ksigns + (q >> 9), mask=m, other=0).to(tl.int32) & 0xFF
    _store(out, blk, e, _signed(db * g, signs, j), m, 256, OUT)


@triton.jit
def _iq2_s(raw, out, n_blocks, grid, ksigns, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | qs u8[32] | signs u8[32] | qh u8[8] | scales u8[8]; index = qs | 2 bits of qh << 8
    blk, base, e, m = _tile(n_blocks, 256, 82, BLOCKS)
    d = _f16(raw, base, m)
    k, j = e // 8, e % 8
    idx = _u8(raw, base + 2 + k, m) | (((_u8(raw, base + 66 + k // 4, m) >> (2 * (k % 4))) & 3) << 8)
    db = _iq2_scale(raw, base + 74, k, d, m)
    g = tl.load(grid + idx * 8 + j, mask=m, other=0).to(tl.float32)
    _store(out, blk, e, _signed(db * g, _u8(raw, base + 34 + k, m), j), m, 256, OUT)


@triton.jit
def _iq3_xxs(raw, out, n_blocks, grid, ksigns, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | qs u8[64] (grid entries of 4) | u32[8] (4 x 7 sign bits + scale << 28)
    blk, base, e, m = _tile(n_blocks, 256, 98, BLOCKS)
    d = _f16(raw, base, m)
    ib, grp, j = e // 32, (e % 32) // 8, e % 8
    aux = _u32(raw, base + 66 + 4 * ib, m)
    db = d * (0.5 + (aux >> 28).to(tl.float32)) * 0.5
    idx = _u8(raw, base + 2 + 8 * ib + 2 * grp + j // 4, m)
    g = tl.load(grid + idx * 4 + j % 4, mask=m, other=0).to(tl.float32)
    signs = tl.load(ksigns + ((aux >> (7 * grp)) & 127), mask=m, other=0).to(tl.int32) & 0xFF
    _store(out, blk, e, _signed(db * g, signs, j), m, 256, OUT)


@triton.jit
def _iq3_s(raw, out, n_blocks, grid, ksigns, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | qs u8[64] | qh u8[8] | signs u8[32] | scales u8[4]; y = d * (1 + 2 s) * +-grid
    blk, base, e, m = _tile(n_blocks, 256, 110, BLOCKS)
    d = _f16(raw, base, m)
    ib, grp, j = e // 32, (e % 32) // 8, e % 8
    mm = 8 * ib + 2 * grp + j // 4
    idx = _u8(raw, base + 2 + mm, m) | (((_u8(raw, base + 66 + mm // 8, m) >> (mm % 8)) & 1) << 8)
    s = (_u8(raw, base + 106 + ib // 2, m) >> (4 * (ib % 2))) & 0xF
    db = d * (1 + 2 * s).to(tl.float32)
    g = tl.load(grid + idx * 4 + j % 4, mask=m, other=0).to(tl.float32)
    _store(out, blk, e, _signed(db * g, _u8(raw, base + 74 + 4 * ib + grp, m), j), m, 256, OUT)


@triton.jit
def _iq1_s(raw, out, n_blocks, grid, ksigns, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # d f16 | qs u8[32] | qh u16[8]; y = d * (2 s + 1) * (grid +- 1/8)
    blk, base, e, m = _tile(n_blocks, 256, 50, BLOCKS)
    d = _f16(raw, base, m)
    ib, grp, j = e // 32, (e % 32) // 8, e % 8
    qh = _u16(raw, base + 34 + 2 * ib, m)
    dl = d * (2 * ((qh >> 12) & 7) + 1).to(tl.float32)
    delta = tl.where((qh & 0x8000) != 0, -0.125, 0.125)
    idx = _u8(raw, base + 2 + 4 * ib + grp, m) | (((qh >> (3 * grp)) & 7) << 8)
    g = tl.load(grid + idx * 8 + j, mask=m, other=0).to(tl.float32)
    _store(out, blk, e, dl * (g + delta), m, 256, OUT)


@triton.jit
def _iq1_m(raw, out, n_blocks, grid, ksigns, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # qs u8[32] | qh u8[16] | u16 scales[4] (3-bit scales; their top nibbles are the f16 d)
    blk, base, e, m = _tile(n_blocks, 256, 56, BLOCKS)
    bits = (
        ((_u16(raw, base + 48, m) & 0xF000) >> 12)
        | ((_u16(raw, base + 50, m) & 0xF000) >> 8)
        | ((_u16(raw, base + 52, m) & 0xF000) >> 4)
        | (_u16(raw, base + 54, m) & 0xF000)
    )
    d = bits.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32)
    k, j = e // 8, e % 8
    c = k // 2
    s = (_u16(raw, base + 48 + 2 * (c // 4), m) >> (3 * (c % 4))) & 7
    dl = d * (2 * s + 1).to(tl.float32)
    nib = (_u8(raw, base + 32 + k // 2, m) >> (4 * (k % 2))) & 0xF
    delta = tl.where((nib & 8) != 0, -0.125, 0.125)
    g = tl.load(grid + (_u8(raw, base + k, m) | ((nib & 7) << 8)) * 8 + j, mask=m, other=0).to(tl.float32)
    _store(out, blk, e, dl * (g + delta), m, 256, OUT)


@triton.jit
def _tq1_0(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # qs u8[48] | qh u8[4] | d f16. Byte b holds base-3 digits: digit m = ((b * 3^m) & 255) * 3 >> 8;
    # values 0-159: digit e // 32 of qs[e % 32]; 160-239: of qs[32 + ...]; 240-255: of qh
    blk, base, e, m = _tile(n_blocks, 256, 54, BLOCKS)
    d = _f16(raw, base + 52, m)
    r1, r2 = e - 160, e - 240
    at = tl.where(e < 160, e % 32, tl.where(e < 240, 32 + r1 % 16, 48 + r2 % 4))
    digit = tl.where(e < 160, e // 32, tl.where(e < 240, r1 // 16, r2 // 4))
    pow3 = tl.where(
        digit == 0, 1, tl.where(digit == 1, 3, tl.where(digit == 2, 9, tl.where(digit == 3, 27, 81)))
    )
    q = (((_u8(raw, base + at, m) * pow3) & 0xFF) * 3) >> 8
    _store(out, blk, e, d * (q - 1).to(tl.float32), m, 256, OUT)


@triton.jit
def _tq2_0(raw, out, n_blocks, BLOCKS: tl.constexpr, OUT: tl.constexpr):
    # qs u8[64] | d f16; value 128c + 32s + j is bits 2s..2s+1 of qs[32c + j]; y = d * (q - 1)
    blk, base, e, m = _tile(n_blocks, 256, 66, BLOCKS)
    d = _f16(raw, base + 64, m)
    c, sh, j = e // 128, (e % 128) // 32, e % 32
    q = (_u8(raw, base + 32 * c + j, m) >> (2 * sh)) & 3
    _store(out, blk, e, d * (q - 1).to(tl.float32), m, 256, OUT)


# type -> gguf-py class whose code book the kernel reads
_GRIDS = {
    Q.IQ2_XXS: "IQ2_XXS",
    Q.IQ2_XS: "IQ2_XS",
    Q.IQ2_S: "IQ2_S",
    Q.IQ3_XXS: "IQ3_XXS",
    Q.IQ3_S: "IQ3_S",
    Q.IQ1_S: "IQ1_S",
    Q.IQ1_M: "IQ1_S",
}
_grid_cache: dict[tuple[str, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _grid(qtype: Q, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(code book, sign table) of an i-quant as int8 tensors on `device`, made once."""
    key = (_GRIDS[qtype], device)
    if key not in _grid_cache:
        import numpy as np
        from gguf import quants

        cls = getattr(quants, _GRIDS[qtype])
        cls.init_grid()
        grid = torch.from_numpy(np.asarray(cls.grid).reshape(-1).astype(np.int8)).to(device)
        ksigns = torch.frombuffer(bytearray(quants.IQ2_XXS.ksigns), dtype=torch.uint8).view(torch.int8)
        _grid_cache[key] = (grid, ksigns.to(device))
    return _grid_cache[key]


# type -> (kernel, blocks per program): about 2048 values a program.
_KERNELS = {
    Q.Q8_0: (_q8_0, 64),
    Q.Q4_0: (_q4_0, 64),
    Q.Q5_0: (_q5_0, 64),
    Q.Q4_1: (_q4_1, 64),
    Q.Q5_1: (_q5_1, 64),
    Q.Q4_K: (_q4_k, 8),
    Q.Q5_K: (_q5_k, 8),
    Q.Q6_K: (_q6_k, 8),
    Q.IQ4_NL: (_iq4_nl, 64),
    Q.IQ4_XS: (_iq4_xs, 8),
    Q.MXFP4: (_mxfp4, 64),
    Q.NVFP4: (_nvfp4, 32),
    Q.IQ2_XXS: (_iq2_xxs, 8),
    Q.IQ2_XS: (_iq2_xs, 8),
    Q.IQ2_S: (_iq2_s, 8),
    Q.IQ3_XXS: (_iq3_xxs, 8),
    Q.IQ3_S: (_iq3_s, 8),
    Q.IQ1_S: (_iq1_s, 8),
    Q.IQ1_M: (_iq1_m, 8),
    Q.TQ1_0: (_tq1_0, 8),
    Q.TQ2_0: (_tq2_0, 8),
    Q.Q2_K: (_q2_k, 8),
    Q.Q3_K: (_q3_k, 8),
}

SUPPORTED: frozenset[int] = frozenset(int(t) for t in _KERNELS)


def _type_name(ggml_type: int) -> str:
    try:
        return Q(ggml_type).name
    except ValueError:
        return f"unknown ggml type {ggml_type}"


def dequantize(
    raw: torch.Tensor, ggml_type: int, shape: tuple[int, ...], dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    """The GGUF blocks in `raw` (contiguous uint8, any shape, on the kernel device) as a tensor
    of `shape` (numpy order: the last dim is the row) and `dtype` on raw's device.

    float32 values equal gguf-py's bit for bit; other dtypes are those values cast as torch's
    `.to(dtype)` does. F32/F16/BF16 are views of `raw` when no cast is needed.
    """
    if ggml_type not in SUPPORTED and ggml_type not in _PLAIN:
        raise NotImplementedError(
            f"no GPU dequantizer for {_type_name(ggml_type)}; dequantize it on the CPU "
            f"(GPU types: {', '.join(Q(t).name for t in sorted(SUPPORTED))})"
        )
    qtype = Q(ggml_type)
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    block, type_size = GGML_QUANT_SIZES[qtype]
    expected = n // block * type_size
    if raw.dtype != torch.uint8:
        raise ValueError(f"raw must be a uint8 tensor of {qtype.name} blocks, not {raw.dtype}")
    if (shape and shape[-1] % block) or n % block or raw.numel() != expected:
        raise ValueError(
            f"{raw.numel()} bytes of {qtype.name} do not hold a tensor of shape {shape} "
            f"(rows must be whole blocks of {block} values, {type_size} bytes each; "
            f"{expected} bytes expected)"
        )
    if not dtype.is_floating_point:
        raise ValueError(f"dequantize produces floating-point tensors, not {dtype}")

    flat = raw.reshape(-1)
    if qtype in _PLAIN:
        x = flat.view(_PLAIN[qtype]).reshape(shape)
        return x if x.dtype == dtype else x.float().to(dtype)

    kind = _OUT_KIND.get(dtype, 0)
    out_dtype = dtype if dtype in _OUT_KIND else torch.float32
    out = torch.empty(shape, dtype=out_dtype, device=raw.device)  # [..., row] like gguf-py's
    n_blocks = n // block
    if n_blocks:
        kernel, blocks = _KERNELS[qtype]
        dst = out.view(torch.int16) if kind == 1 else out
        grid = (triton.cdiv(n_blocks, blocks),)
        books = _grid(qtype, raw.device) if qtype in _GRIDS else ()
        kernel[grid](flat, dst, n_blocks, *books, BLOCKS=blocks, OUT=kind, enable_fp_fusion=False)
    return out if out.dtype == dtype else out.to(dtype)
