"""Paged decode attention (backends/cuda/paged_attention.py): the Triton kernels against their
references, and the references against the attention the model operators compute."""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (it comes with ktx[test] on Linux x86-64)")

from ktx.backends.cuda import paged_attention as pa
from ktx.core.ops.attention import attend
from ktx.core.ops.mla import MLAAttention

# One token, part of a block, exactly one block, several blocks, more than one 64-token tile.
LENGTHS = (1, 5, 16, 37, 100)


def paged_pool(lengths, block_size, shapes, dtype, device, seed=0):
    """(caches, block_table [B, max_blocks] int32, seq_lens [B] int32) with each sequence's blocks
    scattered in a shuffled pool; every row no sequence owns holds NaN, so reading one shows."""
    g = torch.Generator().manual_seed(seed)
    counts = [-(-n // block_size) for n in lengths]
    num_blocks = sum(counts) + 3
    ids = torch.randperm(num_blocks, generator=g)
    table = torch.randint(0, num_blocks, (len(lengths), max(counts) + 1), generator=g, dtype=torch.int32)
    caches = [torch.full((num_blocks, block_size, *shape), float("nan")) for shape in shapes]
    used = 0
    for b, (n, count) in enumerate(zip(lengths, counts, strict=True)):
        table[b, :count] = ids[used : used + count].int()
        used += count
        pos = torch.arange(n)
        blocks, rows = table[b, pos // block_size].long(), pos % block_size
        for cache, shape in zip(caches, shapes, strict=True):
            cache[blocks, rows] = torch.randn(n, *shape, generator=g)
    lens = torch.tensor(lengths, dtype=torch.int32)
    return [c.to(device, dtype) for c in caches], table.to(device), lens.to(device)


def widened(table, width, num_blocks, seed=9):
    """table's rows padded with stray block ids to `width` columns, as a graph's table is as wide as
    the pool: the kernels must not read past a row's length."""
    g = torch.Generator().manual_seed(seed)
    pad = torch.randint(
        0, num_blocks, (table.shape[0], width - table.shape[1]), generator=g, dtype=torch.int32
    )
    return torch.cat((table, pad.to(table.device)), 1)


def gathered(cache, table, b, n):
    pos = torch.arange(n)
    return cache[table[b, pos // cache.shape[1]].long(), pos % cache.shape[1]].float()


def tolerance(dtype: torch.dtype) -> dict:
    """The references upcast the same cached values; a 16-bit cache's kernel multiplies the float32
    side as two 16-bit halves (~16 bits kept), far finer than bfloat16's own 8 bits."""
    return dict(atol=2e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-4, rtol=1e-4)


GQA_CASES = [
    # heads, kv_heads, head_dim, v_dim, block_size, window, softcap, cache dtype, q dtype, splits
    pytest.param(4, 4, 64, 64, 16, None, None, torch.float32, torch.float32, None, id="mha"),
    pytest.param(8, 2, 64, 64, 16, None, None, torch.float32, torch.float32, None, id="gqa4"),
    pytest.param(6, 2, 80, 80, 16, None, None, torch.float32, torch.float32, None, id="gqa3-d80"),
    pytest.param(4, 1, 48, 32, 12, None, None, torch.float32, torch.float32, None, id="dv32-bs12"),
    pytest.param(8, 2, 64, 64, 16, 20, None, torch.float32, torch.float32, None, id="window"),
    pytest.param(8, 2, 64, 64, 16, None, 2.0, torch.float32, torch.float32, None, id="softcap"),
    pytest.param(8, 2, 64, 64, 16, 40, 2.0, torch.float32, torch.float32, 3, id="window-softcap-split"),
    pytest.param(8, 2, 80, 80, 16, None, None, torch.bfloat16, torch.float32, None, id="bf16-cache"),
    pytest.param(8, 2, 64, 64, 16, 20, None, torch.bfloat16, torch.bfloat16, 2, id="bf16-all-split"),
]


@pytest.mark.parametrize(
    ("heads", "kv_heads", "dim", "v_dim", "block_size", "window", "softcap", "dtype", "q_dtype", "splits"),
    GQA_CASES,
)
def test_gqa_decode_matches_reference(
    kernel_device, heads, kv_heads, dim, v_dim, block_size, window, softcap, dtype, q_dtype, splits
):
    (k_cache, v_cache), table, lens = paged_pool(
        LENGTHS, block_size, ((kv_heads, dim), (kv_heads, v_dim)), dtype, kernel_device
    )
    q = (2 * torch.randn(len(LENGTHS), heads, dim, generator=torch.Generator().manual_seed(1))).to(
        kernel_device, q_dtype
    )
    scale = 1 / math.sqrt(dim)
    out = pa.gqa_decode(q, k_cache, v_cache, table, lens, scale, window, softcap, num_splits=splits)
    ref = pa.gqa_decode_reference(q, k_cache, v_cache, table, lens, scale, window, softcap)
    assert out.dtype == torch.float32 and out.shape == (len(LENGTHS), heads, v_dim)
    torch.testing.assert_close(out, ref, **tolerance(dtype))


@pytest.mark.parametrize(("heads", "splits"), [(1, None), (3, None), (16, None), (16, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_mla_decode_matches_reference(kernel_device, heads, splits, dtype):
    rank, rope = 64, 16
    (cache,), table, lens = paged_pool(LENGTHS, 16, ((rank + rope,),), dtype, kernel_device)
    g = torch.Generator().manual_seed(2)
    q_lat = torch.randn(len(LENGTHS), heads, rank, generator=g).to(kernel_device)
    q_pe = torch.randn(len(LENGTHS), heads, rope, generator=g).to(kernel_device)
    scale = 1 / math.sqrt(rank)
    out = pa.mla_decode(q_lat, q_pe, cache, table, lens, scale, rank, num_splits=splits)
    ref = pa.mla_decode_reference(q_lat, q_pe, cache, table, lens, scale, rank)
    assert out.dtype == torch.float32 and out.shape == (len(LENGTHS), heads, rank)
    torch.testing.assert_close(out, ref, **tolerance(dtype))


def test_mla_decode_rank_not_power_of_two(kernel_device):
    rank, rope, heads = 48, 8, 5
    (cache,), table, lens = paged_pool((3, 29), 8, ((rank + rope,),), torch.float32, kernel_device)
    g = torch.Generator().manual_seed(3)
    q_lat = torch.randn(2, heads, rank, generator=g).to(kernel_device)
    q_pe = torch.randn(2, heads, rope, generator=g).to(kernel_device)
    out = pa.mla_decode(q_lat, q_pe, cache, table, lens, 0.1, rank)
    ref = pa.mla_decode_reference(q_lat, q_pe, cache, table, lens, 0.1, rank)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


# One token, a few, and a long row: split 4 ways (shares of whole tiles) or as a 132-SM GPU would
# split them (16 ways, shares of at least _MIN_SPLIT_TOKENS), the short rows leave splits empty.
UNEVEN = (1, 7, 300)
SPLITTINGS = [(0, None), (132, None), (0, 4)]  # (SMs, num_splits=)


@pytest.mark.parametrize(
    ("window", "softcap", "dtype"),
    [
        (None, None, torch.float32),
        (100, None, torch.float32),
        (None, 2.0, torch.bfloat16),
        (250, None, torch.bfloat16),
    ],
    ids=["plain", "window", "softcap-bf16", "window-bf16"],
)
def test_gqa_decode_uneven_rows_with_empty_splits(kernel_device, monkeypatch, window, softcap, dtype):
    (k_cache, v_cache), table, lens = paged_pool(UNEVEN, 16, ((2, 64), (2, 64)), dtype, kernel_device)
    q = (2 * torch.randn(len(UNEVEN), 8, 64, generator=torch.Generator().manual_seed(6))).to(kernel_device)
    ref = pa.gqa_decode_reference(q, k_cache, v_cache, table, lens, 0.125, window, softcap)
    for sms, splits in SPLITTINGS:
        monkeypatch.setattr(pa, "_sm_count", lambda device, sms=sms: sms)
        out = pa.gqa_decode(q, k_cache, v_cache, table, lens, 0.125, window, softcap, num_splits=splits)
        torch.testing.assert_close(out, ref, **tolerance(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_mla_decode_uneven_rows_with_empty_splits(kernel_device, monkeypatch, dtype):
    rank, rope = 64, 16
    (cache,), table, lens = paged_pool(UNEVEN, 16, ((rank + rope,),), dtype, kernel_device)
    g = torch.Generator().manual_seed(7)
    q_lat = torch.randn(len(UNEVEN), 16, rank, generator=g).to(kernel_device)
    q_pe = torch.randn(len(UNEVEN), 16, rope, generator=g).to(kernel_device)
    ref = pa.mla_decode_reference(q_lat, q_pe, cache, table, lens, 0.125, rank)
    for sms, splits in SPLITTINGS:
        monkeypatch.setattr(pa, "_sm_count", lambda device, sms=sms: sms)
        out = pa.mla_decode(q_lat, q_pe, cache, table, lens, 0.125, rank, num_splits=splits)
        torch.testing.assert_close(out, ref, **tolerance(dtype))


@pytest.mark.parametrize("splits", [None, 3])
def test_wide_block_table_gives_the_tight_tables_result(kernel_device, splits):
    """A table as wide as the pool (graph mode) changes neither the splits nor the result."""
    tight, bf16 = -(-max(LENGTHS) // 16), torch.bfloat16
    g = torch.Generator().manual_seed(8)

    (k_cache, v_cache), table, lens = paged_pool(LENGTHS, 16, ((2, 64), (2, 64)), bf16, kernel_device)
    table, wide = table[:, :tight], widened(table[:, :tight], 64, k_cache.shape[0])
    q = torch.randn(len(LENGTHS), 8, 64, generator=g).to(kernel_device)
    out, out_wide = (
        pa.gqa_decode(q, k_cache, v_cache, t, lens, 0.125, 40, num_splits=splits) for t in (table, wide)
    )
    assert torch.equal(out_wide, out)
    ref = pa.gqa_decode_reference(q, k_cache, v_cache, table, lens, 0.125, 40)
    torch.testing.assert_close(out, ref, **tolerance(bf16))

    (latent,), table, lens = paged_pool(LENGTHS, 16, ((64 + 16,),), bf16, kernel_device, seed=1)
    table, wide = table[:, :tight], widened(table[:, :tight], 64, latent.shape[0])
    q_lat = torch.randn(len(LENGTHS), 16, 64, generator=g).to(kernel_device)
    q_pe = torch.randn(len(LENGTHS), 16, 16, generator=g).to(kernel_device)
    out, out_wide = (
        pa.mla_decode(q_lat, q_pe, latent, t, lens, 0.125, 64, num_splits=splits) for t in (table, wide)
    )
    assert torch.equal(out_wide, out)
    ref = pa.mla_decode_reference(q_lat, q_pe, latent, table, lens, 0.125, 64)
    torch.testing.assert_close(out, ref, **tolerance(bf16))


# --- one compile per model config ------------------------------------------------------------


class Launches:
    """Stands in for a kernel: records each launch's grid and what Triton would compile it for."""

    def __init__(self):
        self.grids, self.keys = [], []

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.grids.append(grid)
            self.keys.append((tuple(map(compiled_as, args)), tuple(sorted(kwargs.items()))))

        return launch


def compiled_as(arg):
    """An argument as Triton's compile key sees it once the scalars are left unspecialized: a
    pointer's dtype and 16-byte alignment, an integer's width, a float."""
    if isinstance(arg, torch.Tensor):
        return arg.dtype, arg.data_ptr() % 16 == 0
    if isinstance(arg, int):
        return "i32" if -(2**31) <= arg < 2**31 else "i64"
    return type(arg).__name__


@pytest.fixture
def launches(monkeypatch):
    kernels = {name: Launches() for name in ("_gqa_decode_kernel", "_mla_decode_kernel", "_combine_kernel")}
    for name, fake in kernels.items():
        monkeypatch.setattr(pa, name, fake)
    return SimpleNamespace(
        gqa=kernels["_gqa_decode_kernel"],
        mla=kernels["_mla_decode_kernel"],
        combine=kernels["_combine_kernel"],
    )


@pytest.mark.parametrize(("sms", "splits"), SPLITTINGS, ids=["cpu", "gpu-policy", "forced"])
def test_launches_do_not_follow_lengths_or_table_width(launches, monkeypatch, sms, splits):
    """Tables of 1 .. 64 blocks, full or nearly empty: one grid and one compile key per kernel, the
    same as the warm-up's. ("gpu-policy": the split count a 132-SM GPU would choose.)"""
    monkeypatch.setattr(pa, "_sm_count", lambda device: sms)
    block_size, batch = 16, 3
    pa.warm_gqa("cpu", heads=8, kv_heads=2, head_dim=64, dtype=torch.bfloat16, block_size=16, window=32)
    pa.warm_mla("cpu", heads=16, rank=64, rope=16, dtype=torch.bfloat16, block_size=16)
    warm = {key for k in (launches.gqa, launches.mla, launches.combine) for key in k.keys}
    assert len(warm) == 3
    for k in (launches.gqa, launches.mla, launches.combine):
        k.__init__()

    k_cache = v_cache = torch.zeros(80, block_size, 2, 64, dtype=torch.bfloat16)
    latent = torch.zeros(80, block_size, 64 + 16, dtype=torch.bfloat16)
    q, q_lat, q_pe = torch.zeros(batch, 8, 64), torch.zeros(batch, 16, 64), torch.zeros(batch, 16, 16)
    for width in range(1, 65):
        table = torch.zeros(batch, width, dtype=torch.int32)
        for lens in (
            [1, 2, 3],
            [width * block_size] * batch,
            [1, width * block_size // 2 + 1, width * block_size],
        ):
            lens = torch.tensor(lens, dtype=torch.int32)
            pa.gqa_decode(q, k_cache, v_cache, table, lens, 0.125, 32, num_splits=splits)
            pa.mla_decode(q_lat, q_pe, latent, table, lens, 0.125, 64, num_splits=splits)
    for k in (launches.gqa, launches.mla):
        assert len(set(k.grids)) == 1 and len(set(k.keys)) == 1
    split = launches.gqa.grids[0][2]
    assert split == (splits or (16 if sms else 1))
    # the combine: a (rows, heads) grid for each kernel, one compile (both have Dv 64)
    assert set(launches.combine.grids) == ({(batch, 8), (batch, 16)} if split > 1 else set())
    assert len(set(launches.combine.keys)) == (split > 1)
    assert {key for k in (launches.gqa, launches.mla, launches.combine) for key in k.keys} <= warm


@pytest.mark.parametrize(
    ("kernel", "runtime"),
    [
        ("_gqa_decode_kernel", {"stride_kn", "stride_tb", "stride_os", "window", "min_split"}),
        ("_mla_decode_kernel", {"stride_cn", "stride_tb", "stride_os", "min_split"}),
        ("_combine_kernel", {"stride_ps", "stride_lh", "splits"}),
    ],
)
def test_kernels_leave_integer_arguments_unspecialized(kernel, runtime):
    """Strides, lengths and counts are runtime values: no variant per value == 1 or % 16. (The
    interpreter's stand-in keeps triton.jit's arguments in .kwargs, a JITFunction as attributes.)"""
    kernel = getattr(pa, kernel)
    declared = getattr(kernel, "do_not_specialize", None) or kernel.kwargs["do_not_specialize"]
    params = inspect.signature(kernel.fn).parameters.items()
    scalars = {n for n, p in params if "constexpr" not in str(p.annotation) and not n.endswith("_ptr")}
    assert runtime <= scalars <= set(declared)


def test_split_count_follows_programs_only(monkeypatch):
    assert pa._sm_count(torch.device("cpu")) == 0 and pa._num_splits(1, torch.device("cpu")) == 1
    monkeypatch.setattr(pa, "_sm_count", lambda device: 132)
    gpu = torch.device("cuda", 0)
    assert [pa._num_splits(p, gpu) for p in (1, 8, 9, 40, 131, 132, 1000)] == [16, 16, 15, 4, 2, 1, 1]
    assert list(inspect.signature(pa._num_splits).parameters) == ["programs", "device"]
    with pytest.raises(ValueError, match="num_splits"):
        pa._splits(pa._MAX_SPLITS + 1, 1, gpu, 64)


@pytest.mark.parametrize(("window", "softcap"), [(None, None), (20, None), (None, 2.0), (7, 3.0)])
@pytest.mark.parametrize("heads", [2, 8])
def test_gqa_reference_matches_attend(window, softcap, heads):
    kv_heads, dim = 2, 32
    (k_cache, v_cache), table, lens = paged_pool(
        LENGTHS, 16, ((kv_heads, dim), (kv_heads, dim)), torch.float32, "cpu"
    )
    q = 2 * torch.randn(len(LENGTHS), heads, dim, generator=torch.Generator().manual_seed(4))
    ref = pa.gqa_decode_reference(q, k_cache, v_cache, table, lens, 0.2, window, softcap)
    for b, n in enumerate(LENGTHS):
        k, v = gathered(k_cache, table, b, n), gathered(v_cache, table, b, n)
        expect = attend(q[b : b + 1], k, v, n - 1, 0.2, window, softcap)[0]
        torch.testing.assert_close(ref[b], expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("splits", [1, 3])
def test_gqa_decode_with_sinks(kernel_device, splits):
    """gpt-oss's sinks: the kernel's output rescaled by its log-sum-exp equals the reference,
    which equals the operator's attend() with sinks, for a sliding window too."""
    heads, kv_heads, dim = 8, 2, 32
    (k_cache, v_cache), table, lens = paged_pool(
        LENGTHS, 16, ((kv_heads, dim), (kv_heads, dim)), torch.float32, kernel_device
    )
    g = torch.Generator().manual_seed(9)
    q = (2 * torch.randn(len(LENGTHS), heads, dim, generator=g)).to(kernel_device)
    sinks = (3 * torch.randn(heads, generator=g)).to(kernel_device)
    for window in (None, 24):
        out = pa.gqa_decode(q, k_cache, v_cache, table, lens, 0.2, window, None, sinks, num_splits=splits)
        ref = pa.gqa_decode_reference(q, k_cache, v_cache, table, lens, 0.2, window, None, sinks)
        torch.testing.assert_close(out, ref, atol=2e-5, rtol=2e-5)
        no_sink = pa.gqa_decode_reference(q, k_cache, v_cache, table, lens, 0.2, window)
        assert (ref - no_sink).abs().max() > 1e-3  # the sinks matter here
        for b, n in enumerate(LENGTHS):
            k, v = gathered(k_cache, table, b, n), gathered(v_cache, table, b, n)
            expect = attend(q[b : b + 1].cpu(), k.cpu(), v.cpu(), n - 1, 0.2, window, None, sinks.cpu())[0]
            torch.testing.assert_close(ref[b].cpu(), expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("absorbed", [True, False])
def test_mla_reference_matches_operator(absorbed):
    """MLAAttention._attend with identity kv_b halves: its absorbed o_lat (and, equally, its naive
    expanded attention) is exactly what mla_decode computes."""
    rank, rope, heads = 32, 16, 3
    (cache,), table, lens = paged_pool(LENGTHS, 16, ((rank + rope,),), torch.float32, "cpu")
    g = torch.Generator().manual_seed(5)
    q_lat, q_pe = (
        torch.randn(len(LENGTHS), heads, rank, generator=g),
        torch.randn(len(LENGTHS), heads, rope, generator=g),
    )
    eye = torch.eye(rank).expand(heads, rank, rank)
    op = SimpleNamespace(
        rank=rank, scale=0.15, heads=heads, w_k=eye, w_v=eye, nope=rank, v_dim=rank, rope_dim=rope
    )
    op._mm = MLAAttention._mm
    for name in ("_naive_bytes", "_absorbed_tile", "_attend_absorbed"):  # what _attend calls
        setattr(op, name, getattr(MLAAttention, name).__get__(op))
    ref = pa.mla_decode_reference(q_lat, q_pe, cache, table, lens, 0.15, rank)
    for b, n in enumerate(LENGTHS):
        latent = gathered(cache, table, b, n)
        expect = MLAAttention._attend(op, q_lat[b : b + 1], q_pe[b : b + 1], latent, n - 1, absorbed)[0]
        torch.testing.assert_close(ref[b], expect, atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_decode_replays_in_cuda_graph():
    """Lengths change between replays of one captured graph: nothing in the launch read them."""
    (k_cache, v_cache), table, lens = paged_pool(LENGTHS, 16, ((2, 64), (2, 64)), torch.bfloat16, "cuda")
    (latent,), mla_table, _ = paged_pool(LENGTHS, 16, ((64 + 16,),), torch.bfloat16, "cuda", seed=1)
    q = torch.randn(len(LENGTHS), 8, 64, device="cuda")
    q_lat, q_pe = (
        torch.randn(len(LENGTHS), 16, 64, device="cuda"),
        torch.randn(len(LENGTHS), 16, 16, device="cuda"),
    )

    def step():
        return (
            pa.gqa_decode(q, k_cache, v_cache, table, lens, 0.125, num_splits=2),
            pa.mla_decode(q_lat, q_pe, latent, mla_table, lens, 0.125, 64, num_splits=2),
        )

    step()  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        gqa_out, mla_out = step()
    for shorter in (0, 1):
        lens.copy_(torch.tensor(LENGTHS, dtype=torch.int32, device="cuda") - shorter).clamp_(min=1)
        graph.replay()
        torch.testing.assert_close(
            gqa_out,
            pa.gqa_decode_reference(q, k_cache, v_cache, table, lens, 0.125),
            **tolerance(torch.bfloat16),
        )
        torch.testing.assert_close(
            mla_out,
            pa.mla_decode_reference(q_lat, q_pe, latent, mla_table, lens, 0.125, 64),
            **tolerance(torch.bfloat16),
        )


def cached_kernels(kernel) -> int:
    """Compiled variants of a Triton kernel, on every device (JITFunction.device_caches)."""
    return sum(len(kernel_cache) for kernel_cache, *_ in kernel.device_caches.values())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_warm_up_compiles_all_that_decode_needs():
    """After warm_gqa / warm_mla, batches, lengths, table widths and split counts compile nothing."""
    kernels = (pa._gqa_decode_kernel, pa._mla_decode_kernel, pa._combine_kernel)
    pa.warm_gqa("cuda", heads=8, kv_heads=2, head_dim=128, dtype=torch.bfloat16, block_size=16, window=512)
    pa.warm_mla("cuda", heads=16, rank=512, rope=64, dtype=torch.bfloat16, block_size=16)
    before = [cached_kernels(k) for k in kernels]
    assert all(before)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    g = torch.Generator().manual_seed(10)
    for batch in (1, 3, -(-sms // 2)):  # 16 splits, several, one (rows x KV heads fill the GPU)
        lengths = torch.randint(1, 4000, (batch,), generator=g).tolist()
        lengths[0] = 1
        (k_cache, v_cache), table, lens = paged_pool(
            lengths, 16, ((2, 128), (2, 128)), torch.bfloat16, "cuda"
        )
        (latent,), mla_table, _ = paged_pool(lengths, 16, ((512 + 64,),), torch.bfloat16, "cuda", seed=1)
        q = torch.randn(batch, 8, 128, device="cuda")
        q_lat, q_pe = torch.randn(batch, 16, 512, device="cuda"), torch.randn(batch, 16, 64, device="cuda")
        for width in (table.shape[1], table.shape[1] + 1, 4 * table.shape[1], 4096):
            wide = widened(table, width, k_cache.shape[0])
            out = pa.gqa_decode(q, k_cache, v_cache, wide, lens, 0.125, 512)
            wide_mla = widened(mla_table, width, latent.shape[0])
            o_lat = pa.mla_decode(q_lat, q_pe, latent, wide_mla, lens, 0.04, 512)
        for shorter in (1, 17, 300):
            pa.gqa_decode(q, k_cache, v_cache, table, (lens - shorter).clamp(min=1), 0.125, 512)
            pa.mla_decode(q_lat, q_pe, latent, mla_table, (lens - shorter).clamp(min=1), 0.04, 512)
        assert [cached_kernels(k) for k in kernels] == before
        torch.testing.assert_close(
            out,
            pa.gqa_decode_reference(q, k_cache, v_cache, table, lens, 0.125, 512),
            **tolerance(torch.bfloat16),
        )
        torch.testing.assert_close(
            o_lat,
            pa.mla_decode_reference(q_lat, q_pe, latent, mla_table, lens, 0.04, 512),
            **tolerance(torch.bfloat16),
        )
