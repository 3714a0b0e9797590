"""One MoE layer's routed experts on the C++ kernels (core/kernels/moe.h), for torch callers.

The experts' gate, up and down tensors stay GGUF-native blocks (typically views into the
mmap, not copied). Activations are quantized to int8 (a scale per 16 values, per 256 for
Q4_K/Q5_K) inside the kernels for the types that have an int8 form (Q4_0/1, Q5_0/1, Q8_0,
Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, MXFP4); other types (BF16, F16, F32, Q2_K, Q3_K), or
`exact=True`, multiply float32 activations.

    layer = CpuMoE(gate, up, down)          # each an ExpertTensor
    y = layer(x, ids, weights)              # x [n, hidden] -> [n, hidden]
    layer.submit(x, ids, weights); ...; y = layer.sync()   # overlap with other work
    task = layer.host_task(x_buf, ids_buf, w_buf, out_buf)  # fixed buffers, started by a GPU stream

An expert id of -1 skips that slot: its expert runs elsewhere (kept on the GPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from . import _kernels, cpu


@dataclass(frozen=True)
class ExpertTensor:
    """All experts of one projection: `data` holds [n_experts, rows, cols] as GGUF blocks."""

    data: np.ndarray  # uint8, C-contiguous, n_experts * rows * row_bytes bytes
    ggml_type: int
    n_experts: int
    rows: int
    cols: int


def exact_default() -> bool:
    """KTX_EXACT=1 makes the CPU kernels keep float32 activations (slower; matches a float32
    reference up to summation order)."""
    return os.environ.get("KTX_EXACT", "") not in ("", "0")


class CpuMoE:
    def __init__(
        self,
        gate: ExpertTensor,
        up: ExpertTensor,
        down: ExpertTensor,
        threads: int | None = None,
        exact: bool | None = None,
    ) -> None:
        e, inter, hidden = gate.n_experts, gate.rows, gate.cols
        for name, t, shape in (
            ("gate", gate, (e, inter, hidden)),
            ("up", up, (e, inter, hidden)),
            ("down", down, (e, hidden, inter)),
        ):
            if (t.n_experts, t.rows, t.cols) != shape:
                raise ValueError(
                    f"experts' {name} is {(t.n_experts, t.rows, t.cols)}, expected {shape} "
                    "(gate/up [experts, inter, hidden], down [experts, hidden, inter])"
                )
            if t.data.dtype != np.uint8 or not t.data.flags.c_contiguous:
                raise ValueError(f"experts' {name}: data must be C-contiguous uint8 GGUF blocks")
        self.tensors = (gate, up, down)  # keeps the buffers alive as long as the layer
        self.n_experts, self.hidden, self.inter = e, hidden, inter
        self.threads = threads or cpu.default_threads()
        self.exact = exact_default() if exact is None else exact
        self._layer = _kernels.MoeLayer(
            e,
            hidden,
            inter,
            int(gate.ggml_type),
            gate.data.ctypes.data,
            int(up.ggml_type),
            up.data.ctypes.data,
            int(down.ggml_type),
            down.data.ctypes.data,
            self.threads,
            self.exact,
        )
        self._inflight = None
        self._extras: tuple = ()

    def set_extras(
        self,
        gate_bias: torch.Tensor | None = None,
        up_bias: torch.Tensor | None = None,
        down_bias: torch.Tensor | None = None,
        swiglu: tuple[float, float] | None = None,
    ) -> None:
        """gpt-oss's experts: biases ([experts, inter] for gate and up, [experts, hidden] for down)
        and `swiglu=(alpha, limit)` for its clamped SwiGLU (else SiLU(gate) * up)."""
        shapes = {"gate": (self.n_experts, self.inter), "up": (self.n_experts, self.inter)}
        shapes["down"] = (self.n_experts, self.hidden)
        keep = []
        for name, b in (("gate", gate_bias), ("up", up_bias), ("down", down_bias)):
            if b is None:
                keep.append(None)
                continue
            if tuple(b.shape) != shapes[name]:
                raise ValueError(f"experts' {name} bias is {tuple(b.shape)}, expected {shapes[name]}")
            keep.append(b.detach().to("cpu", torch.float32).contiguous())
        self._extras = tuple(keep)  # the kernel reads them at every call
        alpha, limit = swiglu if swiglu is not None else (1.0, 0.0)
        ptrs = [b.data_ptr() if b is not None else 0 for b in keep]
        self._layer.set_extras(*ptrs, 1 if swiglu is not None else 0, float(alpha), float(limit))

    def _args(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, out: torch.Tensor | None):
        if x.dim() != 2 or x.shape[1] != self.hidden:
            raise ValueError(f"x must be [tokens, {self.hidden}], got {tuple(x.shape)}")
        if x.dtype not in (torch.float32, torch.bfloat16):
            x = x.float()
        x = x.detach().cpu().contiguous()
        ids = ids.detach().to("cpu", torch.int64).contiguous()
        weights = weights.detach().to("cpu", torch.float32).contiguous()
        if ids.shape != weights.shape or ids.dim() != 2 or ids.shape[0] != x.shape[0]:
            raise ValueError(
                f"ids {tuple(ids.shape)} and weights {tuple(weights.shape)} must both be [tokens, k] "
                f"with tokens = {x.shape[0]}"
            )
        if out is None:
            out = torch.empty(x.shape, dtype=x.dtype)
        elif (
            out.shape != x.shape
            or out.dtype not in (torch.float32, torch.bfloat16)
            or not out.is_contiguous()
        ):
            raise ValueError("out must be a contiguous float32/bfloat16 CPU tensor shaped like x")
        args = (
            x.shape[0],
            ids.shape[1],
            ids.data_ptr(),
            weights.data_ptr(),
            x.data_ptr(),
            x.dtype == torch.bfloat16,
            out.data_ptr(),
            out.dtype == torch.bfloat16,
        )
        return args, (x, ids, weights, out)

    def forward(
        self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x [n, hidden] (float32 or bfloat16), ids and weights [n, k] -> [n, hidden], x's dtype."""
        args, keep = self._args(x, ids, weights, out)
        self._layer.forward(*args)
        return keep[3]

    __call__ = forward

    def submit(
        self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, out: torch.Tensor | None = None
    ) -> None:
        """Starts forward in the background and returns at once; sync() returns the result."""
        if self._inflight is not None:
            raise RuntimeError("CpuMoE.submit: the previous call was not synced")
        args, keep = self._args(x, ids, weights, out)
        self._layer.submit(*args)
        self._inflight = keep  # the tensors must outlive the background call

    def sync(self) -> torch.Tensor:
        if self._inflight is None:
            raise RuntimeError("CpuMoE.sync: nothing was submitted")
        keep, self._inflight = self._inflight, None
        self._layer.sync()
        return keep[3]

    def cancel(self) -> None:
        """Waits for a submitted call, if any, and drops its result (its step failed)."""
        if self._inflight is not None:
            try:
                self._layer.sync()  # the call reads its tensors until then: they are dropped after
            except Exception:  # the abandoned call's own failure: its step has failed already
                pass
            finally:
                self._inflight = None

    @property
    def busy_seconds(self) -> float:
        """Time spent running calls since this layer was built (the CPU side of a hybrid step)."""
        return self._layer.busy_ns * 1e-9

    def host_task(
        self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, out: torch.Tensor
    ) -> HostTask:
        """A call on fixed CPU buffers, to be started and awaited by host callbacks (a GPU stream's).

        x [n, hidden] float32/bf16, ids [n, k] int64, weights [n, k] float32, out like x: all
        contiguous CPU tensors (pinned, for GPU copies); the task reads them when it runs.
        """
        for name, t, dtype in (("ids", ids, torch.int64), ("weights", weights, torch.float32)):
            if t.device.type != "cpu" or t.dtype != dtype or not t.is_contiguous():
                raise ValueError(f"host_task: {name} must be a contiguous {dtype} CPU tensor")
        if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) or not x.is_contiguous():
            raise ValueError("host_task: x must be a contiguous float32/bfloat16 CPU tensor")
        args, keep = self._args(x, ids, weights, out)
        if any(a.data_ptr() != b.data_ptr() for a, b in zip(keep, (x, ids, weights, out), strict=True)):
            raise ValueError("host_task: every buffer must be used in place (no conversion)")
        return HostTask(_kernels.MoeHostTask(self._layer, *args), keep)


class HostTask:
    """A CpuMoE call whose start and end are two C callbacks (`submit_fn`, `sync_fn`, each taking
    `address`), so a CUDA stream can run them in order with its kernels: cuLaunchHostFunc."""

    submit_fn = _kernels.moe_host_submit
    sync_fn = _kernels.moe_host_sync

    def __init__(self, task, buffers: tuple[torch.Tensor, ...]):
        self._task, self.buffers = task, buffers  # the buffers must live as long as the task
        self.address = task.address

    def check(self) -> None:
        """Raises what a callback hit since the last check (callbacks cannot raise themselves)."""
        error = self._task.take_error()
        if error:
            raise RuntimeError(f"CPU experts failed in a stream callback: {error}")


def expert_tensor(t) -> ExpertTensor:
    """A GGUF tensor of ktx.core.gguf ([n_experts, rows, cols]) as the kernels take it."""
    n_experts, rows, cols = (int(s) for s in t.shape)
    return ExpertTensor(t.raw, int(t.type), n_experts, rows, cols)
