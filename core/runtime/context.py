"""What the attention operators need to know about the current forward pass.

The runtime flattens all sequences of a step into one row of tokens ([1, T]); each segment
says which sequence a run of those tokens belongs to and where it starts. Without a context
(a plain `model(input_ids)` call) attention treats each batch row as a fresh sequence.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property

import torch

from .kv_cache import BlockPool, SequenceKV

# MLA segments of at most this many new tokens attend through the CPU paged kernel in the
# absorbed form (one pass over the latent cache); longer ones (prefill chunks) expand K and V
# (PyTorch), which costs several times fewer FLOPs per query and key there. Grouped-query
# attention takes the paged kernel at any length (Attention.paged_max_tokens): on the 2-core
# Zen 4 it prefilled the demo 1.5-2x faster than SDPA from 128 to 8192 tokens. Fixed per
# segment length, so a decode row computes the same alone or batched.
PAGED_MAX_TOKENS = 16


def upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without stalling the host: copied from pinned memory in stream
    order (a pageable copy waits for the transfer). On the CPU, `t` itself."""
    if device.type == "cpu":
        return t
    try:
        t = t.pin_memory()
    except RuntimeError:  # no pinned memory for this accelerator: the plain copy
        return t.to(device)
    return t.to(device, non_blocking=True)


@dataclass
class Segment:
    seq: SequenceKV
    start: int  # position of the first new token
    length: int  # new tokens in this step
    _slots: tuple | None = field(default=None, repr=False)

    _slots_on: dict = field(default_factory=dict, repr=False)

    def slots(self, pool: BlockPool, device: torch.device | None = None) -> tuple:
        """(write slots, read slots) in the pool, the same for every layer of this step; on
        `device` (uploaded once per step and device) if given."""
        if self._slots is None:
            end = self.start + self.length
            self._slots = (pool.slots(self.seq, self.start, end), pool.slots(self.seq, 0, end))
        if device is None or device.type == "cpu":
            return self._slots
        got = self._slots_on.get(device)
        if got is None:
            got = self._slots_on[device] = tuple(upload(t, device) for t in self._slots)
        return got


@dataclass
class DeviceBatch:
    """The step's indices as tensors on one device, for kernels that must not depend on Python
    values (paged attention; a CUDA graph replays the same tensors with new contents)."""

    positions: torch.Tensor  # [T] int64: position of each new token
    write_slots: torch.Tensor  # [T] int64: pool row (block * block_size + offset) of each new token
    block_table: torch.Tensor  # [S, max_blocks] int32: each sequence's blocks, padded with 0
    seq_lens: torch.Tensor  # [S] int32: tokens stored once this step's are written


@dataclass
class ForwardBatch:
    pool: BlockPool
    segments: list[Segment]
    _on: dict = field(default_factory=dict, repr=False)

    # Derived once per step, read by every attention layer.
    @cached_property
    def positions(self) -> torch.Tensor:
        """Position of each token of the flat row: [T]."""
        return torch.cat([torch.arange(s.start, s.start + s.length) for s in self.segments])

    @cached_property
    def decode_only(self) -> bool:
        """Every sequence adds one token (a decode step: paged attention kernels apply)."""
        return all(s.length == 1 for s in self.segments)

    def positions_on(self, device: torch.device) -> torch.Tensor:
        """`positions` on `device`, uploaded once per step and device (not once per layer)."""
        if device.type == "cpu":
            return self.positions
        got = self._on.get(("positions", device))
        if got is None:
            got = self._on["positions", device] = upload(self.positions, device)
        return got

    def on(self, device: torch.device) -> DeviceBatch:
        """This step's DeviceBatch on `device` (built once per step and device)."""
        got = self._on.get(device)
        if got is None:
            got = self._on[device] = self._device_batch(device)
        return got

    def _device_batch(self, device: torch.device, width: int | None = None) -> DeviceBatch:
        """`width`: block-table columns (default: the longest sequence's blocks)."""
        pool = self.pool
        width = width or max(len(s.seq.blocks) for s in self.segments)
        table = torch.zeros(len(self.segments), width, dtype=torch.int32)
        for i, s in enumerate(self.segments):
            table[i, : len(s.seq.blocks)] = torch.tensor(s.seq.blocks, dtype=torch.int32)
        lengths = torch.tensor([s.start + s.length for s in self.segments], dtype=torch.int32)
        return DeviceBatch(
            positions=self.positions_on(device),
            write_slots=upload(torch.cat([s.slots(pool)[0] for s in self.segments]), device),
            block_table=upload(table, device),
            seq_lens=upload(lengths, device),
        )

    @cached_property
    def cpu_rows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(seq [T] int32: each token's segment, table [S, width] int32: each segment's blocks
        padded with 0, positions [T] int64) for the CPU kernels, built once per step."""
        width = max(len(s.seq.blocks) for s in self.segments)
        table = torch.zeros(len(self.segments), width, dtype=torch.int32)
        for i, s in enumerate(self.segments):
            table[i, : len(s.seq.blocks)] = torch.tensor(s.seq.blocks, dtype=torch.int32)
        lengths = torch.tensor([s.length for s in self.segments])
        seq = torch.repeat_interleave(torch.arange(len(self.segments), dtype=torch.int32), lengths)
        return seq, table, self.positions.contiguous()

    @cached_property
    def rows(self) -> list[tuple[slice, Segment, int]]:
        """(slice of the flat row, its segment, its first position) per segment."""
        out, off = [], 0
        for seg in self.segments:
            out.append((slice(off, off + seg.length), seg, seg.start))
            off += seg.length
        return out


_current: ContextVar[ForwardBatch | None] = ContextVar("ktx_forward_batch", default=None)


def current() -> ForwardBatch | None:
    return _current.get()


@contextlib.contextmanager
def forward_batch(batch: ForwardBatch):
    token = _current.set(batch)
    try:
        yield batch
    finally:
        _current.reset(token)
