"""Hugging Face module paths -> GGUF tensor-name prefixes, as llama.cpp names them.

One table per family; the first matching pattern wins. Operators receive the prefix of the
module they replace (``blk.3.attn_q``) or, for blocks, the layer prefix (``blk.3``) and add
their own suffixes.
"""

from __future__ import annotations

import re

_L = r"model\.layers\.(\d+)\."

_COMMON: list[tuple[str, str]] = [
    (r"model\.embed_tokens", "token_embd"),
    (r"model\.norm", "output_norm"),
    (r"lm_head", "output"),
    (_L + r"input_layernorm", "blk.{0}.attn_norm"),
    (_L + r"post_attention_layernorm", "blk.{0}.ffn_norm"),
    (_L + r"self_attn", "blk.{0}"),
    (_L + r"self_attn\.q_proj", "blk.{0}.attn_q"),
    (_L + r"self_attn\.k_proj", "blk.{0}.attn_k"),
    (_L + r"self_attn\.v_proj", "blk.{0}.attn_v"),
    (_L + r"self_attn\.o_proj", "blk.{0}.attn_output"),
    (_L + r"self_attn\.q_norm", "blk.{0}.attn_q_norm"),
    (_L + r"self_attn\.k_norm", "blk.{0}.attn_k_norm"),
    # DeepSeek MLA
    (_L + r"self_attn\.q_a_proj", "blk.{0}.attn_q_a"),
    (_L + r"self_attn\.q_a_layernorm", "blk.{0}.attn_q_a_norm"),
    (_L + r"self_attn\.q_b_proj", "blk.{0}.attn_q_b"),
    (_L + r"self_attn\.kv_a_proj_with_mqa", "blk.{0}.attn_kv_a_mqa"),
    (_L + r"self_attn\.kv_a_layernorm", "blk.{0}.attn_kv_a_norm"),
    (_L + r"self_attn\.kv_b_proj", "blk.{0}.attn_kv_b"),
    # feed-forward: dense MLP, MoE block and its parts
    (_L + r"mlp", "blk.{0}"),
    (_L + r"mlp\.gate_proj", "blk.{0}.ffn_gate"),
    (_L + r"mlp\.up_proj", "blk.{0}.ffn_up"),
    (_L + r"mlp\.down_proj", "blk.{0}.ffn_down"),
    (_L + r"mlp\.gate", "blk.{0}.ffn_gate_inp"),
    (_L + r"mlp\.experts", "blk.{0}"),
    (_L + r"mlp\.shared_experts?\.gate_proj", "blk.{0}.ffn_gate_shexp"),
    (_L + r"mlp\.shared_experts?\.up_proj", "blk.{0}.ffn_up_shexp"),
    (_L + r"mlp\.shared_experts?\.down_proj", "blk.{0}.ffn_down_shexp"),
    (_L + r"mlp\.shared_experts?", "blk.{0}"),
    (_L + r"mlp\.shared_expert_gate", "blk.{0}.ffn_gate_inp_shexp"),
]

# Gemma 3 has four norms per layer; llama.cpp names them differently from the llama family.
_GEMMA3: list[tuple[str, str]] = [
    (_L + r"post_attention_layernorm", "blk.{0}.post_attention_norm"),
    (_L + r"pre_feedforward_layernorm", "blk.{0}.ffn_norm"),
    (_L + r"post_feedforward_layernorm", "blk.{0}.post_ffw_norm"),
]

# gpt-oss, GLM-4.x: the MLP's norm is llama.cpp's post_attention_norm.
_GPT_OSS: list[tuple[str, str]] = [
    (_L + r"post_attention_layernorm", "blk.{0}.post_attention_norm"),
]

TABLES: dict[str, list[tuple[re.Pattern[str], str]]] = {}


def _compile(rows: list[tuple[str, str]]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(pattern + r"$"), template) for pattern, template in rows]


for _arch in ("llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "deepseek2", "minimax-m2"):
    TABLES[_arch] = _compile(_COMMON)
TABLES["gemma3"] = _compile(_GEMMA3 + _COMMON)
TABLES["gpt-oss"] = TABLES["glm4moe"] = _compile(_GPT_OSS + _COMMON)
# Qwen3-Next: the MLP's norm is post_attention_norm; the linear attention (gated DeltaNet) is one
# operator that reads its blk.N.attn_qkv/attn_gate/ssm_* tensors itself.
_QWEN3NEXT: list[tuple[str, str]] = [*_GPT_OSS, (_L + r"linear_attn", "blk.{0}")]
TABLES["qwen3next"] = TABLES["qwen35moe"] = _compile(_QWEN3NEXT + _COMMON)


def gguf_prefix(arch: str, module_path: str) -> str | None:
    """The GGUF name prefix for a module path (``model.layers.3.self_attn.q_proj`` -> ``blk.3.attn_q``)."""
    for pattern, template in TABLES.get(arch, ()):
        m = pattern.match(module_path)
        if m:
            return template.format(*m.groups())
    return None


def tied(name: str, tensors) -> str:
    """`output.weight`, or `token_embd.weight` when the file ties the output to the embeddings."""
    return "token_embd.weight" if name == "output.weight" and name not in tensors else name
