"""The GGUF reader on files crafted byte by byte: every value type reads back (v2 and v3), and
every kind of malformed file raises GGUFError naming the file, the byte offset and the fault.

Offsets are computed from the builder's layout (tests/gguf_bytes.py), never copied from output.
"""

from __future__ import annotations

import numpy as np
import pytest
from gguf_bytes import HEADER_SIZE, U64_MAX, Array, GGUFBuilder, Raw, put

import ktx.core.gguf as kg
from ktx.core.gguf import GGMLType, GGUFError, StringArray, ValueType

V = ValueType


def small_model(**kw) -> GGUFBuilder:
    b = GGUFBuilder(**kw)
    b.kv("general.architecture", V.STRING, "llama")
    b.tensor("a.weight", (32, 2), GGMLType.F32, np.arange(64, dtype=np.float32))
    b.tensor("b.weight", (32, 2), GGMLType.Q8_0)
    return b


def fails(tmp_path, data: bytes, name: str = "bad.gguf") -> GGUFError:
    """Opens `data` as a file and returns the GGUFError it raised (anything else fails the test)."""
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(GGUFError) as info:
        kg.open(path).close()
    err = info.value
    assert type(err) is GGUFError
    assert str(path) in str(err) and err.path == str(path)
    if err.offset is not None:
        assert f"at byte {err.offset}: " in str(err)
    return err


# -- every value type reads back ---------------------------------------------------------------

SCALARS = [  # (type, value, numpy dtype of an array of it, extreme values for that array)
    (V.UINT8, 255, np.uint8, [0, 255]),
    (V.INT8, -128, np.int8, [-128, 127]),
    (V.UINT16, 65535, np.uint16, [0, 65535]),
    (V.INT16, -32768, np.int16, [-32768, 32767]),
    (V.UINT32, (1 << 32) - 1, np.uint32, [0, (1 << 32) - 1]),
    (V.INT32, -(1 << 31), np.int32, [-(1 << 31), (1 << 31) - 1]),
    (V.UINT64, U64_MAX, np.uint64, [0, U64_MAX]),
    (V.INT64, -(1 << 63), np.int64, [-(1 << 63), (1 << 63) - 1]),
    (V.FLOAT32, 1.5, np.float32, [-0.25, 2.0**127]),  # exact in float32
    (V.FLOAT64, -0.1, np.float64, [1e-300, -1e300]),
    (V.BOOL, True, np.bool_, [True, False]),
]


def every_value_type(version: int) -> GGUFBuilder:
    b = GGUFBuilder(version=version, alignment=64)
    for vtype, value, _, extremes in SCALARS:
        b.kv(f"s.{vtype.name}", vtype, value)
        b.kv(f"a.{vtype.name}", V.ARRAY, Array(vtype, extremes))
        b.kv(f"empty.{vtype.name}", V.ARRAY, Array(vtype, []))
    b.kv("s.false", V.BOOL, False)
    b.kv("s.STRING", V.STRING, "héllo, мир")
    b.kv("s.empty_string", V.STRING, "")
    b.kv("a.STRING", V.ARRAY, Array(V.STRING, ["a", "", "ü", "日本"]))
    b.kv("empty.STRING", V.ARRAY, Array(V.STRING, []))
    b.kv(
        "aa.INT32", V.ARRAY, Array(V.ARRAY, [Array(V.INT32, [1, 2]), Array(V.INT32, []), Array(V.INT32, [3])])
    )
    b.kv("aa.STRING", V.ARRAY, Array(V.ARRAY, [Array(V.STRING, ["x"]), Array(V.STRING, ["y", "z"])]))
    b.kv("aaa.UINT8", V.ARRAY, Array(V.ARRAY, [Array(V.ARRAY, [Array(V.UINT8, [7])])]))
    b.kv("empty.ARRAY", V.ARRAY, Array(V.ARRAY, []))
    b.tensor("t.f32", (3, 2), GGMLType.F32, np.arange(6, dtype=np.float32))
    b.tensor("t.empty", (0, 4), GGMLType.F32)
    return b


