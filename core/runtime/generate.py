"""Prefill and decode on the block KV cache: `prefill_and_generate` and its pieces.

A step runs all its tokens as one flat row; `forward_step` returns the logits of each
segment's last token. Prefill goes in chunks of `chunk_size` tokens so a long prompt never
materialises a [T, T] attention or a [T, vocab] logits tensor at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .context import ForwardBatch, Segment, forward_batch, upload
from .forward import layers_forward
from .kv_cache import ACCEL_DTYPE, BLOCK_SIZE, BlockPool, SequenceKV
from .plan import StepPlan
from .sampler import Sampler, SamplingParams
from .stops import StopMatcher


@contextlib.contextmanager
def _torch_threads_for(n_tokens: int, all_blocks: bool):
    """Decode-sized steps, and every step of a model whose layers all run as CPU blocks
    (all_blocks), run PyTorch's own ops on one thread.

    Their PyTorch work is small (the embedding, the final norm), and PyTorch's idle OpenMP
    workers spin on the cores that ktx's kernel pool needs: on the 2-core dev VM, decode went
    from 12 to 28 tokens/s, and the demo's 128-token prefill from 630 to 1040. Other prefills
    (MLA's long segments, dequantized weights) keep every thread for PyTorch's large ops.
    """
    from ..ops.linear import GEMV_MAX_TOKENS

    before = torch.get_num_threads()
    if (n_tokens > GEMV_MAX_TOKENS and not all_blocks) or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_pool(model: torch.nn.Module, cache_tokens: int = 4096, block_size: int = BLOCK_SIZE) -> BlockPool:
    """A pool for `cache_tokens` tokens; each layer's blocks live on its attention's device
    (float32 on the CPU, bfloat16 on an accelerator)."""
    layers = {m.layer_idx: m for m in model.modules() if hasattr(m, "kv_spec")}
    specs = {i: m.kv_spec() for i, m in layers.items()}
    devices = {i: getattr(m, "device", torch.device("cpu")) for i, m in layers.items()}
    dtypes = {i: torch.float32 if d.type == "cpu" else ACCEL_DTYPE for i, d in devices.items()}
    return BlockPool(specs, -(-cache_tokens // block_size), block_size, dtypes, devices)


def _device_of(module: torch.nn.Module) -> torch.device:
    device = getattr(module, "device", None)
    if isinstance(device, torch.device):
        return device
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@torch.inference_mode()
def forward_step(
    model: torch.nn.Module,
    pool: BlockPool,
    segments: list[Segment],
    input_ids: torch.Tensor,
    hidden: bool = False,
) -> torch.Tensor:
    """input_ids: [T] for all segments back to back -> logits [len(segments), vocab] float32;
    hidden: every token's final hidden state [T, hidden_size] instead (embeddings)."""
    for seg in segments:
        pool.reserve(seg.seq, seg.start + seg.length)
    batch = ForwardBatch(pool, segments)
    last = None if batch.decode_only or hidden else torch.tensor([rows.stop - 1 for rows, _, _ in batch.rows])
    # the step's host-made indices go up in stream order (a pageable copy would wait for it)
    input_ids = upload(input_ids, _device_of(model.model.embed_tokens))
    if last is not None:
        last = upload(last, _device_of(model.lm_head))
    with forward_batch(batch), _torch_threads_for(len(input_ids), StepPlan.of(model).all_blocks):
        logits = layers_forward(model, input_ids, batch.positions, last, hidden).float()
    for seg in segments:
        seg.seq.length = seg.start + seg.length
    if logits.device.type != "cpu":
        from ..backend import kernels

        finish = getattr(kernels(logits.device.type), "finish_step", None)
        if finish is not None:
            finish(logits.device)
    return logits


def prefill(
    model, pool: BlockPool, seq: SequenceKV, tokens: list[int], chunk_size: int = 512
) -> torch.Tensor:
    """Runs `tokens` after what `seq` holds; returns the last token's logits [vocab]."""
    logits = None
    for i in range(0, len(tokens), chunk_size):
        chunk = torch.tensor(tokens[i : i + chunk_size], dtype=torch.long)
        logits = forward_step(model, pool, [Segment(seq, seq.length, len(chunk))], chunk)[0]
    return logits


def decode_step(model, pool: BlockPool, use_cuda_graph: bool, reuse: bool = True) -> Callable:
    """(segments, tokens) -> logits: eager forward_step, or a captured graph's replay.

    A graph belongs to its pool (it holds the pool's block table and the layers' buffers), so
    its runner is kept on the pool and found there by the next call (`reuse`): a chat turn
    replays the graph the previous turn captured."""
    if not use_cuda_graph:
        return lambda segments, tokens: forward_step(model, pool, segments, tokens)
    from ..backend import kernels

    device = model.model.embed_tokens.device
    runner = getattr(kernels(device.type), "GraphRunner", None)
    if runner is None:
        raise ValueError(f"use_cuda_graph: the model is on {device}, whose backend captures no graphs")
    held = pool.__dict__.get("_ktx_graph_runner")
    if not reuse or held is None or held.model is not model:
        held = pool.__dict__["_ktx_graph_runner"] = runner(model, pool, batch_size=1)
    return held.step


def generation_pool(model, tokens: int, use_cuda_graph: bool = False) -> BlockPool:
    """A pool with room for `tokens` more tokens: the model's own, kept from the last call when
    it has that room, else a new one (kept in its place). With CUDA graphs it grows by powers
    of two (at least 1024 tokens), so a growing conversation recaptures only now and then."""
    held = model.__dict__.get("_ktx_generation_pool")
    if held is not None and len(held.free_blocks) * held.block_size >= tokens:
        return held
    if use_cuda_graph:
        tokens = max(1024, 1 << (tokens - 1).bit_length())
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        if context is not None:
            tokens = min(tokens, max(context + 1, 1))
    model.__dict__.pop("_ktx_generation_pool", None)  # the old one's memory goes first
    pool = model.__dict__["_ktx_generation_pool"] = make_pool(model, tokens)
    return pool


@dataclass
class Generation:
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    prompt_tokens: int = 0
    finish_reason: str = "length"  # "stop": EOS or a stop string; "interrupted": Ctrl-C
    ttft_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0

    @property
    def completion_tokens(self) -> int:
        return len(self.tokens)

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tok_s(self) -> float:
        # the first token comes from prefill; decode rate counts the steps after it
        steps = max(0, len(self.tokens) - 1)
        return steps / self.decode_s if self.decode_s else 0.0


def prefill_and_generate(
    model,
    tokenizer,
    input_ids,
    max_new_tokens: int = 256,
    *,
    sampling: SamplingParams | None = None,
    stop: list[str] | None = None,
    chunk_size: int = 512,
    pool: BlockPool | None = None,
    on_text: Callable[[str], None] | None = None,
    ignore_eos: bool = False,
    use_cuda_graph: bool = False,
    interruptible: bool = False,
    max_context: int | None = None,
) -> Generation:
    """Generates up to `max_new_tokens` after `input_ids` (list or [1, T]); streams text to `on_text`.

    `use_cuda_graph`: decode steps replay one captured graph (the backend's GraphRunner; the
    model must sit on an accelerator whose backend has one). Without `pool`, the model's own
    is used (generation_pool), with the graph captured on it by an earlier call.
    `interruptible`: Ctrl-C (KeyboardInterrupt) ends the answer where it is, finish_reason
    "interrupted", instead of raising. `max_context`: at most this many tokens, prompt and
    answer together (the CLI's --ctx-size), within the model's own context."""
    from ..tokenizer.stream import StreamDecoder

    tokens = input_ids.reshape(-1).tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
    context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    whose = "the model's context"
    if max_context is not None and (context is None or max_context < context):
        context, whose = max_context, "the context size (--ctx-size, else --cache-lens)"
    if not tokens:
        raise ValueError("the prompt is empty: give at least one token")
    if context is not None:
        if len(tokens) >= context:
            raise ValueError(
                f"the prompt has {len(tokens)} tokens, more than {whose} of {context}; shorten it"
            )
        max_new_tokens = min(max_new_tokens, context - len(tokens))
    sampling = sampling or SamplingParams(temperature=0.0)
    sampler = Sampler(sampling)
    pool = pool or generation_pool(model, len(tokens) + max_new_tokens + 1, use_cuda_graph)
    step = decode_step(model, pool, use_cuda_graph)
    seq = SequenceKV()
    gen = Generation(prompt_tokens=len(tokens))
    stops, detok = StopMatcher(stop or []), StreamDecoder(tokenizer, skip_special_tokens=True)
    eos = set() if ignore_eos else set(getattr(tokenizer, "eos_token_ids", ()) or ())
    pieces: list[str] = []

    def emit(text: str) -> None:
        if text:
            pieces.append(text)
            if on_text:
                on_text(text)

    stopped_by_string = False
    try:
        t0 = time.perf_counter()
        try:
            logits = prefill(model, pool, seq, tokens, chunk_size)
            gen.prefill_s = time.perf_counter() - t0
            for _ in range(max_new_tokens):
                token = sampler.sample(logits, prompt_tokens=tokens, generated=gen.tokens)
                if not gen.tokens:
                    gen.ttft_s = time.perf_counter() - t0
                if token in eos:
                    gen.finish_reason = "stop"
                    break
                gen.tokens.append(token)
                text, stopped_by_string = stops.push(detok.push(token))
                emit(text)
                if stopped_by_string:
                    gen.finish_reason = "stop"
                    break
                if len(gen.tokens) == max_new_tokens:
                    break
                logits = step([Segment(seq, seq.length, 1)], torch.tensor([token]))[0]
        except KeyboardInterrupt:
            if not interruptible:
                raise
            gen.finish_reason = "interrupted"  # Ctrl-C in a chat: the answer so far, and its figures
            if not gen.tokens:
                gen.prefill_s = gen.ttft_s = time.perf_counter() - t0
        if not stopped_by_string:
            text, stopped_by_string = stops.push(detok.flush())
            emit(text if stopped_by_string else text + stops.flush())
        gen.decode_s = time.perf_counter() - t0 - gen.ttft_s
    finally:
        pool.free(seq)  # the blocks go back even when generation fails midway
    gen.text = "".join(pieces)
    return gen
