"""Prefix cache: KV blocks of shared prompt prefixes, reused across requests.

A full block of a sequence is named by a hash chained over every token up to its end (so a
name means "these exact tokens from the start"), salted with the model's identity. When a
request ends, its full blocks stay in the pool under their names instead of being freed;
a later request whose prompt starts with the same blocks takes them and prefills only the
rest (at least its last token, whose logits it needs). Blocks in no running request are
evicted least-recently-used first when the pool needs room: copied to a RAM tier
(`ram_bytes`), and from there to a disk tier (`disk_dir`, capped at `disk_bytes`), from
which a hit is copied back into a fresh block.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path

import torch

from ktx.core.runtime.kv_cache import BlockPool, SequenceKV


def _chain(prev: bytes, tokens: list[int]) -> bytes:
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(torch.tensor(tokens, dtype=torch.int32).numpy().tobytes())
    return h.digest()


class PrefixCache:
    def __init__(
        self,
        pool: BlockPool | None = None,
        *,
        salt: str = "",
        enabled: bool = True,
        ram_bytes: int = 0,
        disk_dir: str | os.PathLike[str] | None = None,
        disk_bytes: int = 0,
    ):
        self.enabled, self.salt = enabled, hashlib.blake2b(salt.encode(), digest_size=16).digest()
        self.ram_bytes, self.disk_bytes = ram_bytes, disk_bytes
        self.disk_dir = Path(disk_dir) if disk_dir else None
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
        self.by_hash: dict[bytes, int] = {}  # name -> resident block
        self.hash_of: dict[int, bytes] = {}  # resident block -> name
        self.refs: dict[int, int] = {}  # resident named block -> requests using it
        self.idle: OrderedDict[int, None] = OrderedDict()  # named blocks no request uses, LRU first
        self.ram: OrderedDict[bytes, list[torch.Tensor]] = OrderedDict()
        self.ram_used = 0
        self.disk: OrderedDict[bytes, int] = OrderedDict()  # name -> file size
        self.disk_used = 0
        self.hits = {"pool": 0, "ram": 0, "disk": 0}  # blocks found, by tier
        self.pool = None
        if pool is not None:
            self.attach(pool)

    def attach(self, pool: BlockPool) -> None:
        self.pool = pool
        if self.disk_dir is not None:  # blocks a previous run left on disk, oldest first
            files = sorted(self.disk_dir.glob("*.kv"), key=lambda p: p.stat().st_mtime)
            for f in files:
                self.disk[bytes.fromhex(f.stem)] = f.stat().st_size
                self.disk_used += f.stat().st_size

    @property
    def idle_blocks(self) -> int:
        return len(self.idle)

    # -- a request starts ----------------------------------------------------------------------
    def match(self, seq: SequenceKV, prompt: list[int]) -> int:
        """Puts the cached blocks that start `prompt` into `seq`; returns the tokens they hold."""
        if not self.enabled:
            return 0
        bs = self.pool.block_size
        name = self.salt
        for i in range((len(prompt) - 1) // bs):  # at least one token is left to prefill
            name = _chain(name, prompt[i * bs : (i + 1) * bs])
            block = self.by_hash.get(name)
            tier = "pool"
            if block is None:
                tier, data = self._take_lower(name)
                block = self._free_block() if data is not None else None
                if block is None:
                    break
                self._write(block, data)
                self._name(block, name)
            self.hits[tier] += 1
            self.refs[block] += 1
            self.idle.pop(block, None)
            seq.blocks.append(block)
        seq.length = len(seq.blocks) * bs
        return seq.length

    def reserve(self, seq: SequenceKV, tokens: int) -> bool:
        """Blocks for `tokens` in all, evicting idle cached blocks if needed; False if they cannot be had."""
        need = -(-tokens // self.pool.block_size) - len(seq.blocks)
        while len(self.pool.free_blocks) < need and self.idle:
            self._evict()
        if len(self.pool.free_blocks) < need:
            return False
        self.pool.reserve(seq, tokens)
        return True

    # -- a request ends ------------------------------------------------------------------------
    def release(self, seq: SequenceKV, tokens: list[int], valid: int) -> None:
        """Gives back `seq`'s blocks; the full ones among its first `valid` tokens (`tokens`) are
        kept under their names for later requests."""
        bs = self.pool.block_size
        name = self.salt
        for i, block in enumerate(seq.blocks):
            full = self.enabled and (i + 1) * bs <= valid
            if full:
                name = _chain(name, tokens[i * bs : (i + 1) * bs])
            if block in self.hash_of:  # a shared block: one user fewer
                self.refs[block] -= 1
                if self.refs[block] == 0:
                    self.idle[block] = None
            elif full and name not in self.by_hash:
                self._name(block, name)
                self.idle[block] = None
            else:
                self.pool.free_blocks.append(block)
        seq.blocks.clear()
        seq.length = 0

    # -- tiers ---------------------------------------------------------------------------------
    def _name(self, block: int, name: bytes) -> None:
        self.by_hash[name], self.hash_of[block], self.refs[block] = block, name, 0

    def _free_block(self) -> int | None:
        if not self.pool.free_blocks and self.idle:
            self._evict()
        return self.pool.free_blocks.pop() if self.pool.free_blocks else None

    def _evict(self) -> None:
        block, _ = self.idle.popitem(last=False)
        name = self.hash_of.pop(block)
        del self.by_hash[name], self.refs[block]
        if self.ram_bytes or self.disk_dir is not None:
            self._keep(name, self._read(block))
        self.pool.free_blocks.append(block)

    def _keep(self, name: bytes, data: list[torch.Tensor]) -> None:
        size = sum(t.numel() * t.element_size() for t in data)
        if self.ram_bytes >= size:
            self.ram[name] = data
            self.ram_used += size
            while self.ram_used > self.ram_bytes:
                old, old_data = self.ram.popitem(last=False)
                self.ram_used -= sum(t.numel() * t.element_size() for t in old_data)
                self._to_disk(old, old_data)
        else:
            self._to_disk(name, data)

    def _to_disk(self, name: bytes, data: list[torch.Tensor]) -> None:
        if self.disk_dir is None or name in self.disk:
            return
        path = self.disk_dir / f"{name.hex()}.kv"
        torch.save(data, path)
        self.disk[name] = path.stat().st_size
        self.disk_used += self.disk[name]
        while self.disk_used > self.disk_bytes and self.disk:
            old, size = self.disk.popitem(last=False)
            (self.disk_dir / f"{old.hex()}.kv").unlink(missing_ok=True)
            self.disk_used -= size

    def _take_lower(self, name: bytes) -> tuple[str, list[torch.Tensor] | None]:
        data = self.ram.pop(name, None)
        if data is not None:
            self.ram_used -= sum(t.numel() * t.element_size() for t in data)
            return "ram", data
        if name in self.disk:
            path = self.disk_dir / f"{name.hex()}.kv"
            try:
                data = torch.load(path, weights_only=True)
            except Exception:  # gone, damaged or foreign (any unpickling error): a miss, never a crash
                data = None
            self.disk_used -= self.disk.pop(name)
            path.unlink(missing_ok=True)
            if data is not None and self._fits(data):
                return "disk", data
        return "", None

    def _stores(self) -> list[torch.Tensor]:
        return [s for layer in sorted(self.pool.layers) for s in self.pool.layers[layer]]

    def _fits(self, data: list[torch.Tensor]) -> bool:
        stores = self._stores()
        return len(data) == len(stores) and all(
            d.shape == s.shape[1:] and d.dtype == s.dtype for d, s in zip(data, stores, strict=True)
        )

    def _read(self, block: int) -> list[torch.Tensor]:
        return [s[block].to("cpu", copy=True) for s in self._stores()]

    def _write(self, block: int, data: list[torch.Tensor]) -> None:
        for s, d in zip(self._stores(), data, strict=True):
            s[block].copy_(d)
