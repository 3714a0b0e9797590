"""`open()`: a GGUF model as one object, whether it is one file, a split set
(`name-00001-of-00003.gguf` ...), or a directory holding either."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .constants import BLOCK_SIZES, PLAIN_DTYPES, GGMLType
from .errors import GGUFError
from .metadata import Metadata
from .reader import ParsedFile, TensorInfo, parse_file, release_map

if TYPE_CHECKING:
    import torch

SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(eq=False)
class GGUFTensor:
    """One tensor: its type, its shape, and its data as a zero-copy view of the file."""

    name: str
    type: GGMLType
    shape: tuple[int, ...]  # numpy / PyTorch order (outermost first): reversed GGUF `ne`
    offset: int  # absolute byte offset in `path`
    nbytes: int
    path: str
    _shard: ParsedFile

    @property
    def ne(self) -> tuple[int, ...]:
        """The shape in GGUF order (ne[0] varies fastest)."""
        return tuple(reversed(self.shape))

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def data(self) -> np.ndarray:
        """Read-only view of the bytes in the file: a float/int array for plain types, else
        uint8 of shape (*shape[:-1], bytes per row) — the raw blocks."""
        if self._shard.mm is None or self._shard.mm.closed:
            raise ValueError(f"{self.path} is closed")
        plain = PLAIN_DTYPES.get(self.type)
        if plain is not None:
            arr = np.frombuffer(self._shard.buf, dtype=plain, count=self.n_elements, offset=self.offset)
            arr = arr.reshape(self.shape)
        else:
            arr = np.frombuffer(self._shard.buf, dtype=np.uint8, count=self.nbytes, offset=self.offset)
            block, type_size = BLOCK_SIZES[self.type]
            rows = self.shape[:-1] if self.shape else ()
            last = self.shape[-1] if self.shape else 1
            arr = arr.reshape((*rows, last // block * type_size))
        arr.flags.writeable = False
        return arr

    @property
    def raw(self) -> np.ndarray:
        """All the tensor's bytes as one flat uint8 view of the file (no copy): what the C++
        kernels take for GGUF-native weights."""
        return self.data.reshape(-1).view(np.uint8)

    def dequantize(self, dtype: Any = None, *, out: torch.Tensor | None = None, threads: int | None = None):
        """The tensor as a torch float32 (default) or bfloat16 tensor of `shape`."""
        from .quants import dequantize

        return dequantize(self.data, self.type, self.shape, dtype, out=out, threads=threads)

    def __repr__(self) -> str:
        return f"GGUFTensor({self.name!r}, {self.type.name}, shape={self.shape})"


class GGUFFile:
    """A GGUF model: `metadata` (key -> value) and `tensors` (name -> GGUFTensor), over one or
    more memory-mapped files. Use as a context manager or call `close()`."""

    def __init__(self, shards: list[ParsedFile]):
        self._shards = shards
        first = shards[0]
        self.paths = [s.path for s in shards]
        self.path = first.path
        self.version = first.version
        self.metadata: Metadata = first.metadata
        self.alignment = first.alignment
        self.tensors: dict[str, GGUFTensor] = {}
        for shard in shards:
            for t in shard.tensors:
                if t.name in self.tensors:
                    raise GGUFError(
                        shard.path, t.info_offset, f"tensor {t.name!r} is also in {self.tensors[t.name].path}"
                    )
                self.tensors[t.name] = _tensor(shard, t)

    @property
    def architecture(self) -> str | None:
        return self.metadata.architecture

    @property
    def nbytes(self) -> int:
        return sum(s.size for s in self._shards)

    def __iter__(self) -> Iterator[GGUFTensor]:
        return iter(self.tensors.values())

    def close(self) -> None:
        for shard in self._shards:
            release_map(shard.mm, shard.buf)

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        files = f"{len(self.paths)} files" if len(self.paths) > 1 else self.path
        return f"GGUFFile({files}, {self.architecture!r}, {len(self.tensors)} tensors)"


def _tensor(shard: ParsedFile, t: TensorInfo) -> GGUFTensor:
    return GGUFTensor(t.name, t.type, tuple(reversed(t.ne)), t.offset, t.nbytes, shard.path, shard)


def open(path: str | os.PathLike[str]) -> GGUFFile:
    """Opens a GGUF model: a file, any shard of a split set, or a directory holding one model.

    Raises GGUFError for malformed or inconsistent files, FileNotFoundError if nothing is there.
    """
    shard_paths = model_files(path)
    shards: list[ParsedFile] = []
    try:
        for p in shard_paths:
            shards.append(parse_file(p))
        _check_split(shards)
        return GGUFFile(shards)
    except BaseException:
        for s in shards:
            release_map(s.mm, s.buf)
        raise


def model_files(path: str | os.PathLike[str]) -> list[Path]:
    """The file(s) that make up the model at `path`, first shard first."""
    p = Path(path)
    if p.is_dir():
        return _from_directory(p)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or directory")
    m = SPLIT_NAME.match(p.name)
    if not m:
        return [p]
    count = int(m["count"])
    if count < 1 or not 1 <= int(m["no"]) <= count:
        raise GGUFError(p, None, f"file name says shard {int(m['no'])} of {count}")
    files = [p.with_name(f"{m['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise GGUFError(
            p, None, f"split model is missing {len(missing)} of {count} files: {', '.join(missing)}"
        )
    return files


def _from_directory(d: Path) -> list[Path]:
    # A vision projector (mmproj-*.gguf) often sits beside the model; it is not the model.
    candidates = sorted(f for f in d.glob("*.gguf") if f.is_file() and not f.name.startswith("mmproj"))
    models: dict[str, Path] = {}
    for f in candidates:  # sorted, so a split set is represented by its lowest shard
        m = SPLIT_NAME.match(f.name)
        models.setdefault(f"{m['stem']}-*-of-{m['count']}.gguf" if m else f.name, f)
    if not models:
        raise FileNotFoundError(f"{d}: no .gguf model in this directory")
    if len(models) > 1:
        raise GGUFError(
            d, None, f"directory holds {len(models)} models ({', '.join(sorted(models))}); pass one file"
        )
    return model_files(next(iter(models.values())))


def _check_split(shards: list[ParsedFile]) -> None:
    """Checks the `split.*` metadata llama.cpp's gguf-split writes against the file set."""
    count = len(shards)
    for i, s in enumerate(shards):
        declared = s.metadata.get_int("split.count", None)
        if declared is None:
            if count > 1:
                raise GGUFError(s.path, None, f"shard {i + 1} of {count} has no split.count metadata")
            continue
        if declared != count:
            hint = "; open it by its shard-numbered name" if count == 1 else ""
            raise GGUFError(
                s.path,
                s.metadata.offset("split.count"),
                f"split.count is {declared} but {count} file(s) were found{hint}",
            )
        no = s.metadata.get_int("split.no", i)
        if no != i:
            raise GGUFError(
                s.path, s.metadata.offset("split.no"), f"split.no is {no}, expected {i} from the file name"
            )
    md = shards[0].metadata
    total = md.get_int("split.tensors.count", None)
    held = sum(len(s.tensors) for s in shards)
    if total is not None and total != held:
        raise GGUFError(
            shards[0].path,
            md.offset("split.tensors.count"),
            f"split.tensors.count is {total} but the shards hold {held} tensors",
        )
