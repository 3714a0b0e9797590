"""OpenAI's API: /v1/chat/completions, /v1/completions (streamed as SSE or not) and /v1/models."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .engine import Engine, FinishEvent, GenerationRequest, TokenEvent
from .errors import RequestError
from .logprobs import Logprobs, scored
from .protocol import ChatRequest, CompletionRequest, completion_prompt_ids
from .structured import openai_grammar
from .tool_calls import ToolPlan, ToolStream, chat_prompt, grammar_of, openai_calls

router = APIRouter(prefix="/v1", tags=["openai"])


async def engine_for(request: Request, name: str | None, keep_alive=None) -> Engine:
    """The engine serving model `name` (loaded on demand in a models directory); a 404 for a
    model the server does not have."""
    return await request.app.state.models.get(name, keep_alive)


@router.get("/models")
async def list_models(request: Request) -> dict:
    models = request.app.state.models
    return {"object": "list", "data": [_model_card(e) for e in models.scan()]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict:
    models = request.app.state.models
    return _model_card(models.resolve(model_id))


def _model_card(entry) -> dict:
    """OpenAI's model object, plus what clients show and size requests by (as llama.cpp's server
    adds `meta`): the context a request gets, the model's family, size and type, and whether
    it is loaded (a models directory loads it on its first request)."""
    return {
        "id": entry.name,
        "object": "model",
        "created": int(entry.engine.started if entry.engine is not None else entry.modified),
        "owned_by": "ktx",
        "meta": {
            "context_length": entry.context,
            "family": entry.info["family"],
            "parameter_size": entry.info["parameter_size"],
            "quantization": entry.info["quantization_level"],
            "size_bytes": entry.size,
            "loaded": entry.engine is not None,
        },
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request):
    body.refuse_unsupported()
    engine = await engine_for(request, body.model)
    given, choice = body.tool_request()
    extra = {"reasoning_effort": body.reasoning_effort} if body.reasoning_effort else {}
    ids, tools = chat_prompt(
        engine.tokenizer, body.conversation(), given, choice, body.parallel_tool_calls, **extra
    )
    return await _complete(engine, body, ids, chat=True, request=request, tools=tools)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request):
    body.refuse_unsupported()
    engine = await engine_for(request, body.model)
    ids = completion_prompt_ids(engine.tokenizer, body.prompt)
    return await _complete(engine, body, ids, chat=False, request=request)


async def _complete(
    engine: Engine, body, ids: list[int], chat: bool, request: Request, tools: ToolPlan | None = None
):
    requested, param = body.max_new_tokens()
    max_new = engine.resolve_max_tokens(len(ids), requested, param)
    top = body.logprob_count()
    bias = body.token_bias(engine.tokenizer.vocab_size)
    grammar = await openai_grammar(engine.tokenizer, body.response_format)
    if tools is not None and tools.forced is not None:
        if grammar is not None:
            raise RequestError(
                "response_format cannot be combined with a required tool call", param="response_format"
            )
        grammar = await asyncio.to_thread(grammar_of, tools, engine.tokenizer)
    reqs = [
        GenerationRequest(
            ids,
            max_new,
            body.sampling(i),
            body.stops(),
            grammar=grammar,
            logprobs=top,
            logit_bias=bias,
            skip_special_tokens=tools is None,  # a family's call markers may be control tokens
        )
        for i in range(body.n)
    ]  # sampling errors raise here, before anything is queued
    lp = await Logprobs.of(engine.tokenizer) if top is not None else None
    engine.check_accepting()  # a 503 now, before a streamed response has sent its status
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    meta = {"id": rid, "created": int(time.time()), "model": engine.model_name}
    if body.stream:
        sse = _stream(engine, reqs, meta, chat, body.include_usage, lp, tools)
        return StreamingResponse(sse, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    results = await until_disconnected(request, asyncio.gather(*(collect(engine, r) for r in reqs)))
    for finish, _ in results:
        if finish.finish_reason == "error":
            raise RequestError(f"generation failed: {finish.error}", status=500, type="server_error")
    choices = []
    for i, (f, events) in enumerate(results):
        if chat:
            message, finish = {"role": "assistant", "content": f.text}, f.finish_reason
            if tools is not None:
                content, calls = tools.read(f.text)
                message["content"] = content if content or not calls else None
                if calls:
                    message["tool_calls"] = openai_calls(calls, tools)
                    finish = "tool_calls"
            logprobs = {"content": [lp.entry(e) for e in scored(events)], "refusal": None} if lp else None
            choice = {"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish}
        else:
            logprobs = lp.completion(scored(events)) if lp else None
            choice = {"index": i, "text": f.text, "logprobs": logprobs, "finish_reason": f.finish_reason}
        choices.append(choice)
    kind = "chat.completion" if chat else "text_completion"
    finishes = [f for f, _ in results]
    return JSONResponse({**meta, "object": kind, "choices": choices, "usage": _usage(finishes)})


async def until_disconnected(request: Request, work: asyncio.Future):
    """Awaits `work`, cancelling it (and so its requests, whose blocks go back) if the client
    leaves first: a non-streamed answer nobody will read is not worth finishing."""
    work = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({work}, timeout=0.25)
        if done:
            return work.result()
        if await request.is_disconnected():
            work.cancel()
            raise RequestError("the client disconnected", status=499)


async def collect(engine: Engine, req: GenerationRequest) -> tuple[FinishEvent, list[TokenEvent]]:
    """The request's FinishEvent and the TokenEvents before it."""
    tokens = []
    async for event in engine.generate(req):
        if isinstance(event, FinishEvent):
            return event, tokens
        tokens.append(event)
    raise RuntimeError("the engine ended a request without finishing it")


