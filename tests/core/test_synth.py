"""`ktx synth`: random-weight GGUF files that load, dequantize sanely and route tokens like a model."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

import ktx.core.gguf as kgguf
from ktx.core.convert import synth_gguf
from ktx.core.convert.arch_meta import hparams
from ktx.core.convert.gguf_stream import tensor_nbytes
from ktx.core.convert.layout import expected_tensors
from ktx.core.convert.presets import TINY, preset_config
from ktx.core.convert.synth import synth_plan
from ktx.core.convert.synth_blocks import SYNTH_TYPES, random_blocks
from ktx.core.convert.tensor_names import allowed_names, template
from ktx.core.gguf.constants import BLOCK_SIZES

ARCHES = sorted(TINY)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return {arch: synth_gguf(out / f"{arch}.gguf", arch, "tiny", seed=1) for arch in ARCHES}


@pytest.mark.parametrize("t", SYNTH_TYPES, ids=lambda t: t.name)
def test_random_blocks_zero_mean(t):
    import gguf

    raw = random_blocks(t, 4096, np.random.default_rng(0))
    block = BLOCK_SIZES[t][0]
    mine = kgguf.dequantize(raw, t, (raw.shape[0] * block,)).numpy()
    ref = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(t))).reshape(-1)
    np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-9)
    assert np.isfinite(mine).all()
    assert 0.015 < mine.std() < 0.025
    assert abs(mine.mean()) < 0.02 * mine.std() + 1e-4


@pytest.mark.parametrize("arch", ARCHES)
def test_tiny_loads_and_matches_layout(arch, tiny_files):
    import gguf

    result = tiny_files[arch]
    cfg = preset_config(arch, "tiny")
    assert result.path.stat().st_size < 8 << 20
    with kgguf.open(result.path) as f:
        md = f.metadata
        assert md["general.architecture"] == arch
        for key, value in hparams(cfg["model_type"], cfg).items():
            assert md[key] == pytest.approx(value), key
        assert len(md["tokenizer.ggml.tokens"]) == cfg["vocab_size"]
        assert {t.name: tuple(t.shape) for t in f} == dict(expected_tensors(cfg["model_type"], cfg))
        assert all(template(t.name) in allowed_names(arch) for t in f)
        for t in f:
            x = t.dequantize().numpy()
            assert np.isfinite(x).all(), t.name
            if t.name.endswith("norm.weight"):
                assert (x == 1).all()
            elif t.name.endswith(".weight") and x.size >= 4096:
                assert abs(x.mean()) < 0.05 * x.std(), t.name
                assert 0.015 < x.std() < 0.025, t.name
    reader = gguf.GGUFReader(result.path)
    for t in reader.tensors:
        assert np.isfinite(gguf.quants.dequantize(t.data, t.tensor_type)).all(), t.name


def routing_spread(path, tokens: int = 256, seed: int = 0) -> tuple[float, float, int, int]:
    """(share of experts hit, busiest expert's load / fair share, n_expert, top_k) for the first router."""
    with kgguf.open(path) as f:
        arch = f.metadata["general.architecture"]
        k = int(f.metadata[f"{arch}.expert_used_count"])
        router = next(t for t in f if t.name.endswith("ffn_gate_inp.weight")).dequantize().numpy()
    n_exp, hidden = router.shape
    x = np.random.default_rng(seed).standard_normal((tokens, hidden)).astype(np.float32)
    top = np.argsort(-(x @ router.T), axis=1)[:, :k]
    counts = np.bincount(top.ravel(), minlength=n_exp)
    return (counts > 0).mean(), counts.max() / (tokens * k / n_exp), n_exp, k


@pytest.mark.parametrize("arch", ARCHES)
def test_routing_spreads_over_experts(arch, tiny_files):
    hit, busiest, n_exp, k = routing_spread(tiny_files[arch].path)
    print(f"{arch}: {n_exp} experts top-{k}: {hit:.0%} hit, busiest {busiest:.2f}x fair share")
    assert hit >= 0.9
    assert busiest <= 4.0


def test_presets_match_published_sizes():
    """Q4_K_M byte totals land on llama.cpp's published files (within 1%)."""
    published = {"v2-lite": 10.36e9, "v3": 404.4e9, "qwen3-30b-a3b": 18.6e9}
    for preset, size in published.items():
        _, plan = synth_plan(None, preset, None, "q4_k_m")
        total = sum(tensor_nbytes(shape, t) for _, shape, t in plan)
        assert total == pytest.approx(size, rel=0.01), preset


def test_gpt_oss_presets_match_published_mxfp4_sizes():
    """gpt-oss ships as MXFP4 experts with Q8_0 elsewhere (ggml-org's gpt-oss-20b/120b-mxfp4 files,
    12.1 GB and 63.4 GB); its 2880-wide rows fit no K-quant block, so a Q4_K_M mix falls back to
    Q5_0/Q8_0 and is not what people download."""
    for preset, size in {"gpt-oss-20b": 12.1e9, "gpt-oss-120b": 63.4e9}.items():
        _, plan = synth_plan(None, preset, None, "mxfp4")
        assert sum(tensor_nbytes(shape, t) for _, shape, t in plan) == pytest.approx(size, rel=0.02), preset
        experts = {t.name for name, _, t in plan if "_exps.weight" in name}
        assert experts == {"MXFP4"}


def test_glm_presets_match_published_sizes():
    """GLM-4.5-Air against ubergarm/GLM-4.5-Air-GGUF's BF16 (205.811 GiB) and Q8_0 (109.381 GiB)
    files, which carry the next-token-prediction layer as block 46, as the preset does."""
    for type_, gib in {"bf16": 205.811, "q8_0": 109.381}.items():
        cfg, plan = synth_plan(None, "glm-4.5-air", None, type_)
        total = sum(tensor_nbytes(shape, t) for _, shape, t in plan) / 2**30
        assert total == pytest.approx(gib, rel=0.02), type_
    names = {n for n, _, _ in plan}
    assert "blk.46.nextn.eh_proj.weight" in names and "blk.46.ffn_gate_exps.weight" in names
    assert hparams("glm4_moe", cfg)["glm4moe.block_count"] == 47


def test_qwen3_next_preset_matches_the_published_q4_k_m_size():
    """Qwen3-Next-80B-A3B at Q4_K_M is 48.5e9 bytes (llama.cpp's default mix, as listed for
    Qwen3-Coder-Next, which has its shapes); 36 of its 48 layers are gated DeltaNets."""
    _, plan = synth_plan(None, "qwen3-next-80b-a3b", None, "q4_k_m")
    assert sum(tensor_nbytes(shape, t) for _, shape, t in plan) == pytest.approx(48.5e9, rel=0.02)
    names = {n for n, _, _ in plan}
    assert sum(f"blk.{i}.ssm_a" in names for i in range(48)) == 36
    assert "blk.3.attn_q.weight" in names and "blk.3.ssm_a" not in names


def test_qwen3_5_preset_matches_the_published_q4_k_m_size():
    """Qwen3.5-35B-A3B's official Q4_K_M is 21.2 GB; 30 of its 40 layers are gated DeltaNets, with
    Qwen3.5's separate beta and alpha projections."""
    _, plan = synth_plan(None, "qwen3.5-35b-a3b", None, "q4_k_m")
    assert sum(tensor_nbytes(shape, t) for _, shape, t in plan) == pytest.approx(21.2e9, rel=0.02)
    names = {n for n, _, _ in plan}
    assert sum(f"blk.{i}.ssm_beta.weight" in names for i in range(40)) == 30
    assert "blk.0.ssm_ba.weight" not in names


def test_minimax_preset_has_the_published_parameter_count():
    """MiniMax-M2(.7) holds 228.7e9 weights: Goldkoron's K_G quants of it are 133.1 GiB at exactly
    5.00 bits per weight (and 106.4 GiB at 4.00)."""
    _, plan = synth_plan(None, "minimax-m2", None, "bf16")
    params = sum(int(np.prod(shape)) for _, shape, _ in plan)
    assert params == pytest.approx(133.1 * 2**30 * 8 / 5.0, rel=0.02)


def test_glm_file_skips_its_next_token_prediction_layer(tmp_path):
    """The MTP block a GLM file carries is neither built nor loaded, and the memory plan
    does not count it."""
    import torch

    from ktx.core.loader import load
    from ktx.core.memory_plan import plan_memory

    r = synth_gguf(tmp_path / "glm.gguf", "glm4moe", "glm-4.5-air", layers=2, experts=8, type="q8_0")
    with kgguf.open(r.path) as f:
        assert f.metadata["glm4moe.block_count"] == 3 and "blk.2.nextn.eh_proj.weight" in f.tensors
        mtp = sum(t.nbytes for t in f if t.name.startswith("blk.2."))
        total = sum(t.nbytes for t in f)
    model = load(r.path)
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    with kgguf.open(r.path) as f:
        devices = {name: "cpu" for name, _ in model.named_modules()}
        planned = plan_memory(f, "glm4moe", model.config, devices, cache_tokens=16)
    assert sum(planned.per_device().values()) < total - mtp + (64 << 20)  # + the small KV cache
    with torch.inference_mode():
        assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


def test_layers_cut_keeps_dense():
    cfg, plan = synth_plan("deepseek2", "v3", layers=4)
    assert cfg["num_hidden_layers"] == 4 and cfg["first_k_dense_replace"] == 3
    names = {n for n, _, _ in plan}
    assert "blk.2.ffn_down.weight" in names and "blk.3.ffn_down_exps.weight" in names
    assert not any(n.startswith("blk.4.") for n in names)
    with pytest.raises(ValueError, match="at least 4"):
        synth_plan("deepseek2", "v3", layers=3)
    with pytest.raises(ValueError, match="not qwen3moe"):
        synth_plan("qwen3moe", "v3")


@pytest.mark.slow
def test_v2_lite_cut_writes_and_reads(tmp_path):
    r = synth_gguf(tmp_path / "v2.gguf", "deepseek2", "v2-lite", layers=2, type="q8_0")
    print(f"v2-lite 2 layers q8_0: {r.nbytes / 1e6:.0f} MB at {r.mb_per_s:.0f} MB/s")
    with kgguf.open(r.path) as f:
        assert f.metadata["deepseek2.block_count"] == 2
        x = f.tensors["blk.1.ffn_up_exps.weight"].dequantize().numpy()
        assert x.shape == (64, 1408, 2048) and abs(x.mean()) < 0.01 * x.std()


def test_cli(tmp_path, capsys):
    from ktx.core.cli import synth as cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["synth", "--arch", "llama", "--preset", "tiny", "-o", str(tmp_path / "t.gguf")])
    assert args.run(args) == 0
    assert "MB/s" in capsys.readouterr().out
    args = parser.parse_args(["synth", "--preset", "v3", "--dry-run"])
    assert args.run(args) == 0
    assert "61 layers" in capsys.readouterr().out


