"""What the CUDA backend offers ktx's operators (see ktx.core.backend): imported only once a
model is placed on a CUDA device, so this is where triton is first imported."""

from __future__ import annotations

import torch

from .dequant import SUPPORTED as DEQUANT_TYPES
from .dequant import dequantize
from .graphs import GraphRunner
from .host_moe import CUDA_HOST_FUNCS as HOST_FUNCS
from .host_moe import StreamExperts, check_all
from .paged_attention import gqa_decode, mla_decode, warm_gqa, warm_mla

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


def stream_experts(moe, device: torch.device) -> StreamExperts:
    return StreamExperts(moe, device)


def finish_step(device: torch.device) -> None:
    """After a step: wait for the device and raise what the CPU experts' callbacks hit."""
    check_all(device)
