"""Shared fixtures: the demo GGUF (a real llama.cpp file) and per-ISA runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ktx.core import cpu, demo


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    """Gemma 3 270M Q4_K_M, written by llama.cpp, from the `ktx[demo]` extra.

    A missing demo package fails the tests that need it, unless KTX_NO_DEMO=1 says on purpose
    that this machine runs without it (the device machine, where 250 MB cannot travel)."""
    if os.environ.get("KTX_NO_DEMO") == "1":
        pytest.skip("KTX_NO_DEMO=1: the demo model is not on this machine")
    return demo.demo_gguf()


@pytest.fixture(params=cpu.ISAS)
def isa(request):
    """Runs the test once per kernel path, forced; a path this CPU lacks is skipped, visibly."""
    if request.param not in cpu.supported_isas():
        pytest.skip(f"this CPU cannot run the {request.param} kernels")
    with cpu.forced_isa(request.param):
        yield request.param
