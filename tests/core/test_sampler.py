"""The sampler against transformers' own logits processors, a per-token Python loop and its own draws."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
import torch
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from ktx.core.runtime.sampler import Sampler, SamplingParams


def distinct_logits(gen: torch.Generator, shape: tuple[int, ...], scale: float = 3.0) -> torch.Tensor:
    """Random Gaussian-shaped logits with no two equal in a row, so that no cut can fall inside a tie:
    normal quantiles jittered within their own slots, in random order (float32 randn has ties)."""
    n, rows = shape[-1], []
    for _ in range(math.prod(shape[:-1])):
        q = (torch.arange(n) + 0.25 + 0.5 * torch.rand(n, generator=gen, dtype=torch.float64)) / n
        rows.append(torch.special.ndtri(q)[torch.randperm(n, generator=gen)] * scale)
    x = torch.stack(rows).float().view(shape)
    assert all_distinct(x)
    return x


def all_distinct(x: torch.Tensor) -> bool:
    return all(row.unique().numel() == row.numel() for row in x.view(-1, x.shape[-1]))


def transformers_distribution(x: torch.Tensor, t: float, top_k: int, top_p: float, min_p: float):
    """Probabilities after transformers' warpers, in the order `generate` applies them, in float64."""
    scores = x.double()[None] if x.dim() == 1 else x.double()
    warpers = [TemperatureLogitsWarper(t)] if t != 1 else []
    warpers += [TopKLogitsWarper(top_k)] if top_k else []
    warpers += [TopPLogitsWarper(top_p)] if top_p < 1 else []
    warpers += [MinPLogitsWarper(min_p)] if min_p else []
    for w in warpers:
        scores = w(None, scores)
    return scores.softmax(-1).view(x.shape)


def cut_between(values: torch.Tensor, rng: random.Random, first: int = 0) -> float:
    """A threshold halfway between two neighbours of a descending sequence: far from both."""
    j = rng.randrange(first, min(len(values) - 1, 40))
    return float(values[j] + values[j + 1]) / 2


# -- greedy ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [SamplingParams(temperature=0), SamplingParams(top_k=1, temperature=0.7)])
def test_greedy_is_argmax(params):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1000, generator=gen)
    x[:, ::3] = -math.inf
    s = Sampler(params)
    assert params.greedy
    assert s.sample(x) == x.argmax(-1).tolist()
    assert s.sample(x[3]) == int(x[3].argmax())
    assert torch.equal(s.distribution(x), torch.nn.functional.one_hot(x.argmax(-1), 1000).float())


def test_greedy_argmax_is_taken_after_penalties():
    x = torch.tensor([1.0, 2.0, 1.5, -1.0])
    assert Sampler(SamplingParams(temperature=0)).sample(x, [1]) == 1
    assert Sampler(SamplingParams(temperature=0, repetition_penalty=2.0)).sample(x, [1]) == 2
    assert Sampler(SamplingParams(temperature=0, presence_penalty=0.6)).sample(x, [], [1]) == 2
    assert Sampler(SamplingParams(temperature=0, presence_penalty=0.6)).sample(x, [1], []) == 1  # prompt


# -- penalties -----------------------------------------------------------------------------------------


def loop_penalties(logits: list[float], prompt: list[int], generated: list[int], rep, pres, freq):
    """The definitions, token by token."""
    out = list(logits)
    for t in set(prompt) | set(generated):
        out[t] = out[t] * rep if out[t] < 0 else out[t] / rep
    for t in set(generated):
        out[t] -= pres
    for t in generated:
        out[t] -= freq
    return out


@pytest.mark.parametrize("seed", range(20))
def test_penalties_match_a_per_token_loop(seed):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    vocab, n = rng.randrange(2, 60), rng.randrange(1, 4)
    x = torch.randn(n, vocab, generator=gen) * 4
    x[torch.rand(n, vocab, generator=gen) < 0.1] = -math.inf
    x[:, 0] = 0.0  # a zero logit: neither sign
    rep, pres, freq = rng.choice([0.5, 1.0, 1.3]), rng.uniform(-1, 2), rng.uniform(-1, 2)
    prompt = [rng.randrange(vocab) for _ in range(rng.randrange(0, 30))]
    gens = [[rng.randrange(vocab) for _ in range(rng.randrange(0, 30))] for _ in range(n)]
    before = x.clone()
    s = Sampler(SamplingParams(repetition_penalty=rep, presence_penalty=pres, frequency_penalty=freq))
    # Per-row generated tokens with a shared prompt, as for n samples of one request.
    got = s.apply_penalties(x, prompt, gens)
    want = [loop_penalties(x[i].tolist(), prompt, gens[i], rep, pres, freq) for i in range(n)]
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-6, atol=1e-5)
    # One row with tensors, and ids past the output head ignored as transformers does.
    got = s.apply_penalties(x[0], torch.tensor([*prompt, vocab + 5]), torch.tensor([*gens[0], vocab]))
    torch.testing.assert_close(got, torch.tensor(want[0]), rtol=1e-6, atol=1e-5)
    assert torch.equal(x, before)  # the caller's logits are never modified


