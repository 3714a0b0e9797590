"""GGUF at the byte level, for tests: valid files, and broken ones with every offset known.

    b = GGUFBuilder(alignment=64)                       # also writes general.alignment
    b.kv("general.architecture", ValueType.STRING, "llama")
    b.kv("x.nested", ValueType.ARRAY, Array(ValueType.ARRAY, [Array(ValueType.INT32, [1, 2])]))
    b.tensor("w", (64, 2), GGMLType.Q8_0)               # ne in GGUF order; zeros unless data given
    g = b.build()
    g.data, g.kv_at["x.nested"], g.value_at("x.nested"), g.info_at["w"], g.data_at["w"]

Nothing here checks anything: a key may repeat, a count may lie (`Array(..., count=...)`,
`GGUFBuilder(n_kv=...)`), a type may be unknown, a value may be `Raw` bytes. Layout (v2, v3):

    magic | u32 version | u64 n_tensors | u64 n_kv
    n_kv x      (string key | u32 value type | value)
    n_tensors x (string name | u32 n_dims | u64 ne[n_dims] | u32 ggml type | u64 data offset)
    zero padding to the alignment | tensor data (offsets relative to its start)

A string is u64 length | bytes; an array is u32 element type | u64 count | elements, where an
element that is itself an array carries its own type and count.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ktx.core.gguf import BLOCK_SIZES, GGMLType, ValueType

SCALAR_FORMATS = {
    ValueType.UINT8: "B",
    ValueType.INT8: "b",
    ValueType.UINT16: "H",
    ValueType.INT16: "h",
    ValueType.UINT32: "I",
    ValueType.INT32: "i",
    ValueType.FLOAT32: "f",
    ValueType.BOOL: "?",
    ValueType.UINT64: "Q",
    ValueType.INT64: "q",
    ValueType.FLOAT64: "d",
}
HEADER_SIZE = 4 + 4 + 8 + 8
DEFAULT_ALIGNMENT = 32
U64_MAX = (1 << 64) - 1


@dataclass(frozen=True)
class Array:
    """An array value: `items` of `etype` (for etype ARRAY, each item is an Array)."""

    etype: int
    items: list[Any]
    count: int | None = None  # written instead of len(items), to lie about the length


@dataclass(frozen=True)
class Raw:
    """Bytes written as they are where a value would go."""

    data: bytes


def nbytes(ne: tuple[int, ...], ggml_type: int) -> int:
    """Bytes of a tensor's data (0 for a type ggml does not know)."""
    if ggml_type not in BLOCK_SIZES:
        return 0
    block, type_size = BLOCK_SIZES[GGMLType(ggml_type)]
    n = 1
    for d in ne:
        n *= d
    return n // block * type_size


def align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


class ByteWriter:
    """Appends GGUF fields to `out`, noting where every integer field (count, length, type,
    dimension, offset) went so that a fuzzer can aim at them."""

    def __init__(self, order: str = "<"):
        self.out = bytearray()
        self.order = order
        self.ints: list[tuple[int, int]] = []  # (offset, size), integer values of 4 and 8 bytes too

    def pack(self, fmt: str, v: Any) -> None:
        self.out += struct.pack(self.order + fmt, v)

    def u32(self, v: int) -> None:
        self.ints.append((len(self.out), 4))
        self.pack("I", v)

    def u64(self, v: int) -> None:
        self.ints.append((len(self.out), 8))
        self.pack("Q", v)

    def string(self, s: str | bytes) -> None:
        raw = s.encode() if isinstance(s, str) else s
        self.u64(len(raw))
        self.out += raw

    def value(self, vtype: int, v: Any) -> None:
        if isinstance(v, Raw):
            self.out += v.data
        elif vtype in SCALAR_FORMATS:
            fmt = SCALAR_FORMATS[ValueType(vtype)]
            if fmt in "IiQq":
                self.ints.append((len(self.out), struct.calcsize(fmt)))
            self.pack(fmt, v)
        elif vtype == ValueType.STRING:
            self.string(v)
        elif vtype == ValueType.ARRAY:
            self.u32(v.etype)
            self.u64(len(v.items) if v.count is None else v.count)
            for item in v.items:
                self.value(v.etype, item)
        else:
            raise ValueError(f"value type {vtype} needs a Raw value")

    def header(self, version: int, n_tensors: int, n_kv: int, magic: bytes = b"GGUF") -> None:
        self.out += magic
        self.u32(version)
        if version == 1:  # v1 counted in u32 (its strings too; only the header is written that way)
            self.u32(n_tensors)
            self.u32(n_kv)
        else:
            self.u64(n_tensors)
            self.u64(n_kv)

    def kv(self, key: str | bytes, vtype: int, value: Any) -> None:
        self.string(key)
        self.u32(vtype)
        self.value(vtype, value)

    def tensor_info(self, name: str | bytes, ne: tuple[int, ...], ggml_type: int, offset: int) -> None:
        self.string(name)
        self.u32(len(ne))
        for d in ne:
            self.u64(d)
        self.u32(ggml_type)
        self.u64(offset)


