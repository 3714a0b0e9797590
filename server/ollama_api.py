"""Ollama's API: /api/chat and /api/generate (streamed as NDJSON or not), /api/tags, /api/show,
/api/ps and /api/version, so the Ollama CLI and libraries, Open WebUI and Continue can use ktx.

Ollama's conventions, which its clients rely on, differ from OpenAI's: `stream` defaults to true;
a stream is NDJSON (one JSON object a line, no `data:` prefix, no `[DONE]`), whose last object has
`done: true`, the token counts and the durations in integer nanoseconds; sampling knobs live in
`options`, under Ollama's names (`num_predict`, `repeat_penalty`) and with its defaults
(temperature 0.8, top_k 40, top_p 0.9; the repeat penalty stays off: ours counts the whole history,
Ollama's the last 64 tokens); an empty prompt only "loads" the model (`done_reason: "load"`);
model names carry a tag (`name:latest`); errors are `{"error": "..."}` (app.py), and one that
happens mid-stream is a last line of that shape. Not supported: images, `suffix` (fill in the
middle) and Go `template` overrides (400s); `format` (structured output), `keep_alive`, `think`
and `num_ctx` are accepted and ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, Literal

import gguf
import torch
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from ktx.core import __version__
from ktx.core.runtime.sampler import SamplingParams

from .engine import Engine, FinishEvent, GenerationRequest, TokenEvent
from .errors import RequestError
from .openai_api import collect_finish, until_disconnected
from .protocol import chat_prompt_ids

router = APIRouter(prefix="/api", tags=["ollama"])

FOREVER = "2999-12-31T23:59:59Z"  # /api/ps: the one model is never unloaded
# /api/show's model_info: GGUF key (after "<arch>.") -> the config field that holds it otherwise
MODEL_INFO = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
}


class OllamaOptions(BaseModel):
    """Ollama's names and defaults (api/types.go), but for repeat_penalty (1.1 there, over the
    last 64 tokens; ours counts the whole history, so it stays off unless asked for)."""

    model_config = ConfigDict(extra="allow")  # num_thread, mirostat, ...: accepted, ignored
    num_predict: int = -1  # negative: no limit of the request's own, the server's --max-new-tokens
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    seed: int = -1  # negative: a random seed
    stop: str | list[str] | None = None
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    num_ctx: int | None = None  # the engine's context is fixed when it starts

    def sampling(self) -> SamplingParams:
        params = SamplingParams(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repetition_penalty=self.repeat_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=None if self.seed < 0 else self.seed % 2**64,
        )
        try:
            return params.validate()
        except ValueError as e:
            raise RequestError(f"options: {e}") from None

    def request(self, engine: Engine, ids: list[int]) -> GenerationRequest:
        asked = None if self.num_predict < 0 else self.num_predict
        # beyond the context, Ollama stops at the context's end rather than refusing
        max_new = engine.resolve_max_tokens(len(ids), asked, "num_predict", cap=True)
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationRequest(ids, max_new, self.sampling(), [s for s in stops if s])


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    images: list[str] | None = None


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = ""
    stream: bool = True
    options: OllamaOptions | None = None
    format: str | dict[str, Any] | None = None
    keep_alive: float | str | None = None
    think: bool | str | None = None


class ChatBody(_Body):
    messages: list[OllamaMessage] = []


class GenerateBody(_Body):
    prompt: str = ""
    system: str | None = None
    suffix: str | None = None
    template: str | None = None
    raw: bool = False
    images: list[str] | None = None
    context: list[int] | None = None  # the deprecated conversation state


class ShowBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = ""
    name: str = ""  # what older clients send


def _rfc3339(t: float | None = None) -> str:
    when = datetime.fromtimestamp(time.time() if t is None else t, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def _engine(request: Request, model: str) -> Engine:
    """The engine, if `model` names its model (with or without a tag); else a 400 or a 404."""
    engine: Engine = request.app.state.engine
    if not model:
        raise RequestError("model is required")
    if model not in engine.model_names:
        raise RequestError(f"model '{model}' not found", status=404)
    return engine


@router.post("/chat", response_model=None)
async def chat(body: ChatBody, request: Request):
    t0 = time.perf_counter()
    engine = _engine(request, body.model)
    if not body.messages:
        return _loaded(body.model, chat=True)
    for i, m in enumerate(body.messages):
        if m.images:
            raise RequestError(f"messages[{i}].images: this model reads text only")
    messages = [{"role": m.role, "content": m.content or ""} for m in body.messages]
    ids = chat_prompt_ids(engine.tokenizer, messages)
    return await _answer(engine, body, ids, chat=True, t0=t0, request=request)


@router.post("/generate", response_model=None)
async def generate(body: GenerateBody, request: Request):
    t0 = time.perf_counter()
    engine = _engine(request, body.model)
    for field in ("suffix", "template", "images"):
        if getattr(body, field):
            raise RequestError(f"{field} is not supported by this server")
    if not body.prompt and (body.raw or not body.system):
        return _loaded(body.model, chat=False)
    if body.raw:
        ids = engine.tokenizer.encode(body.prompt)
    else:
        system = [{"role": "system", "content": body.system}] if body.system else []
        ids = chat_prompt_ids(engine.tokenizer, [*system, {"role": "user", "content": body.prompt}])
    return await _answer(engine, body, ids, chat=False, t0=t0, request=request)


def _loaded(model: str, chat: bool) -> JSONResponse:
    """Ollama's answer to an empty conversation: the model is loaded, nothing is generated."""
    return JSONResponse({**_head(model), **_piece("", chat), "done": True, "done_reason": "load"})


def _head(model: str) -> dict:
    return {"model": model, "created_at": _rfc3339()}


def _piece(text: str, chat: bool) -> dict:
    return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}


