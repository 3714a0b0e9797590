"""What the ROCm backend offers ktx's operators (see ktx.core.backend). A ROCm build of torch
exposes HIP devices as torch's "cuda" device type, so core.backend.kernels("cuda") lands here
when torch.version.hip is set.

The kernels are the CUDA backend's own Triton code, which pytorch-triton-rocm compiles for AMD
GPUs (launch parameters for 64-wide wavefronts: backends/cuda/paged_attention.py `_launch`).
The CPU experts run in stream order through HIP's hipLaunchHostFunc (libamdhip64), the same C
callbacks as on CUDA; where that library cannot be loaded, the MoE layer's generic path runs
them instead (copies that wait for the device, the shared experts overlapping on the GPU).
Graphs are torch.cuda.CUDAGraph (hipGraph) with a detected fallback (graphs.py).
None of it has run on AMD hardware yet.
"""

from __future__ import annotations

import torch

from ktx.backends.cuda.dequant import SUPPORTED as DEQUANT_TYPES
from ktx.backends.cuda.dequant import dequantize
from ktx.backends.cuda.host_moe import HostFuncs, StreamExperts, check_all
from ktx.backends.cuda.paged_attention import gqa_decode, mla_decode, warm_gqa, warm_mla

from .graphs import GraphRunner

HOST_FUNCS = HostFuncs("libamdhip64.so", "hipLaunchHostFunc")  # HIP's, same signature as CUDA's

__all__ = [
    "DEQUANT_TYPES",
    "HOST_FUNCS",
    "GraphRunner",
    "dequantize",
    "finish_step",
    "gqa_decode",
    "mla_decode",
    "stream_experts",
    "warm_gqa",
    "warm_mla",
]


def stream_experts(moe, device: torch.device) -> StreamExperts | None:
    """CPU experts in HIP stream order, or None (the generic path) without libamdhip64."""
    if not HOST_FUNCS.available():
        return None
    return StreamExperts(moe, device, HOST_FUNCS)


def finish_step(device: torch.device) -> None:
    """After a step: wait for the device and raise what the CPU experts' callbacks hit."""
    check_all(device)
