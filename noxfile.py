"""Sessions: `nox -s tests` (CPU) and `nox -s image_smoke` (the CPU image built and used: what CI
runs), `nox -s lint`, `nox -s bench`; per backend, on its hardware: `tests_cuda`, `tests_rocm`,
`tests_xpu`, `tests_ascend`; `nox -s images -- TARGET|GROUP` bakes images (docker-bake.hcl).

Virtual environments are reused between runs, and scikit-build-core keeps its CMake build in
build/, so a second run only recompiles what changed.
"""

import os
import shutil
from pathlib import Path

import nox

nox.needs_version = ">=2024.3.2"
nox.options.sessions = ["lint", "tests"]
nox.options.reuse_venv = "yes"

# The CPU build of torch, installed before ktx so that ktx's torch range is already met
# (a bare `torch` from PyPI is the multi-GB CUDA build).
TORCH_CPU = "torch==2.13.0"


def install_ktx(session: nox.Session, extras: str) -> None:
    session.install(TORCH_CPU)
    session.install(f".[{extras}]")


def install_chromium(session: nox.Session) -> None:
    """Debian's Chromium for the web UI's browser test (Playwright's own download is not a
    package registry, so it is not used). Without root or apt the browser test fails and says so."""
    if shutil.which("chromium") or shutil.which("chromium-browser"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        session.warn("Chromium is missing and cannot be installed here: the web UI test will fail")
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    try:
        session.run("apt-get", "install", "-y", "--no-install-recommends", "chromium", external=True, env=env)
    except nox.command.CommandFailed:  # a stale package index: refresh it once
        session.run("apt-get", "update", external=True, env=env)
        session.run("apt-get", "install", "-y", "--no-install-recommends", "chromium", external=True, env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """The CPU test suite (what .ci/run runs)."""
    install_ktx(session, "test")
    install_chromium(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The benchmarks of bench/ (numbers, not pass/fail)."""
    install_ktx(session, "test,bench")
    session.run("python", "bench/gguf_open.py", *session.posargs)
    session.run("python", "bench/quants.py", *session.posargs)
    session.run("python", "bench/generate.py", *session.posargs)
    # builds llama-cpp-python from source in ~/.cache/ktx/llama-venv on first use (~12 min on 2 cores)
    session.run("python", "bench/vs_llamacpp.py", "--v2-lite")


# Per backend: the torch build (its wheel index, its Triton) and the marker-selected suite.
BACKENDS = {
    "cuda": ("https://download.pytorch.org/whl/cu128", ["triton"], "cuda or amx"),
    # ROCm's torch answers as torch.cuda: the cuda-marked tests are the GPU's
    "rocm": ("https://download.pytorch.org/whl/rocm6.4", ["pytorch-triton-rocm"], "cuda"),
    "xpu": ("https://download.pytorch.org/whl/xpu", ["pytorch-triton-xpu"], "xpu"),
    # torch_npu pins the torch of its own version: a bare torch_npu (2.14+) would not resolve
    "ascend": ("https://download.pytorch.org/whl/cpu", ["torch_npu==2.13.0"], "npu"),
}


def backend_tests(session: nox.Session, backend: str) -> None:
    """The tests marked for `backend`, on this machine's accelerator: torch from its index."""
    index, extra, marker = BACKENDS[backend]
    session.install(
        "--index-url", index, "--extra-index-url", "https://pypi.org/simple", "torch==2.13.0", *extra
    )
    session.install(".[test]")
    # exit 5 (nothing selected) stays a success: a marker may select nothing on a build without
    # the backend's optional parts
    session.run(
        "pytest", "-m", marker, "tests/backends", "tests/core", *session.posargs, success_codes=[0, 5]
    )


@nox.session(default=False)
def tests_cuda(session: nox.Session) -> None:
    """The cuda- and amx-marked tests, on an NVIDIA GPU (and an AMX CPU when there is one)."""
    backend_tests(session, "cuda")


@nox.session(default=False)
def tests_rocm(session: nox.Session) -> None:
    """The GPU tests on an AMD GPU (ROCm torch answers as torch.cuda)."""
    backend_tests(session, "rocm")


@nox.session(default=False)
def tests_xpu(session: nox.Session) -> None:
    """The xpu-marked tests on an Intel GPU."""
    backend_tests(session, "xpu")


@nox.session(default=False)
def tests_ascend(session: nox.Session) -> None:
    """The npu-marked tests on an Ascend NPU (CPU torch plus torch_npu)."""
    backend_tests(session, "ascend")


@nox.session(default=False, venv_backend="none")
def images(session: nox.Session) -> None:
    """`docker buildx bake` a target or group (default: cpu): nox -s images -- all."""
    session.run("docker", "buildx", "bake", *(session.posargs or ["cpu"]), external=True)


@nox.session(default=False)
def image_smoke(session: nox.Session) -> None:
    """Builds ktx:cpu (a private Docker engine when none runs) and uses it: doctor, generate,
    the server with the OpenAI and Ollama clients; bake and compose files checked (images/smoke.py)."""
    session.install("docker>=7", "httpx>=0.27", "openai>=1.40", "ollama>=0.4")
    session.run("python", "images/smoke.py", *session.posargs)


@nox.session(default=False)
def webui_smoke(session: nox.Session) -> None:
    """Open WebUI (PyPI) against `ktx serve` on loopback, wired as compose.yaml wires them: sign
    in, list models, one chat through it (images/webui_smoke.py; minutes: not in CI). Open WebUI
    gets a venv of its own, as it gets a container of its own: it pins a transformers that ktx's
    dependencies do not work with."""
    install_ktx(session, "demo")
    session.install("httpx>=0.27")
    webui = Path(".nox") / "open-webui"  # reused between runs: the install takes minutes
    if not (webui / "bin" / "open-webui").exists():
        session.run("python", "-m", "venv", str(webui))
        session.run(str(webui / "bin" / "pip"), "install", "open-webui>=0.12,<0.13", external=True)
    session.run("python", "images/webui_smoke.py", str(webui / "bin" / "open-webui"), *session.posargs)
