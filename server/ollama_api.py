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
middle) and Go `template` overrides (400s); `num_ctx` is accepted and ignored (the context is
fixed when a model loads). `keep_alive` is honoured by a models directory (models.py); `format`
("json" or a JSON schema) keeps the answer inside it (structured.py); `logprobs` and
`top_logprobs` add a `logprobs` list to each piece (logprobs.py); `tools` and the messages'
`tool_calls` work as in tool_calls.py, with `tool_choice` (OpenAI's values) as ktx's own
extension; `think` reaches the chat template (enable_thinking, reasoning_effort).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from ktx.core import __version__
from ktx.core.backend import device_module
from ktx.core.runtime.sampler import SamplingParams

from .engine import Engine, FinishEvent, GenerationRequest, TokenEvent
from .errors import RequestError
from .logprobs import Logprobs, scored
from .models import Entry, keep_alive_seconds
from .openai_api import collect, until_disconnected
from .protocol import MAX_TOP_CHAT, chat_prompt_ids
from .structured import ollama_grammar
from .tool_calls import ToolPlan, ToolStream, chat_prompt, grammar_of, new_id, ollama_calls

router = APIRouter(prefix="/api", tags=["ollama"])

FOREVER = "2999-12-31T23:59:59Z"  # /api/ps: a model that is never unloaded
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
    logprobs: bool = False
    top_logprobs: int = 0


class ChatBody(_Body):
    messages: list[OllamaMessage] = []
    tools: list[dict[str, Any]] | None = None
    # not Ollama's (its models choose): ktx's extension, OpenAI's values ("required", a name)
    tool_choice: str | dict[str, Any] | None = None


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


async def engine_for(request: Request, model: str, keep_alive: Any = None) -> Engine:
    """The engine of `model` (with or without a tag; loaded on demand from a models directory,
    kept for `keep_alive`); else a 400 or a 404."""
    if not model:
        raise RequestError("model is required")
    models = request.app.state.models
    entry = models.find(model)
    before = entry.engine if entry is not None else None
    start = time.perf_counter()
    engine = await models.get(model, keep_alive)
    if engine is not before:  # it was loaded for this request
        request.state.load_s = time.perf_counter() - start  # Ollama's load_duration
    return engine


def load_seconds(request: Request) -> float:
    """How long this request waited for its model to load (engine_for): 0 if it was loaded."""
    return getattr(request.state, "load_s", 0.0)


@router.post("/chat", response_model=None)
async def chat(body: ChatBody, request: Request):
    t0 = time.perf_counter()
    if not body.messages:
        return await _loaded(request, body, chat=True)
    engine = await engine_for(request, body.model, body.keep_alive)
    for i, m in enumerate(body.messages):
        if m.images:
            raise RequestError(f"messages[{i}].images: this model reads text only")
    choice = (
        {"type": "function", "function": {"name": body.tool_choice}}
        if _is_name(body.tool_choice)
        else body.tool_choice
    )
    messages = [_message(m) for m in body.messages]
    ids, tools = chat_prompt(engine.tokenizer, messages, body.tools, choice, **_thinking(body.think))
    return await _answer(engine, body, ids, chat=True, t0=t0, request=request, tools=tools)


def _thinking(think: bool | str | None) -> dict[str, Any]:
    """Ollama's `think` as the chat templates read it: Qwen3's and GLM's enable_thinking,
    gpt-oss's reasoning_effort ("low", "medium", "high"). The answer is not split: a model's
    thinking stays in its content, in the model's own tags."""
    if think is None:
        return {}
    if isinstance(think, str):
        if think not in ("low", "medium", "high"):
            raise RequestError('think must be true, false, "low", "medium" or "high"')
        return {"enable_thinking": True, "reasoning_effort": think}
    return {"enable_thinking": bool(think)}


def _is_name(choice: Any) -> bool:
    return isinstance(choice, str) and choice not in ("none", "auto", "required")


def _message(m: OllamaMessage) -> dict[str, Any]:
    """An Ollama message in OpenAI's shape (what prepare_messages and the templates take):
    calls get ids, a tool's result names its function as `name`."""
    out: dict[str, Any] = {"role": m.role, "content": m.content or ""}
    extra = m.model_extra or {}
    calls = extra.get("tool_calls")
    if m.role == "assistant" and calls:
        if not isinstance(calls, list):
            raise RequestError("message.tool_calls must be a list")
        out["tool_calls"] = [
            {"id": c.get("id") or new_id(), "type": "function", "function": c.get("function") or {}}
            for c in calls
            if isinstance(c, dict)
        ]
    if m.role == "tool" and (extra.get("tool_name") or extra.get("name")):
        out["name"] = extra.get("tool_name") or extra.get("name")
    return out


@router.post("/generate", response_model=None)
async def generate(body: GenerateBody, request: Request):
    t0 = time.perf_counter()
    for field in ("suffix", "template", "images"):
        if getattr(body, field):
            raise RequestError(f"{field} is not supported by this server")
    if not body.prompt and (body.raw or not body.system):
        return await _loaded(request, body, chat=False)
    engine = await engine_for(request, body.model, body.keep_alive)
    if body.raw:
        ids = engine.tokenizer.encode(body.prompt)
    else:
        system = [{"role": "system", "content": body.system}] if body.system else []
        ids = chat_prompt_ids(engine.tokenizer, [*system, {"role": "user", "content": body.prompt}])
    return await _answer(engine, body, ids, chat=False, t0=t0, request=request)


async def _loaded(request: Request, body: _Body, chat: bool) -> JSONResponse:
    """Ollama's answer to an empty conversation: the model is loaded, or with keep_alive 0
    unloaded once idle (not loaded first); nothing is generated."""
    reason = "load"
    unload = body.keep_alive is not None and keep_alive_seconds(body.keep_alive, None) == 0
    if not unload:
        await engine_for(request, body.model, body.keep_alive)
    elif not body.model:
        raise RequestError("model is required")
    elif await request.app.state.models.unload(body.model):
        reason = "unload"
    return JSONResponse({**_head(body.model), **_piece("", chat), "done": True, "done_reason": reason})


def _head(model: str) -> dict:
    return {"model": model, "created_at": _rfc3339()}


def _piece(text: str, chat: bool, calls: list | None = None) -> dict:
    if not chat:
        return {"response": text}
    message = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return {"message": message}


def _final(finish: FinishEvent, t0: float, load_s: float = 0.0) -> dict:
    return {
        "done": True,
        "done_reason": finish.finish_reason,
        "total_duration": _ns(time.perf_counter() - t0),
        "load_duration": _ns(load_s),
        "prompt_eval_count": finish.prompt_tokens,
        "prompt_eval_duration": _ns(finish.prefill_s),
        "eval_count": finish.completion_tokens,
        "eval_duration": _ns(finish.decode_s),
    }


def _failure(finish: FinishEvent) -> RequestError:
    if finish.finish_reason == "cancelled":
        return RequestError("the request was cancelled (the server is shutting down)", status=503)
    return RequestError(f"generation failed: {finish.error}", status=500)


async def _answer(
    engine: Engine,
    body: _Body,
    ids: list[int],
    chat: bool,
    t0: float,
    request: Request,
    tools: ToolPlan | None = None,
):
    req = (body.options or OllamaOptions()).request(engine, ids)  # 400s here, before anything runs
    req.grammar = await ollama_grammar(engine.tokenizer, body.format)
    if tools is not None:
        req.skip_special_tokens = False  # a family's call markers may be control tokens
        if tools.forced is not None:
            if req.grammar is not None:
                raise RequestError("format cannot be combined with a required tool call")
            req.grammar = await asyncio.to_thread(grammar_of, tools, engine.tokenizer)
    lp = None
    if body.logprobs:
        if not 0 <= body.top_logprobs <= MAX_TOP_CHAT:
            raise RequestError(f"top_logprobs must be between 0 and {MAX_TOP_CHAT}")
        req.logprobs = body.top_logprobs
        lp = await Logprobs.of(engine.tokenizer)
    engine.check_accepting()  # a 503 before a stream's status line, not inside it
    if body.stream:
        lines = _ndjson(engine, req, body.model, chat, t0, lp, tools, load_seconds(request))
        return StreamingResponse(lines, media_type="application/x-ndjson")
    finish, events = await until_disconnected(request, collect(engine, req))
    if finish.finish_reason not in ("stop", "length"):
        raise _failure(finish)
    scores = {"logprobs": [lp.entry(e) for e in scored(events)]} if lp else {}
    piece = _piece(finish.text, chat)
    if tools is not None:
        content, calls = tools.read(finish.text)
        piece = _piece(content, chat, ollama_calls(calls))
    final = _final(finish, t0, load_seconds(request))
    return JSONResponse({**_head(body.model), **piece, **scores, **final})


def _line(obj: dict) -> str:
    return json.dumps(obj) + "\n"


async def _ndjson(
    engine: Engine,
    req: GenerationRequest,
    model: str,
    chat: bool,
    t0: float,
    lp: Logprobs | None = None,
    tools: ToolPlan | None = None,
    load_s: float = 0.0,
) -> AsyncIterator[str]:
    pending: list[TokenEvent] = []  # scored tokens whose text is still held back
    held = ToolStream(tools) if tools is not None else None
    try:
        async for event in engine.generate(req):
            if isinstance(event, TokenEvent):
                pending += scored([event])
                text = held.push(event.text) if held else event.text
                if text:
                    scores = {"logprobs": [lp.entry(e) for e in pending]} if lp else {}
                    pending = []
                    yield _line({**_head(model), **_piece(text, chat), **scores, "done": False})
            elif event.finish_reason in ("stop", "length"):
                if held:
                    rest, calls = held.finish()
                    if rest or calls:
                        piece = _piece(rest, chat, ollama_calls(calls))
                        yield _line({**_head(model), **piece, "done": False})
                yield _line({**_head(model), **_piece("", chat), **_final(event, t0, load_s)})
            else:
                yield _line({"error": _failure(event).message})
    except RequestError as e:  # refused once the response had begun (the server is shutting down)
        yield _line({"error": e.message})


# -- the models, as Ollama describes them ---------------------------------------------------------
def _details(entry: Entry) -> dict:
    family = entry.info["family"]
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family],
        "parameter_size": entry.info["parameter_size"],
        "quantization_level": entry.info["quantization_level"],
    }


