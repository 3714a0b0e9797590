"""Small byte-level BPE tokenizers trained at test time, and their vocabularies as GGUF metadata.

Shared by the tokenizer, chat-template and stream-decoder tests and by the tiny models.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from ktx.core.gguf import ValueType, write_gguf
from ktx.core.gguf.writer import Typed


def train_byte_level(texts: Iterable[str], vocab_size: int, specials: list[str]) -> Tokenizer:
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(texts, trainer)
    return tk


def byte_level_metadata(tk: Tokenizer, specials: list[str], pre: str = "qwen2") -> dict:
    """`tokenizer.ggml.*` keys of a gpt2-style vocabulary (specials as control tokens); ids in order."""
    model = json.loads(tk.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    assert [model["vocab"][t] for t in tokens] == list(range(len(tokens)))
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": Typed(
            [3 if t in specials else 1 for t in tokens], ValueType.ARRAY, ValueType.INT32
        ),
        "tokenizer.ggml.merges": [m if isinstance(m, str) else " ".join(m) for m in model["merges"]],
    }


def write_tokenizer_gguf(path: Path, arch: str, meta: dict) -> Path:
    write_gguf(path, arch, meta, {"token_embd.weight": np.zeros((4, 8), np.float32)})  # needs a tensor
    return path


def byte_level_gguf(path):
    """A GGUF holding only a small byte-level BPE vocabulary (Qwen2's), EOS `<|endoftext|>`."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = train_byte_level(["the stream decoder holds partial characters until complete"] * 5, 400, specials)
    meta = byte_level_metadata(tk, specials)
    meta["tokenizer.ggml.eos_token_id"] = 0
    return write_tokenizer_gguf(path, "qwen2", meta)
