"""Intel GPUs (Arc, Data Center GPU Max) through torch.xpu: the CUDA backend's Triton kernels
where Triton for XPU is installed, PyTorch paths otherwise (kernels.py). Detection only asks
torch whether an XPU is there, and the import system whether Triton is (not importing it).
"""

from __future__ import annotations

from collections import Counter
from importlib.util import find_spec

from ktx.core.backend import Detection


def detect() -> Detection:
    import torch

    if not hasattr(torch, "xpu"):
        return Detection("xpu", "xpu", False, f"torch {torch.__version__} has no torch.xpu")
    if not torch.xpu.is_available():
        return Detection("xpu", "xpu", False, f"torch {torch.__version__} sees no Intel GPU")
    names = Counter(torch.xpu.get_device_name(i) for i in range(torch.xpu.device_count()))
    devices = ", ".join(name if n == 1 else f"{n}× {name}" for name, n in names.items())
    triton = "triton installed" if find_spec("triton") else "triton missing (PyTorch paths)"
    return Detection("xpu", "xpu", True, f"{devices}; {triton}")
