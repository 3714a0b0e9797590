"""SentencePiece BPE vocabularies (`tokenizer.ggml.model = "llama"`) as a `tokenizers` BPE model.

SentencePiece merges the adjacent pair whose concatenation is the best-scored token; a ranked merge
list gives the same result, so one is derived from the vocabulary (see `merges.py`). Text is
normalized the way llama.cpp does it: spaces become U+2581 ("▁"), and with `add_space_prefix` every
stretch of text (the start, and after each special token) gets one in front; the decoder undoes
that and turns byte tokens (`<0xE4>`) back into UTF-8.
"""

from __future__ import annotations

import numpy as np
from tokenizers import Tokenizer, decoders, normalizers
from tokenizers.models import BPE

from .gguf_vocab import GGUFVocab
from .merges import ranked_merges

SPACE = "\u2581"

# Gemma files store runs of spaces as real spaces (user-defined tokens), and the order of their
# tokens, not the scores, is the merge order (transformers' GGUF converter does the same).
GEMMA_ARCHITECTURES = frozenset({"gemma", "gemma2", "gemma3", "gemma3n"})


def spelled_tokens(v: GGUFVocab, tokens: list[str]) -> list[str]:
    """The tokens as the BPE model sees them: for Gemma, "  " becomes "▁▁" so merges reach it."""
    if v.architecture not in GEMMA_ARCHITECTURES:
        return tokens
    out = list(tokens)
    for i, t in enumerate(tokens):
        if " " in t and not t.strip():
            out[i] = SPACE * len(t)
    return out


def build_spm(v: GGUFVocab, tokens: list[str]) -> tuple[Tokenizer, list[str], dict[str, int]]:
    """The backend tokenizer (without added tokens), the token spellings it uses, and its vocabulary."""
    spelled = spelled_tokens(v, tokens)
    if v.architecture in GEMMA_ARCHITECTURES or v.scores is None:
        rank_scores = -np.arange(len(spelled), dtype=np.float64)
    else:
        rank_scores = v.scores
    merges = ranked_merges(spelled, rank_scores)
    vocab = {t: i for i, t in enumerate(spelled)}
    unk = spelled[v.unk_token_id] if v.unk_token_id is not None else None
    if unk is None and "<unk>" in vocab:
        unk = "<unk>"
    model = BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True, byte_fallback=True)
    tk = Tokenizer(model)
    replace = normalizers.Replace(" ", SPACE)
    steps = [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if v.add_space_prefix:
        tk.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), replace])
        steps.append(decoders.Strip(" ", 1, 0))
    else:
        tk.normalizer = replace
    tk.decoder = decoders.Sequence(steps)
    return tk, spelled, vocab
