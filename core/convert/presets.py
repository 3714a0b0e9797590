"""Model shapes for `ktx synth`: the published configs of real MoE models, and tiny ones per arch.

Each preset is an HF-style config dict (with `model_type`), so a synthetic file gets exactly the
metadata and tensor layout `ktx convert` would give the real checkpoint (arch_meta, layout).
Values are those of the models' config.json on the Hub.
"""

from __future__ import annotations

import copy
from typing import Any

_YARN_DEEPSEEK = {
    "rope_type": "yarn",
    "factor": 40.0,
    "original_max_position_embeddings": 4096,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
}

PRESETS: dict[str, dict[str, Any]] = {
    # deepseek-ai/DeepSeek-V2-Lite
    "v2-lite": {
        "model_type": "deepseek_v2",
        "hidden_size": 2048,
        "num_hidden_layers": 27,
        "first_k_dense_replace": 1,
        "n_routed_experts": 64,
        "num_experts_per_tok": 6,
        "n_shared_experts": 2,
        "moe_intermediate_size": 1408,
        "intermediate_size": 10944,
        "q_lora_rank": None,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "vocab_size": 102400,
        "max_position_embeddings": 163840,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": {**_YARN_DEEPSEEK, "mscale": 0.707, "mscale_all_dim": 0.707},
        "scoring_func": "softmax",
        "n_group": 1,
        "topk_group": 1,
        "routed_scaling_factor": 1.0,
        "norm_topk_prob": False,
        "tie_word_embeddings": False,
    },
    # deepseek-ai/DeepSeek-V3 (and R1): same shapes
    "v3": {
        "model_type": "deepseek_v3",
        "hidden_size": 7168,
        "num_hidden_layers": 61,
        "first_k_dense_replace": 3,
        "n_routed_experts": 256,
        "num_experts_per_tok": 8,
        "n_shared_experts": 1,
        "moe_intermediate_size": 2048,
        "intermediate_size": 18432,
        "q_lora_rank": 1536,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "num_attention_heads": 128,
        "num_key_value_heads": 128,
        "vocab_size": 129280,
        "max_position_embeddings": 163840,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "rope_scaling": {**_YARN_DEEPSEEK, "mscale": 1.0, "mscale_all_dim": 1.0},
        "scoring_func": "sigmoid",
        "n_group": 8,
        "topk_group": 4,
        "routed_scaling_factor": 2.5,
        "norm_topk_prob": True,
        "tie_word_embeddings": False,
    },
    # Qwen/Qwen3-30B-A3B
    "qwen3-30b-a3b": {
        "model_type": "qwen3_moe",
        "hidden_size": 2048,
        "num_hidden_layers": 48,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": 768,
        "intermediate_size": 6144,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "norm_topk_prob": True,
        "tie_word_embeddings": False,
    },
    # Qwen/Qwen1.5-MoE-A2.7B (the qwen2moe architecture)
    "qwen1.5-moe-a2.7b": {
        "model_type": "qwen2_moe",
        "hidden_size": 2048,
        "num_hidden_layers": 24,
        "num_experts": 60,
        "num_experts_per_tok": 4,
        "moe_intermediate_size": 1408,
        "shared_expert_intermediate_size": 5632,
        "intermediate_size": 5632,
        "num_attention_heads": 16,
        "num_key_value_heads": 16,
        "vocab_size": 151936,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": False,
    },
    # mistralai/Mixtral-8x7B-v0.1
    "mixtral-8x7b": {
        "model_type": "mixtral",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "intermediate_size": 14336,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": False,
    },
    # openai/gpt-oss-20b
    "gpt-oss-20b": {
        "model_type": "gpt_oss",
        "hidden_size": 2880,
        "num_hidden_layers": 24,
        "num_local_experts": 32,
        "num_experts_per_tok": 4,
        "intermediate_size": 2880,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 201088,
        "sliding_window": 128,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 150000.0,
        "rope_scaling": {
            "rope_type": "yarn",
            "factor": 32.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
        },
        "attention_bias": True,
        "swiglu_limit": 7.0,
        "tie_word_embeddings": False,
    },
}
# zai-org/GLM-4.5-Air (GLM-4.5 below); the files carry one next-token-prediction layer
PRESETS["glm-4.5-air"] = {
    "model_type": "glm4_moe",
    "hidden_size": 4096,
    "num_hidden_layers": 46,
    "num_attention_heads": 96,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 10944,
    "moe_intermediate_size": 1408,
    "n_routed_experts": 128,
    "num_experts_per_tok": 8,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
    "n_group": 1,
    "topk_group": 1,
    "routed_scaling_factor": 1.0,
    "norm_topk_prob": True,
    "partial_rotary_factor": 0.5,
    "rope_theta": 1000000.0,
    "attention_bias": True,
    "use_qk_norm": False,
    "vocab_size": 151552,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "num_nextn_predict_layers": 1,
    "tie_word_embeddings": False,
}
# zai-org/GLM-4.5 (GLM-4.6 and 4.7 share its shapes)
PRESETS["glm-4.5"] = {
    **PRESETS["glm-4.5-air"],
    "hidden_size": 5120,
    "num_hidden_layers": 92,
    "intermediate_size": 12288,
    "moe_intermediate_size": 1536,
    "n_routed_experts": 160,
    "first_k_dense_replace": 3,
    "routed_scaling_factor": 2.5,
    "use_qk_norm": True,
}
# MiniMaxAI/MiniMax-M2 (M2.1, M2.5 and M2.7 share its shapes)
PRESETS["minimax-m2"] = {
    "model_type": "minimax_m2",
    "hidden_size": 3072,
    "num_hidden_layers": 62,
    "num_attention_heads": 48,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 1536,
    "num_local_experts": 256,
    "num_experts_per_tok": 8,
    "rotary_dim": 64,
    "partial_rotary_factor": 0.5,
    "rope_theta": 5000000.0,
    "vocab_size": 200064,
    "max_position_embeddings": 196608,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
# Qwen/Qwen3-Next-80B-A3B (Instruct and Thinking; Qwen3-Coder-Next has the same shapes): three
# gated-DeltaNet layers, then one gated full-attention layer, 48 deep; 512 experts, top-10
PRESETS["qwen3-next-80b-a3b"] = {
    "model_type": "qwen3_next",
    "hidden_size": 2048,
    "num_hidden_layers": 48,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "head_dim": 256,
    "intermediate_size": 5120,
    "moe_intermediate_size": 512,
    "shared_expert_intermediate_size": 512,
    "num_experts": 512,
    "num_experts_per_tok": 10,
    "norm_topk_prob": True,
    "full_attention_interval": 4,
    "linear_conv_kernel_dim": 4,
    "linear_key_head_dim": 128,
    "linear_value_head_dim": 128,
    "linear_num_key_heads": 16,
    "linear_num_value_heads": 32,
    "partial_rotary_factor": 0.25,
    "rope_theta": 10000000.0,
    "vocab_size": 151936,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
# Qwen/Qwen3.5-35B-A3B's text model (transformers' Qwen3_5MoeTextConfig defaults): Qwen3-Next's
# layer pattern, 40 deep, 256 experts top-8, a 248k vocabulary
PRESETS["qwen3.5-35b-a3b"] = {
    **PRESETS["qwen3-next-80b-a3b"],
    "model_type": "qwen3_5_moe_text",
    "num_hidden_layers": 40,
    "num_experts": 256,
    "num_experts_per_tok": 8,
    "vocab_size": 248320,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10000000.0,
        "partial_rotary_factor": 0.25,
        "mrope_section": [11, 11, 10],
        "mrope_interleaved": True,
    },
}
del PRESETS["qwen3.5-35b-a3b"]["norm_topk_prob"]  # Qwen3.5 always renormalises the top-k
# openai/gpt-oss-120b: gpt-oss-20b's layer, 36 deep with 128 experts
PRESETS["gpt-oss-120b"] = {**PRESETS["gpt-oss-20b"], "num_hidden_layers": 36, "num_local_experts": 128}

_TINY_COMMON = {
    "hidden_size": 256,
    "num_attention_heads": 4,
    "vocab_size": 512,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": False,
}
# Qwen3-Next / Qwen3.5: three gated-DeltaNet layers and one full-attention layer, 16 experts
_TINY_NEXT = {
    **_TINY_COMMON,
    "num_hidden_layers": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "num_experts": 16,
    "num_experts_per_tok": 4,
    "moe_intermediate_size": 64,
    "shared_expert_intermediate_size": 64,
    "linear_num_key_heads": 2,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 32,
    "linear_value_head_dim": 32,
}
# A few MB each; one dense + one MoE layer for DeepSeek, whose router is V2-Lite's (64 experts, top 6).
TINY: dict[str, dict[str, Any]] = {
    "deepseek2": {
        **PRESETS["v2-lite"],
        **_TINY_COMMON,
        "num_hidden_layers": 2,
        "moe_intermediate_size": 128,
        "intermediate_size": 512,
        "kv_lora_rank": 64,
        "qk_rope_head_dim": 16,
        "qk_nope_head_dim": 32,
        "v_head_dim": 32,
        "num_key_value_heads": 4,
        "rope_scaling": None,
    },
    "qwen3moe": {
        **PRESETS["qwen3-30b-a3b"],
        **_TINY_COMMON,
        "num_hidden_layers": 2,
        "num_experts": 32,
        "num_experts_per_tok": 4,
        "moe_intermediate_size": 128,
        "intermediate_size": 512,
        "num_key_value_heads": 2,
        "head_dim": 64,
    },
    "qwen2moe": {
        **PRESETS["qwen1.5-moe-a2.7b"],
        **_TINY_COMMON,
        "num_hidden_layers": 2,
        "num_experts": 16,
        "num_experts_per_tok": 4,
        "moe_intermediate_size": 128,
        "shared_expert_intermediate_size": 256,
        "intermediate_size": 256,
        "num_key_value_heads": 4,
    },
    "gpt-oss": {
        **PRESETS["gpt-oss-20b"],
        **_TINY_COMMON,
        "num_hidden_layers": 2,
        "num_local_experts": 16,
        "intermediate_size": 128,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "sliding_window": 16,
    },
    "glm4moe": {
        **PRESETS["glm-4.5"],
        **_TINY_COMMON,
        "num_hidden_layers": 3,
        "first_k_dense_replace": 1,
        "num_nextn_predict_layers": 0,
        "n_routed_experts": 16,
        "num_experts_per_tok": 4,
        "n_group": 4,
        "topk_group": 2,
        "moe_intermediate_size": 128,
        "intermediate_size": 512,
        "num_key_value_heads": 2,
        "head_dim": 64,
    },
    "minimax-m2": {
        **PRESETS["minimax-m2"],
        **_TINY_COMMON,
        "num_hidden_layers": 2,
        "num_local_experts": 16,
        "num_experts_per_tok": 4,
        "intermediate_size": 128,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "rotary_dim": 32,
    },
    "qwen3next": {**PRESETS["qwen3-next-80b-a3b"], **_TINY_NEXT},
    "qwen35moe": {**PRESETS["qwen3.5-35b-a3b"], **_TINY_NEXT},
    "llama": {
        **PRESETS["mixtral-8x7b"],
        **_TINY_COMMON,
        "num_hidden_layers": 2,
        "intermediate_size": 256,
        "num_key_value_heads": 2,
    },
}


def preset_config(
    arch: str | None, preset: str, layers: int | None = None, experts: int | None = None
) -> dict[str, Any]:
    """The config for (arch, preset), depth cut to `layers` (leading dense layers kept) and the
    routed experts per layer to `experts` (a smaller file with the same per-token work)."""
    from .arch_meta import gguf_arch

    if preset == "tiny":
        if arch not in TINY:
            raise ValueError(f"--preset tiny needs --arch, one of {', '.join(TINY)}")
        cfg = copy.deepcopy(TINY[arch])
    elif preset in PRESETS:
        cfg = copy.deepcopy(PRESETS[preset])
        real_arch = gguf_arch(cfg["model_type"])
        if arch is not None and arch != real_arch:
            raise ValueError(f"preset {preset!r} is a {real_arch} model, not {arch}")
    else:
        raise ValueError(f"unknown preset {preset!r}; choose from tiny, {', '.join(PRESETS)}")
    if layers is not None:
        dense = int(cfg.get("first_k_dense_replace") or 0)
        if layers <= dense:
            raise ValueError(
                f"{preset} has {dense} leading dense layers; --layers must be at least {dense + 1}"
            )
        cfg["num_hidden_layers"] = int(layers)
    if experts is not None:
        key = next((k for k in ("n_routed_experts", "num_local_experts", "num_experts") if cfg.get(k)), None)
        if key is None:
            raise ValueError(f"--experts: {preset} has no routed experts")
        top_k, groups = int(cfg["num_experts_per_tok"]), int(cfg.get("n_group") or 1)
        if experts < top_k or experts % groups:
            raise ValueError(
                f"--experts must be at least {top_k} (experts per token) and a multiple of {groups} "
                f"(expert groups), not {experts}"
            )
        cfg[key] = int(experts)
    if cfg.get("model_type") == "glm4_moe" and cfg.get("num_nextn_predict_layers"):
        cfg["ktx_mtp_blocks"] = int(cfg["num_nextn_predict_layers"])  # as the real files carry them
    return cfg
