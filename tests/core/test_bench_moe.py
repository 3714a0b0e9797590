"""`ktx bench moe`: a tiny run through the CLI (JSON rows, their keys and arithmetic), the type
fallbacks, the memory plan (the RAM cap on big presets) and clean errors."""

from __future__ import annotations

import json

import pytest

from ktx.core.bench import moe
from ktx.core.cli.main import main
from ktx.core.convert.presets import PRESETS
from ktx.core.gguf import GGMLType

TINY_RUN = ("bench", "moe", "--preset", "v2-lite", "--experts", "8", "--layers", "2", "--tokens", "1,3")
FAST = ("--threads", "1", "--repeats", "1", "--probe-mib", "16", "--quiet")
GB = 10**9


def test_json_rows(capsys):
    code = main([*TINY_RUN, *FAST, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = json.loads(out)  # stdout is the JSON and nothing else
    assert [r["tokens"] for r in rows] == [1, 3]
    for r in rows:
        assert set(moe.ROW_KEYS) <= set(r)
        assert (r["preset"], r["type"], r["threads"]) == ("v2-lite", "q4_k", 1)
        assert r["types"] == {"gate": "Q4_K", "up": "Q4_K", "down": "Q5_0"}
        for key in moe.ROW_KEYS[4:]:
            assert r[key] > 0, key
        assert r["tokens_per_s"] == pytest.approx(r["tokens"] / (r["ms_per_layer"] / 1000), rel=1e-3)
        assert r["bw_fraction"] == pytest.approx(r["weights_gb_s"] / r["dram_read_gb_s"], rel=1e-2, abs=1e-4)
        assert 6 <= r["experts_touched"] <= 8  # top-6 distinct of 8
    assert rows[0]["dram_read_gb_s"] == rows[1]["dram_read_gb_s"]  # measured once
    assert "down is Q5_0" in err and "Q4_K" in err  # the header went to stderr


def test_table(capsys):
    code = main([*TINY_RUN[:-1], "2", *FAST, "--type", "iq4_xs"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "gate IQ4_XS, up IQ4_XS, down IQ4_NL" in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["tokens", "ms/layer"])
    assert lines[header + 1].split()[0] == "2"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("--preset", "nope"), "unknown preset 'nope'"),
        (("--preset", "v2-lite", "--tokens", "1,x"), "--tokens"),
        (("--preset", "v2-lite", "--tokens", "0"), "--tokens"),
        (("--preset", "v2-lite", "--type", "q3_k"), "unknown type"),
        (("--preset", "v2-lite", "--experts", "4"), "at least 6"),
    ],
)
def test_errors(capsys, args, fragment):
    code = main(["bench", "moe", *args])
    out, err = capsys.readouterr()
    assert code != 0
    assert out == ""
    assert err.startswith("ktx: error: ") and len(err.splitlines()) == 1, err
    assert fragment in err


def test_shapes_come_from_presets():
    s = moe.preset_shape("v3")
    cfg = PRESETS["v3"]
    assert (s.experts, s.top_k, s.hidden, s.inter) == (
        cfg["n_routed_experts"],
        cfg["num_experts_per_tok"],
        cfg["hidden_size"],
        cfg["moe_intermediate_size"],
    )
    assert moe.preset_shape("qwen3-30b-a3b").experts == PRESETS["qwen3-30b-a3b"]["num_experts"]


@pytest.mark.parametrize(
    ("wanted", "down"),
    [
        (GGMLType.Q4_K, GGMLType.Q5_0),
        (GGMLType.Q5_K, GGMLType.Q5_1),
        (GGMLType.Q6_K, GGMLType.Q8_0),
        (GGMLType.IQ4_XS, GGMLType.IQ4_NL),
        (GGMLType.Q8_0, GGMLType.Q8_0),
        (GGMLType.BF16, GGMLType.BF16),
    ],
)
def test_llama_quantize_fallbacks(wanted, down):
    types = moe.projection_types(wanted, moe.preset_shape("v2-lite"))  # inter 1408 = 5.5 x 256
    assert types == {"gate": wanted, "up": wanted, "down": down}
    assert moe.projection_types(wanted, moe.preset_shape("v3"))["down"] == wanted  # 2048


def test_ram_cap_cuts_experts_of_big_presets():
    shape = moe.preset_shape("v3")
    types = moe.projection_types(GGMLType.Q4_K, shape)
    plan = moe.plan_memory(shape, types, available=24 * GB, l3=32 << 20)
    assert plan.total_bytes <= 0.4 * 24 * GB
    assert 2 * shape.top_k <= plan.experts < shape.experts
    assert plan.layers == 2
    assert any("cut from 256" in note for note in plan.notes)
    # --experts is obeyed, but not past the cap
    assert moe.plan_memory(shape, types, experts=32, available=24 * GB, l3=32 << 20).experts == 32
    with pytest.raises(ValueError, match="available RAM"):
        moe.plan_memory(shape, types, experts=256, layers=2, available=24 * GB, l3=32 << 20)


def test_default_layers_exceed_the_l3():
    shape = moe.preset_shape("qwen3-30b-a3b")
    types = moe.projection_types(GGMLType.Q4_K, shape)
    l3 = 256 << 20
    plan = moe.plan_memory(shape, types, available=64 * GB, l3=l3)
    assert plan.experts == shape.experts
    assert plan.total_bytes >= 4 * l3 and plan.layers >= 2
    assert plan.total_bytes - plan.layer_bytes < 4 * l3  # no more layers than needed


def test_plot_without_matplotlib(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    code = main([*TINY_RUN, *FAST, "--plot", "x.png"])
    _, err = capsys.readouterr()
    assert code == 1 and "pip install matplotlib" in err


def test_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "moe.png"
    code = main([*TINY_RUN, *FAST, "--json", "--plot", str(path)])
    out, _ = capsys.readouterr()
    assert code == 0 and len(json.loads(out)) == 2
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
