"""Decode attention straight from the block KV cache (core/runtime/kv_cache.py), in Triton.

One new query per sequence reads its keys through the block table: token t of row b lives in
block block_table[b, t // block_size], row t % block_size. Shapes depend only on the batch, the
heads and the table's width, never on the lengths (seq_lens is a device tensor read inside the
kernels), so a CUDA graph can capture the decode step.

- `gqa_decode`: grouped-query attention, K and V caches [blocks, block_size, kv_heads, dim]; one
  program per (row, KV head) takes that head's whole query group as the rows of one tl.dot.
  Sliding window and logit soft-capping (Gemma 3) included.
- `mla_decode`: DeepSeek's absorbed MLA, one cache [blocks, block_size, rank + rope] holding the
  latent c then the rotated k_pe; a program takes up to 16 heads so that each cache tile it loads
  serves all of them, once for the scores and again as the values.

Both run flash-decoding's online softmax over tiles of BLOCK_N tokens in float32, optionally with
the sequence split among programs ("split-K", for few rows and long contexts) and combined after.
The split count follows only the programs vs the GPU's SMs; each program cuts its own row's keys
from seq_lens (equal shares in whole tiles, at least _MIN_SPLIT_TOKENS), so a short row in a
table as wide as the pool (graph mode) leaves its later splits empty, and a long one uses them all.
Float32 caches multiply in IEEE float32 (no TF32). 16-bit caches multiply on the tensor cores in
their own dtype, the float32 operand (query, probabilities) split into a high and a low 16-bit
half: ~16 bits of it kept, where multiplying it as bfloat16 would keep 8.

Nothing the launches pass as a compile-time constant depends on the lengths, the table's width or
the split count, and the integer arguments (strides, counts, lengths) are left unspecialized, so one
compile per kernel serves a model config for good: `warm_gqa` / `warm_mla` do it at load.
The references beside them are the math, in plain torch; the tests compare the two.
"""

from __future__ import annotations

import functools
import inspect

import torch
import triton
import triton.language as tl

# Tokens per tile, and the fewest cache rows a split the launcher chose is given.
_BLOCK_N = {"gqa": 64, "mla": 32}
_MLA_BLOCK_H = 16  # heads per MLA program; tl.dot needs at least 16 rows
_MIN_SPLIT_TOKENS = 256
_MAX_SPLITS = 16  # also the combine's BLOCK_S, whatever the split count


# --- references -------------------------------------------------------------------------------


