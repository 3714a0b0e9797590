"""Runtime: block KV cache, chunked prefill, decode loop, sampler, stop strings."""
