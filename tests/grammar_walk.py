"""A random walk through a grammar: random logits, masked by the grammar's state, sampled until
the grammar is complete or EOS (what a random-weight model under constraints does, without one)."""

from __future__ import annotations

import torch


def random_walk(tok, grammar, seed: int, limit: int, scale: float = 1.0, extra_vocab: int = 0) -> list[int]:
    """Token ids of one walk; fails the test when it does not end within `limit` tokens.
    `extra_vocab`: rows past the vocabulary (an output head wider than it) that must stay masked."""
    import pytest

    state = grammar.start()
    gen = torch.Generator().manual_seed(seed)
    ids: list[int] = []
    for _ in range(limit):
        masked = state.mask(torch.randn(tok.vocab_size + extra_vocab, generator=gen) * scale)
        assert torch.isneginf(masked[tok.vocab_size :]).all()
        token = int(torch.multinomial(masked.softmax(-1), 1, generator=gen))
        if token in tok.eos_token_ids:
            return ids
        state.accept(token)
        ids.append(token)
        if state.done:
            return ids
    pytest.fail(f"the grammar's walk did not end within {limit} tokens")