def encode(vtype: int, value: Any) -> bytes:
    """One value's bytes, e.g. encode(ValueType.STRING, "hi") == b"\\x02" + 7 * b"\\0" + b"hi"."""
    w = ByteWriter()
    w.value(vtype, value)
    return bytes(w.out)


@dataclass
class Tensor:
    name: str | bytes
    ne: tuple[int, ...]
    type: int
    data: bytes
    offset: int | None  # relative to the data section; None: the next aligned spot


@dataclass
class Built:
    """A built file and where its parts are (a repeated key or name maps to its last entry)."""

    data: bytes
    kv_at: dict[str | bytes, int]  # start of each metadata entry (its key's length)
    info_at: dict[str | bytes, int]  # start of each tensor-info entry (its name's length)
    data_offset: int  # start of the tensor data section
    data_at: dict[str | bytes, int]  # absolute start of each tensor's data
    ints: list[tuple[int, int]]  # (offset, size) of every integer field

    def value_at(self, key: str | bytes) -> int:
        """Where the value of `key` starts (after its key and value type)."""
        return self.kv_at[key] + 8 + len(key.encode() if isinstance(key, str) else key) + 4

    def type_at(self, name: str | bytes) -> int:
        """Where the ggml type of tensor `name` is."""
        start = self.info_at[name] + 8 + len(name.encode() if isinstance(name, str) else name)
        (n_dims,) = struct.unpack_from("<I", self.data, start)
        return start + 4 + 8 * n_dims

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.data)
        return path


@dataclass
class GGUFBuilder:
    version: int = 3
    alignment: int | None = None  # also written as general.alignment (first) when given
    magic: bytes = b"GGUF"
    big_endian: bool = False
    n_kv: int | None = None  # header counts, if they should lie
    n_tensors: int | None = None
    kvs: list[tuple[str | bytes, int, Any]] = field(default_factory=list)
    tensors: list[Tensor] = field(default_factory=list)

    def __post_init__(self):
        if self.alignment is not None:
            self.kv("general.alignment", ValueType.UINT32, self.alignment)

    def kv(self, key: str | bytes, vtype: int, value: Any) -> GGUFBuilder:
        self.kvs.append((key, vtype, value))
        return self

    def tensor(
        self,
        name: str | bytes,
        ne: tuple[int, ...],
        ggml_type: int,
        data: bytes | np.ndarray | None = None,
        *,
        offset: int | None = None,
    ) -> GGUFBuilder:
        raw = bytes(nbytes(ne, ggml_type)) if data is None else np.ascontiguousarray(data).tobytes()
        self.tensors.append(Tensor(name, tuple(ne), ggml_type, raw, offset))
        return self

    def build(self) -> Built:
        alignment = self.alignment or DEFAULT_ALIGNMENT
        w = ByteWriter(">" if self.big_endian else "<")
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        n_tensors = len(self.tensors) if self.n_tensors is None else self.n_tensors
        w.header(self.version, n_tensors, n_kv, self.magic)
        kv_at: dict[str | bytes, int] = {}
        for key, vtype, value in self.kvs:
            kv_at[key] = len(w.out)
            w.kv(key, vtype, value)

        # Offsets first: each tensor goes to the next aligned spot unless told otherwise.
        offsets, end = [], 0
        for t in self.tensors:
            offsets.append(align(end, alignment) if t.offset is None else t.offset)
            end = max(end, offsets[-1] + len(t.data))
        info_at: dict[str | bytes, int] = {}
        for t, offset in zip(self.tensors, offsets, strict=True):
            info_at[t.name] = len(w.out)
            w.tensor_info(t.name, t.ne, t.type, offset)

        data_offset = align(len(w.out), alignment)
        out = bytearray(w.out)
        if self.tensors:  # the file ends where the last tensor's data does
            out += bytes(data_offset + end - len(out))
        data_at: dict[str | bytes, int] = {}
        for t, offset in zip(self.tensors, offsets, strict=True):
            data_at[t.name] = data_offset + offset
            out[data_offset + offset : data_offset + offset + len(t.data)] = t.data
        return Built(bytes(out), kv_at, info_at, data_offset, data_at, w.ints)


def put(data: bytes, at: int, fmt: str, value: Any) -> bytes:
    """`data` with one field overwritten, e.g. put(g.data, g.value_at("k"), "<Q", 2**64 - 1)."""
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)
