"""Tensor-level wrappers of the CPU step kernels (core/kernels/step.h, qmatmul.h).

The operators' CPU paths call these instead of chains of small PyTorch ops: on a decode step
each PyTorch op costs a few microseconds of dispatch, more than its arithmetic. They take
contiguous float32 CPU tensors and check only what would make the C++ read out of bounds;
the operators keep their PyTorch reference paths beside them, which the tests compare with.
"""

from __future__ import annotations

import torch

from .. import _kernels

ACTS = {"silu": 0, "gelu_pytorch_tanh": 1, "gelu_tanh": 1}


def act_code(name: str | None) -> int | None:
    """The kernels' code for a transformers activation name, or None if they lack it."""
    return ACTS.get(name or "")


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    out: torch.Tensor | None = None,
    accumulate: bool = False,
) -> torch.Tensor:
    """x: [..., cols] float32 -> out (+)= rms_norm(x) * weight, same shape."""
    cols = x.shape[-1]
    if weight.numel() != cols or not x.is_contiguous():
        raise ValueError(f"rms_norm: x {tuple(x.shape)} (contiguous) and a weight of {cols} values needed")
    if out is None:
        out = torch.empty_like(x)
    elif out.shape != x.shape or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"rms_norm: out must be a contiguous float32 tensor shaped like x {tuple(x.shape)}")
    rows = x.numel() // cols
    _kernels.rms_norm(
        x.data_ptr(), rows, cols, cols, weight.data_ptr(), eps, out.data_ptr(), cols, accumulate
    )
    return out


def rope_(
    x: torch.Tensor, positions: torch.Tensor, freqs: torch.Tensor, scale: float, interleaved: bool
) -> None:
    """Rotates x [T, heads, dim] (float32; the last dim may be a slice of wider rows) in place."""
    t, heads, dim = x.shape
    if (
        x.stride(2) != 1
        or freqs.numel() != dim // 2
        or positions.numel() != t
        or positions.dtype != torch.int64
    ):
        raise ValueError("rope_: x [T, heads, dim] with unit last stride, int64 positions [T], dim / 2 freqs")
    _kernels.rope(
        x.data_ptr(),
        t,
        heads,
        x.stride(0),
        x.stride(1),
        dim,
        positions.data_ptr(),
        freqs.data_ptr(),
        scale,
        interleaved,
    )


def act_mul_(g: torch.Tensor, u: torch.Tensor, act: int) -> torch.Tensor:
    """g = act(g) * u in place (contiguous float32 of one shape)."""
    if g.shape != u.shape or not (g.is_contiguous() and u.is_contiguous()):
        raise ValueError("act_mul_: g and u must be contiguous and of one shape")
    _kernels.act_mul(g.data_ptr(), u.data_ptr(), g.numel(), act)
    return g


def kv_write(
    store: torch.Tensor, src: torch.Tensor, seq: torch.Tensor, table: torch.Tensor, positions: torch.Tensor
) -> None:
    """src [T, ...] float32 -> the rows of a paged store [blocks, block_size, ...] at each
    token's position in its sequence (seq [T] int32 indexes table [S, width] int32)."""
    width = src[0].numel()
    if store.dtype != torch.float32 or not store.is_contiguous() or store[0, 0].numel() != width:
        raise ValueError(f"kv_write: a contiguous float32 store of rows of {width} values needed")
    src = src.contiguous()
    _kernels.kv_write(
        store.data_ptr(),
        width,
        src.data_ptr(),
        width,
        width,
        src.shape[0],
        table.data_ptr(),
        table.shape[1],
        store.shape[1],
        seq.data_ptr(),
        positions.data_ptr(),
    )


