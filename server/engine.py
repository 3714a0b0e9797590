"""The engine: one scheduler thread owns the model and runs every request in one batch.

Requests join the running batch between steps (continuous batching, up to `max_batch_size`).
A step is a decode pass (one new token for every request past its prompt) and then a pass
over one chunk of at most `chunk_size` tokens of a prompt still in prefill, so a long prompt
never stalls the others' decode for more than a chunk. The two are separate passes, and the
kernels run batch-invariant, so a request's tokens do not depend on what it is batched with.
Each request holds KV blocks from the runtime's shared pool for its prompt and its
`max_new_tokens`, reserved when it is admitted (a request never runs out of cache midway),
and given back when it finishes, fails or is cancelled (a client that disconnects: the
scheduler frees its blocks before the next step).
Shared prompt prefixes reuse cached blocks (prefix_cache.py).

The HTTP side talks to it through `Engine.generate`, an async iterator of events; the
scheduler thread hands events to the request's event loop with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import torch

from ktx.core.runtime.context import Segment
from ktx.core.runtime.generate import forward_step, make_pool
from ktx.core.runtime.grammar import Grammar
from ktx.core.runtime.kv_cache import SequenceKV, has_recurrent_layers
from ktx.core.runtime.sampler import Sampler, SamplingParams
from ktx.core.runtime.stops import StopMatcher
from ktx.core.tokenizer.stream import StreamDecoder

from .errors import RequestError
from .prefix_cache import PrefixCache

# The FinishEvents of the HTTP request being served (a list the app's middleware sets): its one
# log line, written when the response ends, carries their token counts and times.
FINISHED: contextvars.ContextVar[list | None] = contextvars.ContextVar("ktx_finished", default=None)

log = logging.getLogger("ktx.server")


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0))
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    grammar: Grammar | None = None  # the answer kept inside it (structured outputs, tool calls)
    skip_special_tokens: bool = True  # False: control tokens appear in the text (tool-call markers)
    logit_bias: dict[int, float] | None = None  # added to those tokens' logits before sampling
    # None: no log-probabilities; k >= 0: each token's, and the k likeliest tokens' at its step
    logprobs: int | None = None


@dataclass
class TokenEvent:
    text: str  # new text (may be "" while a multi-byte character or a possible stop string is held back)
    token_id: int
    # the token's log-probability under the model (log-softmax of its raw logits: before
    # penalties, temperature and grammar), and the top alternatives as (token id, logprob)
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None


@dataclass
class FinishEvent:
    finish_reason: str  # "stop" | "length" | "cancelled" | "error"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV came from the prefix cache
    queue_s: float = 0.0  # waiting for a batch slot and cache blocks
    prefill_s: float = 0.0  # admission to the first token
    decode_s: float = 0.0  # first token to the end
    text: str = ""  # the whole completion
    error: str | None = None


class _Live:
    """A request inside the scheduler."""

    _ids = itertools.count()

    def __init__(self, req: GenerationRequest, loop: asyncio.AbstractEventLoop, tokenizer):
        self.id = next(self._ids)
        self.req, self.loop = req, loop
        self.events: asyncio.Queue = asyncio.Queue()
        self.seq = SequenceKV()
        self.prefilled = 0  # prompt tokens whose KV is in the cache
        self.cached = 0
        self.generated: list[int] = []
        self.next_input: int | None = None  # the token the next decode step feeds
        self.sampler = Sampler(req.sampling)
        self.stops = StopMatcher(req.stop)
        self.detok = StreamDecoder(tokenizer, skip_special_tokens=req.skip_special_tokens)
        self.grammar = req.grammar.start() if req.grammar is not None else None
        # logit_bias as (token ids, biases), made once rather than at every step
        bias = req.logit_bias or {}
        self.bias = (torch.tensor(list(bias)), torch.tensor(list(bias.values()))) if bias else None
        self.text: list[str] = []
        self.cancelled = False
        self.t_submit = time.perf_counter()
        self.t_admit = self.t_first = self.t_last = 0.0

    def send(self, event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Engine:
    def __init__(
        self,
        model,
        *,
        model_name: str = "ktx",
        max_batch_size: int = 8,
        cache_tokens: int = 8192,
        chunk_size: int = 512,
        max_new_tokens: int = 512,
        block_size: int = 64,
        prefix_cache: PrefixCache | None = None,
        metrics=None,
    ):
        self.model, self.tokenizer = model, model.tokenizer
        self.model_name = model_name
        # names a client may use for it (Ollama clients add a ":latest" tag)
        base = model_name.removesuffix(":latest")
        self.model_names = {model_name, base, f"{base}:latest"}
        self.max_batch_size, self.chunk_size = max_batch_size, chunk_size
        self.default_max_new_tokens = max_new_tokens
        self.context = int(getattr(model.config, "max_position_embeddings", 0) or 1 << 30)
        self.pool = make_pool(model, cache_tokens, block_size)
        self.cache = prefix_cache or PrefixCache(self.pool, salt=model_name)
        if has_recurrent_layers(model):
            # Qwen3-Next's linear-attention layers carry a state per sequence that cached KV
            # blocks do not hold: a reused prefix would continue from the wrong state
            self.cache.enabled = False
        self.cache.attach(self.pool)
        self.metrics = metrics
        self.eos = set(getattr(self.tokenizer, "eos_token_ids", ()) or ())
        self._waiting: deque[_Live] = deque()
        # embedding jobs: (inputs, their vectors so far, the asking loop, its future)
        self._jobs: deque[tuple[list[list[int]], list, asyncio.AbstractEventLoop, asyncio.Future]] = deque()
        self.pooling = _pooling(model)
        self._running: list[_Live] = []
        self._cv = threading.Condition()
        self._stop = False
        self._drain = False
        self._deadline: float | None = None  # draining: in-flight requests end here
        self._thread = threading.Thread(target=self._loop, name="ktx-scheduler", daemon=True)
        self.started = time.time()

    # -- the HTTP side -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def drain(self, grace_s: float = 10.0) -> None:
        """Stops taking requests (503); those in flight go on for up to `grace_s`, then end as
        they stand with finish_reason "length": a whole, well-formed answer, however slow the
        machine (a server that is shut down must not cut streams off mid-way). Returns at once;
        a second call keeps the earlier deadline."""
        with self._cv:
            self._drain = True
            deadline = time.monotonic() + grace_s
            self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
            self._cv.notify_all()

    def wait_idle(self, after_deadline_s: float = 30.0) -> None:
        """Blocks until no request is in flight (drain() first), or `after_deadline_s` past the
        drain deadline: the step running at the deadline ends first, however slow."""
        while (self._running or self._waiting) and self._thread.is_alive():
            if self._deadline is not None and time.monotonic() > self._deadline + after_deadline_s:
                break  # a step that never returns
            time.sleep(0.02)

    def shutdown(self, grace_s: float = 10.0) -> None:
        """drain(grace_s), waits for the requests in flight to end, then stops the scheduler."""
        self.drain(grace_s)
        self.wait_idle()
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def resolve_max_tokens(
        self, n_prompt: int, requested: int | None, param: str = "max_tokens", cap: bool = False
    ) -> int:
        """The completion budget for a prompt, or a RequestError (400) that says what to change;
        `cap`: a request for more than the context holds gets what it holds (Ollama's way)."""
        if n_prompt == 0:
            raise RequestError("the prompt is empty", param="messages")
        room = min(self.context, self.pool.capacity) - n_prompt
        if room < 1:
            limit = "context" if self.context <= self.pool.capacity else "KV cache (--cache-lens)"
            raise RequestError(
                f"the prompt has {n_prompt} tokens; the model's {limit} holds "
                f"{min(self.context, self.pool.capacity)}: shorten it",
                param="messages",
                code="context_length_exceeded",
            )
        if requested is None:
            return min(self.default_max_new_tokens, room)
        if requested < 1:
            raise RequestError(f"{param} must be at least 1", param=param)
        if requested > room and cap:
            return room
        if requested > room:
            raise RequestError(
                f"{param} {requested} with a {n_prompt}-token prompt exceeds the "
                f"{n_prompt + room}-token limit: at most {room}",
                param=param,
                code="context_length_exceeded",
            )
        return requested

    async def generate(self, req: GenerationRequest) -> AsyncIterator[TokenEvent | FinishEvent]:
        """Runs `req` in the batch; yields TokenEvents then one FinishEvent. Leaving the iteration
        early (a client gone) cancels the request and frees its blocks."""
        self.check_accepting()
        live = _Live(req, asyncio.get_running_loop(), self.tokenizer)
        with self._cv:
            self._waiting.append(live)
            self._cv.notify_all()
        if self.metrics:
            self.metrics.requests.inc()
        finished = False
        try:
            while True:
                event = await live.events.get()
                if isinstance(event, FinishEvent) and (record := FINISHED.get()) is not None:
                    record.append(event)
                yield event
                if isinstance(event, FinishEvent):
                    finished = True
                    return
        finally:
            if not finished:
                self.cancel(live)

    async def embed(self, inputs: list[list[int]]) -> list[list[float]]:
        """One embedding per token list: the final hidden states pooled (`self.pooling`: mean
        unless the GGUF names another) and L2-normalised. Run by the scheduler, one input in a
        pass of its own between decode steps (a vector does not depend on what else was asked,
        and a large batch does not stall the running requests)."""
        self.check_accepting()
        if not inputs:
            return []
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        with self._cv:
            self._jobs.append((inputs, [], loop, done))
            self._cv.notify_all()
        return await done

    def check_accepting(self) -> None:
        if self._drain:
            raise RequestError("the server is shutting down", status=503, type="server_error")

    def cancel(self, live: _Live) -> None:
        with self._cv:
            live.cancelled = True
            self._cv.notify_all()

    def stats(self) -> dict[str, Any]:
        return {
            "running": len(self._running),
            "waiting": len(self._waiting),
            "kv_blocks_total": self.pool.num_blocks,
            "kv_blocks_used": self.pool.used_blocks,
            "kv_blocks_cached": self.cache.idle_blocks,
            "kv_blocks_in_requests": self.pool.used_blocks - self.cache.idle_blocks,
        }

    # -- the scheduler thread ------------------------------------------------------------------
    def _loop(self) -> None:
        from ktx.core import _kernels

        torch.set_flush_denormal(True)  # a per-thread flag: this thread runs the model
        before = _kernels.batch_invariant_rows()  # process-wide: put back when this engine stops
        _kernels.set_batch_invariant_rows(max(before, self.max_batch_size))
        try:
            self._serve()
        finally:
            _kernels.set_batch_invariant_rows(before)

    def _serve(self) -> None:
        while True:
            with self._cv:
                while not self._stop and not self._running and not self._waiting and not self._jobs:
                    self._cv.wait(timeout=0.5)
                if self._stop:
                    break
            self._run_jobs()
            self._drop_cancelled()
            if self._deadline is not None and time.monotonic() >= self._deadline:
                self._end_drained()
                continue
            self._admit()
            if self._running:
                try:
                    self._step()
                except Exception as e:  # a bug or a kernel error: fail this batch, keep serving
                    log.exception("step failed")
                    for live in list(self._running):
                        self._finish(live, "error", error=f"{type(e).__name__}: {e}")
            elif self._waiting:
                time.sleep(0.001)  # blocks are held by cancelled requests being dropped
        for live in [*self._running, *self._waiting]:
            self._finish(live, "cancelled")
        for _, _, loop, done in self._jobs:
            loop.call_soon_threadsafe(
                _settle, done, None, RequestError("the server is shutting down", status=503)
            )

    def _run_jobs(self) -> None:
        """Embeds one input of the oldest embedding job; the job ends with its last input, its
        first failure, or its client gone (only this thread takes jobs off the queue)."""
        with self._cv:
            if not self._jobs:
                return
            inputs, vectors, loop, done = self._jobs[0]
        error = None
        try:
            if not done.done():
                vectors.append(self._embed_one(inputs[len(vectors)]))
        except RequestError as e:
            error = e
        except Exception as e:
            log.exception("embedding failed")
            error = RequestError(
                f"embedding failed: {type(e).__name__}: {e}", status=500, type="server_error"
            )
        if error is not None or done.done() or len(vectors) == len(inputs):
            with self._cv:
                self._jobs.popleft()
            loop.call_soon_threadsafe(_settle, done, None if error else vectors, error)

    def _embed_one(self, ids: list[int]) -> list[float]:
        seq = SequenceKV()
        if not self.cache.reserve(seq, len(ids)):
            raise RequestError("the KV cache is full of running requests: try again", status=503)
        try:
            states = []
            for start in range(0, len(ids), self.chunk_size):
                chunk = ids[start : start + self.chunk_size]
                seg = Segment(seq, start, len(chunk))
                states.append(forward_step(self.model, self.pool, [seg], torch.tensor(chunk), hidden=True))
        finally:
            self.cache.release(seq, [], 0)
        h = torch.cat(states).double()
        pooled = {"mean": h.mean(0), "cls": h[0], "last": h[-1]}[self.pooling]
        # float32 values, as OpenAI's float and base64 answers carry them
        return torch.nn.functional.normalize(pooled, dim=0).float().tolist()

    def _end_drained(self) -> None:
        """The drain deadline has passed: every request ends with what it has."""
        with self._cv:
            waiting, self._waiting = list(self._waiting), deque()
        running = list(self._running)
        if running or waiting:
            log.warning(
                "shutting down: %d request(s) ended at the tokens they had (finish_reason length)",
                len(running) + len(waiting),
            )
        for live in running:
            self._flush(live)
            self._finish(live, "length")
        for live in waiting:
            self._finish(live, "length", admitted=False)

    def _drop_cancelled(self) -> None:
        with self._cv:
            waiting = [w for w in self._waiting if w.cancelled]
            for w in waiting:
                self._waiting.remove(w)
        for live in waiting:
            self._finish(live, "cancelled", admitted=False)
        for live in [r for r in self._running if r.cancelled]:
            self._finish(live, "cancelled")

    def _admit(self) -> None:
        while len(self._running) < self.max_batch_size:
            with self._cv:
                if not self._waiting:
                    return
                live = self._waiting[0]
            req = live.req
            need = len(req.prompt_ids) + req.max_new_tokens
            live.cached = self.cache.match(live.seq, req.prompt_ids)
            if not self.cache.reserve(live.seq, need):
                self.cache.release(live.seq, [], 0)  # give the matched blocks back; wait for room
                live.seq = SequenceKV()
                return
            with self._cv:
                self._waiting.popleft()
            live.prefilled = live.cached
            live.t_admit = time.perf_counter()
            self._running.append(live)

    def _step(self) -> None:
        """One decode step for every request past its prompt, then one prompt chunk of one
        request, as two forward passes: a decode row is computed as it would be alone (the
        kernels run batch-invariant for batches up to max_batch_size), and the chunk exactly as
        a single request's prefill, so batched greedy decoding gives a lone request's tokens."""
        decoding = [r for r in self._running if r.next_input is not None]
        if decoding:
            segments = [Segment(r.seq, r.seq.length, 1) for r in decoding]
            tokens = torch.tensor([r.next_input for r in decoding], dtype=torch.long)
            if self.metrics:
                self.metrics.batch_size.observe(len(segments))
            logits = forward_step(self.model, self.pool, segments, tokens)
            for live, row in zip(decoding, logits, strict=True):
                self._advance_one(live, row)
        live = next((r for r in self._running if r.next_input is None and not r.generated), None)
        if live is not None:
            prompt = live.req.prompt_ids
            chunk = prompt[live.prefilled : live.prefilled + self.chunk_size]
            seg = Segment(live.seq, live.prefilled, len(chunk))
            logits = forward_step(self.model, self.pool, [seg], torch.tensor(chunk, dtype=torch.long))
            live.prefilled += len(chunk)
            if live.prefilled == len(prompt):
                self._advance_one(live, logits[0])

    def _advance_one(self, live: _Live, logits: torch.Tensor) -> None:
        """Samples for one request; what fails there (its own sampling settings) ends it alone."""
        try:
            self._advance(live, logits)
        except Exception as e:  # its sampler (or detokenizer) failed: the others go on
            log.warning("request %d: sampling failed: %s", live.id, e)
            self._finish(live, "error", error=f"sampling failed: {e}")

    def _advance(self, live: _Live, logits: torch.Tensor) -> None:
        req = live.req
        allowed = logits
        if live.bias is not None:
            ids, biases = live.bias
            allowed = logits.clone()
            allowed[ids] += biases.to(allowed.dtype)
        if live.grammar is not None:
            allowed = live.grammar.mask(allowed)
        token = live.sampler.sample(allowed, prompt_tokens=req.prompt_ids, generated=live.generated)
        now = time.perf_counter()
        if not live.t_first:
            live.t_first = now
            if self.metrics:
                self.metrics.ttft.observe(now - live.t_submit)
        elif self.metrics:
            self.metrics.itl.observe(now - live.t_last)
        live.t_last = now
        if token in self.eos and not req.ignore_eos:
            self._flush(live)
            self._finish(live, "stop")
            return
        live.generated.append(token)
        if live.grammar is not None:
            live.grammar.accept(token)
        text, stopped = live.stops.push(live.detok.push(token))
        self._emit(live, text, token, *_logprobs(logits, token, req.logprobs))
        if stopped:
            self._finish(live, "stop")
        elif live.grammar is not None and live.grammar.done:  # nothing may follow but EOS
            self._flush(live)
            self._finish(live, "stop")
        elif len(live.generated) >= req.max_new_tokens:
            self._flush(live)
            self._finish(live, "length")
        else:
            live.next_input = token

    def _flush(self, live: _Live) -> None:
        text, stopped = live.stops.push(live.detok.flush())
        if not stopped:
            text += live.stops.flush()
        if text:
            self._emit(live, text, -1)

    def _emit(self, live: _Live, text: str, token: int, logprob=None, top=None) -> None:
        live.text.append(text)
        live.send(TokenEvent(text, token, logprob, top))

    def _finish(self, live: _Live, reason: str, error: str | None = None, admitted: bool = True) -> None:
        if admitted:
            if live in self._running:
                self._running.remove(live)
            # the KV of the prompt and the generated tokens (all but the last, never fed back)
            stored = [*live.req.prompt_ids, *live.generated][: live.seq.length]
            self.cache.release(live.seq, stored, live.seq.length if reason != "error" else 0)
        now = time.perf_counter()
        admit = live.t_admit or now
        first = live.t_first or now
        if self.metrics:
            self.metrics.tokens_in.inc(len(live.req.prompt_ids))
            self.metrics.tokens_out.inc(len(live.generated))
            self.metrics.prefix_hit_tokens.inc(live.cached)
            self.metrics.finished.labels(reason).inc()
        live.send(
            FinishEvent(
                finish_reason=reason,
                prompt_tokens=len(live.req.prompt_ids),
                completion_tokens=len(live.generated),
                cached_tokens=live.cached,
                queue_s=admit - live.t_submit,
                prefill_s=first - admit,
                decode_s=now - first,
                text="".join(live.text),
                error=error,
            )
        )

    # -- tests and tools -----------------------------------------------------------------------
    def idle(self) -> bool:
        return not self._running and not self._waiting and not self._jobs


def _settle(done: asyncio.Future, result, error) -> None:
    if not done.done():  # a client that left has cancelled it
        if error is None:
            done.set_result(result)
        else:
            done.set_exception(error)


# llama.cpp's <arch>.pooling_type values; a chat model's GGUF has none, and ktx pools the mean
POOLING_TYPES = {1: "mean", 2: "cls", 3: "last"}


def _pooling(model) -> str:
    meta = model.gguf.metadata if getattr(model, "gguf", None) is not None else {}
    arch = meta.get("general.architecture", "")
    return POOLING_TYPES.get(int(meta.get(f"{arch}.pooling_type", 1) or 1), "mean")


def _logprobs(logits: torch.Tensor, token: int, top: int | None) -> tuple:
    """(the token's log-probability, the `top` likeliest (id, logprob)), or (None, None)."""
    if top is None:
        return None, None
    lp = torch.log_softmax(logits.float(), -1)
    best = lp.topk(top)  # top 0: no alternatives
    return float(lp[token]), list(zip(best.indices.tolist(), best.values.tolist(), strict=True))


@contextlib.contextmanager
def running(engine: Engine):
    engine.start()
    try:
        yield engine
    finally:
        engine.shutdown()
