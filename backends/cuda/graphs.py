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

torch.xpu and torch_npu's torch.npu offer the same calls (Stream, stream, current_stream, graph
and XPUGraph / NPUGraph), so one runner serves them: the backends of those devices (and ROCm's)
subclass it with `FALLBACK` set, under which a capture the runtime refuses is not an error
(the runner says so once and runs every later step eagerly, with the same results). A model
whose CPU experts cannot be queued on the stream (no host-function launch there: the MoE
layer's generic path copies and waits from Python, which a capture must not hold) is never
captured: its steps run eagerly from the start.
"""

from __future__ import annotations

import logging

import torch

from ktx.core.backend import device_module, kernels
from ktx.core.ops.moe import Experts
from ktx.core.runtime.context import DeviceBatch, ForwardBatch, Segment, forward_batch
from ktx.core.runtime.forward import layers_forward
from ktx.core.runtime.kv_cache import BlockPool

from .host_moe import check_all

log = logging.getLogger("ktx.backends")
GRAPH_CLASSES = {"cuda": "CUDAGraph", "xpu": "XPUGraph", "npu": "NPUGraph"}  # torch.<device type>.<class>


class _StaticBatch(ForwardBatch):
    """A ForwardBatch whose device view is the graph's static tensors."""

    def __init__(self, pool: BlockPool, segments: list[Segment], static: DeviceBatch, device):
        super().__init__(pool, segments)
        self.static, self.device = static, device

    def on(self, device: torch.device) -> DeviceBatch:
        if device != self.device:
            raise RuntimeError(f"a decode graph runs on one device ({self.device}), this layer on {device}")
        return self.static


class GraphRunner:
    DEVICE_TYPE = "cuda"  # the torch device type (and module: torch.cuda) of this runner
    FALLBACK = False  # a refused capture: eager steps (True), or the runtime's error (CUDA)

    def __init__(self, model: torch.nn.Module, pool: BlockPool, batch_size: int = 1):
        self.model, self.pool, self.batch_size = model, pool, batch_size
        self.device = model.model.embed_tokens.device
        if self.device.type != self.DEVICE_TYPE:
            raise ValueError(f"{self.DEVICE_TYPE} graphs need the model on that device, not {self.device}")
        self.api = device_module(self.device)  # torch.cuda (ROCm's too), torch.xpu, torch.npu
        self.eager = False
        unqueued = unqueued_experts(model, self.device)
        if unqueued:
            self.eager = True
            log.warning("decode steps on %s run eagerly, not as a graph: %s", self.device, unqueued)
        d, b = self.device, batch_size
        self.input_ids = torch.zeros(b, dtype=torch.long, device=d)
        self.static = DeviceBatch(
            positions=torch.zeros(b, dtype=torch.long, device=d),
            write_slots=torch.zeros(b, dtype=torch.long, device=d),
            block_table=torch.zeros(b, pool.num_blocks, dtype=torch.int32, device=d),
            seq_lens=torch.ones(b, dtype=torch.int32, device=d),
        )
        self.graph = None  # torch.cuda.CUDAGraph, torch.xpu.XPUGraph, torch.npu.NPUGraph
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
            api = self.api
            side = api.Stream(self.device)
            side.wait_stream(api.current_stream(self.device))
            with api.stream(side):
                logits = self._run(segments).clone()  # warm-up, and this step's result
            api.current_stream(self.device).wait_stream(side)
            self._capture(segments)
        else:
            self.graph.replay()
            logits = self.logits.clone()
        for s in segments:
            s.seq.length = s.start + 1
        check_all(self.device)
        return logits

    def _capture(self, segments: list[Segment]) -> None:
        self.graph = getattr(self.api, GRAPH_CLASSES[self.DEVICE_TYPE])()
        try:
            with self.api.graph(self.graph):
                self.logits = self._run(segments)
        except RuntimeError as e:
            if not self.FALLBACK:
                raise
            self.graph, self.logits, self.eager = None, None, True
            self.api.synchronize(self.device)
            log.warning("decode graph capture refused on %s (%s): decode steps run eagerly", self.device, e)


def unqueued_experts(model: torch.nn.Module, device: torch.device) -> str | None:
    """Why a captured step could not hold this model's CPU experts (None when it can): the
    device's backend has no host-function launch here, so the MoE layer's generic path would
    copy and wait from Python."""
    if not any(isinstance(m, Experts) and m.kernel is not None for m in model.modules()):
        return None
    host_funcs = getattr(kernels(device.type), "HOST_FUNCS", None)
    if host_funcs is not None and host_funcs.available():
        return None
    what = "it has no host-function launch" if host_funcs is None else f"{host_funcs.symbol} is not available"
    return f"the model has CPU experts and {device.type}'s backend cannot queue them on its stream ({what})"
