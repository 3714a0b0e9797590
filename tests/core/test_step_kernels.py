"""The float32 step kernels (core/kernels/step.h) and the multi-matrix products (qmatmul.h's
linear_many, gated_linear), on every kernel path this CPU has.

Oracles: the operators' PyTorch reference paths (ops/norm.py's rms_norm, ops/rope.py's Rope,
ops/attention.py's attend, torch's SiLU and tanh GELU) and, for the products, the single-matrix
qmatmul that test_qmatmul holds to gguf-py. Tolerances are relative to the values' scale: the
kernels sum in another order and take exp from a polynomial (within 2 ulp of expf).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from int8_oracle import T, random_weights

from ktx.core import _kernels
from ktx.core.ops import cpu_kernels as ck
from ktx.core.ops.attention import attend
from ktx.core.ops.norm import rms_norm
from ktx.core.ops.rope import Rope

STEP_ISAS = ("scalar", "avx2", "avx512")


@pytest.fixture(params=STEP_ISAS)
def step_isa(request):
    from ktx.core import cpu

    if request.param not in cpu.supported_isas():
        pytest.skip(f"this CPU cannot run the {request.param} kernels")
    with cpu.forced_isa(request.param):
        yield request.param


def close(got: torch.Tensor, want: torch.Tensor, rel: float = 2e-6) -> None:
    err = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-30)
    assert err <= rel, f"max error {err:.3g} of the largest value"


@pytest.mark.parametrize("cols", [16, 640, 1000])
def test_rms_norm(step_isa, cols):
    g = torch.Generator().manual_seed(cols)
    x, w = torch.randn(5, cols, generator=g) * 3, torch.randn(cols, generator=g)
    close(ck.rms_norm(x, w, 1e-6), rms_norm(x, w, 1e-6))
    residual = torch.randn(5, cols, generator=g)
    want = residual + rms_norm(x, w, 1e-6)
    close(ck.rms_norm(x, w, 1e-6, out=residual, accumulate=True), want)


@pytest.mark.parametrize("act", ["silu", "gelu_pytorch_tanh"])
@pytest.mark.parametrize("n", [7, 64, 2049])
def test_act_mul(step_isa, act, n):
    g = torch.Generator().manual_seed(n)
    gate, up = torch.randn(n, generator=g) * 6, torch.randn(n, generator=g)
    ref = F.silu(gate) if act == "silu" else F.gelu(gate, approximate="tanh")
    close(ck.act_mul_(gate.clone(), up, ck.act_code(act)), ref * up, rel=1e-6)


def test_act_mul_saturates_without_nan(step_isa):
    gate = torch.tensor([-1e4, -100.0, -88.0, 88.0, 100.0, 1e4] * 3)
    for act in (0, 1):
        out = ck.act_mul_(gate.clone(), torch.ones_like(gate), act)
        assert torch.isfinite(out).all()
        ref = F.silu(gate) if act == 0 else F.gelu(gate, approximate="tanh")
        close(out, ref, rel=1e-6)


@pytest.mark.parametrize("interleaved", [False, True])
def test_rope_matches_the_reference(step_isa, interleaved):
    g = torch.Generator().manual_seed(7)
    freqs = 1.0 / (10000 ** (torch.arange(0, 64, 2).float() / 64))
    x = torch.randn(6, 3, 64, generator=g)
    pos = torch.tensor([0, 1, 17, 500, 4096, 30000])
    want = Rope(freqs, 0.9, interleaved)(x, pos)
    got = x.clone()
    ck.rope_(got, pos, freqs, 0.9, interleaved)
    close(got, want)
    # a slice of wider rows (MLA rotates the last 64 of 192 values per head) stays in place
    wide = torch.randn(6, 3, 192, generator=g)
    before = wide.clone()
    ck.rope_(wide[..., 128:], pos, freqs, 0.9, interleaved)
    close(wide[..., 128:], Rope(freqs, 0.9, interleaved)(before[..., 128:], pos))
    assert torch.equal(wide[..., :128], before[..., :128])


def _paged(seqs, block_size, n_blocks, width, g):
    """A pool of `n_blocks` and, per sequence length, a shuffled block list; -> (store, table)."""
    order = torch.randperm(n_blocks, generator=g)
    table = torch.zeros(len(seqs), max(-(-n // block_size) for n in seqs), dtype=torch.int32)
    used = 0
    for i, n in enumerate(seqs):
        k = -(-n // block_size)
        table[i, :k] = order[used : used + k].int()
        used += k
    return torch.zeros(n_blocks, block_size, width), table


@pytest.mark.parametrize(
    "heads,kv_heads,window,softcap,lengths,sinks",
    [
        (4, 1, None, None, [150], False),  # GQA, one sequence, split over parts
        (8, 2, None, None, [1, 9, 700], False),  # several sequences, lengths around the block size
        (4, 4, 64, None, [300, 5], False),  # sliding window
        (6, 3, None, 50.0, [80], False),  # Gemma 2-style logit softcap
        (8, 2, 128, None, [1, 9, 700], True),  # gpt-oss: a window and a sink per head
    ],
)
def test_paged_attention_matches_attend(step_isa, heads, kv_heads, window, softcap, lengths, sinks):
    g = torch.Generator().manual_seed(heads * 100 + len(lengths))
    d, bs = 32, 16
    k_store, table = _paged(lengths, bs, 64, kv_heads * d, g)
    v_store = torch.zeros_like(k_store)
    keys = [torch.randn(n, kv_heads, d, generator=g) for n in lengths]
    vals = [torch.randn(n, kv_heads, d, generator=g) for n in lengths]
    # write every token through kv_write (the last two of each sequence are "this step's" rows)
    for i, n in enumerate(lengths):
        seq = torch.full((n,), i, dtype=torch.int32)
        pos = torch.arange(n)
        ck.kv_write(k_store, keys[i], seq, table, pos)
        ck.kv_write(v_store, vals[i], seq, table, pos)
    rows_seq, rows_pos, qs = [], [], []
    for i, n in enumerate(lengths):
        for p in range(max(0, n - 2), n):
            rows_seq.append(i)
            rows_pos.append(p)
            qs.append(torch.randn(heads, d, generator=g))
    q = torch.stack(qs) * 0.5
    sink = torch.randn(heads, generator=g) * 2 if sinks else None
    got = ck.paged_attention(
        q,
        k_store,
        v_store,
        kv_heads,
        d,
        torch.tensor(rows_seq, dtype=torch.int32),
        table,
        torch.tensor(rows_pos),
        0.17,
        window,
        softcap,
        2,
        sink,
    )
    for r, (i, p) in enumerate(zip(rows_seq, rows_pos, strict=True)):
        want = attend(q[r : r + 1], keys[i][: p + 1], vals[i][: p + 1], p, 0.17, window, softcap, sink)
        close(got[r : r + 1], want, rel=5e-6)


def test_paged_attention_reads_values_from_the_key_rows(step_isa):
    # MLA: one store of (latent c, rotated k_pe) rows; the values are each row's first `rank`
    g = torch.Generator().manual_seed(3)
    rank, rope, heads, n = 48, 16, 6, 300  # 6 heads: groups of 4 and 2; 3 parts of keys
    store, table = _paged([n], 16, 32, rank + rope, g)
    rows = torch.randn(n, rank + rope, generator=g)
    ck.kv_write(store, rows, torch.zeros(n, dtype=torch.int32), table, torch.arange(n))
    q = torch.randn(1, heads, rank + rope, generator=g)
    got = ck.paged_attention(
        q,
        store,
        store,
        1,
        rank,
        torch.zeros(1, dtype=torch.int32),
        table,
        torch.tensor([n - 1]),
        0.1,
        None,
        None,
        2,
    )
    want = attend(q, rows[:, None], rows[:, None, :rank], n - 1, 0.1)
    close(got, want, rel=5e-6)


def _qmatmul(w, rows, cols, ggml_type, x, exact):
    y = np.empty((x.shape[0], rows), np.float32)
    xn = np.ascontiguousarray(x.numpy())
    _kernels.qmatmul(
        int(ggml_type), w.ctypes.data, rows, cols, xn.ctypes.data, x.shape[0], y.ctypes.data, exact, 2
    )
    return torch.from_numpy(y)


@pytest.mark.parametrize("n", [1, 5, 20])
def test_linear_many_equals_one_product_at_a_time(step_isa, n):
    rng = np.random.default_rng(n)
    cols = 512
    shapes = [(T.Q5_0, 96), (T.Q4_K, 40), (T.Q8_0, 33), (T.F16, 17)]  # int8, K-order and float paths
    ws = [random_weights(t, rows, cols, rng) for t, rows in shapes]
    x = torch.from_numpy(rng.standard_normal((n, cols), dtype=np.float32))
    bias = torch.from_numpy(rng.standard_normal(33, dtype=np.float32))
    for exact in (False, True):
        qms = [
            _kernels.QMatrix(int(t), w.ctypes.data, rows, cols)
            for (t, rows), w in zip(shapes, ws, strict=True)
        ]
        ys = [torch.empty(n, rows) for _, rows in shapes]
        biases = [0, 0, bias.data_ptr(), 0]
        ck.linear(qms, x, ys, biases, exact, 2)
        for i, ((t, rows), w) in enumerate(zip(shapes, ws, strict=True)):
            want = _qmatmul(w, rows, cols, t, x, exact) + (bias if i == 2 else 0)
            # the same kernels on the same rows: equal up to the bias add
            close(ys[i], want, rel=1e-6)


@pytest.mark.parametrize("n", [1, 3, 16])
@pytest.mark.parametrize("act", ["silu", "gelu_pytorch_tanh"])
def test_gated_linear(step_isa, n, act):
    rng = np.random.default_rng(n)
    rows, cols = 200, 256
    gw, uw = random_weights(T.Q4_K, rows, cols, rng), random_weights(T.Q5_0, rows, cols, rng)
    x = torch.from_numpy(rng.standard_normal((n, cols), dtype=np.float32))
    gq = _kernels.QMatrix(int(T.Q4_K), gw.ctypes.data, rows, cols)
    uq = _kernels.QMatrix(int(T.Q5_0), uw.ctypes.data, rows, cols)
    out = torch.empty(n, rows)
    ck.gated_linear(gq, uq, x, out, ck.act_code(act), False, 2)
    g, u = _qmatmul(gw, rows, cols, T.Q4_K, x, False), _qmatmul(uw, rows, cols, T.Q5_0, x, False)
    ref = F.silu(g) if act == "silu" else F.gelu(g, approximate="tanh")
    close(out, ref * u, rel=2e-6)


def test_kernel_wrappers_refuse_shapes_that_would_read_out_of_bounds():
    with pytest.raises(ValueError):
        ck.rms_norm(torch.randn(2, 8), torch.randn(7), 1e-6)
    with pytest.raises(ValueError):
        ck.rope_(torch.randn(2, 1, 8), torch.tensor([0, 1]), torch.ones(3), 1.0, False)
    with pytest.raises(ValueError):
        store = torch.zeros(2, 4, 8)
        ck.paged_attention(
            torch.randn(1, 4, 8), store, store, 2, 8, torch.zeros(1, dtype=torch.int32),
            torch.zeros(1, 2, dtype=torch.int32), torch.tensor([0]), 1.0, None, None, 1,
        )  # fmt: skip
    with pytest.raises(ValueError, match="multiple of 32"):
        _kernels.QMatrix(int(T.Q8_0), 1, 4, 48)


def test_paged_attention_rows_do_not_depend_on_the_batch(step_isa):
    # batch invariance (the server's batched greedy decode must give a single request's
    # tokens): a row's result is bit-identical alone and among others
    g = torch.Generator().manual_seed(11)
    lengths = [700, 40, 300]
    k_store, table = _paged(lengths, 16, 96, 2 * 32, g)
    v_store = torch.randn(k_store.shape, generator=g)
    k_store.normal_(generator=g)
    q = torch.randn(3, 4, 32, generator=g)
    seq, pos = torch.arange(3, dtype=torch.int32), torch.tensor([n - 1 for n in lengths])
    together = ck.paged_attention(q, k_store, v_store, 2, 32, seq, table, pos, 0.2, None, None, 2)
    for r in range(3):
        alone = ck.paged_attention(
            q[r : r + 1], k_store, v_store, 2, 32, seq[r : r + 1], table, pos[r : r + 1], 0.2, None, None, 2
        )
        assert torch.equal(alone, together[r : r + 1])
