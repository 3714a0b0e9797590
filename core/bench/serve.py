"""`ktx bench serve`: a load generator against `ktx serve` on loopback.

For each concurrency level, that many clients each send requests back to back (streaming
chat completions, greedy, prompts of mixed length drawn from a fixed seed) until the level
has sent `requests` in all. Per level: output tokens per second over the level's wall time,
p50/p99 time to first token and inter-token latency (between streamed chunks of one answer).

The ceiling printed with it: DRAM read bandwidth over the bytes one decode step reads (every
weight once), the fastest a single stream can go on this machine; batching shares that read
among the streams, which is why throughput grows with concurrency.
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

# the prompts' vocabulary
TEXT = (
    "the quick brown fox jumps over a lazy dog while engineers measure memory bandwidth and latency "
    "of large language models served on one workstation with experts on the cpu"
)


@dataclass
class Result:
    ttft: float
    itl: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str | None = None


def prompts(n: int, seed: int = 0) -> list[str]:
    """Mixed lengths: short questions, paragraphs and a few long documents (~8 to ~600 words)."""
    rng = random.Random(seed)
    words = TEXT.split()
    out = []
    for i in range(n):
        length = rng.choice((8, 24, 64, 160, 600)) if i % 5 else 12
        out.append(" ".join(rng.choice(words) for _ in range(length)) + "\nSummarise this.")
    return out


async def _one(client, url: str, model: str, prompt: str, max_tokens: int) -> Result:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    last = None
    result = Result(ttft=0.0)
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            result.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
            return result
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                result.error = chunk["error"].get("message", "error")
                return result
            if chunk.get("usage"):
                result.tokens = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                if last is None:
                    result.ttft = now - start
                else:
                    result.itl.append(now - last)
                last = now
    return result


async def run_level(
    url: str, model: str, concurrency: int, texts: list[str], max_tokens: int
) -> dict[str, Any]:
    import httpx

    queue = list(texts)
    results: list[Result] = []

    async with httpx.AsyncClient(timeout=600) as client:

        async def worker() -> None:
            while queue:
                text = queue.pop()
                results.append(await _one(client, url, model, text, max_tokens))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ok = [r for r in results if r.error is None]
    errors = [r.error for r in results if r.error is not None]
    itl = [x for r in ok for x in r.itl]
    ttft = [r.ttft for r in ok]

    def pct(xs: list[float], q: int) -> float | None:
        if len(xs) < 2:
            return xs[0] if xs else None
        return statistics.quantiles(xs, n=100, method="inclusive")[q - 1]

    tokens = sum(r.tokens for r in ok)
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "output_tokens": tokens,
        "wall_s": wall,
        "output_tok_s": tokens / wall,
        "ttft_p50_s": pct(ttft, 50),
        "ttft_p99_s": pct(ttft, 99),
        "itl_p50_s": pct(itl, 50),
        "itl_p99_s": pct(itl, 99),
    }


def table_header() -> str:
    return (
        f"{'conc':>5} {'reqs':>5} {'out tok/s':>10} {'vs c=1':>7} {'TTFT p50':>9} {'TTFT p99':>9} "
        f"{'ITL p50':>8} {'ITL p99':>8} {'errors':>6}"
    )


def table_row(row: dict[str, Any], base: float | None) -> str:
    def ms(v):
        return f"{v * 1e3:.0f} ms" if v is not None else "-"

    scale = f"{row['output_tok_s'] / base:.2f}x" if base else "-"
    return (
        f"{row['concurrency']:>5} {row['requests']:>5} {row['output_tok_s']:>10.1f} {scale:>7} "
        f"{ms(row['ttft_p50_s']):>9} {ms(row['ttft_p99_s']):>9} {ms(row['itl_p50_s']):>8} "
        f"{ms(row['itl_p99_s']):>8} {row['errors']:>6}"
    )
