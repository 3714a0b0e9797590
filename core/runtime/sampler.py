"""Next-token sampling: penalties, temperature, top-k, top-p, min-p, then one seeded draw.

The order and the meaning of every knob follow transformers' `generate` (and vLLM), so a request behaves
here as its author expects from them:

1. repetition penalty, the CTRL / transformers way, over every token seen so far (prompt and generated):
   a positive logit is divided by the penalty, a negative one multiplied;
2. presence and frequency penalties, the OpenAI way, over the *generated* tokens only:
   ``logit -= presence * (count > 0) + frequency * count``. This is why `Sampler.sample` takes the prompt
   and the generated tokens as two arguments rather than one history: the two penalties disagree on
   what counts. The caller owns the history; the sampler keeps no per-request state but its generator;
3. greedy (temperature 0, or top_k 1) stops here with an argmax;
4. temperature, top-k, top-p on the top-k survivors renormalised, min-p; then one draw.

A draw costs exactly one uniform number per row from the sampler's own generator, whatever the filters
kept, so a seeded request replays identically and is untouched by other requests or the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

# Token ids: one sequence (shared by every row of 2-D logits) or one sequence per row.
Tokens = Sequence[int] | Sequence[Sequence[int]] | Tensor

# Below this a temperature samples the argmax (see SamplingParams.greedy).
MIN_TEMPERATURE = 1e-5
# Top-p without top-k bins tokens by distance below the likeliest one (see _nucleus).
_BINS_PER_NAT, _NATS = 4, 32
# The draw's inverse CDF works on blocks of this many tokens (see Sampler._draw).
_DRAW_BLOCK = 1024


@dataclass
class SamplingParams:
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off
    repetition_penalty: float = 1.0  # 1 = off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None  # None = a fresh nondeterministic seed per Sampler

    @property
    def greedy(self) -> bool:
        """Top-k 1 keeps only the argmax whatever the temperature: no need to draw. Temperatures
        below MIN_TEMPERATURE are greedy too: dividing logits by 1e-260 overflows float32, and
        the distribution it stands for is the argmax anyway."""
        return self.temperature < MIN_TEMPERATURE or self.top_k == 1

    def validate(self) -> SamplingParams:
        """Raises ValueError naming every bad field at once; returns self to allow chaining."""
        checks = [
            ("temperature", _finite(self.temperature) and self.temperature >= 0, ">= 0 (0 = greedy)"),
            ("top_k", _int(self.top_k) and self.top_k >= 0, "an integer >= 0 (0 = off)"),
            ("top_p", _finite(self.top_p) and 0 < self.top_p <= 1, "in (0, 1]"),
            ("min_p", _finite(self.min_p) and 0 <= self.min_p <= 1, "in [0, 1]"),
            # bounded: a logit divided or multiplied by an extreme penalty overflows to inf
            (
                "repetition_penalty",
                _finite(self.repetition_penalty) and 1e-3 <= self.repetition_penalty <= 1e3,
                "in [0.001, 1000]",
            ),
            (
                "presence_penalty",
                _finite(self.presence_penalty) and abs(self.presence_penalty) <= 1e3,
                "in [-1000, 1000]",
            ),
            (
                "frequency_penalty",
                _finite(self.frequency_penalty) and abs(self.frequency_penalty) <= 1e3,
                "in [-1000, 1000]",
            ),
            ("seed", self.seed is None or _int(self.seed), "an integer or None"),
        ]
        errors = [f"{n} must be {rule}, got {getattr(self, n)!r}" for n, ok, rule in checks if not ok]
        if errors:
            raise ValueError("invalid sampling parameters: " + "; ".join(errors))
        return self


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class Sampler:
    """Samples next tokens for one request (or for n rows that share its parameters and generator)."""

    def __init__(self, params: SamplingParams | None = None) -> None:
        self.params = (params if params is not None else SamplingParams()).validate()
        # An unseeded request still gets its own generator: drawing from the global one would couple
        # requests, and torch.Generator()'s default seed is a constant.
        self.seed: int = self.params.seed if self.params.seed is not None else torch.Generator().seed()
        self._generators: dict[torch.device, torch.Generator] = {}

    def sample(self, logits: Tensor, prompt_tokens: Tokens = (), generated: Tokens = ()) -> int | list[int]:
        """Next token id for logits [vocab] (an int), or one per row for logits [n, vocab] (a list).

        prompt_tokens and generated are the request's history, split because the penalties count them
        differently (see the module docstring); for [n, vocab] logits each may be one sequence shared by
        all rows or one per row (n samples of one prompt: a shared prompt, per-row generated tokens)."""
        x = _rows(self.apply_penalties(logits, prompt_tokens, generated))
        if self.params.greedy:
            ids = x.argmax(-1)  # the first maximum on ties, as torch documents
        else:
            w, idx = self._filter(x)
            ids = self._draw(w)
            ids = (ids if idx is None else idx.gather(-1, ids)).view(-1)
        out = ids.tolist()
        return out[0] if logits.dim() == 1 else out

    def distribution(self, logits: Tensor, prompt_tokens: Tokens = (), generated: Tokens = ()) -> Tensor:
        """The normalised probabilities `sample` draws from, dense and shaped like logits (one-hot when
        greedy): for logprobs, tests and debugging, not for the decode loop."""
        x = _rows(self.apply_penalties(logits, prompt_tokens, generated))
        if self.params.greedy:
            dense = torch.zeros_like(x).scatter_(-1, x.argmax(-1, keepdim=True), 1.0)
        else:
            w, idx = self._filter(x)
            w = (w / w.sum(-1, keepdim=True, dtype=torch.float64)).float()
            dense = w if idx is None else torch.zeros_like(x).scatter_add_(-1, idx, w)  # pads weigh 0
        return dense.view(logits.shape)

    def apply_penalties(self, logits: Tensor, prompt_tokens: Tokens = (), generated: Tokens = ()) -> Tensor:
        """Penalised float32 logits, shaped like the input, which is never modified. Works on the distinct
        tokens seen, not on vocab-sized counts, so its cost follows the history length. Token ids >= vocab
        are ignored, as transformers does for an embedding table wider than the output head."""
        p, x = self.params, _rows(logits.float())
        rep, pres, freq = p.repetition_penalty, p.presence_penalty, p.frequency_penalty
        if rep == 1 and pres == 0 and freq == 0:
            return logits.float()
        x = x.clone()
        prompts, gens = _token_rows(prompt_tokens, x), _token_rows(generated, x)
        if len(prompts) == len(gens) == 1:
            rows: list[tuple[int | slice, Tensor, Tensor]] = [(slice(None), prompts[0], gens[0])]
        else:
            rows = [(i, prompts[i % len(prompts)], gens[i % len(gens)]) for i in range(x.shape[0])]
        for r, prompt, gen in rows:
            if rep != 1:
                seen = torch.cat([prompt, gen]).unique()
                v = x[r, seen]
                x[r, seen] = torch.where(v < 0, v * rep, v / rep)
            if pres != 0 or freq != 0:
                ids, counts = gen.unique(return_counts=True)
                x[r, ids] -= pres + freq * counts.to(x.dtype)
        return x.view(logits.shape)

    def _filter(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """Weights [n, m] after temperature, top-k, top-p and min-p: probabilities up to a per-row factor,
        0 for filtered tokens. idx [n, m] maps them to token ids; None: the whole vocab, in order."""
        p, vocab = self.params, x.shape[-1]
        top = x.amax(-1, keepdim=True)
        if not bool(top.isfinite().all()):
            raise ValueError("nothing to sample: a row's logits are all -inf, or hold NaN or +inf")
        # Shifted so the best token's weight exp(0) is exactly 1: no softmax over the vocab is needed.
        # In place where possible: on CPU each fresh vocab-sized buffer costs page faults.
        z = (x - top).div_(p.temperature)
        idx = None
        if 0 < p.top_k < vocab:
            z, idx = z.topk(p.top_k)  # sorted; top-p sees the top-k survivors renormalised
            w = z.exp_()
            if p.top_p < 1:  # keep a token while the mass before it is < top_p of the total
                w64 = w.double()  # a float32 cumsum drifts by 1e-5 over 10k tokens, moving the cut
                before = w64.cumsum(-1)
                w.masked_fill_(before - w64 >= p.top_p * before[:, -1:], 0.0)
        elif p.top_p < 1:
            w, idx = _nucleus(z, p.top_p)
        else:
            w = z.exp_()
        if p.min_p > 0:  # p < min_p * p_max, as the best token weighs 1
            w.masked_fill_(w < p.min_p, 0.0)
        return w, idx

    def _draw(self, w: Tensor) -> Tensor:
        """One index [n, 1] per row by inverse CDF: ~0.2 ms on a 262k vocab where torch.multinomial,
        which draws exponentials for every token, takes ~6 ms (2-core CPU).

        Two levels, block sums then one block's cumsum, all in float64: a float32 cumsum over the vocab
        would skew small probabilities, and a float64 one needs a fresh vocab-sized buffer per call."""
        n, m = w.shape
        size = min(_DRAW_BLOCK, m)
        blocks = (w if m % size == 0 else torch.nn.functional.pad(w, (0, -m % size))).view(n, -1, size)
        cdf = blocks.sum(-1, dtype=torch.float64).cumsum(-1)  # [n, blocks]
        u = torch.rand((n, 1), dtype=torch.float64, device=w.device, generator=self._generator(w))
        u = u * cdf[:, -1:]
        block = _search(cdf, u)
        before = torch.nn.functional.pad(cdf, (1, 0))[:, :-1].gather(-1, block)  # mass of earlier blocks
        inner = (
            blocks.gather(1, block[..., None].expand(n, 1, size))
            .view(n, size)
            .cumsum(-1, dtype=torch.float64)
        )
        return block * size + _search(inner, u - before)

    def _generator(self, like: Tensor) -> torch.Generator:
        gen = self._generators.get(like.device)
        if gen is None:
            gen = torch.Generator(like.device).manual_seed(self.seed % 2**64)  # any int, as OpenAI's
            self._generators[like.device] = gen
        return gen


def _search(cdf: Tensor, u: Tensor) -> Tensor:
    """First index whose cdf exceeds u. u is kept strictly below the total, so the entry found always
    adds nonzero mass: a token (or block) of weight 0 is never drawn, even at the extremes of u."""
    u = torch.minimum(u, cdf[:, -1:].nextafter(torch.zeros_like(u)))
    return torch.searchsorted(cdf, u, right=True)


def _rows(logits: Tensor) -> Tensor:
    if logits.dim() not in (1, 2):
        raise ValueError(f"logits must be [vocab] or [n, vocab], got shape {tuple(logits.shape)}")
    return logits.unsqueeze(0) if logits.dim() == 1 else logits


def _token_rows(tokens: Tokens, x: Tensor) -> list[Tensor]:
    """Token ids as 1-D long tensors on x's device: one (shared by every row) or one per row of x."""
    if isinstance(tokens, Tensor):
        rows = [tokens] if tokens.dim() <= 1 else list(tokens)
    elif len(tokens) and hasattr(tokens[0], "__len__"):  # lists, tuples, tensors, numpy arrays
        rows = list(tokens)
    else:
        rows = [tokens]
    if len(rows) not in (1, x.shape[0]):
        raise ValueError(f"token lists for {len(rows)} rows, but logits have {x.shape[0]} rows")
    ids = [torch.as_tensor(r, dtype=torch.long, device=x.device).view(-1) for r in rows]
    return [r[r < x.shape[-1]] for r in ids]


