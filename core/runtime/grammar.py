"""Grammar-constrained decoding: a request's tokens kept inside a JSON schema or a grammar.

The work is llguidance's (the engine llama.cpp and vLLM use): it compiles a JSON schema or a
Lark grammar against the tokenizer's token bytes and, at each step, says which tokens may come
next as a bitmask over the vocabulary. ktx masks the other logits to -inf before sampling, so
any sampling settings (temperature 1 included) stay inside the grammar.

    grammar = Grammar.json_schema(tokenizer, {"type": "object", ...})   # GrammarError if bad
    state = grammar.start()              # one per sequence: it follows that sequence's tokens
    logits = state.mask(logits)          # before sampling
    state.accept(token)                  # after; state.done once the grammar is complete

Costs (see bench/constrained.py): building the token table once per tokenizer (~3 s for a
262k vocabulary, cached on the tokenizer), about 0.1 ms per step for the mask.

JSON is compact (`, ` and `: `, no free whitespace): a weak or random-weight model given free
whitespace can spend its whole budget on newlines and never close the object.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import llguidance
import numpy as np
import torch

# separators as json.dumps writes them; no other whitespace between tokens of the JSON
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT: dict[str, Any] = {"type": "object"}
_NEG_INF = torch.tensor(float("-inf"))

_lock = threading.Lock()


class GrammarError(ValueError):
    """A schema or grammar llguidance cannot compile (the message says why)."""


def token_table(tokenizer) -> llguidance.LLTokenizer:
    """llguidance's view of the tokenizer (the bytes of every token), built once per tokenizer."""
    table = getattr(tokenizer, "_llguidance", None)
    if table is None:
        with _lock:
            table = getattr(tokenizer, "_llguidance", None)
            if table is None:
                table = llguidance.LLTokenizer(
                    tokenizer.backend.to_str(),
                    n_vocab=tokenizer.vocab_size,
                    eos_token=sorted(tokenizer.eos_token_ids),
                )
                tokenizer._llguidance = table
    return table


class Grammar:
    """A compiled grammar for one tokenizer; `start()` gives each sequence its own state."""

    def __init__(self, tokenizer, source: str):
        self.table = token_table(tokenizer)
        self.vocab = tokenizer.vocab_size
        self.source = source
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(source, self.table)
        if failed:
            raise GrammarError("; ".join(messages) or "the grammar does not compile")

    @classmethod
    def json_schema(cls, tokenizer, schema: dict[str, Any] | None = None) -> Grammar:
        """JSON text that validates against `schema` (None: any JSON object)."""
        try:
            source = llguidance.LLMatcher.grammar_from_json_schema(
                json.dumps(ANY_OBJECT if schema is None else schema), overrides=JSON_OPTIONS
            )
        except ValueError as e:
            raise GrammarError(f"the JSON schema is not usable: {e}") from None
        return cls(tokenizer, source)

    @classmethod
    def lark(cls, tokenizer, lark: str) -> Grammar:
        return cls(tokenizer, llguidance.LLMatcher.grammar_from_lark(lark))

    def start(self) -> GrammarState:
        return GrammarState(self)


class GrammarState:
    """Where one sequence stands in its grammar."""

    def __init__(self, grammar: Grammar):
        self.vocab = grammar.vocab
        self.matcher = llguidance.LLMatcher(grammar.table, grammar.source, log_level=0)
        if self.matcher.is_error():
            raise GrammarError(self.matcher.get_error())

    def allowed(self) -> torch.Tensor:
        """Boolean [vocab]: the tokens the grammar allows next."""
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[: self.vocab].view(np.bool_)
        if self.matcher.is_error():
            raise GrammarError(self.matcher.get_error())
        return torch.from_numpy(allowed)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """The logits [vocab'] with every token the grammar forbids at -inf (a new tensor); an
        output head wider than the vocabulary has its extra rows forbidden too."""
        allowed, n = self.allowed(), logits.shape[-1]
        allowed = (
            allowed[:n] if len(allowed) >= n else torch.nn.functional.pad(allowed, (0, n - len(allowed)))
        )
        return torch.where(allowed, logits, _NEG_INF)

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(token):
            raise GrammarError(f"token {token} is outside the grammar: {self.matcher.get_error()}")

    @property
    def done(self) -> bool:
        """The grammar is complete and allows nothing more (the answer ends here)."""
        return self.matcher.is_stopped()
