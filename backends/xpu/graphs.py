"""Captured decode steps on Intel GPUs: the CUDA backend's GraphRunner on torch.xpu's own graph
calls (torch.xpu.XPUGraph, torch.xpu.graph: SYCL graphs underneath).

There is no host-function launch on XPU, so a model with CPU experts is never captured (the
runner says why and runs its steps eagerly); dense models, and MoE models whose experts all
live on the GPU, are. A capture the runtime refuses is not an error either: eager steps, with
the same results. None of it has run on an Intel GPU yet."""

from __future__ import annotations

from ktx.backends.cuda.graphs import GraphRunner as CudaGraphRunner


class GraphRunner(CudaGraphRunner):
    DEVICE_TYPE = "xpu"
    FALLBACK = True
