"""What the XPU backend offers ktx's operators (see ktx.core.backend), for torch's "xpu" device.

With Triton for XPU (pytorch-triton-xpu, which installs as `triton`), the CUDA backend's Triton
kernels compile for Intel GPUs unchanged: GGUF dequantization and paged GQA/MLA decode. Without
it, operators take their PyTorch paths (weights dequantized on the CPU and uploaded; attention
by PyTorch). The CPU experts have no host callback from Python here: the MoE layer's generic
path submits them before the shared experts and awaits them after, and the copies wait for
the device. No graph capture yet. None of it has run on an Intel GPU yet.
"""

from __future__ import annotations

from importlib.util import find_spec

import torch

__all__ = ["DEQUANT_TYPES", "finish_step"]
DEQUANT_TYPES: frozenset[int] = frozenset()

if find_spec("triton") is not None:
    from ktx.backends.cuda.dequant import SUPPORTED as DEQUANT_TYPES
    from ktx.backends.cuda.dequant import dequantize
    from ktx.backends.cuda.paged_attention import gqa_decode, mla_decode, warm_gqa, warm_mla

    __all__ += ["dequantize", "gqa_decode", "mla_decode", "warm_gqa", "warm_mla"]


def finish_step(device: torch.device) -> None:
    """After a step: wait for the device (its errors surface here, not in a later step)."""
    if device.type == "xpu":
        torch.xpu.synchronize(device)
