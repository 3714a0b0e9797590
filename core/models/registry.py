"""Architectures ktx runs: GGUF ``general.architecture`` -> transformers classes and default rules.

Facts are data: each row names the transformers config/model class (imported lazily, so
``import ktx.core.models`` stays cheap) and the shipped rule file under ``core/rules/``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

RULES_DIR = Path(__file__).resolve().parent.parent / "rules"


@dataclass(frozen=True)
class Arch:
    gguf_name: str  # general.architecture as llama.cpp writes it
    variant: str  # which transformers model this GGUF maps to
    config_class: str  # dotted path, e.g. transformers.Qwen3MoeConfig
    model_class: str
    rope_interleaved: bool  # llama.cpp's rope layout for this arch: adjacent pairs (NORM) or halves (NEOX)
    rules: str  # file name in core/rules

    @property
    def rules_path(self) -> Path:
        return RULES_DIR / self.rules

    def load_class(self, which: str = "model") -> type:
        dotted = self.model_class if which == "model" else self.config_class
        module, _, name = dotted.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _a(
    gguf_name: str, variant: str, cls: str, interleaved: bool, rules: str, module: str | None = None
) -> Arch:
    # Full module paths: `transformers.X` would first index every model folder (~2 s).
    base = f"transformers.models.{module or variant}"
    config = f"{base}.configuration_{module or variant}.{cls}Config"
    model = f"{base}.modeling_{module or variant}.{cls.removesuffix('Text')}ForCausalLM"
    return Arch(gguf_name, variant, config, model, interleaved, rules)


# variant -> Arch. A GGUF architecture may map to several variants (llama: dense or Mixtral).
VARIANTS: dict[str, Arch] = {
    a.variant: a
    for a in (
        _a("deepseek2", "deepseek_v2", "DeepseekV2", True, "moe.yaml"),
        _a("deepseek2", "deepseek_v3", "DeepseekV3", True, "moe.yaml"),
        _a("qwen2moe", "qwen2_moe", "Qwen2Moe", False, "moe.yaml"),
        _a("qwen3moe", "qwen3_moe", "Qwen3Moe", False, "moe.yaml"),
        _a("llama", "mixtral", "Mixtral", True, "moe.yaml"),
        _a("gpt-oss", "gpt_oss", "GptOss", False, "moe.yaml"),
        _a("glm4moe", "glm4_moe", "Glm4Moe", False, "moe.yaml"),
        _a("minimax-m2", "minimax_m2", "MiniMaxM2", False, "moe.yaml"),
        _a("qwen3next", "qwen3_next", "Qwen3Next", False, "moe.yaml"),
        # Qwen3.5's MoE models are multimodal; ktx runs their text model (Qwen3_5MoeForCausalLM)
        _a("qwen35moe", "qwen3_5_moe_text", "Qwen3_5MoeText", False, "moe.yaml", module="qwen3_5_moe"),
        _a("llama", "llama", "Llama", True, "dense.yaml"),
        _a("qwen2", "qwen2", "Qwen2", False, "dense.yaml"),
        _a("qwen3", "qwen3", "Qwen3", False, "dense.yaml"),
        # Gemma 3's text-only causal LM is Gemma3ForCausalLM with a Gemma3TextConfig.
        _a("gemma3", "gemma3_text", "Gemma3Text", False, "dense.yaml", module="gemma3"),
    )
}

KNOWN_ARCHITECTURES = sorted({a.gguf_name for a in VARIANTS.values()})


def check_architecture(name: str | None, where: str = "") -> str:
    if name not in KNOWN_ARCHITECTURES:
        raise ModelError(
            f"{where + ': ' if where else ''}unknown architecture {name!r}; "
            f"ktx runs {', '.join(KNOWN_ARCHITECTURES)}"
        )
    return name


def variant_for_model_type(model_type: str) -> Arch:
    if model_type not in VARIANTS:
        raise ModelError(
            f"config.json model_type {model_type!r} is not one ktx runs; known: {', '.join(VARIANTS)}"
        )
    return VARIANTS[model_type]
