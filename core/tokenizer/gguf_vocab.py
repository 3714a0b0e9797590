"""What a GGUF says about its tokenizer, read once into plain Python under llama.cpp's key names.

The token strings stay lazy (`StringArray`): a cache hit never decodes them. Everything else that
the `Tokenizer` keeps (token types, special ids, flags, chat templates) is copied out, so the
file can be closed afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..gguf import Metadata

# llama.cpp's llama_token_type values in `tokenizer.ggml.token_type`.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Pre-tokenizers after which llama.cpp adds BOS when the file does not say (LLAMA3 family).
_BOS_BY_DEFAULT_PRE = frozenset(
    {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"}
)


@dataclass
class GGUFVocab:
    architecture: str
    model: str  # tokenizer.ggml.model: "llama" (SentencePiece BPE), "gpt2" (byte-level BPE), ...
    pre: str  # tokenizer.ggml.pre: which split regex a gpt2 vocabulary was trained with
    tokens: Any  # Sequence[str]; a lazily decoded StringArray when read from a file
    scores: np.ndarray | None
    token_types: np.ndarray  # int32, NORMAL where the file has none
    merges: Any  # Sequence[str] of "left right", or None
    bos_token_id: int | None
    eos_token_id: int | None
    eot_token_id: int | None
    eom_token_id: int | None
    unk_token_id: int | None
    pad_token_id: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    chat_templates: dict[str, str] = field(default_factory=dict)  # "default" and named variants

    @property
    def size(self) -> int:
        return len(self.tokens)

    @classmethod
    def from_metadata(cls, m: Metadata) -> GGUFVocab:
        model = m.get_str("tokenizer.ggml.model", None)
        if model is None:
            raise ValueError("this GGUF has no tokenizer (no tokenizer.ggml.model key)")
        tokens = m.get_array("tokenizer.ggml.tokens")
        n = len(tokens)
        pre = m.get_str("tokenizer.ggml.pre", "default")
        scores = m.get_array("tokenizer.ggml.scores", None)
        types = m.get_array("tokenizer.ggml.token_type", None)
        types = np.full(n, NORMAL, np.int32) if types is None else np.array(types, dtype=np.int32)
        spm = model == "llama"

        def token_id(name: str) -> int | None:
            v = m.get_int(f"tokenizer.ggml.{name}", None)
            return int(v) if v is not None and 0 <= v < n else None

        templates = {}
        for key in m:
            if key == "tokenizer.chat_template":
                templates["default"] = m.get_str(key)
            elif key.startswith("tokenizer.chat_template."):
                templates[key.removeprefix("tokenizer.chat_template.")] = m.get_str(key)
        return cls(
            architecture=m.get_str("general.architecture", ""),
            model=model,
            pre=pre,
            tokens=tokens,
            scores=None if scores is None else np.array(scores, dtype=np.float32),
            token_types=types,
            merges=m.get_array("tokenizer.ggml.merges", None),
            bos_token_id=token_id("bos_token_id"),
            eos_token_id=token_id("eos_token_id"),
            eot_token_id=token_id("eot_token_id"),
            eom_token_id=token_id("eom_token_id"),
            unk_token_id=token_id("unknown_token_id"),
            pad_token_id=token_id("padding_token_id"),
            # llama.cpp's defaults when a flag is absent: SentencePiece adds BOS and a space
            # prefix; byte-level BPE adds neither, except after the LLAMA3-family splits.
            add_bos=m.get_bool("tokenizer.ggml.add_bos_token", spm or pre in _BOS_BY_DEFAULT_PRE),
            add_eos=m.get_bool("tokenizer.ggml.add_eos_token", False),
            add_space_prefix=m.get_bool("tokenizer.ggml.add_space_prefix", spm),
            chat_templates=templates,
        )
