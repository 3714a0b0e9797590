"""Write GGUF files: gguf-py's `GGUFWriter` does the format, ktx's C++ quantizer the blocks.

write_gguf("tiny.gguf", "llama",
           metadata={"llama.block_count": 2, "llama.rope.freq_base": 10000.0},
           tensors={"token_embd.weight": (emb, GGMLType.Q8_0), "output_norm.weight": norm})
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .constants import BLOCK_SIZES, GGMLType, ValueType
from .quants import quantize


@dataclass(frozen=True)
class Typed:
    """A metadata value with an explicit GGUF type, e.g. Typed(7, ValueType.INT64)."""

    value: Any
    type: ValueType
    element_type: ValueType | None = None


def _infer(value: Any) -> Typed:
    # llama.cpp's conventions: counts are uint32, hyperparameters float32.
    if isinstance(value, Typed):
        return value
    if isinstance(value, (bool, np.bool_)):
        return Typed(bool(value), ValueType.BOOL)
    if isinstance(value, (int, np.integer)):
        v = int(value)
        if 0 <= v < 1 << 32:
            return Typed(v, ValueType.UINT32)
        return Typed(v, ValueType.INT64 if v < 0 else ValueType.UINT64)
    if isinstance(value, (float, np.floating)):
        return Typed(float(value), ValueType.FLOAT32)
    if isinstance(value, str):
        return Typed(value, ValueType.STRING)
    if isinstance(value, (list, tuple, np.ndarray)):
        return Typed(list(value.tolist() if isinstance(value, np.ndarray) else value), ValueType.ARRAY)
    raise TypeError(
        f"cannot store {type(value).__name__} as GGUF metadata; wrap it in Typed(value, ValueType.X)"
    )


def _blocks(name: str, spec: Any, threads: int | None) -> tuple[np.ndarray, GGMLType]:
    array, gtype = spec if isinstance(spec, tuple) else (spec, GGMLType.F32)
    gtype = GGMLType(gtype)
    if hasattr(array, "detach"):  # torch.Tensor
        array = array.detach().to("cpu").float().numpy()
    array = np.asarray(array)
    block, _ = BLOCK_SIZES[gtype]
    if array.dtype == np.uint8 and (block > 1 or gtype == GGMLType.BF16):
        return np.ascontiguousarray(array), gtype  # already raw blocks
    if gtype == GGMLType.F32:
        return np.ascontiguousarray(array, dtype=np.float32), gtype
    if gtype == GGMLType.F16:
        return np.ascontiguousarray(array, dtype=np.float16), gtype
    try:
        return quantize(array, gtype, threads=threads), gtype
    except (ValueError, NotImplementedError) as e:
        raise ValueError(f"tensor {name!r}: {e}") from None


def add_metadata(writer: Any, metadata: Mapping[str, Any]) -> None:
    """Adds key/values to a gguf-py GGUFWriter with llama.cpp's types (see `_infer`)."""
    import gguf

    for key, value in metadata.items():
        t = _infer(value)
        sub = gguf.GGUFValueType(t.element_type) if t.element_type is not None else None
        writer.add_key_value(key, t.value, gguf.GGUFValueType(t.type), sub_type=sub)


def write_gguf(
    path: str | os.PathLike[str],
    arch: str,
    metadata: Mapping[str, Any] | None = None,
    tensors: Mapping[str, Any] | None = None,
    *,
    split_max_tensors: int = 0,
    alignment: int | None = None,
    threads: int | None = None,
) -> list[Path]:
    """Writes a GGUF model and returns the file(s) written.

    tensors: name -> float array (stored F32), or (array, GGMLType) to convert into that type,
    or (uint8 raw blocks, GGMLType) to store as given. Shapes are numpy order.
    split_max_tensors > 0 writes a split set `stem-0000i-of-0000n.gguf`.
    """
    import gguf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(os.fspath(path), arch, split_max_tensors=split_max_tensors)
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    add_metadata(writer, metadata or {})
    for name, spec in (tensors or {}).items():
        data, gtype = _blocks(name, spec, threads)
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType(int(gtype)))
    written = [Path(p) for p in writer.format_shard_names(Path(path))]
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written
