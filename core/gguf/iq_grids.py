"""The i-quants' code books for the C++ kernels, taken from gguf-py at first use.

IQ1_S/M, IQ2_XXS/XS/S and IQ3_XXS/S index grids of 4 or 8 small integers, and the 2-bit i-quants
expand 7 sign bits to 8 through a 128-entry table. gguf-py (a dependency, and the tests'
reference dequantizer) holds them as data; ktx copies them into the kernels' tables once
(core/kernels/iq_grids.h) rather than carrying a copy in its sources. The kernels' bindings call
`load()` themselves before a kernel of such a type is built or run.
"""

from __future__ import annotations

import threading

import numpy as np

_LOCK = threading.Lock()

# kernel table name -> gguf-py class name
TABLES = {
    "iq2xxs": "IQ2_XXS",
    "iq2xs": "IQ2_XS",
    "iq2s": "IQ2_S",
    "iq3xxs": "IQ3_XXS",
    "iq3s": "IQ3_S",
    "iq1s": "IQ1_S",
}


def load() -> None:
    """Copies every code book into the kernels (once; later calls return at once)."""
    from .. import _kernels

    with _LOCK:
        if _kernels.iq_grids_ready():
            return
        from gguf import quants

        for name, cls_name in TABLES.items():
            cls = getattr(quants, cls_name)
            cls.init_grid()
            values = np.ascontiguousarray(np.asarray(cls.grid).reshape(-1), dtype=np.int8)
            if not np.array_equal(values, np.asarray(cls.grid).reshape(-1)):
                raise RuntimeError(f"gguf-py's {cls_name} grid does not hold small integers")
            _set(_kernels, name, values)
        _set(_kernels, "ksigns", np.frombuffer(quants.IQ2_XXS.ksigns, dtype=np.uint8).view(np.int8).copy())


def _set(kernels, name: str, values: np.ndarray) -> None:
    if not kernels.set_iq_grid(name, values.ctypes.data, values.size):
        raise RuntimeError(f"gguf-py's {name} table has {values.size} entries, not what the kernels expect")
