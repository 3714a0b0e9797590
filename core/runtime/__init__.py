"""Runtime: block KV cache, chunked prefill, decode loop, sampler, stop strings."""

from .generate import Generation, forward_step, make_pool, prefill, prefill_and_generate
from .kv_cache import BlockPool, CacheFullError, SequenceKV
from .sampler import Sampler, SamplingParams

__all__ = [
    "BlockPool",
    "CacheFullError",
    "Generation",
    "Sampler",
    "SamplingParams",
    "SequenceKV",
    "forward_step",
    "make_pool",
    "prefill",
    "prefill_and_generate",
]
