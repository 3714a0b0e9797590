"""Captured decode steps on Ascend NPUs: the CUDA backend's GraphRunner on torch_npu's aclgraph
calls (torch.npu.NPUGraph, torch.npu.graph). The CPU experts are queued inside the graph by
torch_npu's host-function launch (host_moe.py); where that launch is missing the model's steps
run eagerly, and a capture the runtime refuses is not an error either (eager steps, the same
results). None of it has run on an NPU yet."""

from __future__ import annotations

from ktx.backends.cuda.graphs import GraphRunner as CudaGraphRunner


class GraphRunner(CudaGraphRunner):
    DEVICE_TYPE = "npu"
    FALLBACK = True
