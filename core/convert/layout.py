"""The GGUF tensors a model config implies: names and numpy-order shapes, without any weights.

`ktx synth` builds its files from this list, and the convert tests check that converting a real
checkpoint yields exactly this list, so a synthetic model has the layout of a converted one.
"""

from __future__ import annotations

from typing import Any

from .arch_meta import full_attention_interval, gguf_arch
from .tensor_names import llama3_rope_factors, n_experts

Shape = tuple[int, ...]


def _is_moe_layer(model_type: str, cfg: dict[str, Any], bid: int) -> bool:
    if n_experts(cfg) == 0:
        return False
    if model_type.startswith("deepseek") or model_type == "glm4_moe":
        dense = cfg.get("first_k_dense_replace") or 0
        return bid >= dense and bid % int(cfg.get("moe_layer_freq") or 1) == 0
    if model_type in ("qwen2_moe", "qwen3_moe", "qwen3_next", "qwen3_5_moe_text"):
        step = int(cfg.get("decoder_sparse_step") or 1)
        return bid not in (cfg.get("mlp_only_layers") or []) and (bid + 1) % step == 0
    return True


def _attention(model_type: str, cfg: dict[str, Any], legacy_mla: bool) -> list[tuple[str, Shape]]:
    h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    if model_type.startswith("deepseek"):
        nope, rope, v = int(cfg["qk_nope_head_dim"]), int(cfg["qk_rope_head_dim"]), int(cfg["v_head_dim"])
        kv_lora, q_lora = int(cfg["kv_lora_rank"]), cfg.get("q_lora_rank")
        out: list[tuple[str, Shape]] = []
        if q_lora:
            out += [
                ("attn_q_a", (q_lora, h)),
                ("attn_q_a_norm", (q_lora,)),
                ("attn_q_b", (heads * (nope + rope), q_lora)),
            ]
        else:
            out += [("attn_q", (heads * (nope + rope), h))]
        out += [("attn_kv_a_mqa", (kv_lora + rope, h)), ("attn_kv_a_norm", (kv_lora,))]
        if legacy_mla:
            out += [("attn_kv_b", (heads * (nope + v), kv_lora))]
        else:
            out += [("attn_k_b", (heads, kv_lora, nope)), ("attn_v_b", (heads, v, kv_lora))]
        return [*out, ("attn_output", (h, heads * v))]
    hd = int(cfg.get("head_dim") or h // heads)
    kv = int(cfg.get("num_key_value_heads") or heads)
    if model_type in ("qwen3_next", "qwen3_5_moe_text"):  # q and its output gate per head; q/k norms
        return [
            ("attn_q", (heads * hd * 2, h)),
            ("attn_k", (kv * hd, h)),
            ("attn_v", (kv * hd, h)),
            ("attn_output", (h, heads * hd)),
            ("attn_q_norm", (hd,)),
            ("attn_k_norm", (hd,)),
        ]
    out = [
        ("attn_q", (heads * hd, h)),
        ("attn_k", (kv * hd, h)),
        ("attn_v", (kv * hd, h)),
        ("attn_output", (h, heads * hd)),
    ]
    if model_type in ("qwen2", "qwen2_moe") or cfg.get("attention_bias"):
        out += [("attn_q.bias", (heads * hd,)), ("attn_k.bias", (kv * hd,)), ("attn_v.bias", (kv * hd,))]
    if model_type == "gpt_oss":  # an output bias too, and one sink logit per head
        out += [("attn_output.bias", (h,)), ("attn_sinks", (heads,))]
    if model_type in ("qwen3", "qwen3_moe", "gemma3_text", "gemma3") or cfg.get("use_qk_norm"):
        out += [("attn_q_norm", (hd,)), ("attn_k_norm", (hd,))]
    if model_type == "minimax_m2":  # over all heads together
        out += [("attn_q_norm", (heads * hd,)), ("attn_k_norm", (kv * hd,))]
    return out


def _ffn(model_type: str, cfg: dict[str, Any], bid: int) -> list[tuple[str, Shape]]:
    h = int(cfg["hidden_size"])
    if not _is_moe_layer(model_type, cfg, bid):
        i = int(cfg["intermediate_size"])
        return [("ffn_gate", (i, h)), ("ffn_up", (i, h)), ("ffn_down", (h, i))]
    e = n_experts(cfg)
    i = int(cfg.get("moe_intermediate_size") or cfg["intermediate_size"])
    out: list[tuple[str, Shape]] = [
        ("ffn_gate_inp", (e, h)),
        ("ffn_gate_exps", (e, i, h)),
        ("ffn_up_exps", (e, i, h)),
        ("ffn_down_exps", (e, h, i)),
    ]
    shared = 0
    if (model_type.startswith("deepseek") or model_type == "glm4_moe") and cfg.get("n_shared_experts"):
        shared = i * int(cfg["n_shared_experts"])
    elif model_type in ("qwen2_moe", "qwen3_next", "qwen3_5_moe_text") and cfg.get(
        "shared_expert_intermediate_size"
    ):
        shared = int(cfg["shared_expert_intermediate_size"])
        out.append(("ffn_gate_inp_shexp", (1, h)))
    if shared:
        out += [
            ("ffn_gate_shexp", (shared, h)),
            ("ffn_up_shexp", (shared, h)),
            ("ffn_down_shexp", (h, shared)),
        ]
    if model_type in ("deepseek_v3", "glm4_moe", "minimax_m2"):
        out.append(("exp_probs_b.bias", (e,)))
    if model_type == "gpt_oss":  # biases on the router and every expert projection
        out += [
            ("ffn_gate_inp.bias", (e,)),
            ("ffn_gate_exps.bias", (e, i)),
            ("ffn_up_exps.bias", (e, i)),
            ("ffn_down_exps.bias", (e, h)),
        ]
    return out


def _linear_attention(cfg: dict[str, Any], split_ba: bool = False) -> list[tuple[str, Shape]]:
    """Qwen3-Next's gated DeltaNet, as llama.cpp's converter writes it (tensor_names.py); Qwen3.5
    has ssm_beta and ssm_alpha (split_ba) for ssm_ba."""
    h = int(cfg["hidden_size"])
    nk, dk = int(cfg["linear_num_key_heads"]), int(cfg["linear_key_head_dim"])
    nv, dv = int(cfg["linear_num_value_heads"]), int(cfg["linear_value_head_dim"])
    conv = 2 * nk * dk + nv * dv
    return [
        ("attn_qkv", (conv, h)),
        ("attn_gate", (nv * dv, h)),
        *((("ssm_beta", (nv, h)), ("ssm_alpha", (nv, h))) if split_ba else (("ssm_ba", (2 * nv, h)),)),
        ("ssm_conv1d", (conv, int(cfg["linear_conv_kernel_dim"]))),
        ("ssm_a", (nv,)),
        ("ssm_dt.bias", (nv,)),
        ("ssm_norm", (dv,)),
        ("ssm_out", (h, nv * dv)),
    ]


def _mixer(model_type: str, cfg: dict[str, Any], bid: int, legacy_mla: bool) -> list[tuple[str, Shape]]:
    if model_type in ("qwen3_next", "qwen3_5_moe_text") and (bid + 1) % full_attention_interval(cfg):
        return _linear_attention(cfg, split_ba=model_type == "qwen3_5_moe_text")
    return _attention(model_type, cfg, legacy_mla)


def nextn_layers(arch: str, cfg: dict[str, Any]) -> int:
    """Next-token-prediction (MTP) blocks a file of this config carries: `ktx synth`'s GLM presets
    mark them (`ktx_mtp_blocks`) as the real files have them; `ktx convert` skips them."""
    return int(cfg.get("ktx_mtp_blocks") or 0) if arch == "glm4moe" else 0


def expected_tensors(
    model_type: str, cfg: dict[str, Any], legacy_mla: bool = False
) -> list[tuple[str, Shape]]:
    """[(gguf name, numpy shape)] in file order: token_embd, blocks, output_norm, output, rope_freqs."""
    arch = gguf_arch(model_type)
    h, vocab = int(cfg["hidden_size"]), int(cfg["vocab_size"])
    tied = bool(cfg.get("tie_word_embeddings", arch == "gemma3")) or arch == "gemma3"
    out: list[tuple[str, Shape]] = [("token_embd.weight", (vocab, h))]
    for bid in range(int(cfg["num_hidden_layers"])):
        mlp_norm = (
            "post_attention_norm" if arch in ("gpt-oss", "glm4moe", "qwen3next", "qwen35moe") else "ffn_norm"
        )
        norms = [("attn_norm", (h,)), (mlp_norm, (h,))]
        if arch == "gemma3":
            norms += [("post_attention_norm", (h,)), ("post_ffw_norm", (h,))]
        block = norms + _mixer(model_type, cfg, bid, legacy_mla) + _ffn(model_type, cfg, bid)
        names = [
            (f"blk.{bid}.{n}" if "." in n or n == "ssm_a" else f"blk.{bid}.{n}.weight", s) for n, s in block
        ]
        out += sorted(names)
    for bid in range(int(cfg["num_hidden_layers"]), int(cfg["num_hidden_layers"]) + nextn_layers(arch, cfg)):
        # GLM-4.x files carry the next-token-prediction layer: a MoE block and its nextn parts
        block = [("attn_norm", (h,)), ("post_attention_norm", (h,))]
        block += _attention(model_type, cfg, legacy_mla) + _ffn(model_type, cfg, bid)
        block += [
            ("nextn.eh_proj", (h, 2 * h)),
            ("nextn.enorm", (h,)),
            ("nextn.hnorm", (h,)),
            ("nextn.shared_head_norm", (h,)),
        ]
        out += sorted(
            (f"blk.{bid}.{n}" if "." in n and not n.startswith("nextn") else f"blk.{bid}.{n}.weight", s)
            for n, s in block
        )
    out.append(("output_norm.weight", (h,)))
    if not tied:
        out.append(("output.weight", (vocab, h)))
    factors = llama3_rope_factors(cfg) if arch == "llama" else None
    if factors is not None:
        out.append(("rope_freqs.weight", factors.shape))
    return out
