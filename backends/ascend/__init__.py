"""Huawei Ascend NPUs through torch_npu: PyTorch paths on the "npu" device for now (kernels.py).

Importing torch_npu initialises CANN and patches torch, which is slow and has side effects, so
detection only looks for the module; whether an NPU answers is checked when this backend is chosen.
"""

from __future__ import annotations

from importlib.util import find_spec

from ktx.core.backend import Detection


def detect() -> Detection:
    if find_spec("torch_npu") is None:
        return Detection("ascend", "npu", False, "torch_npu is not installed")
    return Detection("ascend", "npu", True, "torch_npu installed; device check happens when chosen")
