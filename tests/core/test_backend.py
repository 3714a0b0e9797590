"""Backend detection: the CPU first, then the `ktx.backends` entry points, each judged the way
torch itself judges the hardware; a broken detector is reported, never raised."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from importlib.util import find_spec

import pytest
import torch

from ktx.core import backend, cpu
from ktx.core.backend import Detection, detect_backends


def by_name() -> dict[str, Detection]:
    return {d.name: d for d in detect_backends()}


def test_cpu_comes_first_and_names_its_kernel_path():
    found = detect_backends()
    assert all(isinstance(d, Detection) for d in found)
    first = found[0]
    assert (first.name, first.device_type, first.available) == ("cpu", "cpu", True)
    assert first.detail.startswith(f"{cpu.isa()} kernels")
    assert f"{cpu.default_threads()} threads" in first.detail


def test_every_registered_backend_is_listed_once():
    registered = [ep.name for ep in entry_points(group=backend.ENTRY_POINT_GROUP)]
    assert {"cuda", "rocm", "xpu", "ascend"} <= set(registered)
    names = [d.name for d in detect_backends()]
    assert names == ["cpu", *dict.fromkeys(registered)]
    assert all(d.detail for d in detect_backends())


def test_detections_agree_with_torch():
    found = by_name()
    assert found["cuda"].available == bool(torch.version.cuda and torch.cuda.is_available())
    assert found["rocm"].available == bool(torch.version.hip and torch.cuda.is_available())
    assert found["xpu"].available == bool(hasattr(torch, "xpu") and torch.xpu.is_available())
    assert found["ascend"].available == (find_spec("torch_npu") is not None)
    assert {n: found[n].device_type for n in ("cuda", "rocm", "xpu", "ascend")} == {
        "cuda": "cuda",
        "rocm": "cuda",  # ROCm builds of torch expose HIP devices as "cuda"
        "xpu": "xpu",
        "ascend": "npu",
    }
    if not torch.version.cuda:
        assert "not a CUDA build" in found["cuda"].detail


@pytest.mark.skipif(not torch.cuda.is_available() or not torch.version.cuda, reason="needs a CUDA GPU")
def test_cuda_detail_names_the_devices():
    detail = by_name()["cuda"].detail
    assert torch.cuda.get_device_name(0) in detail
    major, minor = torch.cuda.get_device_capability(0)
    assert f"sm_{major}{minor}" in detail and "triton" in detail


class FakeEntryPoint:
    def __init__(self, name, load):
        self.name = name
        self.load = load


def test_a_broken_detector_is_reported_not_raised(monkeypatch):
    def raising():
        raise RuntimeError("driver exploded")

    def missing_module():
        raise ModuleNotFoundError("No module named 'vendor_sdk'")

    fakes = [
        FakeEntryPoint("boom", lambda: raising),
        FakeEntryPoint("gone", missing_module),  # the entry point's module cannot be imported
        FakeEntryPoint("odd", lambda: lambda: "yes"),
        FakeEntryPoint("fine", lambda: lambda: Detection("fine", "cuda", True, "ok")),
        FakeEntryPoint("fine", lambda: raising),  # the same name again: the first one wins
    ]
    monkeypatch.setattr(backend, "entry_points", lambda group: fakes if group == "ktx.backends" else [])
    found = detect_backends()
    assert [d.name for d in found] == ["cpu", "boom", "gone", "odd", "fine"]
    boom, gone, odd, fine = found[1:]
    assert not boom.available and "RuntimeError: driver exploded" in boom.detail
    assert not gone.available and "vendor_sdk" in gone.detail
    assert not odd.available and "not a Detection" in odd.detail
    assert fine == Detection("fine", "cuda", True, "ok")


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("KTX_ISA", "KTX_THREADS")} | env
    return subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=120
    )


def test_detection_imports_no_vendor_module():
    code = (
        "import sys\n"
        "import ktx.core.backend as b\n"
        "assert 'torch' not in sys.modules, 'importing the seam must stay cheap'\n"
        "names = ('triton', 'torch_npu', 'intel_extension_for_pytorch')\n"
        "vendor = lambda: {m for m in names if m in sys.modules}\n"
        "import torch\n"
        "before = vendor()  # whatever torch itself imports is not the detectors' doing\n"
        "b.detect_backends()\n"
        "print(sorted(vendor() - before))\n"
    )
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_an_unusable_ktx_isa_makes_the_cpu_unavailable_with_the_reason():
    r = run_python(
        "from ktx.core.backend import detect_cpu; d = detect_cpu(); print(d.available, d.detail)",
        KTX_ISA="bogus",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("False KTX_ISA=bogus: unknown ISA 'bogus'")


@pytest.mark.parametrize(("hip", "package"), [(None, "cuda"), ("6.4.0", "rocm")])
def test_kernels_for_cuda_devices_come_from_the_build_s_backend(monkeypatch, hip, package):
    """A ROCm build's HIP devices are torch's "cuda" device type; backends/rocm serves them."""
    pytest.importorskip("triton", reason="the GPU backends' kernels are Triton code")
    monkeypatch.setattr(torch.version, "hip", hip)
    backend.kernels.cache_clear()
    try:
        assert backend.kernels("cuda").__name__ == f"ktx.backends.{package}.kernels"
        assert backend.kernels("npu").__name__ == "ktx.backends.ascend.kernels"
        assert backend.kernels("cpu") is None
    finally:
        backend.kernels.cache_clear()


def test_a_chosen_backend_is_activated_and_its_failure_said(monkeypatch):
    """A backend whose check is left to its choice (Ascend: torch_npu's import) is activated
    when its device is asked for; under `auto` a failing one gives way to the next, or the CPU."""
    activated = []

    def fails():
        activated.append("npu")
        raise ValueError("torch_npu sees no NPU")

    fakes = [
        FakeEntryPoint("ascend", lambda: lambda: Detection("ascend", "npu", True, "installed", fails)),
        FakeEntryPoint(
            "other", lambda: lambda: Detection("other", "mps", True, "ok", lambda: activated.append("mps"))
        ),
    ]
    monkeypatch.setattr(backend, "entry_points", lambda group: fakes if group == "ktx.backends" else [])
    monkeypatch.delenv("KTX_DEVICE", raising=False)
    assert backend.resolve_device("auto") == "mps"
    assert activated == ["npu", "mps"]
    with pytest.raises(
        ValueError, match=r"device 'npu' \(ascend\) is not usable here: torch_npu sees no NPU"
    ):
        backend.resolve_device("npu")
    fakes.pop()
    assert backend.resolve_device("auto") == "cpu"


def test_the_ascend_backend_says_why_it_cannot_run(monkeypatch):
    from ktx.backends import ascend

    monkeypatch.setitem(sys.modules, "torch_npu", None)  # an import that fails
    with pytest.raises(ValueError, match=r"torch_npu failed to import .*set_env\.sh"):
        ascend.activate()
