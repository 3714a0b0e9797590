"""The machine's memory bandwidth, measured now: the ceiling benchmarks compare against.

Buffers default to 1 GiB, far beyond any L3, so the figures are DRAM's, not a cache's.
"""

from __future__ import annotations

import time

import numpy as np

from . import _kernels, cpu

DEFAULT_BYTES = 1 << 30


def best_seconds(fn, repeats: int, warmup: int = 1) -> float:
    """The fastest of `repeats` timed calls of fn, after `warmup` untimed ones (page faults,
    thread start-up). Benchmarks use it too."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def read_gb_s(threads: int | None = None, nbytes: int = DEFAULT_BYTES, repeats: int = 5) -> float:
    """DRAM read bandwidth in GB/s (1e9 bytes/s), best of `repeats`."""
    threads = threads or cpu.default_threads()
    buf = np.ones(nbytes // 8, dtype=np.uint64)  # touched: pages are resident before timing
    seconds = best_seconds(lambda: _kernels.memory_read(buf.ctypes.data, buf.nbytes, threads), repeats, 0)
    return buf.nbytes / seconds / 1e9


def write_gb_s(threads: int | None = None, nbytes: int = DEFAULT_BYTES, repeats: int = 5) -> float:
    """Bandwidth of ordinary (cached) stores in GB/s of data written, best of `repeats`."""
    threads = threads or cpu.default_threads()
    buf = np.zeros(nbytes, dtype=np.uint8)
    _kernels.memory_fill(buf.ctypes.data, buf.nbytes, 1, threads)  # fault the pages in first
    seconds = best_seconds(lambda: _kernels.memory_fill(buf.ctypes.data, buf.nbytes, 7, threads), repeats, 0)
    return buf.nbytes / seconds / 1e9
