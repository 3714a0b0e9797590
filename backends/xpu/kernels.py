"""What the XPU backend offers ktx's operators (see ktx.core.backend), for torch's "xpu" device.
None of it has run on an Intel GPU yet.

- With Triton for XPU (pytorch-triton-xpu, which installs as `triton`), the CUDA backend's Triton
  kernels compile for Intel GPUs unchanged: GGUF dequantization and paged GQA/MLA decode (split
  across the GPU's Xe-cores). Without it, weights are dequantized on the CPU and uploaded, and
  paged decode is the portable PyTorch one (ktx.core.ops.paged_decode).
- CPU experts: no host callback from Python here, so the MoE layer's generic path submits them
  before the shared experts and awaits them after, and the copies wait for the device.
- Graphs: torch.xpu.XPUGraph, for models without CPU experts (graphs.py).
"""

from __future__ import annotations

from importlib.util import find_spec

import torch

from .graphs import GraphRunner

__all__ = ["DEQUANT_TYPES", "GraphRunner", "finish_step", "gqa_decode", "mla_decode"]
DEQUANT_TYPES: frozenset[int] = frozenset()

if find_spec("triton") is not None:
    from ktx.backends.cuda.dequant import SUPPORTED as DEQUANT_TYPES
    from ktx.backends.cuda.dequant import dequantize
    from ktx.backends.cuda.paged_attention import gqa_decode, mla_decode, warm_gqa, warm_mla

    __all__ += ["dequantize", "warm_gqa", "warm_mla"]
else:
    from ktx.core.ops.paged_decode import gqa_decode, mla_decode


def finish_step(device: torch.device) -> None:
    """After a step: wait for the device (its errors surface here, not in a later step)."""
    if device.type == "xpu":
        torch.xpu.synchronize(device)
