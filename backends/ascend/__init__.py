"""Huawei Ascend NPUs through torch_npu (kernels.py: what runs where).

Importing torch_npu initialises CANN and patches torch (it registers the "npu" device), which is
slow and has side effects, so detection only looks for the module; `activate`, called once the
backend is chosen, imports it and checks that an NPU answers.
"""

from __future__ import annotations

from importlib.util import find_spec

from ktx.core.backend import Detection


def activate() -> None:
    """Imports torch_npu (torch learns the "npu" device) and checks that an NPU answers."""
    try:
        import torch_npu  # noqa: F401
    except Exception as e:  # a CANN that is missing or not sourced fails in many ways
        raise ValueError(
            f"torch_npu failed to import ({type(e).__name__}: {e}); is CANN's set_env.sh sourced?"
        ) from None
    import torch

    if not torch.npu.is_available():
        raise ValueError("torch_npu sees no NPU (the driver? ASCEND_RT_VISIBLE_DEVICES?)")


def detect() -> Detection:
    if find_spec("torch_npu") is None:
        return Detection("ascend", "npu", False, "torch_npu is not installed")
    return Detection(
        "ascend", "npu", True, "torch_npu installed; whether an NPU answers is checked when chosen", activate
    )