def paged_attention(
    q: torch.Tensor,
    k_store: torch.Tensor,
    v_store: torch.Tensor,
    kv_heads: int,
    dv: int,
    seq: torch.Tensor,
    table: torch.Tensor,
    positions: torch.Tensor,
    scale: float,
    window: int | None,
    softcap: float | None,
    threads: int,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of q [T, H, dk] over a paged cache -> [T, H, dv] float32.

    k_store / v_store: [blocks, block_size, row] float32 (may be one tensor: MLA reads its values
    from the first dv values of each key row); KV head h's key is row[h * dk:], its value
    row[h * dv:]. Token t attends to positions 0 .. positions[t] of sequence seq[t]. sinks: [H]
    float32 logits that join each head's softmax without a value (gpt-oss)."""
    if sinks is not None and (
        sinks.dtype != torch.float32 or sinks.numel() != q.shape[1] or not sinks.is_contiguous()
    ):
        raise ValueError(f"paged_attention: sinks must be {q.shape[1]} contiguous float32 values")
    t, heads, dk = q.shape
    if q.stride(2) != 1 or q.stride(1) != dk:
        q = q.contiguous()
    out = torch.empty(t, heads, dv)
    k_row, v_row = k_store[0, 0].numel(), v_store[0, 0].numel()
    if kv_heads * dk > k_row or kv_heads * dv > v_row or heads % kv_heads:
        raise ValueError(f"paged_attention: {heads} heads over {kv_heads} KV heads do not fit the cache rows")
    _kernels.paged_attention(
        q.data_ptr(),
        q.stride(0),
        t,
        heads,
        kv_heads,
        dk,
        dv,
        k_store.data_ptr(),
        k_row,
        v_store.data_ptr(),
        v_row,
        table.data_ptr(),
        table.shape[1],
        k_store.shape[1],
        seq.data_ptr(),
        positions.data_ptr(),
        scale,
        window or 0,
        softcap or 0.0,
        out.data_ptr(),
        threads,
        sinks.data_ptr() if sinks is not None else 0,
    )
    return out


def linear(
    qmatrices: list, x: torch.Tensor, ys: list[torch.Tensor], biases: list[int], exact: bool, threads: int
) -> None:
    """ys[i] [n, rows_i] = x [n, cols] @ W_i.T (+ bias_i: a float32 data_ptr, 0 for none), x
    contiguous float32 quantized once; QMatrix handles of one width (callers check shapes)."""
    _kernels.linear(
        qmatrices, x.data_ptr(), x.shape[0], [y.data_ptr() for y in ys], biases, False, exact, threads
    )


def linear1(qmatrix, x: torch.Tensor, y: torch.Tensor, bias_ptr: int, exact: bool, threads: int) -> None:
    """y [n, rows] = x [n, cols] @ W.T (+ bias) for one QMatrix: linear's decode hot path."""
    _kernels.linear1(qmatrix, x.data_ptr(), x.shape[0], y.data_ptr(), bias_ptr, False, exact, threads)


def gated_linear(gate, up, x: torch.Tensor, out: torch.Tensor, act: int, exact: bool, threads: int) -> None:
    """out [n, I] = act(x @ gate.T) * (x @ up.T) for QMatrix handles; x [n, cols] contiguous float32."""
    _kernels.gated_linear(gate, up, x.data_ptr(), x.shape[0], out.data_ptr(), act, exact, threads)


def linear_heads(w, heads: int, head_stride: int, x: torch.Tensor, exact: bool, threads: int) -> torch.Tensor:
    """x [n, heads, w.cols] -> [n, heads, w.rows]: head h times its own matrix, rows
    h * head_stride .. of the QMatrix handle `w` (whose data the caller keeps alive)."""
    n = x.shape[0]
    if x.shape[1:] != (heads, w.cols):
        raise ValueError(f"linear_heads: x {tuple(x.shape)} is not [n, {heads}, {w.cols}]")
    x = x.float().contiguous()
    y = torch.empty(n, heads, w.rows)
    _kernels.linear_heads(w, heads, head_stride, x.data_ptr(), n, y.data_ptr(), exact, threads)
    return y


def deltanet_step(
    mixed: torch.Tensor,
    conv_state: torch.Tensor,
    conv_w: torch.Tensor,
    b: torch.Tensor,
    a: torch.Tensor,
    a_neg: torch.Tensor,
    dt_bias: torch.Tensor,
    state: torch.Tensor,
    z: torch.Tensor,
    norm_w: torch.Tensor,
    eps: float,
    heads: tuple[int, int, int, int],
    tiled: bool,
    threads: int,
) -> torch.Tensor:
    """One token of one sequence through a gated DeltaNet after its projections (kernels'
    step.h): beta = sigmoid(b), decay exp(a_neg * softplus(a + dt_bias)); conv_state [C, K-1] and
    state [nv, dk, dv] are updated in place; -> [nv * dv]."""
    nk, dk, nv, dv = heads
    parts = (mixed, conv_state, conv_w, b, a, a_neg, dt_bias, state, z, norm_w)
    if any(t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu" for t in parts):
        raise ValueError("deltanet_step: every tensor must be a contiguous float32 CPU tensor")
    out = torch.empty(nv * dv)
    _kernels.deltanet_step(
        *(t.data_ptr() for t in parts), eps, nk, dk, nv, dv, conv_w.shape[1], tiled, out.data_ptr(), threads
    )
    return out
