"""The prefix cache over a bare block pool: which blocks a prompt reuses, when blocks are
evicted, and that a block brought back from the RAM or disk tier holds exactly what it held."""

from __future__ import annotations

import torch

from ktx.core.runtime.kv_cache import BlockPool, SequenceKV
from ktx.server.prefix_cache import PrefixCache

BS = 4


def _pool(blocks: int = 6) -> BlockPool:
    return BlockPool({0: ((2, 3), (2, 3)), 1: ((5,),)}, num_blocks=blocks, block_size=BS)


def _fill(pool: BlockPool, seq: SequenceKV, tokens: list[int]) -> None:
    """Stands in for a forward pass: the KV of token t at position p is a function of (p, t)."""
    for layer, stores in pool.layers.items():
        for i, store in enumerate(stores):
            flat = store.view(-1, *store.shape[2:])
            for p, t in enumerate(tokens):
                row = seq.blocks[p // BS] * BS + p % BS
                flat[row] = float(1000 * layer + 100 * i + 10 * p + t)
    seq.length = len(tokens)


def _run(cache: PrefixCache, pool: BlockPool, prompt: list[int], gen: int = 0) -> tuple[int, SequenceKV]:
    seq = SequenceKV()
    cached = cache.match(seq, prompt)
    assert cache.reserve(seq, len(prompt) + gen)
    return cached, seq


def test_full_blocks_of_a_prompt_are_reused_and_the_last_token_always_prefilled():
    pool = _pool()
    cache = PrefixCache(pool, salt="m")
    prompt = list(range(1, 11))  # 10 tokens: 2 full blocks + 2
    cached, seq = _run(cache, pool, prompt)
    assert cached == 0
    _fill(pool, seq, prompt)
    cache.release(seq, prompt, 10)
    assert cache.idle_blocks == 2 and len(pool.free_blocks) == 4  # the partial block went back
    # same first 8 tokens: both blocks; an 8-token prompt takes only one (its last token is prefilled)
    cached, seq = _run(cache, pool, [*prompt[:8], 99, 98])
    assert cached == 8 and cache.idle_blocks == 0
    cache.release(seq, [], 0)
    assert _run(cache, pool, prompt[:8])[0] == 4
    # a different first block shares nothing, even with the same second block
    assert _run(cache, pool, [7, 2, 3, 4, *prompt[4:]])[0] == 0


def test_salt_separates_models():
    pool = _pool()
    a, b = PrefixCache(pool, salt="model A"), PrefixCache(salt="model B")
    b.attach(pool)
    prompt = list(range(9))
    _, seq = _run(a, pool, prompt)
    a.release(seq, prompt, 9)
    assert _run(a, pool, prompt)[0] == 8
    assert b.match(SequenceKV(), prompt) == 0


def test_eviction_to_ram_and_disk_and_back(tmp_path):
    pool = _pool(blocks=3)
    cache = PrefixCache(pool, salt="m", ram_bytes=1, disk_dir=tmp_path, disk_bytes=1 << 20)  # RAM too small
    first = list(range(1, 10))
    _, seq = _run(cache, pool, first)
    _fill(pool, seq, first)
    expected = [s[b].clone() for b in seq.blocks[:2] for stores in pool.layers.values() for s in stores]
    cache.release(seq, first, 9)
    assert cache.idle_blocks == 2
    # another request needs all 3 blocks: the two cached ones go to disk
    other = [50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60]
    _, seq2 = _run(cache, pool, other)
    assert cache.idle_blocks == 0 and len(list(tmp_path.glob("*.kv"))) == 2
    cache.release(seq2, [], 0)  # (failed request: nothing kept)
    # the first prompt again: both blocks come back from disk, with their contents
    cached, seq = _run(cache, pool, first)
    assert cached == 8 and cache.hits["disk"] == 2
    got = [s[b] for b in seq.blocks[:2] for stores in pool.layers.values() for s in stores]
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))
    assert not list(tmp_path.glob("*.kv"))  # taken out of the tier


def test_disk_tier_survives_a_restart_and_respects_its_cap(tmp_path):
    pool = _pool(blocks=3)
    cache = PrefixCache(pool, salt="m", disk_dir=tmp_path, disk_bytes=1 << 20)
    prompt = list(range(1, 10))
    _, seq = _run(cache, pool, prompt)
    _fill(pool, seq, prompt)
    cache.release(seq, prompt, 9)
    while cache.idle:
        cache._evict()
    # a new server process on the same folder finds the blocks
    pool2 = _pool(blocks=3)
    again = PrefixCache(pool2, salt="m", disk_dir=tmp_path, disk_bytes=1 << 20)
    assert again.match(SequenceKV(), prompt) == 8
    # a cap smaller than one block keeps nothing
    tiny = PrefixCache(_pool(blocks=3), salt="m", disk_dir=tmp_path / "t", disk_bytes=10)
    _, seq = _run(tiny, tiny.pool, prompt)
    tiny.release(seq, prompt, 9)
    while tiny.idle:
        tiny._evict()
    assert tiny.disk_used == 0 and not list((tmp_path / "t").glob("*.kv"))


def test_a_damaged_disk_block_is_a_miss(tmp_path):
    pool = _pool(blocks=3)
    cache = PrefixCache(pool, salt="m", disk_dir=tmp_path, disk_bytes=1 << 20)
    prompt = list(range(1, 10))
    _, seq = _run(cache, pool, prompt)
    cache.release(seq, prompt, 9)
    while cache.idle:
        cache._evict()
    for f in tmp_path.glob("*.kv"):
        f.write_bytes(b"not a tensor file")
    assert cache.match(SequenceKV(), prompt) == 0


def test_disabled_cache_keeps_nothing():
    pool = _pool()
    cache = PrefixCache(pool, enabled=False)
    prompt = list(range(9))
    _, seq = _run(cache, pool, prompt)
    cache.release(seq, prompt, 9)
    assert cache.idle_blocks == 0 and len(pool.free_blocks) == pool.num_blocks
    assert _run(cache, pool, prompt)[0] == 0