@pytest.mark.parametrize("mix", ["iq1_s", "iq2_xxs"])
def test_low_bit_mix_runs_and_reads_back_in_gguf_py(mix, tmp_path):
    """A 1.6-2.2-bit mix: experts' gate/up and down in i-quants (IQ4_NL where a row is not whole
    256-value blocks, as llama-quantize falls back), the rest as Q4_K_M; every tensor reads the
    same in gguf-py and ktx, and the model runs on its kernels."""
    import gguf
    import torch

    from ktx.core.convert.tensor_types import LOW_BIT_MIXES
    from ktx.core.loader import load

    r = synth_gguf(tmp_path / "m.gguf", "deepseek2", "tiny", type=mix)
    gate_up, down = LOW_BIT_MIXES[mix]
    with kgguf.open(r.path) as f:
        types = {t.name: t.type for t in f}
        assert types["blk.1.ffn_gate_exps.weight"] == gate_up  # 256 columns: whole blocks
        assert types["blk.1.ffn_down_exps.weight"] == kgguf.GGMLType.IQ4_NL  # 128 columns: the fallback
        assert down != kgguf.GGMLType.IQ4_NL
        ours = {t.name: t.dequantize().numpy() for t in f}
    for t in gguf.GGUFReader(r.path).tensors:
        ref = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours[t.name].shape)
        np.testing.assert_array_equal(ours[t.name], ref, err_msg=t.name)
    model = load(r.path)
    with torch.inference_mode():
        logits = model(torch.tensor([[5, 17, 99, 3]])).logits
    assert torch.isfinite(logits).all()