def _final(finish: FinishEvent, t0: float) -> dict:
    return {
        "done": True,
        "done_reason": finish.finish_reason,
        "total_duration": _ns(time.perf_counter() - t0),
        "load_duration": 0,
        "prompt_eval_count": finish.prompt_tokens,
        "prompt_eval_duration": _ns(finish.prefill_s),
        "eval_count": finish.completion_tokens,
        "eval_duration": _ns(finish.decode_s),
    }


def _failure(finish: FinishEvent) -> RequestError:
    if finish.finish_reason == "cancelled":
        return RequestError("the request was cancelled (the server is shutting down)", status=503)
    return RequestError(f"generation failed: {finish.error}", status=500)


async def _answer(engine: Engine, body: _Body, ids: list[int], chat: bool, t0: float, request: Request):
    req = (body.options or OllamaOptions()).request(engine, ids)  # 400s here, before anything runs
    engine.check_accepting()  # a 503 before a stream's status line, not inside it
    if body.stream:
        lines = _ndjson(engine, req, body.model, chat, t0)
        return StreamingResponse(lines, media_type="application/x-ndjson")
    finish = await until_disconnected(request, collect_finish(engine, req))
    if finish.finish_reason not in ("stop", "length"):
        raise _failure(finish)
    return JSONResponse({**_head(body.model), **_piece(finish.text, chat), **_final(finish, t0)})


def _line(obj: dict) -> str:
    return json.dumps(obj) + "\n"


async def _ndjson(
    engine: Engine, req: GenerationRequest, model: str, chat: bool, t0: float
) -> AsyncIterator[str]:
    try:
        async for event in engine.generate(req):
            if isinstance(event, TokenEvent):
                if event.text:
                    yield _line({**_head(model), **_piece(event.text, chat), "done": False})
            elif event.finish_reason in ("stop", "length"):
                yield _line({**_head(model), **_piece("", chat), **_final(event, t0)})
            else:
                yield _line({"error": _failure(event).message})
    except RequestError as e:  # refused once the response had begun (the server is shutting down)
        yield _line({"error": e.message})


# -- the model, as Ollama describes it -----------------------------------------------------------
def _params(engine: Engine) -> int:
    return sum(t.n_elements for t in engine.model.gguf.tensors.values())


def _details(engine: Engine) -> dict:
    family = engine.model.arch.variant
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": _human(_params(engine)),
        "quantization_level": _quantization(engine.model.gguf),
    }


def _human(n: int) -> str:
    """8.0B, 268M, 12K: as Ollama's parameter_size reads."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    return f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def _quantization(gf) -> str:
    """The file type llama-quantize wrote (`Q4_K_M`); else the type holding most matrix bytes."""
    file_type = gf.metadata.get("general.file_type")
    try:
        name = gguf.LlamaFileType(int(file_type)).name
        if name != "GUESSED":
            return name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (TypeError, ValueError):
        pass
    weight: Counter = Counter()
    for t in gf.tensors.values():
        if len(t.shape) == 2:
            weight[t.type.name] += t.nbytes
    return weight.most_common(1)[0][0] if weight else "unknown"


def _entry(engine: Engine) -> dict:
    """What /api/tags, /api/ps and /api/show share: name, size, digest, details."""
    name = engine.model_name if ":" in engine.model_name else f"{engine.model_name}:latest"
    paths = engine.model.gguf.paths
    stats = [os.stat(p) for p in paths]
    size = sum(s.st_size for s in stats)
    mtime = stats[0].st_mtime
    # a digest of the file's identity, not of its bytes (hashing many GB would take minutes)
    digest = hashlib.sha256(f"{paths[0]}:{size}:{mtime}".encode()).hexdigest()
    return {
        "name": name,
        "model": name,
        "modified_at": _rfc3339(mtime),
        "size": size,
        "digest": digest,
        "details": _details(engine),
    }


# Ollama's clients read /api/version as Ollama's own and gate features on it (tools, structured
# outputs, thinking): ktx answers with the Ollama release whose API it follows, and its own.
OLLAMA_API_VERSION = "0.12.0"


@router.get("/version")
async def version() -> dict:
    return {"version": OLLAMA_API_VERSION, "ktx_version": __version__}


@router.get("/tags")
async def tags(request: Request) -> dict:
    return {"models": [_entry(request.app.state.engine)]}


@router.get("/ps")
async def ps(request: Request) -> dict:
    engine: Engine = request.app.state.engine
    entry = _entry(engine)
    del entry["modified_at"]
    context = min(engine.context, engine.pool.capacity)
    return {
        "models": [{**entry, "expires_at": FOREVER, "size_vram": _vram(engine), "context_length": context}]
    }


def _vram(engine: Engine) -> int:
    device = engine.model.model.embed_tokens.device  # where ktx puts the dense part of the model
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


@router.post("/show")
async def show(body: ShowBody, request: Request) -> dict:
    engine = _engine(request, body.model or body.name)
    entry = _entry(engine)
    path = engine.model.gguf.paths[0]
    meta, config = engine.model.gguf.metadata, engine.model.config
    arch = meta.get("general.architecture") or engine.model.arch.gguf_name
    info: dict[str, Any] = {
        "general.architecture": arch,
        "general.parameter_count": _params(engine),
    }
    for key, attr in MODEL_INFO.items():
        value = meta.get(f"{arch}.{key}", getattr(config, attr, None))
        if value is not None:
            info[f"{arch}.{key}"] = int(value)
    return {
        "modelfile": f"# served by ktx\nFROM {path}\n",
        "parameters": "",
        "template": getattr(engine.tokenizer, "chat_template", "") or "",
        "details": entry["details"],
        "model_info": info,
        "capabilities": ["completion"],
        "modified_at": entry["modified_at"],
    }
