"""CPU experts run in the order of a CUDA stream: copy out, start, (GPU works), wait, copy in.

`StreamExperts.submit` enqueues on the current stream: the device-to-host copies of the
layer's input and routing into pinned buffers, then a host callback that starts the CPU MoE
layer (ktx_moe_host_submit, C++: it returns at once and the layer runs on its own thread).
The caller then enqueues the shared experts. `sync` enqueues a host callback that waits for
the layer (ktx_moe_host_sync) and the host-to-device copy of its output. Python never waits,
and the whole sequence can be captured in a CUDA graph (copies and host nodes).

The callbacks are the C++ kernels' own functions, so no Python (and no GIL) runs on CUDA's
callback thread; cuLaunchHostFunc is the driver's, reached through ctypes because the kernels
are built without CUDA. Pinned buffers are shared by all layers of a device with the same
shapes: stream order keeps one layer's use from overlapping the next.

Other runtimes bring their own launcher with the same two calls (`available`, `launch_on`):
HIP's hipLaunchHostFunc (backends/rocm), torch_npu's host-function launch (backends/ascend).
"""

from __future__ import annotations

import ctypes
import weakref

import torch

from ktx.core.backend import device_module
from ktx.core.cpu_moe import CpuMoE, HostTask


class HostFuncs:
    """A runtime's launch-a-host-function call, reached through ctypes: CUDA's driver
    cuLaunchHostFunc, or HIP's hipLaunchHostFunc (backends/rocm), same signature:
    (stream, void (*fn)(void*), void* arg) -> status."""

    def __init__(self, library: str, symbol: str):
        self.library, self.symbol = library, symbol
        self._fn = None
        self._ok: bool | None = None

    def available(self) -> bool:
        """Whether the library and its symbol load here (asked once, then remembered)."""
        if self._ok is None:
            try:
                self._load()
                self._ok = True
            except (OSError, AttributeError):
                self._ok = False
        return self._ok

    def _load(self):
        if self._fn is None:
            fn = getattr(ctypes.CDLL(self.library), self.symbol)
            fn.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
            fn.restype = ctypes.c_int
            self._fn = fn
        return self._fn

    def launch(self, stream: torch.cuda.Stream, fn: int, arg: int) -> None:
        """`fn(arg)` runs on the runtime's thread once the stream's work before it is done; work
        after it waits for it to return. The caller makes the stream's device current."""
        rc = self._load()(stream.cuda_stream, fn, arg)
        if rc != 0:
            raise RuntimeError(f"{self.symbol} failed with status {rc}")

    def launch_on(self, device: torch.device, fn: int, arg: int) -> None:
        """`launch` on the current stream of `device`, in that device's context (a layer on
        cuda:1 launches in cuda:1's context)."""
        with torch.cuda.device(device):
            self.launch(torch.cuda.current_stream(device), fn, arg)


CUDA_HOST_FUNCS = HostFuncs("libcuda.so.1", "cuLaunchHostFunc")


class _Buffers:
    """Pinned host buffers for calls of up to `rows` tokens x k experts: x, ids, weights, out."""

    def __init__(self, rows: int, k: int, hidden: int, pin: bool):
        pin = dict(pin_memory=pin)  # pinned for the device's copies (CPU stand-ins in tests: not)
        self.x = torch.empty(rows, hidden, dtype=torch.float32, **pin)
        self.ids = torch.empty(rows, k, dtype=torch.int64, **pin)
        self.weights = torch.empty(rows, k, dtype=torch.float32, **pin)
        self.out = torch.empty(rows, hidden, dtype=torch.float32, **pin)

    def first(self, n: int) -> tuple[torch.Tensor, ...]:
        """Views of the first n rows (contiguous: the tasks for n tokens use these)."""
        return self.x[:n], self.ids[:n], self.weights[:n], self.out[:n]


# Shared by every layer on a device, sized by powers of two: prefill chunks of any length
# reuse a few buffers instead of pinning new memory for each distinct token count.
_shared: dict[tuple, _Buffers] = {}
_live: weakref.WeakSet = weakref.WeakSet()


class StreamExperts:
    def __init__(self, moe: CpuMoE, device: torch.device, host_funcs: HostFuncs = CUDA_HOST_FUNCS):
        self.moe, self.device, self.host_funcs = moe, torch.device(device), host_funcs
        # one small task per (tokens, k) seen, kept: a queued callback may still point at it
        self.tasks: dict[tuple[int, int], tuple[HostTask, tuple[torch.Tensor, ...]]] = {}
        self._pending: tuple[HostTask, tuple[torch.Tensor, ...]] | None = None
        _live.add(self)

    def _task(self, n: int, k: int) -> tuple[HostTask, tuple[torch.Tensor, ...]]:
        got = self.tasks.get((n, k))
        if got is None:
            rows = 1 << max(0, n - 1).bit_length()
            key = (self.device, rows, k, self.moe.hidden)
            bufs = _shared.get(key)
            if bufs is None:
                bufs = _shared[key] = _Buffers(rows, k, self.moe.hidden, pin=self.device.type != "cpu")
            views = bufs.first(n)
            got = self.tasks[(n, k)] = (self.moe.host_task(*views), views)
        return got

    def _launch(self, fn: int, task: HostTask) -> None:
        self.host_funcs.launch_on(self.device, fn, task.address)

    def submit(self, x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> None:
        # x: [n, hidden], ids/weights: [n, k] on self.device
        # A call still pending was abandoned (its step raised between submit and sync): it is
        # awaited and dropped, so one failed step does not fail every later one.
        self.cancel()
        task, (bx, bids, bw, _) = got = self._task(*ids.shape)
        bx.copy_(x, non_blocking=True)
        bids.copy_(ids, non_blocking=True)
        bw.copy_(weights, non_blocking=True)
        self._launch(HostTask.submit_fn, task)
        self._pending = got

    def sync(self) -> torch.Tensor:
        """The layer's output [n, hidden] float32 on the device (ready in stream order)."""
        if self._pending is None:
            raise RuntimeError("StreamExperts.sync: nothing was submitted")
        (task, views), self._pending = self._pending, None
        self._launch(HostTask.sync_fn, task)
        return views[3].to(self.device, non_blocking=True)

    def cancel(self) -> None:
        """Drops a submitted call: its wait is enqueued (its buffers stay untouched until the
        CPU layer is done with them), its output is not copied back."""
        if self._pending is not None:
            (task, _), self._pending = self._pending, None
            self._launch(HostTask.sync_fn, task)

    def check(self) -> None:
        """Raises what a callback of this layer hit (call after the stream has run)."""
        for task, _ in self.tasks.values():
            task.check()


def check_all(device: torch.device | str | None = None) -> None:
    """Waits for the device's current stream (CUDA's default device when None), then raises the
    first error any CPU experts' callback recorded."""
    device = torch.device(device if device is not None else "cuda")
    accel = device_module(device)  # torch.cuda, .xpu, .npu; None for CPU stand-ins
    if accel is not None:
        accel.current_stream(device).synchronize()
    for runner in list(_live):
        runner.check()
