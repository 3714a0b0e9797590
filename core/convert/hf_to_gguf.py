"""`convert_hf`: a Hugging Face model folder -> one GGUF file, as llama.cpp's converter writes it.

Why our own converter: ktx users start from Hub checkpoints of MoE models (DeepSeek, Qwen MoE,
Mixtral) and want K-quant files directly, without building llama.cpp for convert_hf_to_gguf.py
plus llama-quantize; and ktx's tests need GGUF files made from models whose weights they know.

The output is meant to be interchangeable with llama.cpp's: same architecture names, metadata
keys, tensor names, shapes and transforms (see arch_meta, tensor_names, tokenizer_meta), and
llama-quantize's type choices for q4_k_m (see tensor_types). The checkpoint is read one tensor
(or one expert) at a time and written as it goes.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..gguf.constants import GGMLType
from .arch_meta import general, gguf_arch, hparams
from .checkpoint import Checkpoint, load_config
from .gguf_stream import Progress, StreamWriter
from .tensor_names import Planner, n_experts
from .tensor_types import OUT_TYPES, choose_type, encode
from .tokenizer_meta import add_tokenizer

log = logging.getLogger("ktx.convert")


@dataclass
class ConvertResult:
    """What was written: file, architecture, tensor count and bytes, types used, fallbacks."""

    path: Path
    arch: str
    model_type: str
    tensors: int
    nbytes: int
    types: dict[str, int] = field(default_factory=dict)
    fallbacks: list[tuple[str, str, str]] = field(default_factory=list)  # (tensor, wanted, written)
    tokenizer: dict[str, Any] = field(default_factory=dict)


def convert_hf(
    hf_dir: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    type: str = "f32",
    progress: bool = True,
    *,
    legacy_mla: bool = False,
    legacy_qkvz: bool = False,
    name: str | None = None,
    tokenizer_pre: str | None = None,
    threads: int | None = None,
) -> ConvertResult:
    """Converts `hf_dir` (config.json, *.safetensors, tokenizer.json) into the GGUF `out_path`.

    type: f32 | f16 | bf16 | q8_0 | q4_k_m | q6_k. legacy_mla: DeepSeek's attention as one
    attn_kv_b tensor (llama.cpp before the MLA split) instead of attn_k_b + attn_v_b. legacy_qkvz:
    Qwen3-Next's linear-attention input projection as one ssm_in tensor (llama.cpp's first
    Qwen3-Next files) instead of attn_qkv + attn_gate.
    Raises ValueError for unsupported models and FileNotFoundError for incomplete folders; a
    partly written output is removed.
    """
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    if type not in OUT_TYPES:
        raise ValueError(f"unknown --type {type!r}; choose from {', '.join(OUT_TYPES)}")
    cfg = load_config(hf_dir)
    model_type = str(cfg.get("model_type"))
    arch = gguf_arch(model_type)
    method = (cfg.get("quantization_config") or {}).get("quant_method")
    if method and not (method == "mxfp4" and model_type == "gpt_oss"):  # gpt-oss's MXFP4: read as is
        raise ValueError(f"{hf_dir} holds a pre-quantized ({method}) checkpoint; dequantize it to BF16 first")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with Checkpoint(hf_dir) as ckpt:
        planned = Planner(model_type, cfg, ckpt, legacy_mla, legacy_qkvz).plan()
        has_output = any(p.name == "output.weight" for p in planned)
        writer = StreamWriter(out_path, arch)
        result = ConvertResult(out_path, arch, model_type, len(planned), 0)
        try:
            writer.add_metadata(general(name or hf_dir.resolve().name, type))
            writer.add_metadata(hparams(model_type, cfg, legacy_mla=legacy_mla))
            result.tokenizer = add_tokenizer(
                writer.gw, hf_dir, model_type, int(cfg["vocab_size"]), pre=tokenizer_pre
            )
            types: list[GGMLType] = []
            for p in planned:
                t, wanted = choose_type(
                    p.name,
                    p.shape,
                    type,
                    n_layers=int(cfg["num_hidden_layers"]),
                    n_experts=n_experts(cfg),
                    has_output=has_output,
                )
                if wanted is not None:
                    log.info(
                        "%s: rows of %d do not fit %s blocks; writing %s",
                        p.name,
                        p.shape[-1],
                        wanted.name,
                        t.name,
                    )
                    result.fallbacks.append((p.name, wanted.name, t.name))
                types.append(t)
                result.nbytes += writer.add_tensor(p.name, p.shape, t)
            result.types = dict(Counter(t.name for t in types))
            writer.begin()
            with Progress(result.nbytes, progress, f"converting {hf_dir.name}") as bar:
                for p, t in zip(planned, types, strict=True):
                    bar.tensor(p.name)
                    writer.write(p.name, _encoded(p.pieces(), p.shape, t, bar, threads))
            writer.finish()
        except BaseException:
            writer.close()
            out_path.unlink(missing_ok=True)
            raise
    return result


def _encoded(
    pieces: Iterator[np.ndarray], shape: tuple[int, ...], t: GGMLType, bar: Progress, threads: int | None
) -> Iterator[np.ndarray]:
    for x in pieces:
        if x.shape[-1] != shape[-1]:
            raise ValueError(f"a piece of shape {x.shape} does not belong to a tensor of shape {shape}")
        data = encode(x, t, threads)
        bar.advance(data.nbytes)
        yield data
