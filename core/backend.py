"""The Backend seam: which kinds of hardware ktx can run on, here and now.

For now a backend is only its detection: a name, the torch device type it places tensors on,
whether it is usable, and one line saying why. The CPU backend lives in core; accelerator
backends (backends/cuda, rocm, xpu, ascend, or a third-party package) register a cheap detector
in the entry-point group `ktx.backends`:

    [project.entry-points."ktx.backends"]
    cuda = "ktx.backends.cuda:detect"        # detect() -> Detection, no vendor import

A detector stays what decides whether a backend's code is ever imported. Once a model is
placed on a device, its operators ask `kernels(device)` for that backend's kernel module
(`ktx.backends.<name>.kernels`), which offers (all optional; an operator falls back to its
PyTorch path for what is missing):

    dequantize(raw, ggml_type, shape, dtype)      GGUF blocks on the device -> tensor
    gqa_decode(q, k_cache, v_cache, block_table, seq_lens, scale, window, softcap)
    mla_decode(q_lat, q_pe, cache, block_table, seq_lens, scale, rank)
    stream_experts(cpu_moe, device)               CPU experts started/awaited in stream order
                                                  (or None: the MoE layer's generic path)
    HOST_FUNCS                                    the host-function launch behind stream_experts
                                                  (`available()`: whether a graph can hold them)
    finish_step(device)                           after a step: wait, raise deferred errors
    DEQUANT_TYPES                                 the GGUF types `dequantize` expands there
    GraphRunner(model, pool, batch_size)          captured decode step

A Detection may also carry `activate`, run once its backend is chosen (resolve_device): where
the real check is too slow or has side effects for detection (Ascend: importing torch_npu).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from types import ModuleType

ENTRY_POINT_GROUP = "ktx.backends"
log = logging.getLogger("ktx.backend")


@dataclass(frozen=True)
class Detection:
    name: str  # "cpu", "cuda", ... (the entry point's name)
    device_type: str  # the torch device type its tensors live on: "cpu", "cuda", "xpu", "npu"
    available: bool
    detail: str  # one line: what was found, or why it is not usable
    # Called once the backend is chosen, before its device type is used: the expensive part of
    # a check (torch_npu's import registers "npu" with torch and starts CANN); raises ValueError
    # saying why the backend cannot run after all.
    activate: Callable[[], None] | None = field(default=None, compare=False, repr=False)


def detect_cpu() -> Detection:
    """The CPU backend: always present; unusable only when KTX_ISA or KTX_THREADS is wrong."""
    from . import cpu

    try:
        isa = cpu.isa()
        threads = cpu.default_threads()
    except (RuntimeError, ValueError) as e:
        return Detection("cpu", "cpu", False, str(e))
    best = cpu.best_isa()
    chosen = f"{isa} kernels" if isa == best else f"{isa} kernels (best here: {best})"
    return Detection("cpu", "cpu", True, f"{chosen}, {threads} threads")


def detect_backends() -> list[Detection]:
    """The CPU first, then every detector registered under `ktx.backends`, in the order found.

    A detector that raises is reported as unavailable with its error: one broken plugin must not
    stop ktx from listing (or running on) the others.
    """
    found = [detect_cpu()]
    seen = {"cpu"}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in seen:  # the same package seen twice on sys.path (editable + installed)
            continue
        seen.add(ep.name)
        found.append(_run_detector(ep))
    return found


def _run_detector(ep) -> Detection:
    try:
        result = ep.load()()
    except Exception as e:
        return Detection(ep.name, "?", False, f"detector failed: {type(e).__name__}: {e}")
    if not isinstance(result, Detection):
        return Detection(ep.name, "?", False, f"detector returned {type(result).__name__}, not a Detection")
    return result


# torch device type -> the backend package whose kernels serve it (a ROCm build's "cuda" devices
# are served by backends/rocm: see kernels()).
KERNEL_PACKAGES = {"cuda": "cuda", "xpu": "xpu", "npu": "ascend"}


@cache
def kernels(device_type: str) -> ModuleType | None:
    """The kernel module of the backend for a torch device type; None for the CPU (the C++
    kernels are core's own) or where the backend offers none (operators use PyTorch then)."""
    package = KERNEL_PACKAGES.get(device_type)
    if package is None:
        return None
    if device_type == "cuda":
        import torch

        if torch.version.hip:  # a ROCm build: HIP devices answer as "cuda"
            package = "rocm"
    try:
        return importlib.import_module(f"ktx.backends.{package}.kernels")
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith(f"ktx.backends.{package}"):
            return None
        raise


def device_module(device) -> ModuleType | None:
    """torch's module for an accelerator's device type (torch.cuda, torch.xpu, torch.npu once
    torch_npu is imported), which offer the same synchronize / memory calls; None for the CPU."""
    import torch

    if device.type in ("cpu", "meta"):
        return None
    return getattr(torch, device.type, None)


def resolve_device(device: str) -> str:
    """'auto' -> the first usable accelerator (else 'cpu'); 'cuda', 'cuda:1' ... checked usable.

    KTX_DEVICE overrides 'auto' (the CPU test suite sets it to cpu on GPU machines)."""
    import os

    if device == "auto":
        device = os.environ.get("KTX_DEVICE", "auto")
    if device == "cpu":
        return "cpu"
    found: dict[str, Detection] = {}
    for d in detect_backends():  # CUDA and ROCm builds both say "cuda": keep the usable one
        if d.device_type in ("cpu", "?"):
            continue
        if d.device_type not in found or (d.available and not found[d.device_type].available):
            found[d.device_type] = d
    if device == "auto":
        for d in found.values():
            if not d.available:
                continue
            try:
                _activate(d)
            except ValueError as e:  # installed but not working here: the next one, or the CPU
                log.warning("%s", e)
                continue
            return d.device_type
        return "cpu"
    kind, _, index = device.partition(":")
    if kind not in found or (index and not index.isdigit()):
        known = ", ".join(["cpu", *sorted(found)])
        raise ValueError(f"device {device!r}: unknown; use auto, {known} (with :N for one of several)")
    if not found[kind].available:
        raise ValueError(f"device {device!r} is not usable here: {found[kind].detail}")
    _activate(found[kind])
    return device


def _activate(d: Detection) -> None:
    if d.activate is not None:
        try:
            d.activate()
        except ValueError as e:
            raise ValueError(f"device {d.device_type!r} ({d.name}) is not usable here: {e}") from None
