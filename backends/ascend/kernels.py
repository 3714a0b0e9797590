"""What the Ascend backend offers ktx's operators (see ktx.core.backend), for torch_npu's "npu"
device. None of it has run on an NPU yet.

- Dequantization: none on the NPU (no Triton by default): weights are dequantized on the CPU
  (bit-exact by construction) and uploaded.
- Paged decode: GQA through torch_npu's fused inference attention where it applies, else (and
  for MLA) the portable PyTorch decode, which a graph can capture (attention.py).
- CPU experts: queued on the NPU stream by torch_npu's host-function launch (host_moe.py); where
  torch_npu lacks it, the MoE layer's generic path (submitted before the shared experts, awaited
  after them).
- Graphs: torch.npu.NPUGraph (aclgraph), the CPU experts inside; eager steps where the capture
  is refused (graphs.py).
"""

from __future__ import annotations

import torch

from ktx.backends.cuda.host_moe import StreamExperts, check_all
from ktx.core.ops.paged_decode import mla_decode

from .attention import gqa_decode
from .graphs import GraphRunner
from .host_moe import NPU_HOST_FUNCS as HOST_FUNCS

__all__ = [
    "DEQUANT_TYPES",
    "HOST_FUNCS",
    "GraphRunner",
    "finish_step",
    "gqa_decode",
    "mla_decode",
    "stream_experts",
]
DEQUANT_TYPES: frozenset[int] = frozenset()  # every type: the CPU's dequantizer, then a copy


def stream_experts(moe, device: torch.device) -> StreamExperts | None:
    """CPU experts in NPU stream order, or None (the generic path) without torch_npu's launch."""
    if not HOST_FUNCS.available():
        return None
    return StreamExperts(moe, device, HOST_FUNCS)


def finish_step(device: torch.device) -> None:
    """After a step: wait for the device and raise what the CPU experts' callbacks hit."""
    check_all(device)