@pytest.mark.parametrize("version", [2, 3])
def test_every_value_type_reads_back(tmp_path, version):
    path = every_value_type(version).build().write(tmp_path / "all.gguf")
    with kg.open(path) as f:
        md = f.metadata
        assert f.version == version and f.alignment == 64
        for vtype, value, dtype, extremes in SCALARS:
            got = md[f"s.{vtype.name}"]
            assert got == value and type(got) is type(value), vtype.name
            assert md.value_type(f"s.{vtype.name}") == (vtype, None)
            arr = md[f"a.{vtype.name}"]
            assert isinstance(arr, np.ndarray) and arr.dtype == dtype and not arr.flags.writeable
            assert arr.tolist() == extremes, vtype.name
            assert md.value_type(f"a.{vtype.name}") == (V.ARRAY, vtype)
            empty = md[f"empty.{vtype.name}"]
            assert empty.shape == (0,) and empty.dtype == dtype
            assert md.value_type(f"empty.{vtype.name}") == (V.ARRAY, vtype)
        assert md["s.false"] is False
        assert md["s.STRING"] == "héllo, мир" and md.value_type("s.STRING") == (V.STRING, None)
        assert md["s.empty_string"] == ""
        words = md["a.STRING"]
        assert isinstance(words, StringArray) and md.value_type("a.STRING") == (V.ARRAY, V.STRING)
        assert words == ["a", "", "ü", "日本"] and words[-1] == "日本" and words[1:3] == ["", "ü"]
        assert len(md["empty.STRING"]) == 0 and list(md["empty.STRING"]) == []
        nested = md["aa.INT32"]
        assert [a.tolist() for a in nested] == [[1, 2], [], [3]]
        assert md.value_type("aa.INT32") == (V.ARRAY, (V.ARRAY, V.INT32))
        assert [list(a) for a in md["aa.STRING"]] == [["x"], ["y", "z"]]
        assert md.value_type("aa.STRING") == (V.ARRAY, (V.ARRAY, V.STRING))
        assert md["aaa.UINT8"][0][0].tolist() == [7]
        assert md.value_type("aaa.UINT8") == (V.ARRAY, (V.ARRAY, (V.ARRAY, V.UINT8)))
        assert md["empty.ARRAY"] == [] and md.value_type("empty.ARRAY") == (V.ARRAY, (V.ARRAY, None))
        assert f.tensors["t.f32"].data.tolist() == [[0, 1, 2], [3, 4, 5]]
        assert f.tensors["t.empty"].shape == (4, 0) and f.tensors["t.empty"].dequantize().shape == (4, 0)


def test_typed_getters(tmp_path):
    g = every_value_type(3).build()
    with kg.open(g.write(tmp_path / "all.gguf")) as f:
        md = f.metadata
        assert md.get_int("s.UINT64") == U64_MAX and md.get_int("s.INT8") == -128
        assert md.get_float("s.FLOAT32") == 1.5 and md.get_float("s.UINT8") == 255.0
        assert type(md.get_float("s.UINT8")) is float
        assert md.get_str("s.STRING") == "héllo, мир"
        assert md.get_bool("s.BOOL") is True and md.get_bool("s.false") is False
        assert md.get_array("a.INT16").tolist() == [-32768, 32767]
        assert md.get_array("a.STRING") == ["a", "", "ü", "日本"]
        assert [a.tolist() for a in md.get_array("aa.INT32")] == [[1, 2], [], [3]]
        for getter in (md.get_int, md.get_float, md.get_str, md.get_bool, md.get_array):
            assert getter("no.such.key", "fallback") == "fallback"
            assert getter("no.such.key", None) is None
            with pytest.raises(KeyError, match=r"no\.such\.key"):
                getter("no.such.key")
        wrong = [
            (md.get_int, "s.FLOAT32", "expected an integer"),
            (md.get_int, "s.BOOL", "expected an integer"),
            (md.get_float, "s.STRING", "expected a number"),
            (md.get_str, "a.STRING", "expected a string"),
            (md.get_bool, "s.UINT8", "expected a bool"),
            (md.get_array, "s.STRING", "expected an array"),
        ]
        for getter, key, what in wrong:
            with pytest.raises(GGUFError, match=what) as info:
                getter(key, 0)  # a default does not excuse a wrong type
            assert info.value.offset == g.kv_at[key] and str(f.path) in str(info.value)
            assert key in info.value.reason


