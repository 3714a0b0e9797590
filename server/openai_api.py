"""OpenAI's API: /v1/chat/completions, /v1/completions (streamed as SSE or not) and /v1/models."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .engine import Engine, FinishEvent, GenerationRequest, TokenEvent
from .errors import RequestError
from .protocol import ChatRequest, CompletionRequest, chat_prompt_ids, completion_prompt_ids

router = APIRouter(prefix="/v1", tags=["openai"])


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def check_model(engine: Engine, name: str | None) -> None:
    """Any of the served names (or none at all) is this model; anything else is a 404."""
    if name and name not in engine.model_names:
        raise RequestError(
            f"the model {name!r} does not exist here; this server runs {engine.model_name!r}",
            status=404,
            param="model",
            code="model_not_found",
        )


@router.get("/models")
async def list_models(request: Request) -> dict:
    engine = engine_of(request)
    return {"object": "list", "data": [_model_card(engine)]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict:
    engine = engine_of(request)
    check_model(engine, model_id)
    return _model_card(engine)


def _model_card(engine: Engine) -> dict:
    """OpenAI's model object, plus what clients show and size requests by (as llama.cpp's server
    adds `meta`): the context this server gives a request, the model's family, size and type."""
    from .ollama_api import _details

    details = _details(engine)
    return {
        "id": engine.model_name,
        "object": "model",
        "created": int(engine.started),
        "owned_by": "ktx",
        "meta": {
            "context_length": min(engine.context, engine.pool.capacity),
            "family": details["family"],
            "parameter_size": details["parameter_size"],
            "quantization": details["quantization_level"],
            "size_bytes": sum(os.path.getsize(p) for p in engine.model.gguf.paths),
        },
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, request: Request):
    engine = engine_of(request)
    check_model(engine, body.model)
    ids = chat_prompt_ids(engine.tokenizer, body.conversation())
    return await _complete(engine, body, ids, chat=True, request=request)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, request: Request):
    engine = engine_of(request)
    check_model(engine, body.model)
    ids = completion_prompt_ids(engine.tokenizer, body.prompt)
    return await _complete(engine, body, ids, chat=False, request=request)


async def _complete(engine: Engine, body, ids: list[int], chat: bool, request: Request):
    requested, param = body.max_new_tokens()
    max_new = engine.resolve_max_tokens(len(ids), requested, param)
    reqs = [
        GenerationRequest(ids, max_new, body.sampling(i), body.stops()) for i in range(body.n)
    ]  # sampling errors raise here, before anything is queued
    engine.check_accepting()  # a 503 now, before a streamed response has sent its status
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
    meta = {"id": rid, "created": int(time.time()), "model": engine.model_name}
    if body.stream:
        sse = _stream(engine, reqs, meta, chat, body.include_usage)
        return StreamingResponse(sse, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    results = await until_disconnected(request, asyncio.gather(*(collect_finish(engine, r) for r in reqs)))
    for finish in results:
        if finish.finish_reason == "error":
            raise RequestError(f"generation failed: {finish.error}", status=500, type="server_error")
    choices = []
    for i, f in enumerate(results):
        if chat:
            message = {"role": "assistant", "content": f.text}
            choices.append({"index": i, "message": message, "finish_reason": f.finish_reason})
        else:
            choices.append({"index": i, "text": f.text, "logprobs": None, "finish_reason": f.finish_reason})
    kind = "chat.completion" if chat else "text_completion"
    return JSONResponse({**meta, "object": kind, "choices": choices, "usage": _usage(results)})


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


async def collect_finish(engine: Engine, req: GenerationRequest) -> FinishEvent:
    async for event in engine.generate(req):
        if isinstance(event, FinishEvent):
            return event
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


async def _stream(engine: Engine, reqs, meta: dict, chat: bool, include_usage: bool) -> AsyncIterator[str]:
    kind = "chat.completion.chunk" if chat else "text_completion"
    extra = {"usage": None} if include_usage else {}

    def chunk(i: int, content: str | None, finish: str | None, role: bool = False) -> str:
        if chat:
            delta = {"content": content} if content else {}
            if role:
                delta = {"role": "assistant", "content": ""}
            choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": i, "text": content or "", "logprobs": None, "finish_reason": finish}
        return _sse({**meta, "object": kind, "choices": [choice], **extra})

    if chat:
        for i in range(len(reqs)):
            yield chunk(i, None, None, role=True)
    finishes: list[FinishEvent | None] = [None] * len(reqs)
    try:
        async for i, event in _merged(engine, reqs):
            if isinstance(event, TokenEvent):
                if event.text:
                    yield chunk(i, event.text, None)
                continue
            if event.finish_reason in ("error", "cancelled"):
                why = event.error or "the request was cancelled (the server is shutting down)"
                failed = RequestError(f"generation failed: {why}", status=500, type="server_error")
                yield _sse(failed.openai())
                return
            finishes[i] = event
            yield chunk(i, None, event.finish_reason)
    except RequestError as e:  # refused once the response had started: say so in the stream
        yield _sse(e.openai())
        return
    if include_usage:
        yield _sse({**meta, "object": kind, "choices": [], "usage": _usage(finishes)})
    yield _sse("[DONE]")