def _nucleus(z: Tensor, top_p: float) -> tuple[Tensor, Tensor]:
    """Top-p without sorting the vocab: weights and ids of each row's nucleus, in no particular order,
    padded with weight 0. Overwrites z = (logit - max) / temperature.

    Tokens are binned by -z (quarter nats; the last bin takes all past 32) and the bins weighed by
    exp(z). If bin j is the first where the running mass reaches top_p, every token in an earlier bin
    has less than top_p before it and is kept, every token in a later bin has at least top_p before it
    and is dropped: only bin j needs sorting, to find the cut inside it. On Gemma 3's distributions
    that bin holds a handful of tokens; on a flat one, a few thousand where a full sort takes 262k."""
    nbins = _BINS_PER_NAT * _NATS + 1
    rows, weights = [], []
    for zr in z:  # rows differ in how many tokens they keep
        w = zr.exp().double()  # float64 sums: float32 over 262k terms is off by up to 3e-5
        bins = zr.mul_(-_BINS_PER_NAT).clamp_(max=nbins - 1).int()
        mass = torch.bincount(bins, w, minlength=nbins).cumsum(0)
        goal = top_p * mass[-1]
        j = int((mass < goal).sum())
        ids = (bins <= j).nonzero().view(-1)
        at_edge = bins[ids] == j
        edge, inside = ids[at_edge], ids[~at_edge]
        we, order = w[edge].sort(descending=True, stable=True)  # ties: the lower id first
        before = (mass[j - 1] if j else 0.0) + we.cumsum(0) - we
        ids = torch.cat([inside, edge[order][before < goal]])
        rows.append(ids)
        weights.append(w[ids].float())
    n, k = z.shape[0], max(len(r) for r in rows)
    idx = torch.zeros(n, k, dtype=torch.long, device=z.device)
    out = torch.zeros(n, k, device=z.device)
    for i, (r, w) in enumerate(zip(rows, weights, strict=True)):
        idx[i, : len(r)], out[i, : len(r)] = r, w
    return out, idx
