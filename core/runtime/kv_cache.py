"""KV cache made of fixed-size blocks in one pool shared by all sequences.

Each attention layer declares the per-token tensors it stores (`kv_spec`): GQA keeps K and V
([kv_heads, head_dim] each); MLA keeps one compressed latent plus the RoPE part. A sequence
owns a list of block ids; blocks return to the pool when it is freed. The server's continuous
batching and prefix cache build on this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Tokens per block, and the dtype of an accelerator's blocks, unless a pool is made otherwise:
# the paged decode kernels are compiled for these at load (ops/attention.py warm_decode).
BLOCK_SIZE = 64
ACCEL_DTYPE = torch.bfloat16


class CacheFullError(RuntimeError):
    """The pool has no free block left; finish or free a sequence, or raise `cache_lens`."""


@dataclass
class SequenceKV:
    blocks: list[int] = field(default_factory=list)
    length: int = 0  # tokens whose K/V are stored


# A SequenceKV's linear-attention states (ops/deltanet.py): {layer index: state}
RECURRENT_ATTR = "ktx_recurrent"


def has_recurrent_layers(model: torch.nn.Module) -> bool:
    """Whether layers keep a state per sequence beside the KV cache (Qwen3-Next's gated DeltaNet,
    ops/deltanet.py): a sequence's cached blocks alone cannot then resume it."""
    return any(getattr(m, "recurrent", False) for m in model.modules())


class BlockPool:
    def __init__(
        self,
        specs: dict[int, tuple[tuple[int, ...], ...]],
        num_blocks: int,
        block_size: int = 64,
        dtype: torch.dtype | dict[int, torch.dtype] = torch.float32,
        device: str | torch.device | dict[int, str | torch.device] = "cpu",
    ):
        # specs: layer index -> per-token shapes of the tensors it stores, e.g. ((kvh, d), (kvh, d))
        # dtype, device: one for all layers, or per layer (layers split over devices)
        self.block_size, self.num_blocks = block_size, num_blocks

        def per_layer(value, layer):
            return value[layer] if isinstance(value, dict) else value

        self.layers = {
            layer: tuple(
                torch.zeros(
                    num_blocks,
                    block_size,
                    *shape,
                    dtype=per_layer(dtype, layer),
                    device=per_layer(device, layer),
                )
                for shape in shapes
            )
            for layer, shapes in specs.items()
        }
        self.free_blocks = list(range(num_blocks - 1, -1, -1))

    @property
    def host_float32(self) -> bool:
        """Every layer's cache is float32 in host memory (the CPU paged kernels' form)."""
        got = self.__dict__.get("_host_float32")
        if got is None:
            got = self.__dict__["_host_float32"] = all(
                t.dtype == torch.float32 and t.device.type == "cpu"
                for stores in self.layers.values()
                for t in stores
            )
        return got

    @property
    def capacity(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self.free_blocks)

    def reserve(self, seq: SequenceKV, length: int) -> None:
        """Makes `seq` hold blocks for `length` tokens in all."""
        need = -(-length // self.block_size) - len(seq.blocks)
        if need > len(self.free_blocks):
            raise CacheFullError(
                f"KV cache full: {need} more blocks of {self.block_size} tokens needed, "
                f"{len(self.free_blocks)} free of {self.num_blocks}"
            )
        for _ in range(max(0, need)):
            seq.blocks.append(self.free_blocks.pop())

    def free(self, seq: SequenceKV) -> None:
        self.free_blocks.extend(reversed(seq.blocks))
        seq.blocks.clear()
        seq.length = 0
        seq.__dict__.pop(RECURRENT_ATTR, None)  # its linear-attention states go too

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for stores in self.layers.values() for t in stores)

    def slots(self, seq: SequenceKV, start: int, end: int) -> torch.Tensor:
        """Pool-wide row index of tokens start .. end of `seq` (reserve() them first)."""
        pos = torch.arange(start, end)
        blocks = torch.tensor(seq.blocks, dtype=torch.long)[pos // self.block_size]
        return blocks * self.block_size + pos % self.block_size

    def write(
        self,
        layer: int,
        seq: SequenceKV,
        start: int,
        *values: torch.Tensor,
        slots: torch.Tensor | None = None,
    ) -> None:
        # values: [n, *shape] for tokens start .. start+n
        if slots is None:
            slots = self.slots(seq, start, start + values[0].shape[0])
        self.write_rows(layer, slots, *values)

    def write_rows(self, layer: int, slots: torch.Tensor, *values: torch.Tensor) -> None:
        """values[i]: [n, *shape] -> pool rows `slots` [n] (no Python values: graph-capturable)."""
        for store, value in zip(self.layers[layer], values, strict=True):
            flat = store.view(-1, *store.shape[2:])
            flat.index_copy_(0, slots.to(store.device), value.to(store.device, store.dtype))

    def read(
        self, layer: int, seq: SequenceKV, end: int, slots: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Tokens 0 .. end of `seq`, each tensor [end, *shape]."""
        if slots is None:
            slots = self.slots(seq, 0, end)
        return tuple(
            store.view(-1, *store.shape[2:]).index_select(0, slots.to(store.device))
            for store in self.layers[layer]
        )
