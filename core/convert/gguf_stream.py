"""Write a GGUF file tensor by tensor, chunk by chunk, so a 400 GB model never sits in memory.

gguf-py's GGUFWriter writes the header, metadata and tensor table; the data section is then
streamed here with the same alignment rules (each tensor starts at a multiple of the file's
alignment, 32 bytes). A tensor may arrive in pieces (one expert at a time) as long as its pieces
add up to exactly its byte size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import gguf
import numpy as np

from ..gguf.constants import BLOCK_SIZES, GGMLType
from ..gguf.writer import add_metadata


def tensor_nbytes(shape: tuple[int, ...], ggml_type: GGMLType) -> int:
    block, size = BLOCK_SIZES[ggml_type]
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if shape and shape[-1] % block:
        raise ValueError(f"rows of {shape[-1]} values do not fill {ggml_type.name} blocks of {block}")
    return n // block * size


class StreamWriter:
    """GGUFWriter for the header; then `write(name, pieces)` per tensor in the order they were added."""

    def __init__(self, path: str | os.PathLike[str], arch: str) -> None:
        self.gw = gguf.GGUFWriter(os.fspath(path), arch)
        self._order: list[tuple[str, int]] = []
        self._sizes: dict[str, int] = {}
        self._next = 0

    def add_metadata(self, items: Mapping[str, Any]) -> None:
        """Adds key/values with llama.cpp's types: bool, uint32 counts, float32, string, arrays."""
        add_metadata(self.gw, items)

    def add_tensor(self, name: str, shape: tuple[int, ...], ggml_type: GGMLType) -> int:
        """Declares a tensor (numpy-order shape); returns its byte size."""
        nbytes = tensor_nbytes(shape, ggml_type)
        self.gw.add_tensor_info(
            name,
            list(shape),
            np.dtype(np.float32),
            nbytes,
            raw_dtype=gguf.GGMLQuantizationType(int(ggml_type)),
        )
        self._order.append((name, nbytes))
        self._sizes[name] = nbytes
        return nbytes

    def nbytes(self, name: str) -> int:
        return self._sizes[name]

    def begin(self) -> None:
        """Writes header, metadata and tensor table; `write` calls may follow."""
        self.gw.write_header_to_file()
        self.gw.write_kv_data_to_file()
        self.gw.write_ti_data_to_file()
        assert self.gw.fout is not None and len(self.gw.fout) == 1
        self._fout = self.gw.fout[0]

    def write(self, name: str, pieces: Iterable[np.ndarray]) -> None:
        """Appends the next tensor's data; `pieces` concatenated must be exactly its bytes."""
        expected_name, nbytes = self._order[self._next]
        if name != expected_name:
            raise RuntimeError(f"tensor {name!r} written out of order (expected {expected_name!r})")
        self.gw.write_padding(self._fout, self._fout.tell())
        written = 0
        for piece in pieces:
            piece = np.ascontiguousarray(piece)
            written += piece.nbytes
            if written > nbytes:
                break
            piece.tofile(self._fout)
        if written != nbytes:
            raise RuntimeError(f"tensor {name!r}: {written} bytes of data for a {nbytes}-byte tensor")
        self.gw.write_padding(self._fout, nbytes)
        self._next += 1

    def finish(self) -> None:
        """Closes the file after checking that every declared tensor was written."""
        missing = len(self._order) - self._next
        self.close()
        if missing:
            raise RuntimeError(f"{missing} declared tensors were never written")

    def close(self) -> None:
        self.gw.close()


class Progress:
    """A rich progress bar over bytes written (on stderr), or nothing when disabled."""

    def __init__(self, total_bytes: int, enabled: bool, label: str) -> None:
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}", table_column=None),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._bar.add_task(label, total=total_bytes)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def tensor(self, name: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=f"{name:<34}")

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, nbytes)