# -- the header ---------------------------------------------------------------------------------


def test_empty_file(tmp_path):
    err = fails(tmp_path, b"")
    assert err.offset == 0 and "file is 0 bytes, too short for a GGUF header" in err.reason


def test_file_shorter_than_header(tmp_path):
    err = fails(tmp_path, small_model().build().data[: HEADER_SIZE - 1])
    assert err.offset == 0 and f"file is {HEADER_SIZE - 1} bytes, too short" in err.reason


def test_bad_magic(tmp_path):
    err = fails(tmp_path, small_model(magic=b"GGML").build().data)
    assert err.offset == 0 and "not a GGUF file" in err.reason and "b'GGML'" in err.reason


def test_unsupported_version(tmp_path):
    err = fails(tmp_path, small_model(version=4).build().data)
    assert err.offset == 4 and "GGUF version 4 is not supported" in err.reason


def test_v1_file(tmp_path):
    err = fails(tmp_path, small_model(version=1).build().data)
    assert err.offset == 4 and "version 1 is not supported" in err.reason and "re-convert" in err.reason


def test_big_endian_file(tmp_path):
    data = small_model(big_endian=True).build().data
    assert data[:8] == b"GGUF\0\0\0\3"
    err = fails(tmp_path, data)
    assert err.offset == 4 and "big-endian GGUF is not supported" in err.reason


@pytest.mark.parametrize(("field", "at"), [("n_tensors", 8), ("n_kv", 16)])
@pytest.mark.parametrize("count", [U64_MAX, 1 << 40])
def test_header_count_past_the_file(tmp_path, field, at, count):
    err = fails(tmp_path, small_model(**{field: count}).build().data)
    assert err.offset == at and f"count {count} cannot fit" in err.reason


# -- metadata -----------------------------------------------------------------------------------


def test_key_length_past_the_file(tmp_path):
    g = small_model().build()
    err = fails(tmp_path, put(g.data, g.kv_at["general.architecture"], "<Q", 1 << 40))
    assert err.offset == g.kv_at["general.architecture"]
    assert "metadata key" in err.reason and "runs past the end of the file" in err.reason


def test_string_value_length_past_the_file(tmp_path):
    g = small_model().build()
    at = g.value_at("general.architecture")
    err = fails(tmp_path, put(g.data, at, "<Q", len(g.data)))
    assert err.offset == at and "'general.architecture'" in err.reason and "runs past the end" in err.reason


def test_string_cut_by_end_of_file(tmp_path):
    g = GGUFBuilder().kv("k", V.STRING, "a long enough value").build()
    err = fails(tmp_path, g.data[:-1])
    assert err.offset == g.value_at("k") and "runs past the end of the file" in err.reason


@pytest.mark.parametrize("etype", [V.UINT8, V.FLOAT64, V.STRING, V.ARRAY])
def test_array_count_past_the_file(tmp_path, etype):
    g = small_model().kv("x.arr", V.ARRAY, Array(etype, [])).build()
    count_at = g.value_at("x.arr") + 4
    err = fails(tmp_path, put(g.data, count_at, "<Q", 1000))
    assert err.offset == count_at and "'x.arr' of 1000" in err.reason and "runs past the end" in err.reason


