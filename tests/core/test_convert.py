"""`ktx convert`: tiny random HF models of every supported architecture -> GGUF, checked value by value.

The expected GGUF side is written out here independently of ktx.core.convert (name table, llama
q/k permutation by index arithmetic, Gemma's norm offset, DeepSeek's kv_b re-assembly), so a
mistake in the converter cannot hide behind the same mistake in the check.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
from tiny_models import GGUF_ARCH, TINY_NAMES, make_tiny  # tests/ is on sys.path through tests/conftest.py

import ktx.core.gguf as kgguf
from ktx.core.convert import convert_hf
from ktx.core.convert.layout import expected_tensors
from ktx.core.convert.tensor_names import allowed_names, template

# Converting needs safetensors; building the tiny models needs transformers and tokenizers.
for _module in ("safetensors", "tokenizers", "transformers"):
    pytest.importorskip(_module)

# HF module path (after model.layers.N.) -> GGUF tensor (after blk.N.)
LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "self_attn.q_a_proj": "attn_q_a",
    "self_attn.q_a_layernorm": "attn_q_a_norm",
    "self_attn.q_b_proj": "attn_q_b",
    "self_attn.kv_a_proj_with_mqa": "attn_kv_a_mqa",
    "self_attn.kv_a_layernorm": "attn_kv_a_norm",
    "self_attn.kv_b_proj": "attn_kv_b",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.gate": "ffn_gate_inp",
    "block_sparse_moe.gate": "ffn_gate_inp",
    "mlp.shared_experts.gate_proj": "ffn_gate_shexp",
    "mlp.shared_experts.up_proj": "ffn_up_shexp",
    "mlp.shared_experts.down_proj": "ffn_down_shexp",
    "mlp.shared_expert.gate_proj": "ffn_gate_shexp",
    "mlp.shared_expert.up_proj": "ffn_up_shexp",
    "mlp.shared_expert.down_proj": "ffn_down_shexp",
    "mlp.shared_expert_gate": "ffn_gate_inp_shexp",
}
GEMMA_NAMES = {
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
}
EXPERT_PROJ = {
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
    "w1": "gate",
    "w3": "up",
    "w2": "down",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = make_tiny(name, tmp_path_factory.mktemp(name))
        return made[name]

    return get


def hf_tensors(d: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v.astype(np.float32) for k, v in load_file(d / "model.safetensors").items()}


def rope_interleave(w: np.ndarray, heads: int) -> np.ndarray:
    """Rows of each head [a0..a(n-1), b0..b(n-1)] -> [a0, b0, a1, b1, ...] (llama.cpp's layout)."""
    out = np.empty_like(w)
    hd = w.shape[0] // heads
    for h in range(heads):
        for i in range(hd // 2):
            out[h * hd + 2 * i] = w[h * hd + i]
            out[h * hd + 2 * i + 1] = w[h * hd + hd // 2 + i]
    return out


def expected_from_hf(name: str, cfg: dict, hf: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The GGUF tensors (f32) the converter must write, derived from the HF tensors by hand."""
    arch, out = GGUF_ARCH[name], {}
    experts: dict[tuple[int, str], dict[int, np.ndarray]] = {}
    for key, w in hf.items():
        if key == "lm_head.weight":
            out["output.weight"] = w
            continue
        if key == "model.embed_tokens.weight":
            out["token_embd.weight"] = w
            continue
        if key == "model.norm.weight":  # Gemma, Qwen3-Next: every norm, the final one included, gets +1
            out["output_norm.weight"] = w + 1 if arch in ("gemma3", "qwen3next", "qwen35moe") else w
            continue
        if key.endswith("e_score_correction_bias"):
            continue
        if arch == "gpt-oss" and (g := gpt_oss_tensors(key, w)):
            out.update(g)
            continue
        if arch == "qwen3next" and (g := qwen3next_tensors(key, w, cfg)):
            out.update(g)
            continue
        if arch == "qwen35moe" and (g := qwen35moe_tensors(key, w, cfg)):
            out.update(g)
            continue
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", key)
        assert m, key
        bid, mod, kind = int(m[1]), m[2], m[3]
        if e := re.fullmatch(r"(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(\w+)", mod):
            experts.setdefault((bid, EXPERT_PROJ[e[2]]), {})[int(e[1])] = w
            continue
        gname = (GEMMA_NAMES if arch == "gemma3" and mod in GEMMA_NAMES else LAYER_NAMES)[mod]
        if arch == "glm4moe" and mod == "post_attention_layernorm":  # llama.cpp's GLM name
            gname = "post_attention_norm"
        if arch == "llama" and gname in ("attn_q", "attn_k"):
            heads = cfg["num_attention_heads"] if gname == "attn_q" else cfg["num_key_value_heads"]
            w = rope_interleave(w, heads)
        if arch == "gemma3" and mod.endswith("norm"):
            w = w + 1
        if gname == "attn_kv_b":  # checked in re-assembled form, see test_convert_f32_exact
            gname = "attn_kv_b(k_b,v_b)"
        out[f"blk.{bid}.{gname}.{kind}"] = w
    for key, w in hf.items():
        if key.endswith("e_score_correction_bias"):
            bid = re.search(r"layers\.(\d+)", key)[1]
            out[f"blk.{bid}.exp_probs_b.bias"] = w
    for (bid, proj), by_e in experts.items():
        out[f"blk.{bid}.ffn_{proj}_exps.weight"] = np.stack([by_e[e] for e in sorted(by_e)])
    return out


def qwen3next_tensors(key: str, w: np.ndarray, cfg: dict) -> dict[str, np.ndarray]:
    """Qwen3-Next's tensors that llama.cpp renames, regroups or transforms: every norm but the
    linear attention's gets +1; in_proj_qkvz's per-key-head groups [q, k, v, z] become attn_qkv
    (all q rows, all k, all v) and attn_gate (z); A_log is stored as -exp(A_log)."""
    if key == "model.norm.weight":
        return {"output_norm.weight": w + 1}
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)
    blk, rest = f"blk.{m[1]}", m[2]
    plain = {
        "linear_attn.in_proj_ba.weight": "ssm_ba.weight",
        "linear_attn.dt_bias": "ssm_dt.bias",
        "linear_attn.norm.weight": "ssm_norm.weight",
        "linear_attn.out_proj.weight": "ssm_out.weight",
    }
    plus_one = {
        "input_layernorm.weight": "attn_norm.weight",
        "post_attention_layernorm.weight": "post_attention_norm.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight",
        "self_attn.k_norm.weight": "attn_k_norm.weight",
    }
    if rest in plain:
        return {f"{blk}.{plain[rest]}": w}
    if rest in plus_one:
        return {f"{blk}.{plus_one[rest]}": w + 1}
    if rest == "linear_attn.A_log":
        return {f"{blk}.ssm_a": -np.exp(w)}
    if rest == "linear_attn.conv1d.weight":
        return {f"{blk}.ssm_conv1d.weight": w[:, 0, :]}
    if rest == "linear_attn.in_proj_qkvz.weight":
        nk, dk = cfg["linear_num_key_heads"], cfg["linear_key_head_dim"]
        per = cfg["linear_num_value_heads"] // nk * cfg["linear_value_head_dim"]
        groups = [w[g * (2 * dk + 2 * per) : (g + 1) * (2 * dk + 2 * per)] for g in range(nk)]
        q = np.concatenate([x[:dk] for x in groups])
        k = np.concatenate([x[dk : 2 * dk] for x in groups])
        v = np.concatenate([x[2 * dk : 2 * dk + per] for x in groups])
        z = np.concatenate([x[2 * dk + per :] for x in groups])
        return {f"{blk}.attn_qkv.weight": np.concatenate([q, k, v]), f"{blk}.attn_gate.weight": z}
    return {}


def qwen35moe_tensors(key: str, w: np.ndarray, cfg: dict) -> dict[str, np.ndarray]:
    """Qwen3.5: Qwen3-Next's renames and +1s, from separate projections, with every per-value-head
    tensor's heads reordered from g * r + j (key head g) to j * n_k + g, as llama.cpp stores them."""
    nk, dk, nv = cfg["linear_num_key_heads"], cfg["linear_key_head_dim"], cfg["linear_num_value_heads"]
    r = nv // nk

    def tiled(x: np.ndarray) -> np.ndarray:  # rows in nv runs, one per value head
        runs = np.split(x, nv)
        return np.concatenate([runs[g * r + j] for j in range(r) for g in range(nk)])

    m = re.fullmatch(r"model\.layers\.(\d+)\.linear_attn\.(.+)", key)
    if not m:
        return qwen3next_tensors(key, w, cfg)
    blk, part = f"blk.{m[1]}", m[2]
    if part == "in_proj_qkv.weight":
        return {f"{blk}.attn_qkv.weight": np.concatenate([w[: 2 * nk * dk], tiled(w[2 * nk * dk :])])}
    if part == "conv1d.weight":
        c = w[:, 0, :]
        return {f"{blk}.ssm_conv1d.weight": np.concatenate([c[: 2 * nk * dk], tiled(c[2 * nk * dk :])])}
    if part == "out_proj.weight":
        return {f"{blk}.ssm_out.weight": tiled(w.T).T}
    if part == "A_log":
        return {f"{blk}.ssm_a": tiled(-np.exp(w))}
    if part == "norm.weight":
        return {f"{blk}.ssm_norm.weight": w}
    names = {"in_proj_z.weight": "attn_gate.weight", "in_proj_b.weight": "ssm_beta.weight"}
    names |= {"in_proj_a.weight": "ssm_alpha.weight", "dt_bias": "ssm_dt.bias"}
    return {f"{blk}.{names[part]}": tiled(w)}


def gpt_oss_tensors(key: str, w: np.ndarray) -> dict[str, np.ndarray]:
    """gpt-oss's tensors that llama.cpp renames or reshapes: the sinks, the router, the MLP norm,
    and the experts (gate in even columns of gate_up_proj, up in odd ones; all transposed)."""
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)
    blk, rest = f"blk.{m[1]}", m[2]
    if rest == "self_attn.sinks":
        return {f"{blk}.attn_sinks.weight": w}
    if rest.startswith("mlp.router."):
        return {f"{blk}.ffn_gate_inp.{rest.rsplit('.', 1)[1]}": w}
    if rest == "post_attention_layernorm.weight":
        return {f"{blk}.post_attention_norm.weight": w}
    if rest == "mlp.experts.gate_up_proj":
        t = w.transpose(0, 2, 1)
        return {f"{blk}.ffn_gate_exps.weight": t[:, 0::2], f"{blk}.ffn_up_exps.weight": t[:, 1::2]}
    if rest == "mlp.experts.gate_up_proj_bias":
        return {f"{blk}.ffn_gate_exps.bias": w[:, 0::2], f"{blk}.ffn_up_exps.bias": w[:, 1::2]}
    if rest == "mlp.experts.down_proj":
        return {f"{blk}.ffn_down_exps.weight": w.transpose(0, 2, 1)}
    if rest == "mlp.experts.down_proj_bias":
        return {f"{blk}.ffn_down_exps.bias": w}
    return {}


def read_gguf(path: Path) -> dict[str, np.ndarray]:
    with kgguf.open(path) as f:
        return {t.name: t.dequantize().numpy() for t in f}


@pytest.mark.parametrize("name", TINY_NAMES)
def test_convert_f32_exact(name, tiny, tmp_path):
    d = tiny(name)
    cfg = json.loads((d / "config.json").read_text())
    out = convert_hf(d, tmp_path / "m.gguf", "f32", progress=False)
    got = read_gguf(out.path)
    arch = GGUF_ARCH[name]
    assert out.arch == arch
    allowed = allowed_names(arch)
    assert all(template(n) in allowed for n in got), sorted(n for n in got if template(n) not in allowed)
    assert {n: v.shape for n, v in got.items()} == dict(expected_tensors(cfg["model_type"], cfg))

    want = expected_from_hf(name, cfg, hf_tensors(d))
    for key, w in want.items():
        if key.endswith("attn_kv_b(k_b,v_b).weight"):
            blk = key.split(".attn_kv_b")[0]
            k_b, v_b = got[f"{blk}.attn_k_b.weight"], got[f"{blk}.attn_v_b.weight"]
            kv = np.concatenate([k_b.transpose(0, 2, 1), v_b], axis=1).reshape(w.shape)
            np.testing.assert_array_equal(kv, w, err_msg=key)
            continue
        np.testing.assert_array_equal(got[key], w, err_msg=key)
    landed = {k.replace("attn_kv_b(k_b,v_b)", x) for k in want for x in ("attn_k_b", "attn_v_b")}
    assert set(got) - landed <= {"rope_freqs.weight"}, sorted(set(got) - landed)


def _meta(path: Path) -> dict:
    """All metadata, arrays materialized (the reader's string arrays view the mapped file)."""
    with kgguf.open(path) as f:
        return {k: v if isinstance(v, (str, int, float)) else list(v) for k, v in f.metadata.items()}


def test_metadata_deepseek(tiny, tmp_path):
    for name in ("deepseek-v2", "deepseek-v3", "deepseek-v2-qlora"):
        d = tiny(name)
        cfg = json.loads((d / "config.json").read_text())
        md = _meta(convert_hf(d, tmp_path / f"{name}.gguf", "f32", progress=False).path)
        a = "deepseek2."
        assert md["general.architecture"] == "deepseek2" and md["general.file_type"] == 0
        for key, value in {
            "block_count": cfg["num_hidden_layers"],
            "embedding_length": cfg["hidden_size"],
            "feed_forward_length": cfg["intermediate_size"],
            "attention.head_count": cfg["num_attention_heads"],
            "attention.head_count_kv": 1,
            "leading_dense_block_count": cfg["first_k_dense_replace"],
            "expert_count": cfg["n_routed_experts"],
            "expert_used_count": cfg["num_experts_per_tok"],
            "expert_shared_count": cfg["n_shared_experts"],
            "expert_feed_forward_length": cfg["moe_intermediate_size"],
            "attention.kv_lora_rank": cfg["kv_lora_rank"],
            "attention.key_length": cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"],
            "attention.value_length": cfg["kv_lora_rank"],
            "attention.key_length_mla": cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"],
            "attention.value_length_mla": cfg["v_head_dim"],
            "rope.dimension_count": cfg["qk_rope_head_dim"],
            "vocab_size": cfg["vocab_size"],
        }.items():
            assert md[a + key] == value, key
        assert md[a + "expert_weights_scale"] == pytest.approx(cfg["routed_scaling_factor"])
        assert (a + "attention.q_lora_rank" in md) == (cfg["q_lora_rank"] is not None)
        assert md[a + "expert_gating_func"] == (2 if name == "deepseek-v3" else 1)
        if name == "deepseek-v3":
            assert md[a + "expert_group_count"] == 4 and md[a + "expert_group_used_count"] == 2
            assert md[a + "expert_weights_norm"] is True
        if name == "deepseek-v2":
            assert md[a + "rope.scaling.type"] == "yarn"
            assert md[a + "rope.scaling.factor"] == 4.0
            assert md[a + "rope.scaling.original_context_length"] == 1024
            assert md[a + "rope.scaling.yarn_log_multiplier"] == pytest.approx(0.0707)


@pytest.mark.parametrize("name", ["qwen2moe", "qwen3moe", "mixtral", "llama", "qwen2", "qwen3", "gemma3"])
def test_metadata_values(name, tiny, tmp_path):
    d = tiny(name)
    cfg = json.loads((d / "config.json").read_text())
    md = _meta(convert_hf(d, tmp_path / "m.gguf", "f32", progress=False).path)
    a = GGUF_ARCH[name] + "."
    rope = cfg["rope_parameters"].get("full_attention", cfg["rope_parameters"])
    common = {
        "block_count": cfg["num_hidden_layers"],
        "context_length": cfg["max_position_embeddings"],
        "embedding_length": cfg["hidden_size"],
        "feed_forward_length": cfg["intermediate_size"],
        "attention.head_count": cfg["num_attention_heads"],
        "attention.head_count_kv": cfg["num_key_value_heads"],
    }
    for key, value in common.items():
        assert md[a + key] == value, key
    assert md[a + "rope.freq_base"] == pytest.approx(rope["rope_theta"])
    assert md[a + "attention.layer_norm_rms_epsilon"] == pytest.approx(cfg["rms_norm_eps"])
    if "moe" in name or name == "mixtral":
        n_exp = cfg.get("num_experts") or cfg.get("num_local_experts")
        assert md[a + "expert_count"] == n_exp and md[a + "expert_used_count"] == cfg["num_experts_per_tok"]
    if name in ("qwen2moe", "qwen3moe"):
        assert md[a + "expert_feed_forward_length"] == cfg["moe_intermediate_size"]
    if name == "qwen2moe":
        assert md[a + "expert_shared_feed_forward_length"] == cfg["shared_expert_intermediate_size"]
    if name in ("llama", "mixtral"):
        assert md["llama.vocab_size"] == cfg["vocab_size"]
        assert md["llama.rope.dimension_count"] == cfg["hidden_size"] // cfg["num_attention_heads"]
    if name in ("qwen3", "qwen3moe", "gemma3"):
        assert md[a + "attention.key_length"] == md[a + "attention.value_length"] == cfg["head_dim"]
    if name in ("qwen3", "gemma3"):
        assert md[a + "rope.scaling.type"] == "linear" and md[a + "rope.scaling.factor"] == rope["factor"]
    if name == "gemma3":
        assert md["gemma3.attention.sliding_window"] == cfg["sliding_window"]


def test_tokenizer_byte_level(tiny, tmp_path):
    d = tiny("qwen3moe")
    md = _meta(convert_hf(d, tmp_path / "m.gguf", "f32", progress=False).path)
    tj = json.loads((d / "tokenizer.json").read_text())
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "qwen2"
    tokens, types = list(md["tokenizer.ggml.tokens"]), list(md["tokenizer.ggml.token_type"])
    assert len(tokens) == 512
    for tok, i in tj["model"]["vocab"].items():
        assert tokens[i] == tok
    by_name = {a["content"]: a["id"] for a in tj["added_tokens"]}
    assert types[by_name["<|bos|>"]] == 3 and types[by_name["<think>"]] == 4
    assert tokens[511] == "[PAD511]" and types[511] == 5
    merges = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]
    assert list(md["tokenizer.ggml.merges"]) == merges
    assert md["tokenizer.ggml.bos_token_id"] == by_name["<|bos|>"]
    assert md["tokenizer.ggml.eos_token_id"] == by_name["<|eos|>"]
    assert md["tokenizer.ggml.padding_token_id"] == by_name["<|pad|>"]
    assert "messages" in md["tokenizer.chat_template"]


def test_tokenizer_sentencepiece(tiny, tmp_path):
    d = tiny("gemma3")
    md = _meta(convert_hf(d, tmp_path / "m.gguf", "f32", progress=False).path)
    tj = json.loads((d / "tokenizer.json").read_text())
    assert md["tokenizer.ggml.model"] == "llama" and md["tokenizer.ggml.add_space_prefix"] is False
    tokens, types = list(md["tokenizer.ggml.tokens"]), list(md["tokenizer.ggml.token_type"])
    scores = np.asarray(md["tokenizer.ggml.scores"])
    vocab = tj["model"]["vocab"]
    assert types[vocab["<0x41>"]] == 6 and types[vocab["<unk>"]] == 2 and types[vocab["<bos>"]] == 3
    first, second = tj["model"]["merges"][:2]
    first, second = ("".join(m) if isinstance(m, list) else m.replace(" ", "") for m in (first, second))
    assert scores[tokens.index(first)] == 0.0 > scores[tokens.index(second)] == -1.0
    assert md["tokenizer.ggml.bos_token_id"] == vocab["<bos>"]


def test_fused_experts_match_per_expert(tiny, tmp_path):
    """transformers 5 holds experts fused (gate_up_proj [E, 2I, H]); both forms convert alike."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM

    src = tiny("qwen3moe")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    state = model.state_dict()
    assert any(k.endswith("mlp.experts.gate_up_proj") for k in state)
    fused = tmp_path / "fused"
    fused.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, fused / "model.safetensors")
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            (fused / f.name).write_bytes(f.read_bytes())
    a = read_gguf(convert_hf(src, tmp_path / "a.gguf", "f32", progress=False).path)
    b = read_gguf(convert_hf(fused, tmp_path / "b.gguf", "f32", progress=False).path)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_legacy_mla(tiny, tmp_path):
    d = tiny("deepseek-v2")
    cfg = json.loads((d / "config.json").read_text())
    out = convert_hf(d, tmp_path / "m.gguf", "f32", progress=False, legacy_mla=True)
    got, md = read_gguf(out.path), _meta(out.path)
    hf = hf_tensors(d)
    np.testing.assert_array_equal(
        got["blk.1.attn_kv_b.weight"], hf["model.layers.1.self_attn.kv_b_proj.weight"]
    )
    assert not any("attn_k_b" in k for k in got)
    assert md["deepseek2.attention.head_count_kv"] == cfg["num_attention_heads"]
    assert md["deepseek2.attention.key_length"] == cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    assert "deepseek2.attention.key_length_mla" not in md
    assert {k: v.shape for k, v in got.items()} == dict(expected_tensors("deepseek_v2", cfg, legacy_mla=True))


# Relative RMS error the quantizers stay under on N(0, 0.05) weights.
TOLERANCE = {"F32": 0, "F16": 1e-3, "BF16": 8e-3, "Q8_0": 0.01, "Q6_K": 0.03, "Q5_K": 0.05, "Q5_1": 0.05}
TOLERANCE |= {"Q5_0": 0.06, "Q4_K": 0.12}


@pytest.mark.parametrize(
    ("name", "qtype"), [("deepseek-v3", "q4_k_m"), ("mixtral", "q4_k_m"), ("qwen2moe", "q8_0")]
)
def test_quantized_types_and_error(name, qtype, tiny, tmp_path):
    d = tiny(name)
    ref = read_gguf(convert_hf(d, tmp_path / "f32.gguf", "f32", progress=False).path)
    out = convert_hf(d, tmp_path / "q.gguf", qtype, progress=False)
    with kgguf.open(out.path) as f:
        types = {t.name: t.type.name for t in f}
        got = {t.name: t.dequantize().numpy() for t in f}
    for k, t in types.items():
        if k.endswith(("norm.weight", ".bias")) or "ffn_gate_inp" in k:
            assert t == "F32", k
        err = np.sqrt(np.mean((got[k] - ref[k]) ** 2) / np.mean(ref[k] ** 2))
        assert err <= TOLERANCE[t], (k, t, err)
    if qtype == "q8_0":
        assert {t for k, t in types.items() if k.endswith(".weight") and ref[k].ndim > 1} - {"F32"} == {
            "Q8_0"
        }
    else:
        assert types["output.weight"] == "Q6_K"
        # use_more_bits(i, n): i < n/8, i >= 7n/8 or (i - n/8) % 3 == 2 get Q6_K; 64/128-wide rows fall
        # back (Q4_K -> Q5_0, Q6_K -> Q8_0) as llama-quantize does.
        if name == "deepseek-v3":  # 3 layers: layer 2 gets more bits
            assert types["blk.0.ffn_down.weight"] == "Q4_K"
            assert types["blk.1.ffn_down_exps.weight"] == types["blk.1.ffn_down_shexp.weight"] == "Q5_0"
            assert types["blk.2.ffn_down_exps.weight"] == types["blk.2.ffn_down_shexp.weight"] == "Q8_0"
            assert types["blk.1.attn_q_b.weight"] == "Q5_0" and types["blk.1.attn_kv_a_mqa.weight"] == "Q4_K"
            assert types["blk.1.attn_k_b.weight"] == "Q5_0" and types["token_embd.weight"] == "Q4_K"
        else:  # 2 layers: layer 1 gets more bits
            assert (
                types["blk.0.ffn_down_exps.weight"] == "Q5_0"
                and types["blk.1.ffn_down_exps.weight"] == "Q8_0"
            )
            assert types["blk.0.attn_q.weight"] == "Q4_K"
    if name == "mixtral":  # llama.cpp's 8-expert rules
        assert types["blk.0.attn_v.weight"] == types["blk.0.attn_k.weight"] == "Q8_0"
        assert types["blk.0.attn_output.weight"] == "Q5_K"
    assert sum(out.types.values()) == len(types)


def test_gguf_py_reads_the_file(tiny, tmp_path):
    import gguf

    out = convert_hf(tiny("deepseek-v3"), tmp_path / "q.gguf", "q4_k_m", progress=False)
    mine = read_gguf(out.path)
    reader = gguf.GGUFReader(out.path)
    assert len(reader.tensors) == len(mine)
    for t in reader.tensors:
        x = gguf.quants.dequantize(t.data, t.tensor_type)
        np.testing.assert_allclose(
            x.reshape(mine[t.name].shape), mine[t.name], rtol=1e-3, atol=1e-6, err_msg=t.name
        )


def test_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(ValueError, match=r"gpt_neox.*deepseek_v2.*qwen3_moe"):
        convert_hf(tmp_path, tmp_path / "m.gguf")


def test_cli(tiny, tmp_path, capsys):
    from ktx.core.cli import convert as cli

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["convert", str(tiny("qwen2")), "-o", str(tmp_path / "q.gguf"), "--type", "q8_0"]
    )
    assert args.run(args) == 0
    assert "qwen2" in capsys.readouterr().out
    with kgguf.open(tmp_path / "q.gguf") as f:
        assert f.metadata["general.file_type"] == 7
        assert "output.weight" not in f.tensors  # qwen2 tiny ties its embeddings


def test_bf16_shards(tiny, tmp_path):
    """A sharded BF16 checkpoint (as on the Hub) converts to BF16 bit for bit."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny("mixtral"), dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "hf", max_shard_size="1MB")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "hf" / f).write_bytes((tiny("mixtral") / f).read_bytes())
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    got = read_gguf(convert_hf(tmp_path / "hf", tmp_path / "m.gguf", "bf16", progress=False).path)
    up = model.state_dict()["model.layers.1.mlp.experts.gate_up_proj"].float().numpy()
    np.testing.assert_array_equal(got["blk.1.ffn_up_exps.weight"], up[:, up.shape[1] // 2 :])
    embd = model.state_dict()["model.embed_tokens.weight"].float().numpy()
    np.testing.assert_array_equal(got["token_embd.weight"], embd)


def _openai_mxfp4(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [..., rows, cols] float -> OpenAI's MXFP4 checkpoint form: bytes [..., rows, cols / 32, 16]
    (element 2k in the low nibble, 2k + 1 in the high one) and E8M0 scales [..., rows, cols / 32].
    The codes come from ggml's MXFP4 blocks (scale byte, then element j | element j + 16 << 4)."""
    blocks = kgguf.quantize(w, kgguf.GGMLType.MXFP4).reshape(*w.shape[:-1], -1, 17)
    scales, qs = blocks[..., 0], blocks[..., 1:]
    codes = np.concatenate((qs & 0xF, qs >> 4), axis=-1)  # element order
    return (codes[..., 0::2] | codes[..., 1::2] << 4).astype(np.uint8), scales.copy()


def test_gpt_oss_mxfp4_checkpoint_converts_exactly(tiny, tmp_path):
    """OpenAI ships gpt-oss with MXFP4 experts (`*_blocks`, `*_scales`, quant_method mxfp4):
    converted to f32 they hold exactly transformers' own dequantization of those bytes, and
    `--type mxfp4` writes the same values back in ggml's blocks."""
    import torch
    from safetensors.numpy import load_file, save_file
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    src = tiny("gpt-oss")
    hf = tmp_path / "hf"
    hf.mkdir()
    for f in src.iterdir():
        if f.name != "model.safetensors":
            (hf / f.name).write_bytes(f.read_bytes())
    state = load_file(src / "model.safetensors")
    packed = {}
    for key in [k for k in state if re.search(r"experts\.(gate_up|down)_proj$", k)]:
        w = state.pop(key).astype(np.float32)
        # transformers holds them [E, in, out]; OpenAI's checkpoint [E, out, in]
        packed[key] = _openai_mxfp4(np.ascontiguousarray(w.transpose(0, 2, 1)))
        state[key + "_blocks"], state[key + "_scales"] = packed[key]
    save_file(state, hf / "model.safetensors")
    cfg = json.loads((hf / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "mxfp4"}
    (hf / "config.json").write_text(json.dumps(cfg))

    def oracle(key: str) -> np.ndarray:
        blocks, scales = (torch.from_numpy(a) for a in packed[key])
        # transformers' dequantizer of OpenAI's bytes, returned [E, in, out]: back to [E, out, in]
        return convert_moe_packed_tensors(blocks, scales, dtype=torch.float32).numpy().transpose(0, 2, 1)

    for out_type in ("f32", "mxfp4"):
        got = read_gguf(convert_hf(hf, tmp_path / f"{out_type}.gguf", out_type, progress=False).path)
        gate_up = oracle("model.layers.0.mlp.experts.gate_up_proj")  # [E, 2 * inter, hidden]
        np.testing.assert_array_equal(got["blk.0.ffn_gate_exps.weight"], gate_up[:, 0::2])
        np.testing.assert_array_equal(got["blk.0.ffn_up_exps.weight"], gate_up[:, 1::2])
        np.testing.assert_array_equal(
            got["blk.1.ffn_down_exps.weight"], oracle("model.layers.1.mlp.experts.down_proj")
        )
    with kgguf.open(tmp_path / "mxfp4.gguf") as f:
        assert f.tensors["blk.0.ffn_gate_exps.weight"].type == kgguf.GGMLType.MXFP4


@pytest.mark.parametrize("name", ["qwen3next", "qwen35moe"])
def test_mtp_and_vision_tensors_of_a_checkpoint_are_left_out(name, tiny, tmp_path):
    # Hub checkpoints of Qwen3-Next / Qwen3.5 also hold the next-token-prediction module (mtp.*)
    # and Qwen3.5's vision encoder (model.visual.*): no text-model tensor, no GGUF tensor
    import shutil

    import torch
    from safetensors.torch import save_file

    d = tmp_path / "hf"
    shutil.copytree(tiny(name), d)
    extra = {
        "mtp.fc.weight": torch.zeros(4, 8),
        "mtp.layers.0.mlp.gate.weight": torch.zeros(8, 4),
        "model.visual.blocks.0.attn.qkv.weight": torch.zeros(4, 4),
    }
    save_file(extra, str(d / "model-extra.safetensors"))
    plain = read_gguf(convert_hf(tiny(name), tmp_path / "plain.gguf", "f32", progress=False).path)
    got = read_gguf(convert_hf(d, tmp_path / "extra.gguf", "f32", progress=False).path)
    assert sorted(got) == sorted(plain)
