"""The BPE merges a SentencePiece vocabulary implies, derived in numpy.

A SentencePiece BPE model (`tokenizer.ggml.model = "llama"`) ships no merge list: it merges the
adjacent pair whose concatenation is a token with the best score. A `tokenizers` BPE model wants
ranked merges instead, so every way of cutting a token into two tokens becomes a merge, ranked by
the whole token's score. That is what transformers' converters do too, with a Python loop over
every split point of every token (about 1.5 million for a 262k vocabulary): ~2 s of dictionary
lookups. Here the split points are found with polynomial string hashes over all tokens at once
(one cumulative sum, then sorted-array lookups), and each hit is checked character by character,
so a hash collision can never invent a merge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Odd, so invertible modulo 2**64: the hash of a substring comes from two prefix sums.
_BASE = 0x9E3779B97F4A7C15
_BASE_INV = pow(_BASE, -1, 1 << 64)


def _powers(base: int, n: int) -> np.ndarray:
    out = np.empty(n + 1, dtype=np.uint64)
    out[0] = 1
    out[1:] = np.uint64(base)
    return np.cumprod(out, out=out)  # wraps modulo 2**64, as intended


class _HashTable:
    """Open addressing over 64-bit hashes, filled and probed for whole arrays at once.

    A sorted array with `searchsorted` costs ~18 dependent cache misses per query; a table at most
    half full costs about one. Equal hashes keep the highest id (the last occurrence).
    """

    def __init__(self, keys: np.ndarray):
        n = len(keys)
        self.bits = max(4, int(2 * n - 1).bit_length())
        size = 1 << self.bits
        self.keys = np.zeros(size, dtype=np.uint64)
        self.ids = np.full(size, -1, dtype=np.int64)
        order = np.argsort(keys, kind="stable")
        last = np.ones(n, dtype=bool)
        last[:-1] = keys[order][1:] != keys[order][:-1]
        self.duplicates = not last.all()
        pending = order[last]
        pos = self._slot(keys[pending])
        while len(pending):
            free = self.ids[pos] == -1
            self.ids[pos[free]] = pending[free]  # among rivals for a slot, one write wins
            won = self.ids[pos] == pending
            self.keys[pos[won]] = keys[pending[won]]
            pending, pos = pending[~won], (pos[~won] + 1) & (size - 1)

    def _slot(self, h: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return ((h * np.uint64(0xFF51AFD7ED558CCD)) >> np.uint64(64 - self.bits)).astype(np.int64)

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """The id stored under each hash, or -1."""
        out = np.full(len(h), -1, dtype=np.int64)
        active = np.arange(len(h))
        pos = self._slot(h)
        mask = len(self.ids) - 1
        while len(active):
            ids = self.ids[pos]
            hit = (ids >= 0) & (self.keys[pos] == h[active])
            out[active[hit]] = ids[hit]
            more = (ids >= 0) & ~hit
            active, pos = active[more], (pos[more] + 1) & mask
        return out


def _equal_runs(flat: np.ndarray, a: np.ndarray, b: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Row i: flat[a[i] : a[i]+length[i]] == flat[b[i] : b[i]+length[i]]."""
    rows = np.repeat(np.arange(len(length)), length)
    step = np.arange(len(rows)) - np.repeat(np.cumsum(length) - length, length)
    bad = flat[a[rows] + step] != flat[b[rows] + step]
    return np.bincount(rows[bad], minlength=len(length)) == 0


def token_splits(tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (left, right, whole) triple of token ids with tokens[left] + tokens[right] == tokens[whole].

    Ordered by `whole`, then by the length of `left`. Where a string occurs more than once, its
    last id stands for it, as in a `{token: id}` dict.
    """
    n = len(tokens)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return empty, empty, empty
    lens = np.fromiter(map(len, tokens), dtype=np.int64, count=n)
    flat = np.frombuffer("".join(tokens).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    ends = np.cumsum(lens)
    starts = ends - lens
    total = int(ends[-1])
    with np.errstate(over="ignore"):
        pow_b, pow_inv = _powers(_BASE, total), _powers(_BASE_INV, total)
        # prefix[j] = sum_{i<j} (c_i + 1) B^-(i+1); hash of flat[a:b] = B^b (prefix[b] - prefix[a]).
        prefix = np.zeros(total + 1, dtype=np.uint64)
        np.cumsum((flat + np.uint64(1)) * pow_inv[1:], out=prefix[1:])

        def substring_hash(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return pow_b[b] * (prefix[b] - prefix[a])

        whole_hash = substring_hash(starts, ends)
        table = _HashTable(whole_hash)
        lookup = table.lookup

        # Split points: every character position that does not start a token.
        is_start = np.zeros(total, dtype=bool)
        is_start[starts[lens > 0]] = True
        cut = np.flatnonzero(~is_start)
        whole = np.repeat(np.arange(n), lens)[cut]
        left = lookup(substring_hash(starts[whole], cut))
        keep = left >= 0
        cut, whole, left = cut[keep], whole[keep], left[keep]
        right = lookup(substring_hash(cut, ends[whole]))
        keep = right >= 0
        cut, whole, left, right = cut[keep], whole[keep], left[keep], right[keep]

    # Hash equality is only a candidate: confirm lengths and characters.
    ok = (lens[left] == cut - starts[whole]) & (lens[right] == ends[whole] - cut)
    cut, whole, left, right = cut[ok], whole[ok], left[ok], right[ok]
    ok = _equal_runs(flat, starts[left], starts[whole], lens[left]) & _equal_runs(
        flat, starts[right], cut, lens[right]
    )
    left, right, whole = left[ok], right[ok], whole[ok]
    if table.duplicates:  # rare: a string listed twice
        # It yields its merges once, under the id a `{token: id}` dict keeps: the last.
        index = {t: i for i, t in enumerate(tokens)}
        keep = np.fromiter(map(index.__getitem__, tokens), dtype=np.int64, count=n)[whole] == whole
        left, right, whole = left[keep], right[keep], whole[keep]
    return left, right, whole


def ranked_merges(tokens: Sequence[str], scores: np.ndarray) -> list[tuple[str, str]]:
    """Merges best first: by the score of the merged token (higher first), then longer left piece,
    then longer right piece, then token order — the order transformers' `generate_merges` gives."""
    left, right, whole = token_splits(tokens)
    lens = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    score = np.asarray(scores, dtype=np.float64)[whole]
    rank = np.lexsort((-lens[right], -lens[left], -score))  # stable: ties keep token order
    return [(tokens[a], tokens[b]) for a, b in zip(left[rank].tolist(), right[rank].tolist(), strict=True)]
