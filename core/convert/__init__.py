"""Make GGUF files: `convert_hf` from a Hugging Face folder, `synth_gguf` with random weights.

from ktx.core.convert import convert_hf, synth_gguf
convert_hf("DeepSeek-V2-Lite/", "v2-lite-q4_k_m.gguf", type="q4_k_m")
synth_gguf("v3-4l.gguf", "deepseek2", "v3", layers=4, type="q4_k_m")
"""

from .arch_meta import ARCHES
from .hf_to_gguf import ConvertResult, convert_hf
from .presets import PRESETS
from .synth import SynthResult, synth_gguf
from .tensor_types import OUT_TYPES, SYNTH_OUT_TYPES

__all__ = [
    "ARCHES",
    "OUT_TYPES",
    "PRESETS",
    "SYNTH_OUT_TYPES",
    "ConvertResult",
    "SynthResult",
    "convert_hf",
    "synth_gguf",
]
