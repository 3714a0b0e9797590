"""Grammar-constrained decoding (core/runtime/grammar.py) on every kind of tokenizer ktx reads:
SentencePiece with byte fallback (the demo's Gemma 3), byte-level BPE, SentencePiece with a space
prefix. The token table llguidance works from must spell each token as the text it decodes to,
and random logits pushed through the mask must still give JSON valid against the schema."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from grammar_walk import random_walk
from test_detok_stream import TEXTS
from tiny_tokenizers import byte_level_gguf

from ktx.core.gguf import ValueType, write_gguf
from ktx.core.gguf.writer import Typed
from ktx.core.runtime.grammar import Grammar, GrammarError, token_table
from ktx.core.tokenizer import Tokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "n": {"type": "integer", "minimum": -5, "maximum": 500},
        "x": {"type": "number"},
        "kind": {"enum": ["a", "b c", "ü"]},
        "list": {"type": "array", "items": {"type": "boolean"}, "maxItems": 4},
    },
    "required": ["name", "n", "kind", "list"],
    "additionalProperties": False,
}


def _spm_prefix_gguf(path):
    pieces = ["\u2581", "h", "e", "l", "o", "\u2581h", "\u2581hello", '"', "{", "}", ":", ","]
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + pieces
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.array([0.0] * 259 + [-float(i) for i in range(len(pieces))], np.float32),
        "tokenizer.ggml.token_type": Typed(
            [2, 3, 3] + [6] * 256 + [1] * len(pieces), ValueType.ARRAY, ValueType.INT32
        ),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.add_space_prefix": True,
    }
    write_gguf(path, "llama", meta, {"token_embd.weight": np.zeros((4, 8), np.float32)})
    return path


@pytest.fixture(scope="module", params=["demo", "byte-level", "spm-prefix"])
def tok(request, demo_gguf, tmp_path_factory) -> Tokenizer:
    tmp = tmp_path_factory.mktemp("grammar")
    path = {
        "demo": lambda: demo_gguf,
        "byte-level": lambda: byte_level_gguf(tmp / "bpe.gguf"),
        "spm-prefix": lambda: _spm_prefix_gguf(tmp / "spm.gguf"),
    }[request.param]()
    return Tokenizer.from_gguf(path, cache_dir=tmp / "cache")


def _text_of(tok: Tokenizer, ids: list[int]) -> str:
    """What the tokens spell, the space-prefix decoder's stripped first space put back."""
    text = tok.decode(ids)
    first = token_table(tok).decode_bytes(ids[:1])
    strips = first.startswith(b" ") and not tok.decode(ids[:1]).startswith(" ")
    return " " + text if strips else text


def _tokens(tok: Tokenizer, raw: bytes) -> list[int]:
    """The tokens spelled `raw` (a byte token, and a piece where the vocabulary has one)."""
    table = token_table(tok)
    return [i for i in range(tok.vocab_size) if table.decode_bytes([i]) == raw]


@pytest.mark.parametrize("text", [t for t in TEXTS if "<" not in t])
def test_the_token_table_spells_tokens_as_they_decode(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    raw = b"".join(token_table(tok).decode_bytes([i]) for i in ids)
    assert raw.decode("utf-8") == _text_of(tok, ids)


@pytest.mark.parametrize("seed", range(4))
def test_random_logits_through_the_mask_give_valid_json(tok, seed):
    # random logits over a head wider than the vocabulary: the extra rows stay masked
    ids = random_walk(tok, Grammar.json_schema(tok, SCHEMA), seed, limit=400, scale=4, extra_vocab=3)
    jsonschema.validate(json.loads(_text_of(tok, ids)), SCHEMA)


def test_a_token_outside_the_grammar_is_refused(tok):
    state = Grammar.json_schema(tok, SCHEMA).start()
    allowed = state.allowed()
    assert all(
        token_table(tok).decode_bytes([i]).startswith(b"{") for i in allowed.nonzero().view(-1).tolist()
    )
    forbidden = _tokens(tok, b"[")[0]
    assert not allowed[forbidden]
    with pytest.raises(GrammarError, match="outside the grammar"):
        state.accept(forbidden)


def test_any_object_and_bad_schemas(tok):
    state = Grammar.json_schema(tok).start()
    allowed = state.allowed()
    for text in (b"{", b"[", b'"', b"1"):
        assert bool(allowed[_tokens(tok, text)].any()) == (text == b"{"), text
    for bad, why in [({"type": "strnig"}, "strnig"), ({"$ref": "#/nowhere"}, "nowhere")]:
        with pytest.raises(GrammarError, match=why):
            Grammar.json_schema(tok, bad)
