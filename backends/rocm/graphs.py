"""Captured decode steps on ROCm: the CUDA backend's GraphRunner (torch.cuda.CUDAGraph is
hipGraph there), except that a capture the runtime refuses (ROCm 7.0 was reported to reject
host-function nodes during stream capture) is not an error: the runner says so once and runs
every later step eagerly, with the same results."""

from __future__ import annotations

import logging

import torch

from ktx.backends.cuda.graphs import GraphRunner as CudaGraphRunner
from ktx.core.runtime.context import Segment

log = logging.getLogger("ktx.backends.rocm")


class GraphRunner(CudaGraphRunner):
    def _capture(self, segments: list[Segment]) -> None:
        try:
            super()._capture(segments)
        except RuntimeError as e:
            self.graph, self.logits, self.eager = None, None, True
            torch.cuda.synchronize(self.device)
            log.warning("decode graph capture refused on %s (%s): decode steps run eagerly", self.device, e)
