"""AMD GPUs through ROCm/HIP: the CUDA backend's Triton kernels compiled for AMD, CPU experts in
stream order through hipLaunchHostFunc, hipGraph capture with an eager fallback (kernels.py).
Detection stays cheap: nothing here imports triton or the HIP runtime.

A ROCm build of torch exposes HIP devices as torch's "cuda" device type, hence device_type "cuda".
"""

from __future__ import annotations

from collections import Counter
from importlib.util import find_spec

from ktx.core.backend import Detection


def detect() -> Detection:
    import torch

    if not torch.version.hip:
        return Detection("rocm", "cuda", False, f"torch {torch.__version__} is not a ROCm build")
    if not torch.cuda.is_available():
        return Detection(
            "rocm",
            "cuda",
            False,
            f"ROCm {torch.version.hip} build, but no GPU is visible (HIP_VISIBLE_DEVICES?)",
        )
    names = Counter(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    devices = ", ".join(name if n == 1 else f"{n}× {name}" for name, n in names.items())
    triton = "triton installed" if find_spec("triton") else "triton missing (no fused kernels)"
    return Detection("rocm", "cuda", True, f"{devices}; ROCm {torch.version.hip}; {triton}")
