"""Incremental detokenization: text for each generated token, as soon as it is final.

Decoding token by token and concatenating is wrong twice over. A character split across
byte-fallback tokens (`<0xF0>` `<0x9F>` ...) or byte-level tokens decodes to U+FFFD until its last
byte arrives; and a token's text can depend on its neighbours (SentencePiece's "▁" prefix is
stripped only at the start of the text). So, as transformers' TextStreamer and vLLM's incremental
detokenizer do, a window of recent tokens is decoded twice, without and with the new ones, and
the difference is the new text; text ending in U+FFFD is held back until it completes.

For valid text the pieces add up to `decode(all ids)` exactly. A window whose older part decodes
to nothing (skipped special tokens) is widened backwards, so a decoder that strips the leading
space of the text strips it where the full decode would, not from the new piece. One case cannot
be exact without holding text back indefinitely: `tokenizers`' ByteFallback decoder turns a whole
run of byte tokens into U+FFFDs once any byte in it is invalid, retroactively, so characters of
that run already streamed stay streamed (as llama.cpp would print them). Waiting for every byte
run to close instead would stall models that spell most CJK text in bytes (Llama 2's 32k
vocabulary) until the next non-byte token.
"""

from __future__ import annotations

from typing import Protocol

REPLACEMENT = "\ufffd"


class _Decodes(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str: ...


class StreamDecoder:
    """push(token_id) returns the newly completed text (often ""); flush() returns the rest.

    Concatenating every push() and the flush() gives `tokenizer.decode(all ids)`.
    """

    def __init__(self, tokenizer: _Decodes, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0  # start of the context window: tokens already emitted, decoded for context
        self._read = 0  # end of the emitted tokens

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        return self._advance(final=False)

    def extend(self, token_ids: list[int]) -> str:
        self.ids.extend(int(t) for t in token_ids)
        return self._advance(final=False)

    def flush(self) -> str:
        """Whatever is held back (an incomplete character decodes as U+FFFD); then starts over."""
        text = self._advance(final=True)
        self.ids, self._prefix, self._read = [], 0, 0
        return text

    def _advance(self, final: bool) -> str:
        if self._read == len(self.ids):
            return ""
        start = self._prefix
        before = self._decode(self.ids[start : self._read])
        while not before and start > 0:
            start -= 1
            before = self._decode(self.ids[start : self._read])
        after = self._decode(self.ids[start:])
        if not final and (len(after) <= len(before) or after.endswith(REPLACEMENT)):
            return ""
        # Decoding is prefix-stable except at an incomplete character, which is never emitted.
        new = after[len(before) :] if after.startswith(before) else after[_common_prefix(before, after) :]
        self._prefix, self._read = self._read, len(self.ids)
        return new


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