@pytest.mark.parametrize("penalty", [0.7, 1.2, 2.0])
def test_repetition_penalty_matches_transformers(penalty):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 5000, generator=gen) * 5
    history = torch.randint(0, 5000, (1, 300), generator=gen)
    want = RepetitionPenaltyLogitsProcessor(penalty)(history, x.clone())
    s = Sampler(SamplingParams(repetition_penalty=penalty))
    got = s.apply_penalties(x, history[0, :100], history[0, 100:])  # prompt and generated: both count
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# -- temperature, top-k, top-p, min-p ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_filtered_distribution_matches_transformers(seed):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    vocab = rng.choice([50, 500, 5000])
    x = distinct_logits(gen, (vocab,), scale=rng.choice([1.0, 3.0]))
    x[torch.randperm(vocab, generator=gen)[: vocab // 10]] = -math.inf
    t = rng.choice([0.5, 1.0, 1.7])
    top_k = rng.choice([0, 0, 5, 40, vocab // 2])
    # Cuts are placed halfway between neighbouring values of the reference, so rounding cannot move them.
    top_p = 1.0
    if rng.random() < 0.8:
        cum = transformers_distribution(x, t, top_k, 1.0, 0.0).sort(descending=True).values.cumsum(0)
        top_p = cut_between(cum[: int((cum < 1 - 1e-6).sum()) + 1], rng)  # top_p <= 1
    min_p = 0.0
    if rng.random() < 0.5:
        ref = transformers_distribution(x, t, top_k, top_p, 0.0).sort(descending=True).values
        kept = ref[ref > 0] / ref[0]
        min_p = cut_between(kept, rng, first=0) if len(kept) > 1 else 0.5
    params = SamplingParams(temperature=t, top_k=top_k, top_p=top_p, min_p=min_p)
    want = transformers_distribution(x, t, top_k, top_p, min_p)
    got = Sampler(params).distribution(x)
    assert torch.equal(got > 0, want > 0), f"{params}: different tokens survive"
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)


def test_large_vocab_top_p_matches_transformers_batched_or_not():
    """A 262,144 vocab shaped like a language model's: a few strong tokens over a long tail. Exercises
    the binned nucleus search (no top-k) on rows whose nuclei run from a few tokens to most of the vocab."""
    gen = torch.Generator().manual_seed(7)
    x = distinct_logits(gen, (3, 1 << 18), scale=2.0)
    for row, boost in zip(x, (14.0, 10.0, 6.0), strict=True):
        row[torch.randperm(row.numel(), generator=gen)[:40]] += boost
    assert all_distinct(x)
    cums = torch.stack([transformers_distribution(r, 1.0, 0, 1.0, 0.0) for r in x])
    cums = cums.sort(-1, descending=True).values.cumsum(-1)
    # Shared top_p values that lie far, in every row, from the cumulative sums where a cut could fall.
    grid = torch.linspace(0.3, 0.97, 400, dtype=torch.float64)
    pos = torch.stack([torch.searchsorted(c, grid).clamp(1, c.numel() - 1) for c in cums])
    below, above = cums.gather(1, pos - 1), cums.gather(1, pos)
    margin = torch.minimum(grid - below, above - grid).abs().amin(0)
    for lo, hi in ((0.3, 0.6), (0.6, 0.9), (0.9, 0.97)):
        inside = (grid >= lo) & (grid < hi)
        top_p = float(grid[inside][margin[inside].argmax()])
        assert margin[inside].max() > 2e-7, "no top_p far enough from every boundary"
        want = torch.stack([transformers_distribution(r, 1.0, 0, top_p, 0.0) for r in x])
        s = Sampler(SamplingParams(top_p=top_p))
        got = s.distribution(x)
        assert torch.equal(got > 0, want > 0)
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-9)
        assert torch.equal(torch.stack([s.distribution(r) for r in x]), got)


# -- draws ----------------------------------------------------------------------------------------


PARAMS = [
    SamplingParams(temperature=0.8, top_p=0.9),  # binned nucleus path
    SamplingParams(temperature=1.3, top_k=12, top_p=0.95, min_p=0.02),  # top-k path
    SamplingParams(temperature=0.6, min_p=0.05),  # whole-vocab path
    SamplingParams(),  # plain softmax
]


@pytest.mark.parametrize("params", PARAMS)
def test_same_seed_same_draws_other_seeds_differ(params):
    x = distinct_logits(torch.Generator().manual_seed(3), (200,), scale=1.0)

    def draws(seed: int, interleave: bool = False) -> list[int]:
        s = Sampler(replace(params, seed=seed))
        other = Sampler(replace(params, seed=seed + 1))
        out = []
        for _ in range(60):
            torch.manual_seed(random.randrange(1 << 30))  # the global RNG must not matter
            out.append(s.sample(x))
            if interleave:  # nor another request drawing in between
                other.sample(x)
        return out

    before = x.clone()
    first = draws(11)
    assert torch.equal(x, before)  # sampling never writes into the caller's logits
    assert draws(11) == first
    assert draws(11, interleave=True) == first
    assert draws(12) != first
    assert len(set(first)) > 5


def chi_square_critical(df: int, z: float = 4.753) -> float:
    """Upper quantile of chi-square(df) by Wilson-Hilferty; z = 4.753 is the normal quantile for 1e-6."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize(
    "params, vocab",
    [(p, 30) for p in PARAMS]
    # Past 1024 tokens the draw's inverse CDF goes through several blocks.
    + [(SamplingParams(temperature=0.6), 3000), (SamplingParams(top_k=1200, min_p=0.001), 3000)],
)
def test_draws_follow_the_filtered_distribution(params, vocab):
    """Pearson's chi-square test of 20,000 draws against transformers' distribution.

    The critical value is the 1 - 1e-6 quantile, so a correct sampler fails with probability 1e-6
    (and, the seed being fixed, the test is deterministic); a wrong cut, a wrong temperature, or a
    draw that favours some region of the vocab moves the statistic far past it at this sample size.
    Tokens outside the support must never be drawn at all."""
    gen = torch.Generator().manual_seed(5)
    x = distinct_logits(gen, (vocab,), scale=1.5)
    x[[4, 17]] = -math.inf
    n = 20_000
    s = Sampler(replace(params, seed=99))
    ids = torch.tensor([i for _ in range(n // 4000) for i in s.sample(x.expand(4000, -1))])
    counts = torch.bincount(ids, minlength=vocab).double()
    p = transformers_distribution(x, params.temperature, params.top_k, params.top_p, params.min_p)
    assert counts[p == 0].sum() == 0, "drew a filtered token"
    expected = p * n
    big = expected >= 5  # Pearson's rule of thumb; the rest pooled into one cell
    obs = torch.cat([counts[big], counts[~big & (p > 0)].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big & (p > 0)].sum().view(1)])
    obs, exp = obs[exp > 0], exp[exp > 0]
    stat = float(((obs - exp) ** 2 / exp).sum())
    df = len(obs) - 1
    assert df >= 2
    assert stat < chi_square_critical(df), f"chi2 = {stat:.1f} with {df} degrees of freedom"
    # A single row draws the same way as a batch of rows.
    s1 = Sampler(replace(params, seed=99))
    assert [s1.sample(x) for _ in range(50)] == ids[:50].tolist()


@pytest.mark.parametrize("u", [0.0, 1 - 2**-53])
def test_extreme_uniforms_stay_on_the_support(monkeypatch, u):
    # Support on both sides of a block boundary of the two-level draw, and at the padded last block.
    x = torch.full((5000,), -math.inf)
    x[[1023, 1024, 4000]] = 0.0
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.full(shape, u, dtype=torch.float64))
    assert Sampler(SamplingParams(seed=0)).sample(x) == (1023 if u == 0 else 4000)


def test_all_masked_row_is_an_error():
    x = torch.zeros(2, 10)
    x[1] = -math.inf
    with pytest.raises(ValueError, match="nothing to sample"):
        Sampler(SamplingParams(seed=0)).sample(x)
    with pytest.raises(ValueError, match="logits must be"):
        Sampler().sample(torch.zeros(2, 2, 2))


# -- parameters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -0.1),
        ("temperature", math.nan),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("top_k", 2.5),
        ("min_p", -0.1),
        ("min_p", 1.1),
        ("repetition_penalty", 0.0),
        ("repetition_penalty", -1.0),
        ("repetition_penalty", 3e-147),  # logits / penalty would overflow (found by the server's fuzzer)
        ("repetition_penalty", 1e4),
        ("presence_penalty", math.inf),
        ("presence_penalty", -1e6),
        ("frequency_penalty", math.nan),
        ("seed", 1.5),
    ],
)
def test_bad_parameters_are_rejected_by_name(field, value):
    params = SamplingParams(**{field: value})
    with pytest.raises(ValueError, match=f"{field} must be"):
        params.validate()
    with pytest.raises(ValueError, match=field):
        Sampler(params)


def test_all_bad_fields_are_named_at_once_and_good_ones_pass():
    with pytest.raises(ValueError, match=r"temperature.*top_p.*min_p"):
        SamplingParams(temperature=-1, top_p=2, min_p=3).validate()
    ok = SamplingParams(temperature=0, top_k=0, top_p=1, min_p=1, repetition_penalty=0.1, seed=-5)
    assert ok.validate() is ok and ok.greedy
    assert Sampler(replace(ok, temperature=1)).sample(torch.zeros(3)) in range(3)  # a negative seed is fine
    assert not SamplingParams().greedy


def test_a_vanishing_temperature_is_greedy_not_an_overflow():
    # 1e-260 would turn logits into inf (found by the server's fuzzer); it means the argmax
    x = torch.tensor([0.5, 3.0, 1.0])
    assert Sampler(SamplingParams(temperature=4e-260, seed=1)).sample(x) == 1
    assert SamplingParams(temperature=1e-6).greedy and not SamplingParams(temperature=1e-4).greedy
