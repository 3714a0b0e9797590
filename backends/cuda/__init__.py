"""NVIDIA GPUs through CUDA: will hold the Triton/CUDA kernels (attention, dequantize-and-matmul,
MLA) and the CUDA-graph runner of the decode step. Those arrive with this backend's own issue;
for now it only answers whether CUDA is usable here.

Nothing here imports triton: its presence is read from the import system, so detecting stays cheap.
"""

from __future__ import annotations

from collections import Counter
from importlib.util import find_spec

from ktx.core.backend import Detection


def detect() -> Detection:
    import torch

    if not torch.version.cuda:
        return Detection("cuda", "cuda", False, f"torch {torch.__version__} is not a CUDA build")
    if not torch.cuda.is_available():
        return Detection(
            "cuda",
            "cuda",
            False,
            f"CUDA {torch.version.cuda} build, but no GPU is visible (driver? CUDA_VISIBLE_DEVICES?)",
        )
    names = Counter(
        f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))})"
        for i in range(torch.cuda.device_count())
    )
    devices = ", ".join(name if n == 1 else f"{n}× {name}" for name, n in names.items())
    triton = "triton installed" if find_spec("triton") else "triton missing (no fused kernels)"
    return Detection("cuda", "cuda", True, f"{devices}; CUDA {torch.version.cuda}; {triton}")
