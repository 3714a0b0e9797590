"""Kernel-path selection (cpuid dispatch, KTX_ISA) and thread settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ktx.core import _kernels, cpu


def run_isa(env_isa: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "KTX_ISA"}
    if env_isa is not None:
        env["KTX_ISA"] = env_isa
    code = "from ktx.core import cpu; print(cpu.isa())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_best_isa_follows_cpu_features():
    f = cpu.features()
    supported = cpu.supported_isas()
    assert supported[0] == "scalar"
    assert ("avx2" in supported) == bool(f["avx2"] and f["fma"] and f["f16c"] and f["os_avx"])
    assert ("avx512" in supported) == bool(
        "avx2" in supported
        and f["avx512f"]
        and f["avx512bw"]
        and f["avx512vl"]
        and f["avx512dq"]
        and f["os_avx512"]
    )
    if "amx" in supported:
        assert f["amx_tile"] and f["amx_int8"] and f["amx_bf16"] and f["os_amx"]
    assert cpu.best_isa() == supported[-1]
    assert run_isa(None).stdout.strip() == supported[-1]


@pytest.mark.parametrize("name", ["scalar", "avx2", "avx512", "amx"])
def test_ktx_isa_forces_a_path(name):
    r = run_isa(name)
    if name in cpu.supported_isas():
        assert r.returncode == 0 and r.stdout.strip() == name
    else:
        assert r.returncode != 0
        assert f"KTX_ISA={name}" in r.stderr and "supports" in r.stderr


def test_unknown_ktx_isa_is_a_clear_error():
    r = run_isa("sse9")
    assert r.returncode != 0
    assert "unknown ISA 'sse9'" in r.stderr and "unset KTX_ISA" in r.stderr


def test_forced_isa_restores_the_previous_path():
    before = cpu.isa()
    with cpu.forced_isa("scalar"):
        assert cpu.isa() == "scalar"
    assert cpu.isa() == before
    with pytest.raises(ValueError, match="unknown ISA"):
        cpu.set_isa("sse9")


@pytest.mark.skipif("amx" in cpu.supported_isas(), reason="this CPU has AMX")
def test_amx_refused_without_amx():
    with pytest.raises(ValueError, match="cannot run the 'amx' kernels"):
        cpu.set_isa("amx")
    with pytest.raises(RuntimeError, match="no AMX"):
        _kernels.amx_selftest()


@pytest.mark.amx
def test_amx_tiles_compute_exact_products():
    if "amx" not in cpu.supported_isas():
        pytest.skip("needs AMX (the device machine has it)")
    assert _kernels.amx_selftest() is True


def test_threads(monkeypatch):
    monkeypatch.delenv("KTX_THREADS", raising=False)
    assert 1 <= cpu.default_threads() == cpu.physical_cores() <= os.cpu_count()
    monkeypatch.setenv("KTX_THREADS", "3")
    assert cpu.default_threads() == 3
    for bad in ("0", "many"):
        monkeypatch.setenv("KTX_THREADS", bad)
        with pytest.raises(ValueError, match="KTX_THREADS"):
            cpu.default_threads()


def test_memory_is_read():
    m = cpu.memory()
    assert 0 < m["available"] <= m["total"]
