"""`Tokenizer`: the tokenizer a GGUF describes, built from its metadata, no tokenizer.json needed.

    tok = Tokenizer.from_gguf("model.gguf")          # or a GGUFFile, or its Metadata
    ids = tok.encode("Hello")                         # BOS added when the file says so
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    ids = tok.encode(prompt, add_special_tokens=False)  # the template wrote BOS already

The work is done by a Hugging Face `tokenizers` model (Rust), built once per vocabulary and cached
as a tokenizer.json (see `cache.py`); special tokens in text (`<start_of_turn>`) are matched whole,
as llama.cpp does.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from tokenizers import AddedToken
from tokenizers import Tokenizer as Backend

from .. import gguf
from . import cache
from .bpe import build_bpe
from .chat_template import fallback_template, render
from .gguf_vocab import CONTROL, USER_DEFINED, GGUFVocab
from .spm import build_spm

# Turn and message terminators of common chat formats: generation stops at any that the vocabulary
# has as a control token (llama.cpp's end-of-generation list does the same).
END_OF_TURN_TOKENS = (
    "<end_of_turn>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<|return|>",
    "<|end_of_text|>",
    "<｜end▁of▁sentence｜>",
    "<EOT>",
)


def _build(v: GGUFVocab) -> Backend:
    """Builds the backend tokenizer: the model for the vocabulary type, then its added tokens."""
    tokens = v.tokens.to_list() if hasattr(v.tokens, "to_list") else list(v.tokens)
    if v.model == "llama":
        backend, spelled, vocab = build_spm(v, tokens)
    elif v.model == "gpt2":
        backend, spelled, vocab = build_bpe(v, tokens)
    else:
        raise ValueError(f"tokenizer.ggml.model {v.model!r} is not supported (supported: llama, gpt2)")
    # Control tokens become special (skipped by decode(skip_special_tokens=True)), user-defined ones
    # plain added tokens. A token the model spells differently (Gemma's runs of spaces) is reached
    # through merges instead, and one whose string recurs under a later id is the later one.
    special, user = [], []
    for i in np.flatnonzero((v.token_types == CONTROL) | (v.token_types == USER_DEFINED)).tolist():
        t = tokens[i]
        if t and spelled[i] == t and vocab[t] == i:
            control = bool(v.token_types[i] == CONTROL)
            (special if control else user).append(AddedToken(t, special=control, normalized=False))
    backend.add_special_tokens(special)
    backend.add_tokens(user)
    return backend


class Tokenizer:
    """Encode, decode and chat templates for a GGUF model; see the module docstring."""

    def __init__(self, backend: Backend, vocab: GGUFVocab):
        self.backend = backend
        self.architecture = vocab.architecture
        self.model_type = vocab.model
        self.token_types = vocab.token_types
        self.bos_token_id = vocab.bos_token_id
        self.eos_token_id = vocab.eos_token_id
        self.unk_token_id = vocab.unk_token_id
        self.pad_token_id = vocab.pad_token_id
        self.add_bos = vocab.add_bos and vocab.bos_token_id is not None
        self.add_eos = vocab.add_eos and vocab.eos_token_id is not None
        self.chat_templates = dict(vocab.chat_templates)
        self.eos_token_ids = self._end_tokens(vocab)

    @classmethod
    def from_gguf(
        cls,
        source: str | os.PathLike[str] | gguf.GGUFFile | gguf.Metadata,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> Tokenizer:
        """From a GGUF path (file, split set or directory), an open GGUFFile, or its Metadata.

        The built tokenizer is cached under `cache.cache_dir(cache_dir)`; see cache.py.
        """
        if isinstance(source, gguf.Metadata):
            return cls._from_metadata(source, None, cache_dir)
        if isinstance(source, gguf.GGUFFile):
            return cls._from_metadata(source.metadata, source.path, cache_dir)
        with gguf.open(source) as f:
            return cls._from_metadata(f.metadata, f.path, cache_dir)

    @classmethod
    def _from_metadata(
        cls, meta: gguf.Metadata, path: str | None, cache_dir: str | os.PathLike[str] | None
    ) -> Tokenizer:
        vocab = GGUFVocab.from_metadata(meta)
        directory = cache.cache_dir(cache_dir)
        key = cache.cache_key(meta, path)
        backend = cache.load(directory, key)
        if backend is None or backend.get_vocab_size(with_added_tokens=True) < vocab.size:
            backend = _build(vocab)
            cache.save(directory, key, backend)
        return cls(backend, vocab)

    def _end_tokens(self, vocab: GGUFVocab) -> set[int]:
        """EOS, EOT/EOM, and the turn terminators of chat formats that the vocabulary has as
        control tokens: generation stops at any of them."""
        ids = {i for i in (vocab.eos_token_id, vocab.eot_token_id, vocab.eom_token_id) if i is not None}
        for text in END_OF_TURN_TOKENS:
            i = self.backend.token_to_id(text)
            if i is not None and self.is_control(i):
                ids.add(i)
        return ids

    # --- tokens -----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """The number of token ids, as the model's embedding table counts them."""
        return len(self.token_types)

    def id_to_token(self, token_id: int) -> str | None:
        """The token's string as the backend spells it ("▁the", byte-level "Ġthe", "<0x0A>")."""
        return self.backend.id_to_token(int(token_id))

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def is_control(self, token_id: int) -> bool:
        return 0 <= token_id < len(self.token_types) and self.token_types[token_id] == CONTROL

    @property
    def bos_token(self) -> str | None:
        return None if self.bos_token_id is None else self.id_to_token(self.bos_token_id)

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_token_id is None else self.id_to_token(self.eos_token_id)

    # --- text -------------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; special tokens written in the text are matched whole.
        add_special_tokens adds BOS/EOS as `tokenizer.ggml.add_bos_token`/`add_eos_token` say."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        if add_special_tokens:
            if self.add_bos:
                ids.insert(0, self.bos_token_id)
            if self.add_eos:
                ids.append(self.eos_token_id)
        return ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = True) -> list[list[int]]:
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        head = [self.bos_token_id] if add_special_tokens and self.add_bos else []
        tail = [self.eos_token_id] if add_special_tokens and self.add_eos else []
        return [head + e.ids + tail for e in encodings]

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        if isinstance(ids, np.ndarray) or hasattr(ids, "tolist"):
            ids = ids.tolist()
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream(self, skip_special_tokens: bool = False) -> Any:
        """A StreamDecoder over this tokenizer (see stream.py)."""
        from .stream import StreamDecoder

        return StreamDecoder(self, skip_special_tokens=skip_special_tokens)

    # --- chat -------------------------------------------------------------------------------

    @property
    def chat_template(self) -> str:
        """The file's `tokenizer.chat_template`; without one, a fallback by architecture:
        Gemma's `<start_of_turn>user ... <end_of_turn>` format for gemma/gemma2/gemma3(n),
        ChatML (`<|im_start|>role ... <|im_end|>`) for every other model."""
        return self.chat_templates.get("default") or fallback_template(self.architecture)

    @property
    def has_chat_template(self) -> bool:
        """False when `chat_template` is the fallback, not the file's own."""
        return "default" in self.chat_templates

    def special_tokens_map(self) -> dict[str, str | None]:
        ids = {"bos": self.bos_token_id, "eos": self.eos_token_id, "unk": self.unk_token_id}
        ids["pad"] = self.pad_token_id
        return {f"{k}_token": (None if i is None else self.id_to_token(i)) for k, i in ids.items()}

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        *,
        tokenize: bool = False,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Renders `messages` with the chat template, as transformers' apply_chat_template does.

        chat_template: a template string, or the name of one of the file's named templates
        (`tokenizer.chat_template.<name>`, e.g. "tool_use"). Other keyword arguments
        (`enable_thinking=False`, `tools=[...]`) reach the template. tokenize=True returns the
        token ids of the rendered text, without adding BOS again.
        """
        template = self.chat_templates.get(chat_template or "", chat_template) or self.chat_template
        text = render(
            template,
            messages,
            add_generation_prompt=add_generation_prompt,
            special_tokens=self.special_tokens_map(),
            **kwargs,
        )
        return self.encode(text, add_special_tokens=False) if tokenize else text

    def chat_prompt_ids(
        self, messages: list[dict[str, Any]], force_think: bool = False, **template_kwargs: Any
    ) -> list[int]:
        """Token ids of a conversation rendered by the chat template, ready for the answer: BOS
        added when the vocabulary asks for it and the template did not write it. template_kwargs
        (`tools=[...]`, `chat_template="tool_use"`) reach apply_chat_template."""
        rendered = self.apply_chat_template(messages, add_generation_prompt=True, **template_kwargs)
        if force_think:
            rendered += "<think>\n"
        ids = self.encode(rendered, add_special_tokens=False)
        bos = self.bos_token_id
        if bos is not None and self.add_bos and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return ids

    def __repr__(self) -> str:
        return f"Tokenizer({self.model_type!r}, {self.architecture!r}, {self.vocab_size} tokens)"