def _usage(finishes: list[FinishEvent]) -> dict[str, Any]:
    prompt = finishes[0].prompt_tokens  # the n choices share one prompt
    completion = sum(f.completion_tokens for f in finishes)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": finishes[0].cached_tokens},
    }


def _sse(payload: dict | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


async def _merged(engine: Engine, reqs: list[GenerationRequest]) -> AsyncIterator[tuple[int, Any]]:
    """(choice index, event) from the n generations as they come."""
    if len(reqs) == 1:
        async for event in engine.generate(reqs[0]):
            yield 0, event
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, req: GenerationRequest) -> None:
        try:
            async for event in engine.generate(req):
                await queue.put((i, event))
        except RequestError as e:  # refused (shutting down): end this choice with the reason
            await queue.put((i, FinishEvent("error", len(req.prompt_ids), 0, error=e.message)))

    tasks = [asyncio.create_task(pump(i, r)) for i, r in enumerate(reqs)]
    try:
        left = len(reqs)
        while left:
            i, event = await queue.get()
            left -= isinstance(event, FinishEvent)
            yield i, event
    finally:
        for t in tasks:  # a client gone: cancelling the pumps cancels their requests
            t.cancel()


async def _stream(
    engine: Engine,
    reqs,
    meta: dict,
    chat: bool,
    include_usage: bool,
    lp: Logprobs | None = None,
    tools: ToolPlan | None = None,
) -> AsyncIterator[str]:
    kind = "chat.completion.chunk" if chat else "text_completion"
    extra = {"usage": None} if include_usage else {}
    # tokens whose text is held back (half a character, a possible stop string) have their
    # logprobs sent with the next chunk that has text
    pending: list[list[TokenEvent]] = [[] for _ in reqs]
    offsets = [0] * len(reqs)
    held = [ToolStream(tools) for _ in reqs] if tools is not None else None

    def logprobs(i: int) -> dict | None:
        if lp is None:
            return None
        events, pending[i] = pending[i], []
        if chat:
            return {"content": [lp.entry(e) for e in events], "refusal": None}
        out = lp.completion(events, offsets[i])
        offsets[i] += sum(len(t) for t in out["tokens"])
        return out

    def chunk(i: int, content: str | None, finish: str | None, role: bool = False, calls=None) -> str:
        if chat:
            delta = {"content": content} if content else {}
            if role:
                delta = {"role": "assistant", "content": ""}
            if calls:
                delta = {"tool_calls": [{"index": k, **c} for k, c in enumerate(calls)]}
            choice = {"index": i, "delta": delta, "logprobs": None if role else logprobs(i)}
        else:
            choice = {"index": i, "text": content or "", "logprobs": logprobs(i)}
        choice["finish_reason"] = finish
        return _sse({**meta, "object": kind, "choices": [choice], **extra})

    if chat:
        for i in range(len(reqs)):
            yield chunk(i, None, None, role=True)
    finishes: list[FinishEvent | None] = [None] * len(reqs)
    try:
        async for i, event in _merged(engine, reqs):
            if isinstance(event, TokenEvent):
                pending[i] += scored([event])
                text = held[i].push(event.text) if held else event.text
                if text:
                    yield chunk(i, text, None)
                continue
            if event.finish_reason in ("error", "cancelled"):
                why = event.error or "the request was cancelled (the server is shutting down)"
                failed = RequestError(f"generation failed: {why}", status=500, type="server_error")
                yield _sse(failed.openai())
                return
            finishes[i] = event
            reason = event.finish_reason
            if held:
                rest, calls = held[i].finish()
                if rest:
                    yield chunk(i, rest, None)
                if calls:
                    yield chunk(i, None, None, calls=openai_calls(calls, tools))
                    reason = "tool_calls"
            yield chunk(i, None, reason)
    except RequestError as e:  # refused once the response had started: say so in the stream
        yield _sse(e.openai())
        return
    if include_usage:
        yield _sse({**meta, "object": kind, "choices": [], "usage": _usage(finishes)})
    yield _sse("[DONE]")
