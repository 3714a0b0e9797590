"""The host CPU as ktx sees it: which kernels run (ISA), how many threads, how much memory.

The ISA is chosen once, at import of the kernels, as the best the CPU and OS support;
`KTX_ISA=scalar|avx2|avx512|amx` forces one and `KTX_THREADS` sets the thread count.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from . import _kernels

ISAS = ("scalar", "avx2", "avx512", "amx")


def isa() -> str:
    """The ISA whose kernels run now; raises RuntimeError if KTX_ISA names an unusable one."""
    return _kernels.isa()


def supported_isas() -> list[str]:
    return list(_kernels.supported_isas())


def best_isa() -> str:
    return _kernels.best_isa()


def set_isa(name: str) -> None:
    """Selects the kernels of one ISA for this process (ValueError if the CPU lacks it)."""
    _kernels.set_isa(name)


@contextlib.contextmanager
def forced_isa(name: str) -> Iterator[None]:
    """Runs a block on one ISA's kernels, then restores the previous choice."""
    try:
        previous = isa()
    except RuntimeError:
        previous = best_isa()
    set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)


def features() -> dict[str, object]:
    return dict(_kernels.cpu_features())


@cache
def physical_cores() -> int:
    """Cores (not hyper-threads) this process may run on."""
    allowed = os.sched_getaffinity(0)
    cores = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                ((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip())
            )
        except OSError:
            return len(allowed)
    return max(1, len(cores))


def default_threads() -> int:
    """KTX_THREADS if set, else one thread per physical core."""
    env = os.environ.get("KTX_THREADS")
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"KTX_THREADS={env!r} is not a number of threads") from None
        if n < 1:
            raise ValueError(f"KTX_THREADS={env!r} must be at least 1")
        return n
    return physical_cores()


def memory() -> dict[str, int]:
    """Total and available RAM in bytes (from /proc/meminfo)."""
    info = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                info[key] = int(rest.split()[0]) * 1024
    return {"total": info.get("MemTotal", 0), "available": info.get("MemAvailable", 0)}


def numa_nodes() -> int:
    nodes = list(Path("/sys/devices/system/node").glob("node[0-9]*"))
    return max(1, len(nodes))
