"""`synth_gguf`: a full-size GGUF model with random weights, for benchmarks without a download.

Why: timing ktx on DeepSeek-V3 should not need 400 GB of Hub traffic and a day of conversion.
A synthetic file has the real model's metadata, tensor names, shapes and ggml types (the same
tables `ktx convert` uses: arch_meta, layout, tensor_types), weights that dequantize to sane
values (zero mean, std ~0.02; norms 1.0), a Gaussian F32 router so tokens spread over the
experts as in a trained model, and a minimal byte-level tokenizer; so every loader accepts it
and kernels see realistic data. Blocks are generated directly (synth_blocks), never quantized
from floats, and streamed to disk, so the speed is the disk's.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..gguf.constants import GGMLType
from .arch_meta import general, gguf_arch, hparams
from .gguf_stream import Progress, StreamWriter
from .layout import expected_tensors
from .presets import preset_config
from .synth_blocks import BlockPool
from .tensor_names import llama3_rope_factors, n_experts
from .tensor_types import SYNTH_OUT_TYPES, choose_type, keeps_f32
from .tokenizer_meta import CONTROL, NORMAL, PRE_BY_MODEL_TYPE, UNUSED

WEIGHT_STD = 0.02
SPECIALS = ("<|bos|>", "<|eos|>", "<|pad|>")


@dataclass
class SynthResult:
    """What was written, and how fast."""

    path: Path
    arch: str
    preset: str
    layers: int
    tensors: int
    nbytes: int
    seconds: float
    types: dict[str, int] = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / 1e6 / self.seconds if self.seconds else float("inf")


def _byte_chars() -> list[str]:
    """GPT-2's byte -> printable character table (bytes_to_unicode), in byte order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def synthetic_vocab(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """A loadable byte-level BPE vocabulary: 256 bytes, a few merges, specials, `[PAD{i}]` filler."""
    chars = _byte_chars()
    sp = chars[ord(" ")]
    merges = [f"{sp} t", "h e", "i n", "e r", "a n", f"{sp} a"]
    tokens = [*chars, *(m.replace(" ", "") for m in merges), *SPECIALS]
    types = [NORMAL] * (256 + len(merges)) + [CONTROL] * len(SPECIALS)
    if vocab_size < len(tokens):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the synthetic tokenizer ({len(tokens)})")
    tokens += [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
    types += [UNUSED] * (vocab_size - len(types))
    return tokens, types, merges


def _tokenizer(writer: StreamWriter, model_type: str, vocab_size: int) -> None:
    tokens, types, merges = synthetic_vocab(vocab_size)
    gw = writer.gw
    gw.add_tokenizer_model("gpt2")
    gw.add_tokenizer_pre(PRE_BY_MODEL_TYPE.get(model_type, "default"))
    gw.add_token_list(tokens)
    gw.add_token_types(types)
    gw.add_token_merges(merges)
    bos = tokens.index(SPECIALS[0])
    gw.add_bos_token_id(bos)
    gw.add_eos_token_id(bos + 1)
    gw.add_pad_token_id(bos + 2)
    gw.add_add_bos_token(True)
    gw.add_add_eos_token(False)


def _f32_values(
    name: str, shape: tuple[int, ...], cfg: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Norms 1.0; routers and other matrices Gaussian (std 0.02); biases 0; rope_freqs computed."""
    if name.endswith("_norm.weight"):
        return np.ones(shape, dtype=np.float32)
    if name.startswith("rope_freqs"):
        factors = llama3_rope_factors(cfg)
        assert factors is not None
        return factors
    if name.endswith(".ssm_a"):  # Qwen3-Next's -exp(A_log): a decaying state, as trained models have
        return -np.ones(shape, dtype=np.float32)
    if not name.endswith(".weight"):
        return np.zeros(shape, dtype=np.float32)
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(WEIGHT_STD)).astype(np.float32)


def synth_plan(
    arch: str | None,
    preset: str,
    layers: int | None = None,
    type: str = "q4_k_m",
    experts: int | None = None,
) -> tuple[dict[str, Any], list[tuple[str, tuple[int, ...], GGMLType]]]:
    """(config, [(tensor, shape, ggml type)]) of a synthetic model, without writing anything."""
    if type not in SYNTH_OUT_TYPES:
        raise ValueError(f"unknown --type {type!r}; choose from {', '.join(SYNTH_OUT_TYPES)}")
    cfg = preset_config(arch, preset, layers, experts)
    plan = expected_tensors(cfg["model_type"], cfg)
    has_output = any(n == "output.weight" for n, _ in plan)
    n_layers, n_exp = int(cfg["num_hidden_layers"]), n_experts(cfg)
    typed = []
    for name, shape in plan:
        t, _ = choose_type(name, shape, type, n_layers=n_layers, n_experts=n_exp, has_output=has_output)
        typed.append((name, shape, t))
    return cfg, typed


def synth_gguf(
    out_path: str | os.PathLike[str],
    arch: str | None,
    preset: str,
    layers: int | None = None,
    type: str = "q4_k_m",
    seed: int = 0,
    *,
    experts: int | None = None,
    progress: bool = False,
) -> SynthResult:
    """Writes a random-weight GGUF of `preset`'s shapes (tiny | v2-lite | v3 | qwen3-30b-a3b |
    qwen1.5-moe-a2.7b | mixtral-8x7b) with `layers` blocks (default: all; leading dense layers
    are kept) and `experts` routed experts per layer (default: the model's). `arch` may be None
    except for tiny. Returns the result with its MB/s."""
    cfg, plan = synth_plan(arch, preset, layers, type, experts)
    model_type = cfg["model_type"]
    arch = gguf_arch(model_type)
    rng = np.random.default_rng(seed)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    writer = StreamWriter(out_path, arch)
    result = SynthResult(out_path, arch, preset, int(cfg["num_hidden_layers"]), len(plan), 0, 0.0)
    result.types = dict(Counter(t.name for _, _, t in plan))
    try:
        writer.add_metadata(general(f"ktx-synth {preset}" + (f" {arch}" if preset == "tiny" else ""), type))
        writer.add_metadata(hparams(model_type, cfg))
        _tokenizer(writer, model_type, int(cfg["vocab_size"]))
        for name, shape, t in plan:
            result.nbytes += writer.add_tensor(name, shape, t)
        pool = BlockPool(
            np.random.default_rng(seed + 1), pool_bytes=min(32 << 20, max(result.nbytes // 4, 1 << 16))
        )
        writer.begin()
        with Progress(result.nbytes, progress, f"synth {preset}") as bar:
            for name, shape, t in plan:
                bar.tensor(name)
                if keeps_f32(name, shape):
                    writer.write(name, [_f32_values(name, shape, cfg, rng)])
                else:
                    writer.write(name, pool.fill(t, writer.nbytes(name)))
                bar.advance(writer.nbytes(name))
        writer.finish()
    except BaseException:
        writer.close()
        out_path.unlink(missing_ok=True)
        raise
    result.seconds = time.perf_counter() - t0
    return result