def test_string_in_string_array_past_the_file(tmp_path):
    g = small_model().kv("x.words", V.ARRAY, Array(V.STRING, ["a", "bb", "c"])).build()
    second = g.value_at("x.words") + 4 + 8 + (8 + 1)  # element type, count, first string
    err = fails(tmp_path, put(g.data, second, "<Q", len(g.data)))
    assert (
        err.offset == second and "string 1 of 'x.words'" in err.reason and "runs past the end" in err.reason
    )


@pytest.mark.parametrize(
    ("etype", "count"),
    [(V.UINT8, U64_MAX), (V.INT64, 1 << 61), (V.STRING, U64_MAX), (V.STRING, 1 << 60), (V.ARRAY, U64_MAX)],
)
def test_huge_count_fails_at_once(tmp_path, etype, count):
    # Would allocate exabytes or loop for ever if trusted.
    g = small_model().kv("x.arr", V.ARRAY, Array(etype, [], count=count)).build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.value_at("x.arr") + 4 and f"{count}" in err.reason


def test_huge_string_length_inside_a_string_array(tmp_path):
    # One length of 2**64-1 followed by more strings: the fast length walk must not overflow.
    g = small_model().kv("x.words", V.ARRAY, Array(V.STRING, ["a", "b", "c"])).build()
    first = g.value_at("x.words") + 4 + 8
    err = fails(tmp_path, put(g.data, first, "<Q", U64_MAX))
    assert err.offset == first and "string 0 of 'x.words'" in err.reason


def test_unknown_value_type(tmp_path):
    g = small_model().kv("x.odd", 13, Raw(b"\0" * 8)).build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.value_at("x.odd") - 4 and "unknown metadata value type 13" in err.reason


def test_unknown_array_element_type(tmp_path):
    g = small_model().kv("x.arr", V.ARRAY, Array(V.UINT8, [1])).build()
    at = g.value_at("x.arr")
    err = fails(tmp_path, put(g.data, at, "<I", 0xFFFFFFFF))
    assert err.offset == at and "unknown metadata value type 4294967295" in err.reason


def test_duplicate_key(tmp_path):
    g = small_model().kv("x.k", V.UINT8, 1).kv("x.k", V.UINT8, 2).build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.kv_at["x.k"] and "metadata key 'x.k' appears twice" in err.reason


def test_invalid_utf8_key(tmp_path):
    key = b"bad.\xc3(key"
    g = small_model().kv(key, V.UINT8, 1).build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.kv_at[key] + 8 + key.index(b"\xc3") and "not valid UTF-8" in err.reason


def test_invalid_utf8_tensor_name(tmp_path):
    name = b"blk.\xff.weight"
    g = small_model().tensor(name, (4,), GGMLType.F32).build()
    err = fails(tmp_path, g.data)
    assert (
        err.offset == g.info_at[name] + 8 + name.index(b"\xff")
        and "tensor name is not valid UTF-8" in err.reason
    )


def test_invalid_utf8_in_a_string_array_fails_when_read(tmp_path):
    # Strings of an array are decoded lazily, so the error comes on access, still a GGUFError.
    g = small_model().kv("x.words", V.ARRAY, Array(V.STRING, ["ok", b"\xe2\x82"])).build()
    path = g.write(tmp_path / "lazy.gguf")
    bad = g.value_at("x.words") + 4 + 8 + (8 + 2) + 8
    with kg.open(path) as f:
        words = f.metadata["x.words"]
        assert words[0] == "ok"
        for read in (lambda: words[1], lambda: list(words), words.to_list):
            with pytest.raises(GGUFError, match="not valid UTF-8") as info:
                read()
            assert info.value.offset == bad and str(path) in str(info.value)


def nested(depth: int) -> Array:
    """`depth` arrays, one inside the other, around [1]."""
    a = Array(V.INT32, [1])
    for _ in range(depth - 1):
        a = Array(V.ARRAY, [a])
    return a


