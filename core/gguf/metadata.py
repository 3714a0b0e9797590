"""GGUF metadata: a read-only mapping with typed getters, and lazily decoded string arrays.

Values are Python scalars (int, float, bool, str), read-only numpy arrays for numeric
arrays (zero-copy views into the file), `StringArray` for arrays of strings (decoded only
when read), and lists for arrays of arrays.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .constants import FLOAT_TYPES, INTEGER_TYPES, ValueType
from .errors import GGUFError

_U64 = struct.Struct("<Q")
_MISSING: Any = object()


class StringArray(Sequence[str]):
    """A GGUF array of strings, left undecoded in the mapped file until read.

    A tokenizer's 262,144 tokens cost one pass over their lengths at open time; the strings
    themselves are decoded on access (`arr[i]`, iteration, `to_list()`).
    """

    def __init__(self, buf: Any, path: str, start: int, count: int):
        self._buf = buf
        self._path = path
        self._start = start
        self._count = count
        self._offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return self._count

    def _index(self) -> np.ndarray:
        if self._offsets is None:
            offsets = np.empty(self._count, dtype=np.int64)
            pos, unpack = self._start, _U64.unpack_from
            for i in range(self._count):
                offsets[i] = pos
                pos += 8 + unpack(self._buf, pos)[0]
            self._offsets = offsets
        return self._offsets

    def _decode(self, pos: int) -> str:
        (n,) = _U64.unpack_from(self._buf, pos)
        raw = self._buf[pos + 8 : pos + 8 + n]
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(self._path, pos + 8 + e.start, f"string is not valid UTF-8: {e.reason}") from None

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._count))]
        if i < 0:
            i += self._count
        if not 0 <= i < self._count:
            raise IndexError(f"string array index {i} out of range (length {self._count})")
        return self._decode(int(self._index()[i]))

    def __iter__(self) -> Iterator[str]:
        pos = self._start
        for _ in range(self._count):
            yield self._decode(pos)
            pos += 8 + _U64.unpack_from(self._buf, pos)[0]

    def to_list(self) -> list[str]:
        return list(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (StringArray, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(s) for s in self[:3])
        more = ", ..." if self._count > 3 else ""
        return f"StringArray([{head}{more}], length={self._count})"


class Metadata(Mapping[str, Any]):
    """Key -> value, in file order, with the GGUF type of each value and typed getters.

    >>> md.get_int("gemma3.block_count")          # KeyError-free with a default:
    >>> md.get_float("gemma3.rope.freq_base", 10000.0)
    """

    def __init__(
        self,
        path: str,
        values: dict[str, Any],
        types: dict[str, tuple[ValueType, Any]],
        positions: dict[str, int] | None = None,
    ):
        self._path = path
        self._values = values
        self._types = types
        self._positions = positions or {}

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Metadata({len(self)} keys, architecture={self.get('general.architecture')!r})"

    def value_type(self, key: str) -> tuple[ValueType, Any]:
        """(type, element type) of a value; the element type is None except for arrays,
        where it is a ValueType, or for arrays of arrays, the inner (type, element type)."""
        return self._types[key]

    def offset(self, key: str) -> int | None:
        """Where the entry of `key` starts in its file (None if the key is missing)."""
        return self._positions.get(key)

    @property
    def architecture(self) -> str | None:
        return self.get("general.architecture")

    def _typed(self, key: str, default: Any, allowed: frozenset[ValueType], what: str) -> Any:
        if key not in self._values:
            if default is _MISSING:
                raise KeyError(f"{self._path}: metadata key {key!r} is missing")
            return default
        vtype = self._types[key][0]
        if vtype not in allowed:
            raise GGUFError(
                self._path, self.offset(key), f"metadata {key!r} is {vtype.name}, expected {what}"
            )
        return self._values[key]

    def get_int(self, key: str, default: Any = _MISSING) -> int:
        return self._typed(key, default, INTEGER_TYPES, "an integer")

    def get_float(self, key: str, default: Any = _MISSING) -> float:
        v = self._typed(key, default, FLOAT_TYPES | INTEGER_TYPES, "a number")
        return v if v is default else float(v)

    def get_bool(self, key: str, default: Any = _MISSING) -> bool:
        return self._typed(key, default, frozenset({ValueType.BOOL}), "a bool")

    def get_str(self, key: str, default: Any = _MISSING) -> str:
        return self._typed(key, default, frozenset({ValueType.STRING}), "a string")

    def get_array(self, key: str, default: Any = _MISSING) -> np.ndarray | StringArray | list:
        return self._typed(key, default, frozenset({ValueType.ARRAY}), "an array")
