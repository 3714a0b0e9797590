"""Tiny random Hugging Face models of every architecture ktx converts, written as the Hub has them.

`make_tiny("deepseek-v3", tmp_path / "ds3")` builds the model from transformers' own config and
model classes, gives it seeded random weights (std 0.05; norms 1 + 0.1 * randn so that a missed
norm transform shows), saves it with `save_pretrained` (config.json + model.safetensors), and
adds a tokenizer trained at test time: byte-level BPE for most, SentencePiece-style BPE with
byte fallback for Gemma 3. Each is a few MB and takes well under a second.

Shapes are chosen so that every type path of `ktx convert` runs: hidden 256 (K-quant rows),
64-wide experts (Q5_0 fallback), 3 DeepSeek layers (one dense), tied and untied embeddings,
llama3 / linear / yarn RoPE scaling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_NAMES = (
    "deepseek-v2",
    "deepseek-v2-qlora",
    "deepseek-v3",
    "qwen2moe",
    "qwen3moe",
    "mixtral",
    "llama",
    "qwen2",
    "qwen3",
    "gemma3",
    "gpt-oss",
    "glm4moe",
    "minimax-m2",
    "qwen3next",
    "qwen35moe",
)
# The GGUF architecture llama.cpp writes for each (an expectation, independent of ktx's tables).
GGUF_ARCH = {
    "deepseek-v2": "deepseek2",
    "deepseek-v2-qlora": "deepseek2",
    "deepseek-v3": "deepseek2",
    "qwen2moe": "qwen2moe",
    "qwen3moe": "qwen3moe",
    "mixtral": "llama",
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma3": "gemma3",
    "gpt-oss": "gpt-oss",
    "glm4moe": "glm4moe",
    "minimax-m2": "minimax-m2",
    "qwen3next": "qwen3next",
    "qwen35moe": "qwen35moe",
}
VOCAB = 512
_COMMON: dict[str, Any] = {
    "hidden_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": VOCAB,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
_DEEPSEEK: dict[str, Any] = {
    "num_hidden_layers": 3,
    "num_key_value_heads": 4,
    "intermediate_size": 256,
    "moe_intermediate_size": 64,
    "n_routed_experts": 8,
    "num_experts_per_tok": 2,
    "n_shared_experts": 2,
    "first_k_dense_replace": 1,
    "kv_lora_rank": 64,
    "q_lora_rank": None,
    "qk_rope_head_dim": 16,
    "qk_nope_head_dim": 32,
    "v_head_dim": 32,
}
_YARN = {
    "rope_type": "yarn",
    "rope_theta": 10000.0,
    "factor": 4.0,
    "original_max_position_embeddings": 1024,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "mscale": 0.707,
    "mscale_all_dim": 0.707,
}
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "deepseek-v2": (
        "deepseek_v2",
        {**_DEEPSEEK, "scoring_func": "softmax", "routed_scaling_factor": 1.0, "rope_parameters": _YARN},
    ),
    "deepseek-v2-qlora": ("deepseek_v2", {**_DEEPSEEK, "q_lora_rank": 96, "routed_scaling_factor": 1.0}),
    "deepseek-v3": (
        "deepseek_v3",
        {**_DEEPSEEK, "q_lora_rank": 96, "n_shared_experts": 1, "n_group": 4, "topk_group": 2}
        | {"routed_scaling_factor": 2.5, "norm_topk_prob": True},
    ),
    "qwen2moe": (
        "qwen2_moe",
        {"num_key_value_heads": 2, "intermediate_size": 256, "moe_intermediate_size": 64}
        | {"shared_expert_intermediate_size": 128, "num_experts": 8, "num_experts_per_tok": 2},
    ),
    "qwen3moe": (
        "qwen3_moe",
        {"num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 256, "moe_intermediate_size": 64}
        | {"num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": True},
    ),
    "mixtral": (
        "mixtral",
        {
            "num_key_value_heads": 2,
            "intermediate_size": 128,
            "num_local_experts": 8,
            "num_experts_per_tok": 2,
        },
    ),
    "llama": (
        "llama",
        {"num_key_value_heads": 2, "intermediate_size": 256}
        | {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 1024,
            }
        },
    ),
    "qwen2": ("qwen2", {"num_key_value_heads": 2, "intermediate_size": 256, "tie_word_embeddings": True}),
    "qwen3": (
        "qwen3",
        {"num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 256}
        | {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0}},
    ),
    "gemma3": (
        "gemma3_text",
        {"num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 256, "sliding_window": 16}
        # six layers: 0-4 slide (a window of 16, shorter than the test prompts), layer 5 is global
        | {"num_hidden_layers": 6}
        | {"query_pre_attn_scalar": 64, "tie_word_embeddings": True}
        | {
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            }
        },
    ),
    "gpt-oss": (
        "gpt_oss",
        # two layers: 0 slides (a window of 16, shorter than the test prompts), 1 is global
        {"num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 64, "sliding_window": 16}
        | {"num_local_experts": 8, "num_experts_per_tok": 2}
        | {
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 150000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 1024,
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "truncate": False,
            }
        },
    ),
    "glm4moe": (
        "glm4_moe",
        # GLM-4.5's layer: a leading dense layer, sigmoid routing in groups with a correction
        # bias, a shared expert, q/k norms, biases, RoPE on half of each head
        {**_DEEPSEEK, "num_key_value_heads": 2, "head_dim": 64, "n_shared_experts": 1}
        | {"n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5, "norm_topk_prob": True}
        | {"use_qk_norm": True, "attention_bias": True}
        | {
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 0.5}
        },
    ),
    "minimax-m2": (
        "minimax_m2",
        # q/k norms over all heads, RoPE on half of each head, sigmoid routing with a correction bias
        {"num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 64}
        | {"num_local_experts": 8, "num_experts_per_tok": 2}
        | {
            "rope_parameters": {"rope_type": "default", "rope_theta": 5000000.0, "partial_rotary_factor": 0.5}
        },
    ),
    "qwen3next": (
        "qwen3_next",
        # three gated-DeltaNet layers, then one gated full-attention layer (partial RoPE, q/k
        # norms); 8 experts with a gated shared expert; two value heads per key head
        {"num_hidden_layers": 4, "num_key_value_heads": 2, "head_dim": 64, "intermediate_size": 256}
        | {"moe_intermediate_size": 64, "shared_expert_intermediate_size": 128}
        | {"num_experts": 8, "num_experts_per_tok": 2, "norm_topk_prob": True}
        | {"linear_num_key_heads": 2, "linear_num_value_heads": 4}
        | {"linear_key_head_dim": 32, "linear_value_head_dim": 32, "linear_conv_kernel_dim": 4},
    ),
    "qwen35moe": (
        "qwen3_5_moe_text",
        # Qwen3-Next's layer with separate q/k/v, z, b and a projections (value heads stored tiled
        # in the GGUF) and M-RoPE sections (one position for all three on text)
        {"num_hidden_layers": 4, "num_key_value_heads": 2, "head_dim": 64}
        | {"moe_intermediate_size": 64, "shared_expert_intermediate_size": 128}
        | {"num_experts": 8, "num_experts_per_tok": 2}
        | {"linear_num_key_heads": 2, "linear_num_value_heads": 4}
        | {"linear_key_head_dim": 32, "linear_value_head_dim": 32, "linear_conv_kernel_dim": 4}
        | {
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000000.0,
                "partial_rotary_factor": 0.25,
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            }
        },
    ),
}
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Mixture-of-experts models route every token to a few experts.",
    "def forward(self, x):\n    return self.down(self.act(self.gate(x)) * self.up(x))",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. 你好，世界！",
] * 8


def _byte_level_tokenizer() -> tuple[Any, dict[str, str]]:
    from tiny_tokenizers import train_byte_level
    from tokenizers import AddedToken

    specials = {"bos_token": "<|bos|>", "eos_token": "<|eos|>", "pad_token": "<|pad|>"}
    tok = train_byte_level(CORPUS, 400, list(specials.values()))
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False)])
    return tok, specials


def _sentencepiece_tokenizer() -> tuple[Any, dict[str, str]]:
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    specials = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 8, special_tokens=[*specials.values(), *byte_tokens], show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer)
    state = json.loads(tok.to_str())  # byte pieces are vocabulary, not added tokens, in SentencePiece
    state["added_tokens"] = [a for a in state["added_tokens"] if a["content"] not in byte_tokens]
    return Tokenizer.from_str(json.dumps(state)), specials


def _randomize(model: Any, seed: int) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if p.ndim == 1 and "norm" in name:
                p.copy_(1.0 + 0.1 * noise)
            elif name.endswith(".sinks"):  # gpt-oss: logits of the size of the scores
                p.copy_(noise)
            elif p.ndim == 1:
                p.copy_(0.02 * noise)
            else:
                p.copy_(0.05 * noise)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.01 * torch.randn(b.shape, generator=gen))


def make_tiny(arch_name: str, path: str | Path, seed: int = 0) -> Path:
    """Writes the tiny model `arch_name` (one of TINY_NAMES) into `path`; returns `path`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    if arch_name not in CONFIGS:
        raise ValueError(f"unknown tiny model {arch_name!r}; choose from {', '.join(TINY_NAMES)}")
    path = Path(path)
    model_type, extra = CONFIGS[arch_name]
    tok, specials = _sentencepiece_tokenizer() if model_type.startswith("gemma") else _byte_level_tokenizer()
    ids = {k.removesuffix("_token") + "_token_id": tok.token_to_id(v) for k, v in specials.items()}
    config = AutoConfig.for_model(model_type, **{**_COMMON, **extra, **ids})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    _randomize(model, seed)
    model.save_pretrained(path)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    fast.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    fast.save_pretrained(path)
    return path
