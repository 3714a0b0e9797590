"""What the Ascend backend offers ktx's operators (see ktx.core.backend), for torch_npu's "npu"
device. No Triton by default: weights are dequantized on the CPU (bit-exact by construction)
and uploaded, attention runs on the operators' PyTorch path, and the CPU experts go through the
MoE layer's generic path (submitted before the shared experts, awaited after). torch_npu's
fused attention operators and graph capture with host-function launches are not wired yet.
None of it has run on an NPU yet.
"""

from __future__ import annotations

import torch

__all__ = ["DEQUANT_TYPES", "finish_step"]
DEQUANT_TYPES: frozenset[int] = frozenset()  # every type: the CPU's dequantizer, then a copy


def finish_step(device: torch.device) -> None:
    """After a step: wait for the device (its errors surface here, not in a later step)."""
    npu = getattr(torch, "npu", None)  # torch_npu adds it when imported
    if device.type == "npu" and npu is not None:
        npu.synchronize(device)
