"""Fuzz the GGUF reader: truncated and byte-mutated variants of a small valid file either open
(and then read completely) or raise GGUFError; nothing else may escape, nothing may hang.

Runs every truncation, every integer field set to every extreme value, and 2,500 random
mutations (hypothesis, derandomized so CI sees the same examples every run).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import numpy as np
from gguf_bytes import U64_MAX, Array, Built, GGUFBuilder
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ktx.core.gguf as kg
from ktx.core.gguf import DEQUANT_TYPES, GGMLType, GGUFError, StringArray, ValueType

V = ValueType


def base_file() -> Built:
    rng = np.random.default_rng(0)
    b = GGUFBuilder(alignment=64)
    b.kv("general.architecture", V.STRING, "llama")
    b.kv("llama.block_count", V.UINT32, 2)
    b.kv("llama.rope.freq_base", V.FLOAT32, 10000.0)
    b.kv("x.flag", V.BOOL, True)
    b.kv("x.big", V.INT64, -(1 << 40))
    b.kv("tokenizer.ggml.tokens", V.ARRAY, Array(V.STRING, ["<s>", "</s>", "héllo", ""]))
    b.kv("tokenizer.ggml.scores", V.ARRAY, Array(V.FLOAT32, [0.0, -1.0, -2.5, 3.0]))
    b.kv(
        "x.nested",
        V.ARRAY,
        Array(V.ARRAY, [Array(V.INT32, [1, 2]), Array(V.STRING, ["a"]), Array(V.UINT8, [])]),
    )
    b.tensor("token_embd.weight", (8, 2), GGMLType.F32, rng.standard_normal(16).astype(np.float32))
    b.tensor(
        "blk.0.ffn_up.weight",
        (64, 2),
        GGMLType.Q8_0,
        kg.quantize(rng.standard_normal((2, 64)), GGMLType.Q8_0),
    )
    b.tensor(
        "blk.0.ffn_down.weight",
        (256, 1),
        GGMLType.Q4_K,
        kg.quantize(rng.standard_normal((1, 256)), GGMLType.Q4_K),
    )
    b.tensor("output_norm.weight", (4,), GGMLType.F32, np.ones(4, dtype=np.float32))
    return b.build()


BASE = base_file()
EXTREMES = [0, 1, 2, 3, 4, 5, 8, 9, 12, 13, 31, 32, 33, 64, 255, 256, 1 << 31, (1 << 31) - 1, (1 << 32) - 1]
EXTREMES += [1 << 32, (1 << 63) - 1, 1 << 63, U64_MAX - 1, U64_MAX]


def touch(value: object) -> None:
    """Reads everything a value decodes lazily."""
    if isinstance(value, StringArray):
        assert len(value.to_list()) == len(value)
        if len(value):
            assert value[len(value) - 1] == value[-1]
    elif isinstance(value, list):
        for item in value:
            touch(item)
    elif isinstance(value, np.ndarray):
        value.tolist()


def read_all(path: str) -> None:
    with kg.open(path) as f:
        repr(f), repr(f.metadata)
        for key, value in f.metadata.items():
            f.metadata.value_type(key)
            touch(value)
        f.metadata.get_int("llama.block_count", 0), f.metadata.get_str("general.architecture", "")
        for t in f:
            assert t.data.nbytes == t.nbytes
            # Other types are a documented NotImplementedError, not a malformed file.
            if t.type in DEQUANT_TYPES and t.n_elements <= 1 << 16:
                assert tuple(t.dequantize(threads=1).shape) == t.shape


def check(data: bytes, directory: str) -> bool:
    """True if `data` opened and read completely, False if it raised GGUFError; else fails."""
    path = os.path.join(directory, "fuzz.gguf")
    with open(path, "wb") as out:
        out.write(data)
    try:
        read_all(path)
    except GGUFError as err:
        assert type(err) is GGUFError and path in str(err)
        assert err.offset is None or 0 <= err.offset <= len(data), err
        return False
    return True


def test_base_file_is_valid():
    with tempfile.TemporaryDirectory() as d:
        assert check(BASE.data, d)


def test_every_truncation_fails():
    # The file ends with the last tensor's data, so every cut loses something the reader needs.
    with tempfile.TemporaryDirectory() as d:
        opened = [n for n in range(len(BASE.data)) if check(BASE.data[:n], d)]
    assert opened == []


def test_every_integer_field_at_every_extreme():
    with tempfile.TemporaryDirectory() as d:
        for at, size in BASE.ints:
            for v in EXTREMES:
                data = bytearray(BASE.data)
                data[at : at + size] = (v % (1 << (8 * size))).to_bytes(size, "little")
                check(bytes(data), d)


Mutation = Callable[[bytearray], None]


def _overwrite(at: int, raw: bytes) -> Mutation:
    def apply(data: bytearray) -> None:
        i = at % (len(data) + 1)
        data[i : i + len(raw)] = raw[: len(data) - i] if i + len(raw) > len(data) else raw

    return apply


def _insert(at: int, raw: bytes) -> Mutation:
    def apply(data: bytearray) -> None:
        i = at % (len(data) + 1)
        data[i:i] = raw

    return apply


def _delete(at: int, n: int) -> Mutation:
    def apply(data: bytearray) -> None:
        i = at % (len(data) + 1)
        del data[i : i + n]

    return apply


def _set_int(field: tuple[int, int], v: int) -> Mutation:
    def apply(data: bytearray) -> None:
        at, size = field
        if at + size <= len(data):
            data[at : at + size] = (v % (1 << (8 * size))).to_bytes(size, "little")

    return apply


SIZE = len(BASE.data)
mutations = st.one_of(
    st.builds(_overwrite, st.integers(0, SIZE - 1), st.binary(min_size=1, max_size=8)),
    st.builds(_insert, st.integers(0, SIZE), st.binary(min_size=1, max_size=8)),
    st.builds(_delete, st.integers(0, SIZE - 1), st.integers(1, 8)),
    st.builds(_set_int, st.sampled_from(BASE.ints), st.sampled_from(EXTREMES) | st.integers(0, U64_MAX)),
)


@settings(
    max_examples=2500,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(steps=st.lists(mutations, min_size=1, max_size=3), cut=st.none() | st.none() | st.integers(0, SIZE))
def test_random_mutations(steps, cut):
    data = bytearray(BASE.data)
    for apply in steps:
        apply(data)
    if cut is not None:
        del data[cut:]
    with tempfile.TemporaryDirectory() as d:
        event("opened" if check(bytes(data), d) else "GGUFError")
