"""The bandwidth probes: they must really read and write every byte they are timed on."""

from __future__ import annotations

import numpy as np

from ktx.core import _kernels


def test_memory_read_sums_every_word():
    words = np.random.default_rng(0).integers(0, 2**63, size=(1 << 20) + 3, dtype=np.uint64)
    expected = int(words.sum(dtype=np.uint64))  # wraps modulo 2^64, as the probe does
    for threads in (1, 2, 3):
        assert _kernels.memory_read(words.ctypes.data, words.nbytes, threads) == expected


def test_memory_fill_writes_every_byte():
    buf = np.zeros((3 << 20) + 5, dtype=np.uint8)
    _kernels.memory_fill(buf.ctypes.data, buf.nbytes, 0xA5, 2)
    assert (buf == 0xA5).all()