def test_arrays_nested_too_deep(tmp_path):
    ok = small_model().kv("x.deep", V.ARRAY, nested(8)).build()
    with kg.open(ok.write(tmp_path / "ok.gguf")) as f:
        v = f.metadata["x.deep"]
        for _ in range(7):
            v = v[0]
        assert v.tolist() == [1]
    g = small_model().kv("x.deep", V.ARRAY, nested(9)).build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.value_at("x.deep") + 8 * (4 + 8)  # where the ninth array starts
    assert "nested more than 8 deep" in err.reason and "'x.deep'" in err.reason


@pytest.mark.parametrize(
    ("vtype", "value", "shown"),
    [(V.UINT32, 48, "48"), (V.UINT32, 0, "0"), (V.UINT64, 32, "UINT64"), (V.STRING, "32", "STRING")],
)
def test_bad_alignment(tmp_path, vtype, value, shown):
    g = small_model().kv("general.alignment", vtype, value).build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.kv_at["general.alignment"]
    assert "general.alignment must be a power-of-two uint32" in err.reason and shown in err.reason


# -- the tensor table and the data --------------------------------------------------------------


def test_tensor_data_past_end_of_file(tmp_path):
    g = small_model().build()
    err = fails(tmp_path, g.data[:-1])
    assert err.offset == g.info_at["b.weight"]
    assert "'b.weight'" in err.reason and "runs past the end of the file" in err.reason


def test_tensor_offset_past_end_of_file(tmp_path):
    g = small_model().build()
    offset_at = g.type_at("a.weight") + 4
    err = fails(tmp_path, put(g.data, offset_at, "<Q", U64_MAX - 31))  # aligned, far away
    assert err.offset == g.info_at["a.weight"] and "runs past the end of the file" in err.reason


def test_misaligned_tensor_data(tmp_path):
    g = small_model(alignment=64).tensor("c.weight", (8,), GGMLType.F32, offset=1000).build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.info_at["c.weight"]
    assert "data offset 1000 is not a multiple of the alignment 64" in err.reason


def test_overlapping_tensor_data(tmp_path):
    b = small_model()
    b.tensor("c.weight", (8,), GGMLType.F32, offset=0)  # a.weight's 256 bytes start at 0
    g = b.build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.info_at["c.weight"] and "'a.weight' and 'c.weight' overlap" in err.reason


def test_unknown_ggml_type(tmp_path):
    g = small_model().tensor("c.weight", (32,), 4).build()  # 4 was Q4_2, removed from ggml
    err = fails(tmp_path, g.data)
    assert err.offset == g.type_at("c.weight") and "unknown ggml type 4" in err.reason


def test_more_than_four_dims(tmp_path):
    g = small_model().tensor("c.weight", (1, 1, 1, 1, 2), GGMLType.F32).build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.info_at["c.weight"] + 8 + len("c.weight")  # its n_dims
    assert "'c.weight' has 5 dimensions" in err.reason and "at most 4" in err.reason


@pytest.mark.parametrize(("ne", "ggml_type"), [((33, 2), GGMLType.Q8_0), ((128, 2), GGMLType.Q4_K)])
def test_rows_do_not_fill_whole_blocks(tmp_path, ne, ggml_type):
    g = small_model().tensor("c.weight", ne, ggml_type).build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.info_at["c.weight"]
    assert f"rows of {ne[0]} elements, not a multiple of its block size" in err.reason


@pytest.mark.parametrize("ne", [(1 << 32, 1 << 31), (0, 1 << 63), (0, 1 << 62, 4), (8, 0, U64_MAX)])
def test_shape_beyond_int64(tmp_path, ne):
    # Even with no elements, numpy and torch must be able to hold the shape.
    g = small_model().tensor("c.weight", ne, GGMLType.F32, b"").build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.info_at["c.weight"] and "too large for int64" in err.reason


