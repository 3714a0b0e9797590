"""Log-probabilities in the shapes clients read: OpenAI chat (`logprobs.content`), OpenAI
completions (`tokens` / `token_logprobs` / `top_logprobs` / `text_offset`) and Ollama
(`logprobs` beside each piece, as in its 0.12 API).

The values are the model's: log-softmax of the raw logits at each step, before penalties,
temperature and any grammar (what OpenAI and vLLM report). Tokens are named by their bytes
(llguidance's table of the vocabulary, shared with constrained decoding), shown as text with
invalid UTF-8 replaced: a token may hold half a character.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ktx.core.runtime.grammar import token_table

from .engine import TokenEvent


class Logprobs:
    """Turns TokenEvents' log-probabilities into OpenAI's or Ollama's entries."""

    def __init__(self, table):
        self.table = table

    @classmethod
    async def of(cls, tokenizer) -> Logprobs:
        return cls(await asyncio.to_thread(token_table, tokenizer))  # seconds the first time

    def token(self, token_id: int) -> tuple[str, list[int]]:
        raw = self.table.decode_bytes([token_id])
        return raw.decode("utf-8", errors="replace"), list(raw)

    def _alt(self, token_id: int, logprob: float) -> dict[str, Any]:
        text, raw = self.token(token_id)
        return {"token": text, "logprob": logprob, "bytes": raw}

    def entry(self, event: TokenEvent) -> dict[str, Any]:
        """OpenAI chat's and Ollama's entry for one token."""
        top = [self._alt(t, lp) for t, lp in event.top_logprobs or []]
        return {**self._alt(event.token_id, event.logprob), "top_logprobs": top}

    def completion(self, events: list[TokenEvent], offset: int = 0) -> dict[str, Any]:
        """The completions API's columns for `events`; text offsets count from `offset`."""
        tokens, logprobs, tops, offsets = [], [], [], []
        for e in events:
            text, _ = self.token(e.token_id)
            tokens.append(text)
            logprobs.append(e.logprob)
            tops.append({self.token(t)[0]: lp for t, lp in e.top_logprobs or []})
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets}


def scored(events: list) -> list[TokenEvent]:
    """The events that carry a token's log-probability (not EOS, not held-back text flushes)."""
    return [e for e in events if isinstance(e, TokenEvent) and e.logprob is not None]
