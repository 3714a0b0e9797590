"""Which ggml type each tensor gets for `--type`, and the conversion of float rows into it.

The rules are llama.cpp's, so a ktx-made file has the layout users expect from llama.cpp files:
- convert_hf_to_gguf.py keeps 1-D tensors, norms, biases and the MoE router (`ffn_gate_inp`) in
  F32 whatever the output type (ktx also keeps qwen2moe's [1, n_embd] `ffn_gate_inp_shexp`
  there: llama-quantize leaves it unquantized as a 1-D ggml tensor anyway);
- q4_k_m is llama-quantize's Q4_K_M mix (llama_tensor_get_type): Q4_K by default; Q6_K for
  `output` (and for `token_embd` when there is no `output`, i.e. tied embeddings); Q6_K for
  `attn_v` and every `ffn_down*` (dense, experts, shared) in the layers use_more_bits picks (the
  first and last eighth and every third layer between); 8-expert models (Mixtral) get Q8_0
  `attn_v`/`attn_k` and Q5_K `attn_output`;
- a row length that is not a multiple of the block falls back as llama-quantize does:
  Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, and to F16 when even 32 does not divide it
  (e.g. DeepSeek's attn_k_b rows of 128, V2-Lite's expert width 1408). The demo Gemma 3 file,
  made by llama.cpp, shows exactly this pattern.
"""

from __future__ import annotations

import re

import numpy as np

from ..gguf.constants import BLOCK_SIZES, I_QUANTS, GGMLType
from ..gguf.quants import quantize

OUT_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_k_m", "q6_k", "mxfp4")
# Low-bit mixes like the 1.6-2.2-bit DeepSeek/Kimi files people run: routed experts' gate/up and
# down at (IQ1_S, IQ2_XXS) or (IQ2_XXS, IQ3_XXS), everything else as q4_k_m. Real files of this
# kind come from llama-quantize with an importance matrix; ktx has no i-quant quantizer, so only
# `ktx synth` writes them (random blocks), to measure their size and speed.
LOW_BIT_MIXES: dict[str, tuple[GGMLType, GGMLType]] = {
    "iq1_s": (GGMLType.IQ1_S, GGMLType.IQ2_XXS),
    "iq2_xxs": (GGMLType.IQ2_XXS, GGMLType.IQ3_XXS),
}
SYNTH_OUT_TYPES = (*OUT_TYPES, *LOW_BIT_MIXES)
BASE: dict[str, GGMLType] = {
    "f32": GGMLType.F32,
    "f16": GGMLType.F16,
    "bf16": GGMLType.BF16,
    "q8_0": GGMLType.Q8_0,
    "q4_k_m": GGMLType.Q4_K,
    "q6_k": GGMLType.Q6_K,
    "mxfp4": GGMLType.Q8_0,  # llama-quantize's MXFP4_MOE: routed experts MXFP4, the rest Q8_0
    **{mix: GGMLType.Q4_K for mix in LOW_BIT_MIXES},
}
FALLBACK: dict[GGMLType, GGMLType] = {
    GGMLType.Q4_K: GGMLType.Q5_0,
    GGMLType.Q5_K: GGMLType.Q5_1,
    GGMLType.Q6_K: GGMLType.Q8_0,
    GGMLType.Q8_0: GGMLType.F16,
    GGMLType.Q5_0: GGMLType.F16,
    GGMLType.Q5_1: GGMLType.F16,
    GGMLType.MXFP4: GGMLType.Q8_0,
    # llama-quantize: an i-quant whose block does not divide the row becomes IQ4_NL
    **{t: GGMLType.IQ4_NL for t in I_QUANTS},
    GGMLType.IQ4_NL: GGMLType.F16,
}
_LAYER = re.compile(r"^blk\.(\d+)\.")


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp: the layers Q4_K_M gives more bits to (first/last eighth, every third between)."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def keeps_f32(name: str, shape: tuple[int, ...]) -> bool:
    """Tensors that stay F32 in every output type (see the module notes)."""
    effectively_1d = len(shape) <= 1 or int(np.prod(shape[:-1])) == 1
    return (
        effectively_1d
        or name.endswith("_norm.weight")
        or not name.endswith(".weight")
        or ".ffn_gate_inp." in name
        or ".ssm_conv1d." in name  # Qwen3-Next's depthwise convolution, as llama.cpp keeps it
        or name.startswith("rope_freqs")
    )


def _q4_k_m(name: str, n_layers: int, n_experts: int, has_output: bool) -> GGMLType:
    if name == "output.weight" or (name == "token_embd.weight" and not has_output):
        return GGMLType.Q6_K
    m = _LAYER.match(name)
    layer = int(m.group(1)) if m else 0
    kind = name.split(".")[2] if m else ""
    if kind == "attn_v":
        if n_experts == 8:
            return GGMLType.Q8_0
        return GGMLType.Q6_K if use_more_bits(layer, n_layers) else GGMLType.Q4_K
    if kind == "attn_k" and n_experts == 8:
        return GGMLType.Q8_0
    if kind == "attn_output" and n_experts == 8:
        return GGMLType.Q5_K
    if kind.startswith("ffn_down") and use_more_bits(layer, n_layers):
        return GGMLType.Q6_K
    return GGMLType.Q4_K


def choose_type(
    name: str,
    shape: tuple[int, ...],
    out_type: str,
    *,
    n_layers: int,
    n_experts: int = 0,
    has_output: bool = True,
) -> tuple[GGMLType, GGMLType | None]:
    """(type to write, the type wanted when it had to fall back, else None)."""
    if out_type not in BASE:
        raise ValueError(f"unknown output type {out_type!r}; choose from {', '.join(SYNTH_OUT_TYPES)}")
    if keeps_f32(name, shape):
        return GGMLType.F32, None
    mixed = out_type == "q4_k_m" or out_type in LOW_BIT_MIXES
    wanted = _q4_k_m(name, n_layers, n_experts, has_output) if mixed else BASE[out_type]
    if out_type in LOW_BIT_MIXES and (m := re.search(r"\.ffn_(gate|up|down)_exps\.weight$", name)):
        gate_up, down = LOW_BIT_MIXES[out_type]
        wanted = down if m.group(1) == "down" else gate_up
    if out_type == "mxfp4" and re.search(r"\.ffn_(gate|up|down)_exps\.weight$", name):
        wanted = GGMLType.MXFP4
    chosen = wanted
    while shape[-1] % BLOCK_SIZES[chosen][0]:
        chosen = FALLBACK[chosen]
    return chosen, (wanted if chosen != wanted else None)


def encode(x: np.ndarray, ggml_type: GGMLType, threads: int | None = None) -> np.ndarray:
    """Float32 rows -> the bytes (or F32/F16 values) of `ggml_type`, ready to write."""
    if ggml_type == GGMLType.F32:
        return np.ascontiguousarray(x, dtype=np.float32)
    if ggml_type == GGMLType.F16:
        return np.ascontiguousarray(x, dtype=np.float16)
    if ggml_type in (GGMLType.Q5_0, GGMLType.Q5_1):  # fallback types only; gguf-py's numpy quantizer
        import gguf

        return gguf.quants.quantize(
            np.ascontiguousarray(x, dtype=np.float32), gguf.GGMLQuantizationType(ggml_type)
        )
    return quantize(x, ggml_type, threads=threads)
