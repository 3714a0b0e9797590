"""Sessions: `nox -s tests` (CPU, what CI runs), `nox -s lint`, `nox -s bench`.

Virtual environments are reused between runs, and scikit-build-core keeps its CMake build in
build/, so a second run only recompiles what changed.
"""

import os
import shutil

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
