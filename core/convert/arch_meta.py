"""GGUF hyperparameter metadata from a Hugging Face config, key for key as llama.cpp writes it.

The keys and their types follow llama.cpp's convert_hf_to_gguf.py (TextModel.set_gguf_parameters
and the per-model overrides for Llama/Mixtral, Qwen2/3 (MoE), DeepSeek-V2/V3 and Gemma 3); the key
names come from gguf-py's `gguf.Keys` tables. Counts are written as uint32, ratios as float32,
flags as bool, as GGUFWriter's typed adders do.

Deliberate differences, each to keep a file loadable where llama.cpp relies on a default that is
wrong for the model:
- DeepSeek: `expert_gating_func` is always written. When config.json has no `scoring_func`
  (transformers' own DeepseekV3Config has none), V3 gets sigmoid and V2 softmax, which is what
  each model computes; llama.cpp would leave it out and fall back to softmax for both.
"""

from __future__ import annotations

from typing import Any

import gguf

# HF model_type -> GGUF general.architecture
ARCHES: dict[str, str] = {
    "deepseek_v2": "deepseek2",
    "deepseek_v3": "deepseek2",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "mixtral": "llama",
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3_text": "gemma3",
    "gemma3": "gemma3",  # Gemma3ForConditionalGeneration: its text_config is converted
    "gpt_oss": "gpt-oss",
    "glm4_moe": "glm4moe",
    "minimax_m2": "minimax-m2",
    "qwen3_next": "qwen3next",
    "qwen3_5_moe_text": "qwen35moe",
    "qwen3_5_moe": "qwen35moe",  # Qwen3_5MoeForConditionalGeneration: its text_config is converted
}

