"""The GGUF reader against gguf-py's GGUFReader (the oracle) on a real file and on files
written here; split sets and directories; the format tables against gguf-py's."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

import ktx.core.gguf as kg
from ktx.core.gguf import BLOCK_SIZES, GGMLType, GGUFError, ValueType


@pytest.fixture(scope="module")
def demo(demo_gguf):
    with kg.open(demo_gguf) as f:
        yield f


@pytest.fixture(scope="module")
def oracle(demo_gguf):
    return gguf.GGUFReader(demo_gguf)


def test_format_tables_agree_with_gguf_py():
    for t, sizes in BLOCK_SIZES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(int(t))] == sizes, t.name
        assert gguf.GGMLQuantizationType(int(t)).name == t.name
    for v in ValueType:
        assert gguf.GGUFValueType(int(v)).name == v.name


def test_metadata_matches_gguf_py(demo, oracle):
    fields = {k: f for k, f in oracle.fields.items() if not k.startswith("GGUF.")}
    assert list(demo.metadata) == list(fields)
    for key, field in fields.items():
        ours = demo.metadata[key]
        assert demo.metadata.value_type(key)[0] == ValueType(int(field.types[0])), key
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            assert demo.metadata.value_type(key)[1] == ValueType(int(field.types[1])), key
            if field.types[1] == gguf.GGUFValueType.STRING:
                assert len(ours) == len(field.data), key
                idx = sorted({0, len(ours) // 2, len(ours) - 1})
                assert [ours[i] for i in idx] == [field.contents(i) for i in idx], key
            else:
                assert np.array_equal(ours, field.contents()), key
        else:
            assert ours == field.contents(), key
    assert demo.version == 3
    assert demo.architecture == "gemma3"


def test_tokens_are_not_decoded_at_open(demo_gguf):
    with kg.open(demo_gguf) as f:
        tokens = f.metadata["tokenizer.ggml.tokens"]
        assert isinstance(tokens, kg.StringArray)
        assert tokens._offsets is None  # only their lengths were walked
        assert len(tokens) == 262144
        assert tokens[2] == "<bos>" and tokens[-1] == tokens.to_list()[-1]


def test_tensors_match_gguf_py(demo, oracle):
    assert list(demo.tensors) == [t.name for t in oracle.tensors]
    for t in oracle.tensors:
        ours = demo.tensors[t.name]
        assert int(ours.type) == int(t.tensor_type)
        assert ours.ne == tuple(int(d) for d in t.shape)
        assert ours.offset == t.data_offset
        assert ours.nbytes == t.n_bytes
        assert ours.n_elements == t.n_elements
        assert ours.data.shape == t.data.shape
        assert np.array_equal(ours.data, t.data)


def test_tensor_data_is_a_read_only_view_of_the_map(demo):
    t = demo.tensors["token_embd.weight"]
    a, b = t.data, t.data
    assert not a.flags.owndata and not a.flags.writeable
    assert np.shares_memory(a, b)
    with pytest.raises(ValueError):
        a[0, 0] = 1


def test_typed_getters(demo):
    md = demo.metadata
    assert md.get_int("gemma3.block_count") == 18
    assert md.get_float("gemma3.rope.freq_base") == 1e6
    assert md.get_float("gemma3.block_count") == 18.0
    assert md.get_str("general.architecture") == "gemma3"
    assert md.get_bool("tokenizer.ggml.add_bos_token") is True
    assert md.get_int("missing.key", 7) == 7
    with pytest.raises(KeyError, match=r"missing\.key"):
        md.get_int("missing.key")
    with pytest.raises(GGUFError, match="expected an integer"):
        md.get_int("general.architecture")


def write_sample(path, **kw):
    rng = np.random.default_rng(0)
    tensors = {
        "a.weight": (rng.standard_normal((8, 256)).astype(np.float32), GGMLType.Q4_K),
        "b.weight": (rng.standard_normal((4, 64)).astype(np.float32), GGMLType.Q8_0),
        "c.weight": (rng.standard_normal((3, 5)).astype(np.float32), GGMLType.F16),
        "d.bias": rng.standard_normal(7).astype(np.float32),
        "e.weight": (rng.standard_normal((2, 3, 32)).astype(np.float32), GGMLType.BF16),
    }
    metadata = {
        "llama.block_count": 2,
        "llama.rope.freq_base": 10000.0,
        "general.name": "sample",
        "sample.flags": [True, False],
        "sample.nested": [[1, 2], [3]],
        "sample.words": ["α", "β", "γ"],
        "sample.big": kg.writer.Typed(-(1 << 40), ValueType.INT64),
    }
    return kg.write_gguf(path, "llama", metadata, tensors, **kw), tensors


def test_written_file_reads_back(tmp_path):
    (path,), _ = write_sample(tmp_path / "s.gguf")
    oracle = gguf.GGUFReader(path)
    with kg.open(path) as f:
        md = f.metadata
        assert md["sample.nested"][0].tolist() == [1, 2] and md["sample.nested"][1].tolist() == [3]
        assert md.value_type("sample.nested") == (ValueType.ARRAY, (ValueType.ARRAY, ValueType.INT32))
        assert md["sample.words"] == ["α", "β", "γ"]
        assert md.get_int("sample.big") == -(1 << 40)
        assert md["sample.flags"].tolist() == [True, False]
        for t in oracle.tensors:
            ref = gguf.quants.dequantize(t.data, t.tensor_type)
            ours = f.tensors[t.name].dequantize().numpy()
            assert np.array_equal(ours.reshape(ref.shape), ref), t.name
        assert f.tensors["e.weight"].shape == (2, 3, 32)
        assert f.tensors["c.weight"].data.dtype == np.float16


def test_v2_file_reads_like_v3(tmp_path):
    (path,), _ = write_sample(tmp_path / "s.gguf")
    raw = bytearray(path.read_bytes())
    raw[4:8] = (2).to_bytes(4, "little")  # v2 and v3 share the little-endian layout
    v2 = tmp_path / "v2.gguf"
    v2.write_bytes(bytes(raw))
    with kg.open(path) as a, kg.open(v2) as b:
        assert (a.version, b.version) == (3, 2)
        assert list(a.metadata) == list(b.metadata)
        assert all(np.array_equal(a.tensors[n].data, b.tensors[n].data) for n in a.tensors)


def test_custom_alignment(tmp_path):
    (path,), _ = write_sample(tmp_path / "s.gguf", alignment=256)
    with kg.open(path) as f:
        assert f.alignment == 256
        assert all(t.offset % 256 == 0 for t in f)
        assert np.array_equal(f.tensors["d.bias"].data, gguf.GGUFReader(path).get_tensor(3).data)


def test_split_set_opens_as_one_model(tmp_path):
    (single,), _ = write_sample(tmp_path / "one.gguf")
    shards, _ = write_sample(tmp_path / "split" / "model.gguf", split_max_tensors=2)
    assert [p.name for p in shards] == [f"model-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    with kg.open(single) as one:
        for entry in (shards[0], shards[2], tmp_path / "split"):
            with kg.open(entry) as f:
                assert f.paths == [str(p) for p in shards]
                assert list(f.tensors) == list(one.tensors)
                assert f.metadata.get_str("general.name") == "sample"
                assert f.metadata.get_int("split.count") == 3
                for name, t in one.tensors.items():
                    assert np.array_equal(f.tensors[name].data, t.data), name
    shards[1].unlink()
    with pytest.raises(GGUFError, match=r"missing 1 of 3 files: model-00002-of-00003\.gguf"):
        kg.open(shards[0])


def test_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no \.gguf model"):
        kg.open(tmp_path)
    (path,), _ = write_sample(tmp_path / "m.gguf")
    (tmp_path / "mmproj-m.gguf").write_bytes(path.read_bytes())  # a projector is not the model
    with kg.open(tmp_path) as f:
        assert f.path == str(path)
    write_sample(tmp_path / "other.gguf")
    with pytest.raises(GGUFError, match="holds 2 models"):
        kg.open(tmp_path)
