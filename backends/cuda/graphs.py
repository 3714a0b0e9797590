"""CUDA-graph capture of the decode step (one new token for each of `batch_size` sequences).

A decode step launches a few hundred small kernels; replaying them as one graph removes the
launch cost that otherwise dominates at batch 1. The graph holds everything: the device work,
the copies to and from the pinned buffers of the CPU experts and the host callbacks that start
and await them (host_moe.py), so the CPU experts run in the graph's order with no Python.

What changes between steps lives in static device tensors refilled before each replay: token
ids and the step's DeviceBatch (positions, KV write slots, block table, sequence lengths). The
block table is as wide as the pool, so one graph serves any sequence length the pool can hold.
The first step runs eagerly on a side stream (warm-up: kernels compiled, pinned buffers and
rotary tables made), then the graph is captured; replays start from the next step.
"""

from __future__ import annotations

import torch

from ktx.core.runtime.context import DeviceBatch, ForwardBatch, Segment, forward_batch
from ktx.core.runtime.forward import layers_forward
from ktx.core.runtime.kv_cache import BlockPool

from .host_moe import check_all


class _StaticBatch(ForwardBatch):
    """A ForwardBatch whose device view is the graph's static tensors."""

    def __init__(self, pool: BlockPool, segments: list[Segment], static: DeviceBatch, device):
        super().__init__(pool, segments)
        self.static, self.device = static, device

    def on(self, device: torch.device) -> DeviceBatch:
        if device != self.device:
            raise RuntimeError(f"a CUDA graph runs on one device ({self.device}); this layer is on {device}")
        return self.static


class GraphRunner:
    eager = False  # a backend whose capture was refused runs every step eagerly (rocm/graphs.py)

    def __init__(self, model: torch.nn.Module, pool: BlockPool, batch_size: int = 1):
        self.model, self.pool, self.batch_size = model, pool, batch_size
        self.device = model.model.embed_tokens.device
        if self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device, not {self.device}")
        d, b = self.device, batch_size
        self.input_ids = torch.zeros(b, dtype=torch.long, device=d)
        self.static = DeviceBatch(
            positions=torch.zeros(b, dtype=torch.long, device=d),
            write_slots=torch.zeros(b, dtype=torch.long, device=d),
            block_table=torch.zeros(b, pool.num_blocks, dtype=torch.int32, device=d),
            seq_lens=torch.ones(b, dtype=torch.int32, device=d),
        )
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits: torch.Tensor | None = None
        # Pinned host twins of the static tensors, made once: a step's values are written
        # there and copied in stream order. Reuse is safe because step() waits for the stream
        # (check_all) before it returns, so no copy from the last step is still reading them.
        self.staging = {
            name: torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for name, t in self._statics().items()
        }

    def _statics(self) -> dict[str, torch.Tensor]:
        s = self.static
        return {
            "input_ids": self.input_ids,
            "positions": s.positions,
            "write_slots": s.write_slots,
            "block_table": s.block_table,
            "seq_lens": s.seq_lens,
        }

    def _fill(self, segments: list[Segment], tokens: torch.Tensor) -> None:
        # The step's values, staged on the CPU and copied into the static tensors in stream order.
        if len(segments) != self.batch_size or any(s.length != 1 for s in segments):
            raise ValueError(f"this graph runs {self.batch_size} sequences of one new token each")
        for s in segments:
            self.pool.reserve(s.seq, s.start + 1)
        # the eager step's own indices, as wide as the graph's block table
        staged = ForwardBatch(self.pool, segments)._device_batch(torch.device("cpu"), self.pool.num_blocks)
        values = {
            "input_ids": tokens.reshape(-1),
            "positions": staged.positions,
            "write_slots": staged.write_slots,
            "block_table": staged.block_table,
            "seq_lens": staged.seq_lens,
        }
        for name, dst in self._statics().items():
            host = self.staging[name]
            host.copy_(values[name])
            dst.copy_(host, non_blocking=True)

    def _run(self, segments: list[Segment]) -> torch.Tensor:
        batch = _StaticBatch(self.pool, segments, self.static, self.device)
        with forward_batch(batch):
            return layers_forward(self.model, self.input_ids, self.static.positions).float()

    @torch.inference_mode()
    def step(self, segments: list[Segment], tokens: torch.Tensor) -> torch.Tensor:
        """Runs one decode step for `segments` (one new token each) -> logits [batch, vocab]."""
        self._fill(segments, tokens)
        if self.eager:
            logits = self._run(segments).clone()
        elif self.graph is None:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                logits = self._run(segments).clone()  # warm-up, and this step's result
            torch.cuda.current_stream(self.device).wait_stream(side)
            self._capture(segments)
        else:
            self.graph.replay()
            logits = self.logits.clone()
        for s in segments:
            s.seq.length = s.start + 1
        check_all(self.device)
        return logits

    def _capture(self, segments: list[Segment]) -> None:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._run(segments)