def _tagged(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _entry(entry: Entry) -> dict:
    """What /api/tags, /api/ps and /api/show share: name, size, digest, details."""
    name = _tagged(entry.name)
    return {
        "name": name,
        "model": name,
        "modified_at": _rfc3339(entry.modified),
        "size": entry.size,
        "digest": entry.digest,
        "details": _details(entry),
    }


# Ollama's clients read /api/version as Ollama's own and gate features on it (tools, structured
# outputs, thinking): ktx answers with the Ollama release whose API it follows, and its own.
OLLAMA_API_VERSION = "0.12.0"


@router.get("/version")
async def version() -> dict:
    return {"version": OLLAMA_API_VERSION, "ktx_version": __version__}


@router.get("/tags")
async def tags(request: Request) -> dict:
    return {"models": [_entry(e) for e in request.app.state.models.scan()]}


@router.get("/ps")
async def ps(request: Request) -> dict:
    models = request.app.state.models
    out = []
    for entry in models.loaded():
        left = models.expires(entry)
        expires = FOREVER if left is None else _rfc3339(time.time() + left)
        row = {
            **_entry(entry),
            "expires_at": expires,
            "size_vram": _vram(entry.engine),
            "context_length": entry.context,
        }
        del row["modified_at"]
        out.append(row)
    return {"models": out}


def _vram(engine: Engine) -> int:
    device = engine.model.model.embed_tokens.device  # where ktx puts the dense part of the model
    mod = device_module(device)
    return mod.memory_allocated(device) if mod is not None else 0


@router.post("/show")
async def show(body: ShowBody, request: Request) -> dict:
    name = body.model or body.name
    if not name:
        raise RequestError("model is required")
    entry = request.app.state.models.resolve(name)  # shown without loading it
    if entry.engine is not None:
        return _show(
            entry, entry.engine.model.gguf.metadata, entry.engine.model.config, entry.engine.tokenizer
        )
    from ktx.core import gguf

    with gguf.open(entry.paths[0]) as gf:
        return _show(entry, gf.metadata, None, None)


def _show(entry: Entry, meta, config, tokenizer) -> dict:
    arch = entry.info["family"]
    info: dict[str, Any] = {"general.architecture": arch, "general.parameter_count": entry.info["parameters"]}
    for key, attr in MODEL_INFO.items():
        value = meta.get(f"{arch}.{key}", getattr(config, attr, None))
        if value is not None:
            info[f"{arch}.{key}"] = int(value)
    template = tokenizer.chat_template if tokenizer is not None else meta.get("tokenizer.chat_template")
    shown = _entry(entry)
    return {
        "modelfile": f"# served by ktx\nFROM {entry.paths[0]}\n",
        "parameters": "",
        "template": template or "",
        "details": shown["details"],
        "model_info": info,
        "capabilities": ["completion", "tools"],  # tools: every model (tool_calls.py)
        "modified_at": shown["modified_at"],
    }


# Ollama's model management: ktx serves the files it is given and changes none of them.
NO_MANAGEMENT = (
    "ktx does not {what} models: it serves GGUF files as they are. Put a model's .gguf file (or "
    "its split set, or a folder holding them) in the directory given to `ktx serve --models DIR`, "
    "or serve one file with `ktx serve --gguf FILE`."
)


def _unmanaged(what: str):
    async def refuse() -> JSONResponse:
        return JSONResponse({"error": NO_MANAGEMENT.format(what=what)}, status_code=501)

    return refuse


for _route, _what in (("pull", "download"), ("push", "upload"), ("create", "create"), ("copy", "copy")):
    router.add_api_route(f"/{_route}", _unmanaged(_what), methods=["POST"], include_in_schema=False)
router.add_api_route("/delete", _unmanaged("delete"), methods=["DELETE", "POST"], include_in_schema=False)
