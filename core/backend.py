"""The Backend seam: which kinds of hardware ktx can run on, here and now.

For now a backend is only its detection: a name, the torch device type it places tensors on,
whether it is usable, and one line saying why. The CPU backend lives in core; accelerator
backends (backends/cuda, rocm, xpu, ascend, or a third-party package) register a cheap detector
in the entry-point group `ktx.backends`:

    [project.entry-points."ktx.backends"]
    cuda = "ktx.backends.cuda:detect"        # detect() -> Detection, no vendor import

The full protocol (attention, linear, dequantize, graph_runner ...) arrives with the backends'
issues; a detector stays what decides whether that code is ever imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "ktx.backends"


@dataclass(frozen=True)
class Detection:
    name: str  # "cpu", "cuda", ... (the entry point's name)
    device_type: str  # the torch device type its tensors live on: "cpu", "cuda", "xpu", "npu"
    available: bool
    detail: str  # one line: what was found, or why it is not usable


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
