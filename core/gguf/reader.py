"""Parse one GGUF file: header, metadata, tensor table; data stays in the memory map.

Everything is bounds-checked before it is read, so a malformed file raises `GGUFError`
(file, byte offset, what was wrong) and never anything else. Layout (v2 and v3, little-endian):

    magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x (string key | u32 value_type | value)
    tensor_count x (string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset)
    padding to general.alignment | tensor data (offsets relative to here)
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .constants import (
    BLOCK_SIZES,
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    MAX_DIMS,
    SCALAR_FORMATS,
    SUPPORTED_VERSIONS,
    GGMLType,
    ValueType,
)
from .errors import GGUFError
from .metadata import Metadata, StringArray

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_HEADER = struct.Struct("<4sIQQ")
# Nesting deeper than this is not a model file; bounding it keeps recursion safe.
_MAX_ARRAY_DEPTH = 8
# Smallest possible encodings, used to reject absurd counts before looping over them.
_MIN_KV_BYTES = 8 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: GGMLType
    ne: tuple[int, ...]  # GGUF order: ne[0] varies fastest
    offset: int  # absolute byte offset of the data in the file
    nbytes: int
    info_offset: int  # where this entry of the tensor table starts


@dataclass
class ParsedFile:
    path: str
    version: int
    metadata: Metadata
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int
    size: int
    mm: mmap.mmap | None
    buf: Any  # memoryview over the map (or over b"" for an empty data section)


class _Cursor:
    """Reads little-endian values from the map, checking each against the file's end."""

    def __init__(self, path: str, buf: Any, size: int, pos: int = 0):
        self.path, self.buf, self.size, self.pos = path, buf, size, pos

    def fail(self, reason: str, at: int | None = None) -> GGUFError:
        return GGUFError(self.path, self.pos if at is None else at, reason)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(f"{what} needs {n} bytes but the file ends after {self.size - self.pos}")

    def unpack(self, st: struct.Struct, what: str) -> Any:
        self.need(st.size, what)
        (v,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    def string(self, what: str) -> str:
        start = self.pos
        n = self.unpack(_U64, f"length of {what}")
        if n > self.size - self.pos:  # blame the length, where the string starts
            raise self.fail(f"{what} of {n} bytes runs past the end of the file", start)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self.fail(f"{what} is not valid UTF-8: {e.reason}", start + 8 + e.start) from None

    def value_type(self, what: str) -> ValueType:
        at = self.pos
        raw = self.unpack(_U32, what)
        try:
            return ValueType(raw)
        except ValueError:
            raise self.fail(f"unknown metadata value type {raw} in {what}", at) from None

    def value(self, vtype: ValueType, key: str, depth: int = 0) -> tuple[Any, Any]:
        """Returns (value, element type) for one value of `vtype`."""
        fmt = SCALAR_FORMATS.get(vtype)
        if fmt is not None:
            return self.unpack(fmt[0], f"value of {key!r}"), None
        if vtype == ValueType.STRING:
            return self.string(f"value of {key!r}"), None
        # ARRAY: u32 element type | u64 count | elements
        if depth >= _MAX_ARRAY_DEPTH:
            raise self.fail(f"arrays nested more than {_MAX_ARRAY_DEPTH} deep in {key!r}")
        etype = self.value_type(f"element type of {key!r}")
        count_at = self.pos
        count = self.unpack(_U64, f"element count of {key!r}")
        efmt = SCALAR_FORMATS.get(etype)
        if efmt is not None:
            nbytes = count * efmt[1].itemsize
            if nbytes > self.size - self.pos:
                raise self.fail(
                    f"array {key!r} of {count} {etype.name} runs past the end of the file", count_at
                )
            arr = _frombuffer(self.buf, efmt[1], count, self.pos)
            self.pos += nbytes
            return arr, etype
        if etype == ValueType.STRING:
            if count * 8 > self.size - self.pos:
                raise self.fail(f"array {key!r} of {count} strings runs past the end of the file", count_at)
            start = self.pos
            self.pos = self._skip_strings(count, key)
            return StringArray(self.buf, self.path, start, count), etype
        # Arrays of arrays: each element carries its own element type and count.
        if count * 12 > self.size - self.pos:
            raise self.fail(f"array {key!r} of {count} arrays runs past the end of the file", count_at)
        items, inner = [], None
        for _ in range(count):
            item, inner = self.value(ValueType.ARRAY, key, depth + 1)
            items.append(item)
        return items, (ValueType.ARRAY, inner)

    def _skip_strings(self, count: int, key: str) -> int:
        # The hot loop of opening a model with a large vocabulary: no checks inside it; a
        # length that runs past the end shows up as struct.error (OverflowError once pos
        # passes 2**63) or as pos > size.
        pos, unpack, buf = self.pos, _U64.unpack_from, self.buf
        try:
            for _ in range(count):
                pos += 8 + unpack(buf, pos)[0]
        except (struct.error, OverflowError):
            pos = self.size + 1
        if pos <= self.size:
            return pos
        # Find the offending string for the message.
        pos = self.pos
        for i in range(count):
            if pos + 8 > self.size:
                raise self.fail(f"string {i} of {key!r}: length runs past the end of the file", pos)
            n = unpack(buf, pos)[0]
            if n > self.size - pos - 8:
                raise self.fail(f"string {i} of {key!r} ({n} bytes) runs past the end of the file", pos)
            pos += 8 + n
        raise AssertionError("unreachable")  # pragma: no cover


def _frombuffer(buf: Any, dtype: Any, count: int, offset: int) -> np.ndarray:
    arr = np.frombuffer(buf, dtype=dtype, count=count, offset=offset)
    arr.flags.writeable = False
    return arr


def _open_map(path: str) -> tuple[mmap.mmap | None, Any, int]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < _HEADER.size:
            raise GGUFError(
                path, 0, f"file is {size} bytes, too short for a GGUF header ({_HEADER.size} bytes)"
            )
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    return mm, memoryview(mm), size


def parse_file(path: str | os.PathLike[str]) -> ParsedFile:
    """Parses one GGUF file (not a split set) and validates its tensor table."""
    path = os.fspath(path)
    mm, buf, size = _open_map(path)
    try:
        return _parse(path, mm, buf, size)
    except BaseException:
        release_map(mm, buf)
        raise


def release_map(mm: mmap.mmap | None, buf: Any) -> None:
    """Unmaps now unless arrays still view the file; then the map lives as long as they do."""
    try:
        buf.release()
        if mm is not None:
            mm.close()
    except BufferError:
        pass


def _parse(path: str, mm: mmap.mmap, buf: Any, size: int) -> ParsedFile:
    cur = _Cursor(path, buf, size)
    magic, version, n_tensors, n_kv = _HEADER.unpack_from(buf, 0)
    if magic != GGUF_MAGIC:
        raise cur.fail(f"not a GGUF file: magic is {magic!r}, expected {GGUF_MAGIC!r}", 0)
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and int.from_bytes(version.to_bytes(4, "little"), "big") in (2, 3):
            raise cur.fail(
                "big-endian GGUF is not supported; convert the model on a little-endian machine", 4
            )
        hint = "; re-convert it with a current llama.cpp" if version == 1 else ""
        raise cur.fail(f"GGUF version {version} is not supported (ktx reads versions 2 and 3){hint}", 4)
    cur.pos = _HEADER.size
    if n_kv * _MIN_KV_BYTES > size - cur.pos:
        raise cur.fail(f"metadata count {n_kv} cannot fit in a file of {size} bytes", 16)
    if n_tensors * _MIN_TENSOR_INFO_BYTES > size - cur.pos:
        raise cur.fail(f"tensor count {n_tensors} cannot fit in a file of {size} bytes", 8)

    values: dict[str, Any] = {}
    types: dict[str, tuple[ValueType, Any]] = {}
    positions: dict[str, int] = {}
    for _ in range(n_kv):
        at = cur.pos
        key = cur.string("metadata key")
        if key in values:
            raise cur.fail(f"metadata key {key!r} appears twice", at)
        vtype = cur.value_type(f"type of {key!r}")
        values[key], etype = cur.value(vtype, key)
        types[key] = (vtype, etype)
        positions[key] = at
    metadata = Metadata(path, values, types, positions)

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in values:
        alignment = values["general.alignment"]
        atype = types["general.alignment"][0]
        if atype != ValueType.UINT32 or alignment <= 0 or alignment & (alignment - 1):
            raise cur.fail(
                f"general.alignment must be a power-of-two uint32, got {atype.name} {alignment!r}",
                positions["general.alignment"],
            )

    infos = []
    names: set[str] = set()
    for _ in range(n_tensors):
        at = cur.pos
        name = cur.string("tensor name")
        if name in names:
            raise cur.fail(f"tensor {name!r} appears twice", at)
        names.add(name)
        n_dims = cur.unpack(_U32, f"dimension count of {name!r}")
        if n_dims > MAX_DIMS:
            raise cur.fail(
                f"tensor {name!r} has {n_dims} dimensions; GGUF allows at most {MAX_DIMS}", cur.pos - 4
            )
        cur.need(8 * n_dims, f"shape of {name!r}")
        ne = struct.unpack_from(f"<{n_dims}Q", buf, cur.pos)
        cur.pos += 8 * n_dims
        type_at = cur.pos
        raw_type = cur.unpack(_U32, f"type of {name!r}")
        try:
            gtype = GGMLType(raw_type)
        except ValueError:
            raise cur.fail(f"tensor {name!r} has unknown ggml type {raw_type}", type_at) from None
        offset = cur.unpack(_U64, f"data offset of {name!r}")
        block, type_size = BLOCK_SIZES[gtype]
        n_elements = span = 1
        for d in ne:
            n_elements *= d
            span *= max(d, 1)
        # A zero dimension does not excuse the others: numpy and torch still multiply them.
        if span * type_size >= 1 << 63:
            raise cur.fail(f"tensor {name!r} has shape {list(ne)}, too large for int64 sizes", at)
        row = ne[0] if ne else 1
        if row % block:
            raise cur.fail(
                f"tensor {name!r} of type {gtype.name} has rows of {row} elements, not a multiple of "
                f"its block size {block}",
                at,
            )
        infos.append(TensorInfo(name, gtype, tuple(ne), offset, n_elements // block * type_size, at))

    data_offset = -(-cur.pos // alignment) * alignment
    tensors = [_place(cur, t, data_offset, alignment) for t in infos]
    _check_overlaps(cur, tensors)
    return ParsedFile(path, version, metadata, tensors, alignment, data_offset, size, mm, buf)


def _place(cur: _Cursor, t: TensorInfo, data_offset: int, alignment: int) -> TensorInfo:
    if t.offset % alignment:
        raise cur.fail(
            f"tensor {t.name!r}: data offset {t.offset} is not a multiple of the alignment {alignment}",
            t.info_offset,
        )
    start = data_offset + t.offset
    if start + t.nbytes > cur.size:
        raise cur.fail(
            f"tensor {t.name!r}: data [{start}, {start + t.nbytes}) runs past the end of the file "
            f"({cur.size} bytes)",
            t.info_offset,
        )
    return TensorInfo(t.name, t.type, t.ne, start, t.nbytes, t.info_offset)


def _check_overlaps(cur: _Cursor, tensors: list[TensorInfo]) -> None:
    ordered = sorted((t for t in tensors if t.nbytes), key=lambda t: t.offset)
    for a, b in itertools.pairwise(ordered):
        if b.offset < a.offset + a.nbytes:
            raise cur.fail(
                f"tensors {a.name!r} and {b.name!r} overlap: [{a.offset}, {a.offset + a.nbytes}) and "
                f"[{b.offset}, {b.offset + b.nbytes})",
                b.info_offset,
            )