# llama.cpp's LlamaFileType for each --type
FILE_TYPES: dict[str, int] = {
    "f32": int(gguf.LlamaFileType.ALL_F32),
    "f16": int(gguf.LlamaFileType.MOSTLY_F16),
    "bf16": int(gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": int(gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_k_m": int(gguf.LlamaFileType.MOSTLY_Q4_K_M),
    "q6_k": int(gguf.LlamaFileType.MOSTLY_Q6_K),
    "mxfp4": int(gguf.LlamaFileType.MOSTLY_MXFP4_MOE),
    "iq1_s": int(gguf.LlamaFileType.MOSTLY_IQ1_S),
    "iq2_xxs": int(gguf.LlamaFileType.MOSTLY_IQ2_XXS),
}

K = gguf.Keys


def gguf_arch(model_type: str | None) -> str:
    """The GGUF architecture for an HF model_type; ValueError naming the supported ones otherwise."""
    if model_type not in ARCHES:
        known = ", ".join(f"{k} ({v})" for k, v in ARCHES.items())
        raise ValueError(f"cannot convert model_type {model_type!r}; ktx converts: {known}")
    return ARCHES[model_type]


def rope_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings in transformers-5 form ({rope_type, rope_theta, factor, ...}).

    Accepts `rope_parameters` (transformers >= 5; Gemma 3 nests it per attention type, the global
    layers' entry is the one llama.cpp reads) and the older `rope_scaling` + `rope_theta`.
    """
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and params:
        if isinstance(params.get("full_attention"), dict):
            params = params["full_attention"]
        return dict(params)
    params = dict(cfg.get("rope_scaling") or {})
    if "type" in params and "rope_type" not in params:
        params["rope_type"] = params.pop("type")
    if cfg.get("rope_theta") is not None:
        params["rope_theta"] = cfg["rope_theta"]
    return params


def _first(cfg: dict[str, Any], *keys: str) -> Any:
    return next((cfg[k] for k in keys if cfg.get(k) is not None), None)


def _generic(arch: str, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    """TextModel.set_gguf_parameters: what every text model gets."""

    def put(key: str, value: Any) -> None:
        if value is not None:
            out[key.format(arch=arch)] = value

    put(K.LLM.BLOCK_COUNT, int(cfg["num_hidden_layers"]))
    put(K.LLM.CONTEXT_LENGTH, _first(cfg, "max_position_embeddings", "n_ctx"))
    put(K.LLM.EMBEDDING_LENGTH, _first(cfg, "hidden_size", "n_embd"))
    put(K.LLM.FEED_FORWARD_LENGTH, _first(cfg, "intermediate_size", "n_inner"))
    put(K.Attention.HEAD_COUNT, _first(cfg, "num_attention_heads", "n_head"))
    put(K.Attention.HEAD_COUNT_KV, _first(cfg, "num_key_value_heads", "n_kv_heads"))
    rope = rope_params(cfg)
    rope_type, factor = rope.get("rope_type"), rope.get("factor")
    if rope_type == "linear" and factor is not None:
        put(K.Rope.SCALING_TYPE, "linear")
        put(K.Rope.SCALING_FACTOR, float(factor))
    elif rope_type == "yarn" and factor is not None:
        put(K.Rope.SCALING_TYPE, "yarn")
        put(K.Rope.SCALING_FACTOR, float(factor))
        put(K.Rope.SCALING_ORIG_CTX_LEN, int(rope["original_max_position_embeddings"]))
        for key, name in (
            (K.Rope.SCALING_YARN_EXT_FACTOR, "extrapolation_factor"),
            (K.Rope.SCALING_YARN_ATTN_FACTOR, "attention_factor"),
            (K.Rope.SCALING_YARN_BETA_FAST, "beta_fast"),
            (K.Rope.SCALING_YARN_BETA_SLOW, "beta_slow"),
        ):
            if rope.get(name) is not None:
                put(key, float(rope[name]))
    if rope.get("rope_theta") is not None:
        put(K.Rope.FREQ_BASE, float(rope["rope_theta"]))
    eps = _first(cfg, "rms_norm_eps", "norm_eps")
    put(K.Attention.LAYERNORM_RMS_EPS, None if eps is None else float(eps))
    put(K.LLM.EXPERT_COUNT, _first(cfg, "num_local_experts", "num_experts"))
    put(K.LLM.EXPERT_USED_COUNT, _first(cfg, "num_experts_per_tok", "num_experts_per_token"))
    put(K.LLM.EXPERT_GROUP_COUNT, cfg.get("n_group"))
    put(K.LLM.EXPERT_GROUP_USED_COUNT, cfg.get("topk_group"))
    score = _first(cfg, "score_function", "scoring_func", "score_func")
    if score is not None:
        put(K.LLM.EXPERT_GATING_FUNC, _gating(score))
    if cfg.get("head_dim") is not None:
        put(K.Attention.KEY_LENGTH, int(cfg["head_dim"]))
        put(K.Attention.VALUE_LENGTH, int(cfg["head_dim"]))


def _gating(score: str) -> int:
    funcs = {
        "softmax": int(gguf.ExpertGatingFuncType.SOFTMAX),
        "sigmoid": int(gguf.ExpertGatingFuncType.SIGMOID),
    }
    if score not in funcs:
        raise ValueError(f"unsupported expert scoring function {score!r} (softmax or sigmoid)")
    return funcs[score]


def _llama(cfg: dict[str, Any], out: dict[str, Any]) -> None:
    out["llama.vocab_size"] = int(cfg["vocab_size"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    out["llama.rope.dimension_count"] = int(head_dim)


def _qwen_moe(arch: str, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    if cfg.get("moe_intermediate_size") is not None:
        out[f"{arch}.expert_feed_forward_length"] = int(cfg["moe_intermediate_size"])
    if cfg.get("shared_expert_intermediate_size") is not None:
        out[f"{arch}.expert_shared_feed_forward_length"] = int(cfg["shared_expert_intermediate_size"])


def _gpt_oss(cfg: dict[str, Any], out: dict[str, Any]) -> None:
    """GptOssModel.set_gguf_parameters: the window and the experts' width on top of the generic keys."""
    a = "gpt-oss"
    out[f"{a}.expert_feed_forward_length"] = int(cfg["intermediate_size"])
    if cfg.get("sliding_window"):
        out[f"{a}.attention.sliding_window"] = int(cfg["sliding_window"])
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    out[f"{a}.attention.key_length"] = out[f"{a}.attention.value_length"] = head_dim


def _glm4moe(cfg: dict[str, Any], out: dict[str, Any]) -> None:
    """Glm4MoeModel.set_gguf_parameters, less the next-token-prediction layers (ktx skips them:
    block_count is the model's own layers and no nextn_predict_layers is written)."""
    a = "glm4moe"
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    partial = float(rope_params(cfg).get("partial_rotary_factor", cfg.get("partial_rotary_factor", 0.5)))
    out[f"{a}.rope.dimension_count"] = int(head_dim * partial)
    out[f"{a}.expert_count"] = int(cfg["n_routed_experts"])
    out[f"{a}.expert_feed_forward_length"] = int(cfg["moe_intermediate_size"])
    out[f"{a}.expert_shared_count"] = int(cfg.get("n_shared_experts") or 0)
    out[f"{a}.leading_dense_block_count"] = int(cfg.get("first_k_dense_replace") or 0)
    out[f"{a}.expert_weights_scale"] = float(cfg.get("routed_scaling_factor", 1.0))
    out[f"{a}.expert_weights_norm"] = bool(cfg.get("norm_topk_prob", True))
    out[f"{a}.expert_gating_func"] = _gating("sigmoid")
    out[f"{a}.attention.key_length"] = out[f"{a}.attention.value_length"] = head_dim
    nextn = int(cfg.get("ktx_mtp_blocks") or 0)
    if nextn:  # `ktx synth` presets: the real files carry the MTP layer(s) as extra blocks
        out[f"{a}.block_count"] = int(cfg["num_hidden_layers"]) + nextn
        out[f"{a}.nextn_predict_layers"] = nextn


def _minimax_m2(cfg: dict[str, Any], out: dict[str, Any]) -> None:
    """MiniMaxM2Model.set_gguf_parameters: the experts' width, partial RoPE, sigmoid routing."""
    a = "minimax-m2"
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    rope = rope_params(cfg)
    partial = rope.get("partial_rotary_factor") or (cfg.get("rotary_dim") or head_dim) / head_dim
    out[f"{a}.rope.dimension_count"] = int(head_dim * float(partial))
    out[f"{a}.expert_feed_forward_length"] = int(cfg["intermediate_size"])
    out[f"{a}.expert_gating_func"] = _gating("sigmoid")


def _qwen3next(cfg: dict[str, Any], out: dict[str, Any], a: str = "qwen3next") -> None:
    """Qwen3NextModel.set_gguf_parameters: the experts' widths, the linear-attention (gated
    DeltaNet) sizes as llama.cpp's ssm.* keys, the layer pattern and partial RoPE. Qwen3.5 (a =
    qwen35moe) adds its M-RoPE sections, padded to four; ktx writes no MTP block."""
    _qwen_moe(a, cfg, out)
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    out[f"{a}.attention.key_length"] = out[f"{a}.attention.value_length"] = head_dim
    out[f"{a}.ssm.conv_kernel"] = int(cfg["linear_conv_kernel_dim"])
    out[f"{a}.ssm.state_size"] = int(cfg["linear_key_head_dim"])
    out[f"{a}.ssm.group_count"] = int(cfg["linear_num_key_heads"])
    out[f"{a}.ssm.time_step_rank"] = int(cfg["linear_num_value_heads"])
    out[f"{a}.ssm.inner_size"] = int(cfg["linear_value_head_dim"]) * int(cfg["linear_num_value_heads"])
    out[f"{a}.full_attention_interval"] = full_attention_interval(cfg)
    partial = rope_params(cfg).get("partial_rotary_factor", cfg.get("partial_rotary_factor", 0.25))
    out[f"{a}.rope.dimension_count"] = int(head_dim * float(partial))
    if a == "qwen35moe":
        sections = list(rope_params(cfg).get("mrope_section") or [11, 11, 10])
        out[f"{a}.rope.dimension_sections"] = [int(s) for s in sections] + [0] * (4 - len(sections))


def full_attention_interval(cfg: dict[str, Any]) -> int:
    """Qwen3-Next's layer pattern as llama.cpp stores it: every n-th layer is full attention."""
    types = cfg.get("layer_types")
    if not types:
        return int(cfg.get("full_attention_interval", 4))
    full = [i for i, t in enumerate(types) if t == "full_attention"]
    n = full[0] + 1 if full else len(types) + 1
    if [i for i in range(len(types)) if (i + 1) % n == 0] != full:
        raise ValueError(f"layer_types {types} is not one full-attention layer every n (llama.cpp's pattern)")
    return n


def _deepseek(model_type: str, cfg: dict[str, Any], out: dict[str, Any], legacy_mla: bool) -> None:
    a = "deepseek2"
    n_experts = cfg.get("n_routed_experts")
    dense = cfg.get("first_k_dense_replace")
    if dense is None:
        dense = cfg["num_hidden_layers"] if n_experts is None else 0
    kv_lora = int(cfg.get("kv_lora_rank") or 512)
    rope_dim, nope, v_dim = int(cfg["qk_rope_head_dim"]), int(cfg["qk_nope_head_dim"]), int(cfg["v_head_dim"])
    out[f"{a}.attention.head_count_kv"] = (
        int(cfg.get("num_key_value_heads") or cfg["num_attention_heads"]) if legacy_mla else 1
    )
    out[f"{a}.leading_dense_block_count"] = int(dense)
    out[f"{a}.vocab_size"] = int(cfg["vocab_size"])
    if cfg.get("q_lora_rank") is not None:
        out[f"{a}.attention.q_lora_rank"] = int(cfg["q_lora_rank"])
    out[f"{a}.attention.kv_lora_rank"] = kv_lora
    if legacy_mla:  # llama.cpp before the MLA split (attn_kv_b): per-head key and value sizes
        out[f"{a}.attention.key_length"] = nope + rope_dim
        out[f"{a}.attention.value_length"] = v_dim
    else:  # MQA over the compressed latent; the per-head sizes move to *_mla
        out[f"{a}.attention.key_length"] = kv_lora + rope_dim
        out[f"{a}.attention.value_length"] = kv_lora
        out[f"{a}.attention.key_length_mla"] = nope + rope_dim
        out[f"{a}.attention.value_length_mla"] = v_dim
    out[f"{a}.expert_feed_forward_length"] = int(_first(cfg, "moe_intermediate_size", "intermediate_size"))
    if n_experts is not None:
        out[f"{a}.expert_count"] = int(n_experts)
    out[f"{a}.expert_shared_count"] = int(cfg.get("n_shared_experts") or 0)
    if cfg.get("routed_scaling_factor") is not None:
        out[f"{a}.expert_weights_scale"] = float(cfg["routed_scaling_factor"])
    if cfg.get("norm_topk_prob"):
        out[f"{a}.expert_weights_norm"] = True
    if f"{a}.expert_gating_func" not in out and n_experts is not None:
        out[f"{a}.expert_gating_func"] = _gating("sigmoid" if model_type == "deepseek_v3" else "softmax")
    out[f"{a}.rope.dimension_count"] = rope_dim
    mscale_all = rope_params(cfg).get("mscale_all_dim")
    if mscale_all is not None:  # llama.cpp's legacy convention for DeepSeek: 0.1 * mscale_all_dim
        out[f"{a}.rope.scaling.yarn_log_multiplier"] = 0.1 * float(mscale_all)


def _gemma3(cfg: dict[str, Any]) -> dict[str, Any]:
    """Gemma3Model.set_gguf_parameters, which replaces the generic keys rather than adding to them."""
    a = "gemma3"
    head_dim = int(cfg.get("head_dim", 256))
    rope = rope_params(cfg)
    out: dict[str, Any] = {
        f"{a}.context_length": int(cfg.get("max_position_embeddings", 131072)),
        f"{a}.embedding_length": int(cfg["hidden_size"]),
        f"{a}.block_count": int(cfg["num_hidden_layers"]),
        f"{a}.feed_forward_length": int(cfg["intermediate_size"]),
        f"{a}.attention.head_count": int(cfg.get("num_attention_heads", 8)),
        f"{a}.attention.layer_norm_rms_epsilon": float(cfg.get("rms_norm_eps", 1e-6)),
        f"{a}.attention.key_length": head_dim,
        f"{a}.attention.value_length": head_dim,
        f"{a}.rope.freq_base": float(rope.get("rope_theta", 1_000_000.0)),
        f"{a}.attention.sliding_window": int(cfg["sliding_window"]),
        f"{a}.attention.head_count_kv": int(cfg.get("num_key_value_heads", 4)),
    }
    if rope.get("rope_type") == "linear" and rope.get("factor") is not None:
        out[f"{a}.rope.scaling.type"] = "linear"
        out[f"{a}.rope.scaling.factor"] = float(rope["factor"])
    return out


def hparams(model_type: str, cfg: dict[str, Any], *, legacy_mla: bool = False) -> dict[str, Any]:
    """`{arch}.*` metadata for a config, in llama.cpp's order and types (see the module notes)."""
    arch = gguf_arch(model_type)
    if arch == "gemma3":
        return _gemma3(cfg)
    out: dict[str, Any] = {}
    _generic(arch, cfg, out)
    if arch == "llama":
        _llama(cfg, out)
    elif arch in ("qwen2moe", "qwen3moe"):
        _qwen_moe(arch, cfg, out)
    elif arch == "deepseek2":
        _deepseek(model_type, cfg, out, legacy_mla)
    elif arch == "gpt-oss":
        _gpt_oss(cfg, out)
    elif arch == "glm4moe":
        _glm4moe(cfg, out)
    elif arch == "minimax-m2":
        _minimax_m2(cfg, out)
    elif arch in ("qwen3next", "qwen35moe"):
        _qwen3next(cfg, out, arch)
    return out


def general(name: str, out_type: str) -> dict[str, Any]:
    """general.* keys (general.architecture is GGUFWriter's own)."""
    return {
        "general.type": "model",
        "general.name": name,
        "general.file_type": FILE_TYPES[out_type],
        "general.quantization_version": gguf.GGML_QUANT_VERSION,
    }
