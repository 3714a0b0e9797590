"""Shared fixtures: the demo GGUF (a real llama.cpp file) and per-ISA runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ktx.core import cpu, demo

# `device="auto"` would place models on a GPU where one exists (the device machine); the CPU
# suite checks the CPU path there too. Tests of the GPU path name their device.
os.environ.setdefault("KTX_DEVICE", "cpu")


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    """Gemma 3 270M Q4_K_M, written by llama.cpp, from the `ktx[demo]` extra.

    A missing demo package fails the tests that need it, unless KTX_NO_DEMO=1 says on purpose
    that this machine runs without it (the device machine, where 250 MB cannot travel)."""
    if os.environ.get("KTX_NO_DEMO") == "1":
        pytest.skip("KTX_NO_DEMO=1: the demo model is not on this machine")
    return demo.demo_gguf()


@pytest.fixture
def exact_kernels(monkeypatch):
    """KTX_EXACT=1: the CPU kernels keep activations float32, so a comparison with a float32
    reference differs by summation order only."""
    monkeypatch.setenv("KTX_EXACT", "1")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """tiny_gguf(name, qtype="q4_k_m") -> a GGUF of tiny_models' `name` (converted by ktx
    convert), made once per session and shared by the tests that only read it."""
    from tiny_models import make_tiny

    from ktx.core.convert.hf_to_gguf import convert_hf

    made = {}

    def get(name: str, qtype: str = "q4_k_m") -> Path:
        if (name, qtype) not in made:
            d = tmp_path_factory.mktemp(f"{name}-{qtype}")
            made[name, qtype] = d / "m.gguf"
            convert_hf(make_tiny(name, d / "hf"), made[name, qtype], qtype, progress=False)
        return made[name, qtype]

    return get


# "amx-emulated": AMX's kernel table with the tile instructions done in scalar code, so the AMX
# path's packing and scaling are tested on any AVX-512 machine (the real instructions need one
# with AMX: the device machine).
ISA_PARAMS = [
    pytest.param(i, marks=pytest.mark.amx) if i == "amx" else i for i in (*cpu.ISAS, "amx-emulated")
]


@pytest.fixture(params=ISA_PARAMS)
def isa(request):
    """Runs the test once per kernel path, forced; a path this CPU lacks is skipped, visibly."""
    needs = "avx512" if request.param == "amx-emulated" else request.param
    if needs not in cpu.supported_isas():
        pytest.skip(f"this CPU cannot run the {request.param} kernels")
    with cpu.forced_isa(request.param):
        yield request.param