def _gather(cache: torch.Tensor, table: torch.Tensor, length: int) -> torch.Tensor:
    """Rows 0 .. length of one sequence: [length, *per_token_shape]."""
    pos = torch.arange(length, device=cache.device)
    return cache[table[pos // cache.shape[1]].long(), pos % cache.shape[1]]


def gqa_decode_reference(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """q [B, H, D]; k_cache [NB, BS, KVH, D]; v_cache [NB, BS, KVH, Dv] -> [B, H, Dv] float32.

    Row b's query is the token at position seq_lens[b] - 1 (already in the cache); head h reads KV
    head h // (H // KVH). Keys kpos with qpos - kpos >= window are left out. sinks [H] (gpt-oss):
    a logit per head that joins the softmax without a value."""
    heads, kv_heads = q.shape[1], k_cache.shape[2]
    out = []
    for b, length in enumerate(seq_lens.tolist()):
        k = _gather(k_cache, block_table[b], length).float().repeat_interleave(heads // kv_heads, 1)
        v = _gather(v_cache, block_table[b], length).float().repeat_interleave(heads // kv_heads, 1)
        scores = torch.einsum("hd,shd->hs", q[b].float(), k) * scale  # [H, S]
        if softcap is not None:
            scores = torch.tanh(scores / softcap) * softcap
        if window is not None:
            too_far = (length - 1) - torch.arange(length, device=q.device) >= window
            scores = scores.masked_fill(too_far, float("-inf"))
        if sinks is not None:
            scores = torch.cat([scores, sinks.float()[:, None]], dim=1)
        out.append(torch.einsum("hs,shd->hd", scores.softmax(-1)[:, :length], v))
    return torch.stack(out)


def mla_decode_reference(
    q_lat: torch.Tensor,
    q_pe: torch.Tensor,
    cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    rank: int,
) -> torch.Tensor:
    """q_lat [B, H, rank], q_pe [B, H, P]; cache [NB, BS, rank + P] -> o_lat [B, H, rank] float32.

    scores[h, s] = (q_lat[h]·c[s] + q_pe[h]·k_pe[s]) * scale over s < seq_lens[b]; o = Σ p c[s]."""
    out = []
    for b, length in enumerate(seq_lens.tolist()):
        latent = _gather(cache, block_table[b], length).float()  # [S, rank + P]
        c, k_pe = latent[:, :rank], latent[:, rank:]
        scores = (q_lat[b].float() @ c.T + q_pe[b].float() @ k_pe.T) * scale  # [H, S]
        out.append(scores.softmax(-1) @ c)
    return torch.stack(out)


# --- kernels ----------------------------------------------------------------------------------


def _jit(fn):
    """triton.jit with every runtime scalar left unspecialized (all but the pointers and constexprs).

    Triton would otherwise compile a variant per integer equal to 1 and per multiple of 16: a new
    kernel (seconds, cold) whenever a stride, a split count or a length crossed one of those."""
    params = inspect.signature(fn).parameters.items()
    scalars = [n for n, p in params if "constexpr" not in str(p.annotation) and not n.endswith("_ptr")]
    return triton.jit(fn, do_not_specialize=scalars)


@triton.jit
def _mma(a, b, MMA_F32: tl.constexpr):
    # Triton's interpreter multiplies bfloat16 bit patterns as integers: it goes through float32.
    return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee") if MMA_F32 else tl.dot(a, b)


@triton.jit
def _dot(a, b, LOWP: tl.constexpr, A_EXACT: tl.constexpr, MMA_F32: tl.constexpr):
    """a [M, K] float32 @ b [K, N] in the cache dtype -> [M, N] float32 (a keeps ~16 bits if b is 16-bit)."""
    if LOWP:
        hi = a.to(b.dtype)
        out = _mma(hi, b, MMA_F32)
        if not A_EXACT:  # what the 16-bit half missed: 16 more bits of a
            out += _mma((a - hi.to(tl.float32)).to(b.dtype), b, MMA_F32)
    else:
        out = tl.dot(a, b.to(tl.float32), input_precision="ieee")
    return out


@triton.jit
def _tanh(x):
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def _split_range(base, seq_len, min_split, BLOCK_N: tl.constexpr):
    """This program's keys [start, end): its share of base .. seq_len cut in tl.num_programs(2)
    equal runs of whole tiles, each at least min_split long; empty past the row's end."""
    share = tl.cdiv(seq_len - base, tl.num_programs(2))
    split_len = tl.cdiv(tl.maximum(share, min_split), BLOCK_N) * BLOCK_N
    start = base + tl.program_id(2) * split_len
    return start, tl.minimum(start + split_len, seq_len)


@triton.jit
def _softmax_step(s, valid, m_i, l_i, acc):
    """Folds one tile of scores s [M, N] into the running max m_i, sum l_i and acc [M, *]."""
    s = tl.where(valid[None, :], s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows with nothing seen yet
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(s - m_safe[:, None])
    return p, m_new, l_i * alpha + tl.sum(p, 1), acc * alpha[:, None]


@triton.jit
def _store_split(o_ptrs, o_mask, lse_ptrs, row_mask, acc, m_i, l_i):
    has = l_i > 0  # a split past the row's end saw no key: lse -inf, weight 0 in the combine
    tl.store(o_ptrs, acc / tl.where(has, l_i, 1.0)[:, None], mask=o_mask)
    tl.store(lse_ptrs, tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf")), mask=row_mask)


@_jit
def _gqa_decode_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr, o_ptr, lse_ptr,
    stride_qb, stride_qh, stride_qd,
    stride_kn, stride_ks, stride_kh, stride_kd,
    stride_vn, stride_vs, stride_vh, stride_vd,
    stride_tb, stride_tm,
    stride_ob, stride_oh, stride_os, stride_od,
    stride_lb, stride_lh, stride_ls,
    scale, softcap, window, min_split,
    BLOCK_SIZE: tl.constexpr, GROUP: tl.constexpr, D: tl.constexpr, DV: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    LOWP: tl.constexpr, Q_EXACT: tl.constexpr, MMA_F32: tl.constexpr,
):  # fmt: skip
    b, kvh, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    g = tl.arange(0, BLOCK_G)  # the KV head's query group, padded to 16 rows for tl.dot
    d = tl.arange(0, BLOCK_D)
    dv = tl.arange(0, BLOCK_DV)
    heads = kvh * GROUP + g
    q = tl.load(
        q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :] * stride_qd,
        mask=(g[:, None] < GROUP) & (d[None, :] < D),
        other=0.0,
    ).to(tl.float32)  # [BLOCK_G, BLOCK_D]

    seq_len = tl.load(lens_ptr + b)
    lo = 0
    if HAS_WINDOW:  # query at seq_len - 1 sees keys with qpos - kpos < window: split only those
        lo = tl.maximum(seq_len - window, 0)
    start, end = _split_range((lo // BLOCK_N) * BLOCK_N, seq_len, min_split, BLOCK_N)

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_DV], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + tl.arange(0, BLOCK_N)
        valid = (pos >= lo) & (pos < end)
        blk = tl.load(table_ptr + b * stride_tb + (pos // BLOCK_SIZE) * stride_tm, mask=valid, other=0)
        row = blk.to(tl.int64) * stride_kn + (pos % BLOCK_SIZE) * stride_ks + kvh * stride_kh
        kt = tl.load(
            k_ptr + row[None, :] + d[:, None] * stride_kd, mask=valid[None, :] & (d[:, None] < D), other=0.0
        )  # [BLOCK_D, BLOCK_N]
        s = _dot(q, kt, LOWP, Q_EXACT, MMA_F32) * scale  # [BLOCK_G, BLOCK_N]
        if HAS_SOFTCAP:
            s = _tanh(s / softcap) * softcap
        p, m_i, l_i, acc = _softmax_step(s, valid, m_i, l_i, acc)
        row = blk.to(tl.int64) * stride_vn + (pos % BLOCK_SIZE) * stride_vs + kvh * stride_vh
        v = tl.load(
            v_ptr + row[:, None] + dv[None, :] * stride_vd,
            mask=valid[:, None] & (dv[None, :] < DV),
            other=0.0,
        )  # [BLOCK_N, BLOCK_DV]
        acc += _dot(p, v, LOWP, False, MMA_F32)

    o_rows = o_ptr + b * stride_ob + heads * stride_oh + split * stride_os
    _store_split(
        o_rows[:, None] + dv[None, :] * stride_od,
        (g[:, None] < GROUP) & (dv[None, :] < DV),
        lse_ptr + b * stride_lb + heads * stride_lh + split * stride_ls,
        g < GROUP,
        acc,
        m_i,
        l_i,
    )


@_jit
def _mla_decode_kernel(
    ql_ptr, qp_ptr, c_ptr, table_ptr, lens_ptr, o_ptr, lse_ptr,
    stride_qlb, stride_qlh, stride_qlr,
    stride_qpb, stride_qph, stride_qpd,
    stride_cn, stride_cs, stride_cr,
    stride_tb, stride_tm,
    stride_ob, stride_oh, stride_os, stride_or,
    stride_lb, stride_lh, stride_ls,
    scale, min_split,
    BLOCK_SIZE: tl.constexpr, H: tl.constexpr, RANK: tl.constexpr, P: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
    LOWP: tl.constexpr, Q_EXACT: tl.constexpr, MMA_F32: tl.constexpr,
):  # fmt: skip
    b, hblock, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    heads = hblock * BLOCK_H + tl.arange(0, BLOCK_H)
    r = tl.arange(0, BLOCK_R)
    e = tl.arange(0, BLOCK_P)
    q_lat = tl.load(
        ql_ptr + b * stride_qlb + heads[:, None] * stride_qlh + r[None, :] * stride_qlr,
        mask=(heads[:, None] < H) & (r[None, :] < RANK),
        other=0.0,
    ).to(tl.float32)  # [BLOCK_H, BLOCK_R]
    q_pe = tl.load(
        qp_ptr + b * stride_qpb + heads[:, None] * stride_qph + e[None, :] * stride_qpd,
        mask=(heads[:, None] < H) & (e[None, :] < P),
        other=0.0,
    ).to(tl.float32)  # [BLOCK_H, BLOCK_P]

    seq_len = tl.load(lens_ptr + b)
    start, end = _split_range(0, seq_len, min_split, BLOCK_N)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_R], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + tl.arange(0, BLOCK_N)
        valid = pos < end
        blk = tl.load(table_ptr + b * stride_tb + (pos // BLOCK_SIZE) * stride_tm, mask=valid, other=0)
        row = blk.to(tl.int64) * stride_cn + (pos % BLOCK_SIZE) * stride_cs
        c = tl.load(
            c_ptr + row[:, None] + r[None, :] * stride_cr,
            mask=valid[:, None] & (r[None, :] < RANK),
            other=0.0,
        )  # [BLOCK_N, BLOCK_R]: the scores' keys, then the values
        k_pe = tl.load(
            c_ptr + row[:, None] + (RANK + e[None, :]) * stride_cr,
            mask=valid[:, None] & (e[None, :] < P),
            other=0.0,
        )  # [BLOCK_N, BLOCK_P]
        s = _dot(q_lat, tl.trans(c), LOWP, Q_EXACT, MMA_F32)
        s = (s + _dot(q_pe, tl.trans(k_pe), LOWP, Q_EXACT, MMA_F32)) * scale  # [BLOCK_H, BLOCK_N]
        p, m_i, l_i, acc = _softmax_step(s, valid, m_i, l_i, acc)
        acc += _dot(p, c, LOWP, False, MMA_F32)

    o_rows = o_ptr + b * stride_ob + heads * stride_oh + split * stride_os
    _store_split(
        o_rows[:, None] + r[None, :] * stride_or,
        (heads[:, None] < H) & (r[None, :] < RANK),
        lse_ptr + b * stride_lb + heads * stride_lh + split * stride_ls,
        heads < H,
        acc,
        m_i,
        l_i,
    )


@_jit
def _combine_kernel(
    part_ptr, lse_ptr, o_ptr,
    stride_pb, stride_ph, stride_ps,
    stride_lb, stride_lh,
    stride_ob, stride_oh,
    splits,
    DV: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_DV: tl.constexpr,
):  # fmt: skip
    """out[b, h] = Σ_s w_s part[b, h, s], w = softmax over the splits' log-sum-exps."""
    b, h = tl.program_id(0), tl.program_id(1)
    s = tl.arange(0, BLOCK_S)
    dv = tl.arange(0, BLOCK_DV)
    lse = tl.load(lse_ptr + b * stride_lb + h * stride_lh + s, mask=s < splits, other=float("-inf"))
    w = tl.exp(lse - tl.max(lse, 0))  # split 0 holds the row's first keys: finite; empty ones weigh 0
    w = w / tl.sum(w, 0)
    part = tl.load(
        part_ptr + b * stride_pb + h * stride_ph + s[:, None] * stride_ps + dv[None, :],
        mask=(s[:, None] < splits) & (dv[None, :] < DV),
        other=0.0,
    )
    tl.store(o_ptr + b * stride_ob + h * stride_oh + dv, tl.sum(part * w[:, None], 0), mask=dv < DV)


# --- launchers --------------------------------------------------------------------------------


@functools.lru_cache
def _cuda_sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@functools.lru_cache
def _xpu_cores(index: int) -> int:
    return torch.xpu.get_device_properties(index).gpu_subslice_count


def _sm_count(device: torch.device) -> int:
    """The GPU's units that each run programs on their own: streaming multiprocessors (CUDA),
    compute units (ROCm: also multi_processor_count), Xe-cores (XPU's subslices); 0 off the GPU
    (CPU tensors: the interpreter)."""
    if device.type == "cuda":
        return _cuda_sms(device.index if device.index is not None else torch.cuda.current_device())
    if device.type == "xpu":
        return _xpu_cores(device.index if device.index is not None else torch.xpu.current_device())
    return 0


def _num_splits(programs: int, device: torch.device) -> int:
    """Enough splits to fill the GPU when rows x heads alone do not; one off the GPU.

    Only the grid decides it, never the lengths or the table's width: the programs share each
    row's keys among themselves (_split_range), however long it is."""
    sms = _sm_count(device)
    return 1 if programs >= sms else min(triton.cdiv(sms, programs), _MAX_SPLITS)


def _splits(num_splits: int | None, programs: int, device: torch.device, block_n: int) -> tuple[int, int]:
    """(splits, the fewest keys a split is given): a split count the caller asks for cuts every
    row into that many shares of whole tiles; the chosen one keeps splits of _MIN_SPLIT_TOKENS."""
    if num_splits is None:
        return _num_splits(programs, device), _MIN_SPLIT_TOKENS
    if not 1 <= num_splits <= _MAX_SPLITS:
        raise ValueError(f"paged attention: num_splits={num_splits}, expected 1 .. {_MAX_SPLITS}")
    return num_splits, block_n


def _launch(device: torch.device) -> dict:
    """Warps and pipeline stages of the decode kernels. AMD GPUs run 64-wide wavefronts (twice an
    NVIDIA warp), so half the warps give the same threads per program, and their Triton
    pipelines one stage less; untested on AMD hardware so far."""
    if device.type == "cuda" and torch.version.hip:
        return dict(num_warps=4, num_stages=1)
    return dict(num_warps=8, num_stages=2)


def _dtypes(cache: torch.Tensor, *queries: torch.Tensor) -> dict:
    if cache.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"paged attention reads float32, bfloat16 or float16 caches, not {cache.dtype}")
    return dict(
        LOWP=cache.dtype != torch.float32,
        Q_EXACT=all(q.dtype == cache.dtype for q in queries),  # no low half to add
        MMA_F32=cache.device.type == "cpu",  # CPU tensors: the interpreter runs the kernel
    )


def _outputs(b: int, h: int, dv: int, splits: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out [B, H, Dv], per-split outputs [B, H, splits, Dv] or out itself, lse [B, H, splits])."""
    out = torch.empty(b, h, dv, dtype=torch.float32, device=device)
    lse = torch.empty(b, h, splits, dtype=torch.float32, device=device)
    return out, out.unsqueeze(2) if splits == 1 else lse.new_empty(b, h, splits, dv), lse


def _combine(out: torch.Tensor, part: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    b, h, splits, dv = part.shape
    _combine_kernel[(b, h)](
        part, lse, out,
        *part.stride()[:3], *lse.stride()[:2], *out.stride()[:2],
        splits,
        DV=dv, BLOCK_S=_MAX_SPLITS, BLOCK_DV=triton.next_power_of_2(dv),
    )  # fmt: skip
    return out


def gqa_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    window: int | None = None,
    softcap: float | None = None,
    sinks: torch.Tensor | None = None,
    *,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Triton `gqa_decode_reference`: q [B, H, D] -> [B, H, Dv] float32.

    block_table [B, max_blocks] int32 and seq_lens [B] int32 stay on the device; the launch
    depends only on their shapes, and compiles nothing new for another width. num_splits
    (1 .. _MAX_SPLITS): programs per row and KV head along the sequence, each row's keys cut in
    that many shares of whole tiles (default: 1 unless the GPU would sit idle, then shares of at
    least _MIN_SPLIT_TOKENS). sinks [H]: each row's output is scaled by sigmoid(L - sink), L the
    log-sum-exp of its scores (from the splits' own), which is what a sink in the softmax does."""
    batch, heads, dim = q.shape
    block_size, kv_heads, dv = k_cache.shape[1], k_cache.shape[2], v_cache.shape[3]
    if heads % kv_heads or k_cache.shape[3] != dim:
        raise ValueError(
            f"q {tuple(q.shape)} does not fit a K cache of {kv_heads} heads x {k_cache.shape[3]}."
        )
    block_n = _BLOCK_N["gqa"]
    splits, min_split = _splits(num_splits, batch * kv_heads, q.device, block_n)
    out, part, lse = _outputs(batch, heads, dv, splits, q.device)
    _gqa_decode_kernel[(batch, kv_heads, splits)](
        q, k_cache, v_cache, block_table, seq_lens, part, lse,
        *q.stride(), *k_cache.stride(), *v_cache.stride(), *block_table.stride(),
        *part.stride(), *lse.stride(),
        scale, softcap or 1.0, window or 0, min_split,
        BLOCK_SIZE=block_size, GROUP=heads // kv_heads, D=dim, DV=dv,
        BLOCK_G=max(16, triton.next_power_of_2(heads // kv_heads)),
        BLOCK_D=max(16, triton.next_power_of_2(dim)), BLOCK_DV=max(16, triton.next_power_of_2(dv)),
        BLOCK_N=block_n, HAS_WINDOW=window is not None, HAS_SOFTCAP=softcap is not None,
        **_dtypes(k_cache, q), **_launch(q.device),
    )  # fmt: skip
    out = out if splits == 1 else _combine(out, part, lse)
    if sinks is not None:  # two small ops, no host sync: fine inside a captured graph
        out = out * torch.sigmoid(torch.logsumexp(lse, dim=-1) - sinks.float())[..., None]
    return out


def mla_decode(
    q_lat: torch.Tensor,
    q_pe: torch.Tensor,
    cache: torch.Tensor,
    block_table: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    rank: int,
    *,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Triton `mla_decode_reference`: q_lat [B, H, rank], q_pe [B, H, P] -> o_lat [B, H, rank] float32.

    block_table, seq_lens and num_splits as in `gqa_decode`."""
    batch, heads, _ = q_lat.shape
    rope = q_pe.shape[2]
    if q_lat.shape[2] != rank or cache.shape[2] != rank + rope:
        raise ValueError(
            f"MLA decode: q_lat {tuple(q_lat.shape)}, q_pe {tuple(q_pe.shape)} do not fit a cache of "
            f"{cache.shape[2]} = rank {rank} + rope per token"
        )
    block_n = _BLOCK_N["mla"]
    head_blocks = triton.cdiv(heads, _MLA_BLOCK_H)
    splits, min_split = _splits(num_splits, batch * head_blocks, q_lat.device, block_n)
    out, part, lse = _outputs(batch, heads, rank, splits, q_lat.device)
    _mla_decode_kernel[(batch, head_blocks, splits)](
        q_lat, q_pe, cache, block_table, seq_lens, part, lse,
        *q_lat.stride(), *q_pe.stride(), *cache.stride(), *block_table.stride(),
        *part.stride(), *lse.stride(),
        scale, min_split,
        BLOCK_SIZE=cache.shape[1], H=heads, RANK=rank, P=rope, BLOCK_H=_MLA_BLOCK_H,
        BLOCK_R=max(16, triton.next_power_of_2(rank)), BLOCK_P=max(16, triton.next_power_of_2(rope)),
        BLOCK_N=block_n, **_dtypes(cache, q_lat, q_pe), **_launch(q_lat.device),
    )  # fmt: skip
    return out if splits == 1 else _combine(out, part, lse)


# --- compile at load --------------------------------------------------------------------------


def warm_gqa(
    device: torch.device | str,
    *,
    heads: int,
    kv_heads: int,
    head_dim: int,
    v_dim: int | None = None,
    dtype: torch.dtype,
    block_size: int,
    window: int | None = None,
    softcap: float | None = None,
    q_dtype: torch.dtype = torch.float32,
) -> None:
    """Compiles `gqa_decode`'s kernels for one model config now (at load), not in the first step.

        warm_gqa(device, *, heads, kv_heads, head_dim, v_dim=None (= head_dim), dtype (the K/V
                 cache's), block_size, window=None, softcap=None, q_dtype=torch.float32)

    window and softcap count only as present or not (pass the model's values or None). One
    launch on a one-token dummy cache, split in two so that the combine compiles too; every later
    call with this config, whatever its batch, lengths, table width or split count, reuses them."""
    v_dim = v_dim or head_dim
    k_cache = torch.zeros(1, block_size, kv_heads, head_dim, dtype=dtype, device=device)
    v_cache = torch.zeros(1, block_size, kv_heads, v_dim, dtype=dtype, device=device)
    q = torch.zeros(1, heads, head_dim, dtype=q_dtype, device=device)
    table, lens = _dummy_rows(device)
    gqa_decode(q, k_cache, v_cache, table, lens, 1.0, window, softcap, num_splits=2)


def warm_mla(
    device: torch.device | str,
    *,
    heads: int,
    rank: int,
    rope: int,
    dtype: torch.dtype,
    block_size: int,
    q_dtype: torch.dtype = torch.float32,
) -> None:
    """Compiles `mla_decode`'s kernels for one model config now (at load), not in the first step.

        warm_mla(device, *, heads, rank, rope, dtype (the latent cache's), block_size,
                 q_dtype=torch.float32 (q_lat's and q_pe's))

    As `warm_gqa`: one launch on a dummy cache; later calls with this config compile nothing."""
    cache = torch.zeros(1, block_size, rank + rope, dtype=dtype, device=device)
    q_lat = torch.zeros(1, heads, rank, dtype=q_dtype, device=device)
    q_pe = torch.zeros(1, heads, rope, dtype=q_dtype, device=device)
    table, lens = _dummy_rows(device)
    mla_decode(q_lat, q_pe, cache, table, lens, 1.0, rank, num_splits=2)


def _dummy_rows(device) -> tuple[torch.Tensor, torch.Tensor]:
    """One row of one token in block 0: (block_table [1, 1], seq_lens [1]), int32 as the pool's."""
    table = torch.zeros(1, 1, dtype=torch.int32, device=device)
    return table, torch.ones(1, dtype=torch.int32, device=device)
