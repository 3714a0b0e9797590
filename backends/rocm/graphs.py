"""Captured decode steps on ROCm: the CUDA backend's GraphRunner (torch.cuda.CUDAGraph is
hipGraph there), except that a capture the runtime refuses (ROCm 7.0 was reported to reject
host-function nodes during stream capture) is not an error: the runner says so once and runs
every later step eagerly, with the same results."""

from __future__ import annotations

from ktx.backends.cuda.graphs import GraphRunner as CudaGraphRunner


class GraphRunner(CudaGraphRunner):
    FALLBACK = True
