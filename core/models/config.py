"""A transformers config from GGUF metadata alone, as llama.cpp writes it.

``--model-path`` (a folder with config.json) overrides: then the GGUF only supplies weights.
Key names are llama.cpp's (``{arch}.attention.head_count`` ...); see gguf-py's ``Keys``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ModelError
from .registry import VARIANTS, Arch, check_architecture, variant_for_model_type


class _Meta:
    """Typed access to ``{arch}.*`` keys with errors that name the file and key."""

    def __init__(self, gf: Any):
        self.gf, self.m = gf, gf.metadata
        self.arch = check_architecture(self.m.get_str("general.architecture", None), str(gf.paths[0]))

    def get(self, key: str, default: Any = None) -> Any:
        full = f"{self.arch}.{key}"
        return self.m[full] if full in self.m else default  # noqa: SIM401 (Metadata has no .get)

    def need(self, key: str) -> Any:
        value = self.get(key)
        if value is None:
            raise ModelError(
                f"{self.gf.paths[0]}: metadata key {self.arch}.{key} is missing; the file is incomplete"
            )
        return value

    def has_tensor(self, name: str) -> bool:
        return name in self.gf.tensors


def _vocab_size(meta: _Meta) -> int:
    if meta.get("vocab_size") is not None:
        return int(meta.get("vocab_size"))
    if "tokenizer.ggml.tokens" in meta.m:
        return len(meta.m["tokenizer.ggml.tokens"])
    return int(meta.gf.tensors["token_embd.weight"].shape[0])


def _rope(meta: _Meta) -> dict[str, Any]:
    params: dict[str, Any] = {
        "rope_type": "default",
        "rope_theta": float(meta.get("rope.freq_base", 10000.0)),
    }
    kind = meta.get("rope.scaling.type")
    factor = meta.get("rope.scaling.factor")
    if kind in ("linear", "yarn") and factor and float(factor) != 1.0:
        params.update(rope_type=kind, factor=float(factor))
        if kind == "yarn":
            original = meta.get("rope.scaling.original_context_length")
            if original:
                params["original_max_position_embeddings"] = int(original)
            params.update(beta_fast=32.0, beta_slow=1.0)
            log_mul = meta.get("rope.scaling.yarn_log_multiplier")
            if log_mul:  # llama.cpp stores 0.1 * mscale_all_dim; DeepSeek uses mscale == mscale_all_dim
                params.update(mscale=float(log_mul) / 0.1, mscale_all_dim=float(log_mul) / 0.1)
    return params


def _common(meta: _Meta) -> dict[str, Any]:
    heads = int(meta.need("attention.head_count"))
    cfg = {
        "vocab_size": _vocab_size(meta),
        "hidden_size": int(meta.need("embedding_length")),
        "num_hidden_layers": int(meta.need("block_count")),
        "intermediate_size": int(meta.get("feed_forward_length", 0) or 0) or None,
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.get("attention.head_count_kv", heads)),
        "rms_norm_eps": float(meta.get("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": int(meta.get("context_length", 4096)),
        "rope_parameters": _rope(meta),
        "tie_word_embeddings": not meta.has_tensor("output.weight"),
    }
    if meta.get("attention.key_length"):
        cfg["head_dim"] = int(meta.get("attention.key_length"))
    for key, field in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id")):
        if f"tokenizer.ggml.{key}" in meta.m:
            cfg[field] = int(meta.m[f"tokenizer.ggml.{key}"])
    if cfg["intermediate_size"] is None:
        cfg.pop("intermediate_size")
    return cfg


def _moe(meta: _Meta, cfg: dict[str, Any], experts_key: str) -> None:
    cfg[experts_key] = int(meta.need("expert_count"))
    cfg["num_experts_per_tok"] = int(meta.need("expert_used_count"))


def _llama(meta: _Meta) -> tuple[str, dict]:
    cfg = _common(meta)
    if meta.get("expert_count"):
        _moe(meta, cfg, "num_local_experts")
        if meta.get("expert_feed_forward_length"):
            cfg["intermediate_size"] = int(meta.get("expert_feed_forward_length"))
        return "mixtral", cfg
    return "llama", cfg


def _qwen_moe(variant: str):
    def build(meta: _Meta) -> tuple[str, dict]:
        cfg = _common(meta)
        _moe(meta, cfg, "num_experts")
        cfg["moe_intermediate_size"] = int(meta.need("expert_feed_forward_length"))
        cfg.update(decoder_sparse_step=1, mlp_only_layers=[])
        if variant == "qwen2_moe":
            shared = meta.get("expert_shared_feed_forward_length")
            cfg["shared_expert_intermediate_size"] = int(shared) if shared else 0
            cfg["norm_topk_prob"] = bool(meta.get("expert_weights_norm", False))
        else:
            cfg["norm_topk_prob"] = bool(meta.get("expert_weights_norm", True))
        return variant, cfg

    return build


def _gemma3(meta: _Meta) -> tuple[str, dict]:
    cfg = _common(meta)
    layers, head_dim = cfg["num_hidden_layers"], cfg.get("head_dim", 256)
    # llama.cpp: 1/sqrt(head_dim), except Gemma 3 27B (62 layers), which scales by hidden/heads.
    cfg["query_pre_attn_scalar"] = (
        cfg["hidden_size"] // cfg["num_attention_heads"] if layers == 62 else head_dim
    )
    window = meta.get("attention.sliding_window")
    cfg["sliding_window"] = int(window) if window else None
    cfg["layer_types"] = [
        "full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)
    ]
    global_rope = cfg.pop("rope_parameters")
    cfg["rope_parameters"] = {
        "full_attention": global_rope,
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    }
    cfg["final_logit_softcapping"] = meta.get("final_logit_softcapping")
    cfg["attn_logit_softcapping"] = meta.get("attn_logit_softcapping")
    cfg["hidden_activation"] = "gelu_pytorch_tanh"
    return "gemma3_text", cfg


def _deepseek_moe(meta: _Meta, norm_default: bool) -> dict[str, Any]:
    """DeepSeek-style MoE keys (DeepSeek-V2/V3, GLM-4.x): experts, shared experts, leading dense
    layers, routed scaling, top-k renormalisation and expert groups."""
    groups = int(meta.get("expert_group_count", 1) or 1)
    return dict(
        n_routed_experts=int(meta.need("expert_count")),
        num_experts_per_tok=int(meta.need("expert_used_count")),
        moe_intermediate_size=int(meta.need("expert_feed_forward_length")),
        n_shared_experts=int(meta.get("expert_shared_count", 0) or 0),
        first_k_dense_replace=int(meta.get("leading_dense_block_count", 0) or 0),
        routed_scaling_factor=float(meta.get("expert_weights_scale", 1.0) or 1.0),
        norm_topk_prob=bool(meta.get("expert_weights_norm", norm_default)),
        n_group=groups,
        topk_group=int(meta.get("expert_group_used_count", groups) or groups),
    )


def _deepseek2(meta: _Meta) -> tuple[str, dict]:
    cfg = _common(meta)
    sigmoid = int(meta.get("expert_gating_func", 1)) == 2
    rope_dim = int(meta.need("rope.dimension_count"))
    # Split-MLA GGUFs (attn_k_b/attn_v_b) store the MQA view in key_length and the real sizes in *_mla.
    k_len = int(meta.get("attention.key_length_mla") or meta.need("attention.key_length"))
    v_len = int(meta.get("attention.value_length_mla") or meta.need("attention.value_length"))
    q_lora = int(meta.get("attention.q_lora_rank", 0) or 0)
    groups = int(meta.get("expert_group_count", 1) or 1)
    cfg.pop("head_dim", None)
    cfg.update(
        num_key_value_heads=cfg["num_attention_heads"],
        q_lora_rank=q_lora or None,
        kv_lora_rank=int(meta.need("attention.kv_lora_rank")),
        qk_rope_head_dim=rope_dim,
        qk_nope_head_dim=k_len - rope_dim,
        v_head_dim=v_len,
        **_deepseek_moe(meta, norm_default=False),
    )
    if sigmoid:
        cfg["rope_interleave"] = True
        return "deepseek_v3", cfg
    cfg["topk_method"] = "group_limited_greedy" if groups > 1 else "greedy"
    return "deepseek_v2", cfg


def _gpt_oss(meta: _Meta) -> tuple[str, dict]:
    cfg = _common(meta)
    _moe(meta, cfg, "num_local_experts")
    cfg["intermediate_size"] = int(meta.need("expert_feed_forward_length"))
    window = meta.get("attention.sliding_window")
    cfg["sliding_window"] = int(window) if window else None
    # llama.cpp's SWA pattern 2: even layers slide, odd ones see everything
    cfg["layer_types"] = [
        "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(cfg["num_hidden_layers"])
    ]
    cfg["attention_bias"] = True
    rope = cfg["rope_parameters"]
    if rope.get("rope_type") == "yarn":
        # gpt-oss's config.json: YaRN without rounding the ramp's ends (transformers' `truncate`)
        rope["truncate"] = False
    return "gpt_oss", cfg


def _glm4moe(meta: _Meta) -> tuple[str, dict]:
    cfg = _common(meta)
    heads = cfg["num_attention_heads"]
    head_dim = int(meta.get("attention.key_length") or cfg["hidden_size"] // heads)
    # the files carry the next-token-prediction layer(s) as extra blocks: not part of the model
    nextn = int(meta.get("nextn_predict_layers", 0) or 0)
    cfg.update(
        num_hidden_layers=cfg["num_hidden_layers"] - nextn,
        head_dim=head_dim,
        **_deepseek_moe(meta, norm_default=True),
        use_qk_norm=meta.has_tensor("blk.0.attn_q_norm.weight"),
        attention_bias=meta.has_tensor("blk.0.attn_q.bias"),
    )
    rope_dim = int(meta.get("rope.dimension_count") or head_dim)
    cfg["rope_parameters"]["partial_rotary_factor"] = rope_dim / head_dim  # GLM-4.x: 0.5
    return "glm4_moe", cfg


def _minimax_m2(meta: _Meta) -> tuple[str, dict]:
    cfg = _common(meta)
    _moe(meta, cfg, "num_local_experts")
    cfg["intermediate_size"] = int(meta.need("expert_feed_forward_length"))
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    rope_dim = int(meta.get("rope.dimension_count") or head_dim)
    cfg["rope_parameters"]["partial_rotary_factor"] = rope_dim / head_dim  # MiniMax-M2: 64 of 128
    return "minimax_m2", cfg


def _qwen3next(meta: _Meta) -> tuple[str, dict]:
    cfg = _common(meta)
    # Qwen3.5 files carry the next-token-prediction layer(s) as extra blocks: not part of the model
    cfg["num_hidden_layers"] -= int(meta.get("nextn_predict_layers", 0) or 0)
    _moe(meta, cfg, "num_experts")
    cfg["moe_intermediate_size"] = int(meta.need("expert_feed_forward_length"))
    cfg["shared_expert_intermediate_size"] = int(meta.get("expert_shared_feed_forward_length", 0) or 0)
    cfg.update(decoder_sparse_step=1, mlp_only_layers=[])
    head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    rope_dim = int(meta.get("rope.dimension_count") or head_dim // 4)
    cfg["rope_parameters"]["partial_rotary_factor"] = rope_dim / head_dim  # Qwen3-Next: 64 of 256
    # the gated DeltaNet layers: llama.cpp's ssm.* keys (its key and value heads share a width)
    state, inner = int(meta.need("ssm.state_size")), int(meta.need("ssm.inner_size"))
    v_heads = int(meta.need("ssm.time_step_rank"))
    cfg.update(
        linear_conv_kernel_dim=int(meta.need("ssm.conv_kernel")),
        linear_key_head_dim=state,
        linear_value_head_dim=inner // v_heads,
        linear_num_key_heads=int(meta.need("ssm.group_count")),
        linear_num_value_heads=v_heads,
    )
    recurrent = meta.get("attention.recurrent_layers")
    if recurrent is not None:
        layers = cfg["num_hidden_layers"]
        cfg["layer_types"] = ["linear_attention" if r else "full_attention" for r in list(recurrent)[:layers]]
    else:  # the config class lays the pattern out itself
        cfg["full_attention_interval"] = int(meta.get("full_attention_interval", 4) or 4)
    if meta.arch == "qwen35moe":
        # M-RoPE sections (text tokens have one position for all three: plain partial RoPE)
        sections = meta.get("rope.dimension_sections")
        if sections is not None:
            cfg["rope_parameters"]["mrope_section"] = [int(s) for s in list(sections)[:3]]
        cfg["rope_parameters"]["mrope_interleaved"] = True
        return "qwen3_5_moe_text", cfg  # its router always renormalises: no norm_topk_prob
    return "qwen3_next", {**cfg, "norm_topk_prob": True}


_BUILDERS = {
    "llama": _llama,
    "qwen2": lambda meta: ("qwen2", _common(meta)),
    "qwen3": lambda meta: ("qwen3", _common(meta)),
    "qwen2moe": _qwen_moe("qwen2_moe"),
    "qwen3moe": _qwen_moe("qwen3_moe"),
    "gemma3": _gemma3,
    "deepseek2": _deepseek2,
    "gpt-oss": _gpt_oss,
    "glm4moe": _glm4moe,
    "minimax-m2": _minimax_m2,
    "qwen3next": _qwen3next,
    "qwen35moe": _qwen3next,
}


def config_from_gguf(gf: Any, model_path: str | Path | None = None) -> tuple[Arch, Any]:
    """(Arch, transformers config) for an open GGUF file; `model_path` with config.json overrides."""
    meta = _Meta(gf)
    if model_path is not None:
        path = Path(model_path) / "config.json"
        if not path.is_file():
            raise ModelError(f"--model-path {model_path}: no config.json there")
        data = json.loads(path.read_text())
        arch = variant_for_model_type(data.get("model_type", ""))
        if arch.gguf_name != meta.arch:
            raise ModelError(f"{path} describes {arch.variant}, but the GGUF holds a {meta.arch} model")
        config = arch.load_class("config")(**{k: v for k, v in data.items() if k != "model_type"})
        return arch, config
    variant, cfg = _BUILDERS[meta.arch](meta)
    arch = VARIANTS[variant]
    config = arch.load_class("config")(**cfg)
    # ktx's operators replace attention; the model class only checks the name is one it offers
    config._attn_implementation = "eager" if variant == "gpt_oss" else "sdpa"
    return arch, config
