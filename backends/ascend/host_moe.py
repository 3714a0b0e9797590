"""CPU experts in an NPU stream's order: torch_npu's host-function launch, for the CUDA backend's
StreamExperts (backends/cuda/host_moe.py: copy out, start, NPU works, wait, copy in).

torch_npu queues a Python callable on a stream (`torch_npu.npu._launch_host_func(stream, fn,
arg)`), which its report thread runs once the stream's earlier work is done; the stream must
first be subscribed to that thread (`_subscribe_report`, once per stream). Both also work while
an aclgraph is being captured, so a captured decode step holds the CPU experts too. The callable
is a ctypes wrapper of the C++ kernels' own start and wait functions: ctypes lets go of the GIL
for the call, so the wait for the CPU layer holds no Python lock. The two calls are private in
torch_npu (leading underscore): where they are missing, `available()` says no and the MoE
layer's generic path runs the CPU experts instead.
"""

from __future__ import annotations

import ctypes

import torch

_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class NpuHostFuncs:
    """The launcher StreamExperts takes (`available`, `launch_on`) for torch_npu's "npu" device."""

    symbol = "torch_npu.npu._launch_host_func"

    def __init__(self):
        self._ok: bool | None = None
        self._subscribed: list = []  # streams already subscribed to the report thread
        self._calls: dict[int, ctypes._CFuncPtr] = {}  # C function address -> its callable

    def available(self) -> bool:
        """Whether torch_npu is here with both calls (asked once, then remembered)."""
        if self._ok is None:
            try:
                import torch_npu
            except ImportError:
                self._ok = False
            else:
                npu = torch_npu.npu
                self._ok = hasattr(npu, "_launch_host_func") and hasattr(npu, "_subscribe_report")
        return self._ok

    def launch(self, stream, fn: int, arg: int) -> None:
        """`fn(arg)` runs on torch_npu's report thread in `stream`'s order."""
        import torch_npu

        npu = torch_npu.npu
        if not any(s == stream for s in self._subscribed):
            npu._subscribe_report(stream)
            self._subscribed.append(stream)
        call = self._calls.get(fn)
        if call is None:  # kept: a queued launch (or a captured graph) still refers to it
            call = self._calls[fn] = _CALLBACK(fn)
        npu._launch_host_func(stream, call, arg)

    def launch_on(self, device: torch.device, fn: int, arg: int) -> None:
        import torch_npu

        with torch_npu.npu.device(device):
            self.launch(torch_npu.npu.current_stream(device), fn, arg)


NPU_HOST_FUNCS = NpuHostFuncs()
