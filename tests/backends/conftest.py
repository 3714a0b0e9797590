"""Triton kernels of backends/cuda run here on the GPU when there is one, else in Triton's
interpreter on CPU tensors (TRITON_INTERPRET=1: the same kernel code, executed by numpy), so CI
without a GPU still checks their math against the references."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Read when a kernel is decorated, so it must be set before the kernel modules are imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def kernel_device() -> str:
    """Where the Triton kernels under test run: "cuda", or "cpu" through the interpreter."""
    pytest.importorskip("triton", reason="triton is not installed (it comes with ktx[test] on Linux x86-64)")
    return "cuda" if torch.cuda.is_available() else "cpu"
