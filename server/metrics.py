"""Prometheus metrics of one server (its own registry, so several apps in one process, as in
tests, do not collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, engine_stats=None):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("ktx_requests", "Generation requests received", registry=r)
        self.finished = Counter("ktx_requests_finished", "Requests ended, by reason", ["reason"], registry=r)
        self.tokens_in = Counter("ktx_prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.tokens_out = Counter("ktx_generated_tokens", "Tokens generated", registry=r)
        self.prefix_hit_tokens = Counter(
            "ktx_prefix_cache_hit_tokens", "Prompt tokens whose KV came from the prefix cache", registry=r
        )
        lat = dict(buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("ktx_time_to_first_token_seconds", "Request arrival to first token", **lat)
        self.itl = Histogram("ktx_inter_token_latency_seconds", "Time between a request's tokens", **lat)
        self.batch_size = Histogram(
            "ktx_batch_size", "Sequences per step", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        self.http_errors = Counter(
            "ktx_http_errors", "Requests answered with an error", ["status"], registry=r
        )
        gauges = {
            "running": "Requests in the running batch",
            "waiting": "Requests waiting for a slot or KV blocks",
            "kv_blocks_total": "KV blocks in the pool",
            "kv_blocks_used": "KV blocks taken (requests and prefix cache)",
            "kv_blocks_cached": "KV blocks held only by the prefix cache",
        }
        self._stats = engine_stats
        for key, doc in gauges.items():
            g = Gauge(f"ktx_{key}", doc, registry=r)
            g.set_function(lambda key=key: float(self._stats()[key]) if self._stats else 0.0)

    def bind(self, engine_stats) -> None:
        self._stats = engine_stats

    def render(self) -> bytes:
        return generate_latest(self.registry)