def test_duplicate_tensor_name(tmp_path):
    g = small_model().tensor("a.weight", (8,), GGMLType.F32).build()
    err = fails(tmp_path, g.data)
    assert err.offset == g.info_at["a.weight"] and "tensor 'a.weight' appears twice" in err.reason


# -- split sets ---------------------------------------------------------------------------------


def shard(index: int, total: int, name: str, **lies: int) -> GGUFBuilder:
    """Shard `index` (from 0) of `total`, holding one tensor `name`; `lies` (no=, count=,
    tensors=) replace the true split.* values."""
    b = GGUFBuilder()
    b.kv("general.architecture", V.STRING, "llama")
    b.kv("split.no", V.UINT16, lies.get("no", index))
    b.kv("split.count", V.UINT16, lies.get("count", total))
    b.kv("split.tensors.count", V.INT32, lies.get("tensors", total))
    b.tensor(name, (8,), GGMLType.F32, np.full(8, index, dtype=np.float32))
    return b


def test_split_set_opens_as_one_model(tmp_path):
    paths = [shard(i, 3, f"t{i}").build().write(tmp_path / f"m-{i + 1:05d}-of-00003.gguf") for i in range(3)]
    for entry in (paths[1], tmp_path):
        with kg.open(entry) as f:
            assert f.paths == [str(p) for p in paths]
            assert [f.tensors[f"t{i}"].data.tolist() for i in range(3)] == [[i] * 8 for i in range(3)]


def test_split_set_with_a_missing_shard(tmp_path):
    first = shard(0, 3, "t0").build().write(tmp_path / "m-00001-of-00003.gguf")
    shard(2, 3, "t2").build().write(tmp_path / "m-00003-of-00003.gguf")
    for entry in (first, tmp_path):
        with pytest.raises(GGUFError) as info:
            kg.open(entry)
        err = info.value
        assert str(first) in str(err) and err.offset is None  # no byte of any file is wrong
        assert "missing 1 of 3 files: m-00002-of-00003.gguf" in err.reason


def test_split_count_disagrees_with_the_files(tmp_path):
    shard(0, 2, "t0").build().write(tmp_path / "m-00001-of-00002.gguf")
    g = shard(1, 2, "t1", count=3).build()
    path = g.write(tmp_path / "m-00002-of-00002.gguf")
    with pytest.raises(GGUFError) as info:
        kg.open(tmp_path / "m-00001-of-00002.gguf")
    err = info.value
    assert str(path) in str(err) and err.offset == g.kv_at["split.count"]
    assert "split.count is 3 but 2 file(s) were found" in err.reason


@pytest.mark.parametrize(
    ("liar", "lie", "key", "says"),
    [
        (1, {"no": 0}, "split.no", "split.no is 0, expected 1 from the file name"),
        (0, {"tensors": 5}, "split.tensors.count", "split.tensors.count is 5 but the shards hold 2 tensors"),
    ],
)
def test_split_metadata_disagrees_with_the_files(tmp_path, liar, lie, key, says):
    built = [shard(i, 2, f"t{i}", **(lie if i == liar else {})).build() for i in range(2)]
    paths = [g.write(tmp_path / f"m-{i + 1:05d}-of-00002.gguf") for i, g in enumerate(built)]
    with pytest.raises(GGUFError) as info:
        kg.open(tmp_path)
    err = info.value
    assert str(paths[liar]) in str(err) and err.offset == built[liar].kv_at[key] and says in err.reason


def test_split_count_in_a_file_without_a_split_name(tmp_path):
    g = shard(0, 2, "t0").build()
    err = fails(tmp_path, g.data, "whole.gguf")
    assert err.offset == g.kv_at["split.count"] and "split.count is 2 but 1 file(s)" in err.reason


def test_directory_holding_one_model(tmp_path):
    path = small_model().build().write(tmp_path / "model" / "m.gguf")
    with kg.open(tmp_path / "model") as f:
        assert f.path == str(path) and f.tensors["a.weight"].data.shape == (2, 32)
