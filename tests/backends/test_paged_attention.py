"""Paged decode attention (backends/cuda/paged_attention.py): the Triton kernels against their
references, and the references against the attention the model operators compute."""

from __future__ import annotations

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
    op = SimpleNamespace(rank=rank, scale=0.15, heads=heads, w_k=eye, w_v=eye)
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
