"""Embeddings from the served model: OpenAI's /v1/embeddings, Ollama's /api/embed and its older
/api/embeddings.

A vector is the model's final hidden states (after the last norm) over the input's tokens,
mean-pooled (or as the GGUF's `<arch>.pooling_type` says: cls, last) and L2-normalised; inputs
are tokenized without a chat template. A chat model's pooled states are a usable but plain
embedding (document search in Open WebUI works with them); an embedding model's GGUF gives
what it was trained for. Each input runs in a pass of its own, so a vector is the same whatever
it is batched with.

OpenAI's `encoding_format: "base64"` is honoured (little-endian float32, as OpenAI sends);
`dimensions` is refused (a 400): ktx cannot shorten a model's vectors.
"""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from . import ollama_api, openai_api
from .engine import Engine
from .errors import RequestError

openai_router = APIRouter(prefix="/v1", tags=["openai"])
ollama_router = APIRouter(prefix="/api", tags=["ollama"])

MAX_INPUTS = 2048  # OpenAI's bound on one request's inputs

TokenList = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


class OpenAIEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=MAX_INPUTS)]
        | TokenList
        | Annotated[list[TokenList], Field(min_length=1, max_length=MAX_INPUTS)]
    )
    model: str | None = None
    encoding_format: str = "float"
    dimensions: int | None = None


class OllamaEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = ""
    input: str | list[str] = ""
    truncate: bool = True
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None


class OllamaEmbeddingsRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str = ""
    prompt: str = ""
    keep_alive: float | str | None = None
    options: dict[str, Any] | None = None


def _limit(engine: Engine) -> int:
    return min(engine.context, engine.pool.capacity)


def _token_lists(engine: Engine, inputs: list, truncate: bool, param: str) -> list[list[int]]:
    """Token ids per input; one longer than the context is cut (truncate) or refused."""
    out, limit, vocab = [], _limit(engine), engine.tokenizer.vocab_size
    for i, x in enumerate(inputs):
        ids = engine.tokenizer.encode(x) if isinstance(x, str) else list(x)
        if not ids:
            raise RequestError(f"{param}[{i}] is empty", param=param)
        if any(t >= vocab for t in ids):
            raise RequestError(f"{param}[{i}]: token ids must be below {vocab}", param=param)
        if len(ids) > limit:
            if not truncate:
                raise RequestError(
                    f"{param}[{i}] has {len(ids)} tokens; the context holds {limit}",
                    param=param,
                    code="context_length_exceeded",
                )
            ids = ids[:limit]
        out.append(ids)
    return out


@openai_router.post("/embeddings")
async def openai_embeddings(body: OpenAIEmbeddingRequest, request: Request) -> dict:
    engine = await openai_api.engine_for(request, body.model)
    if body.dimensions is not None:
        raise RequestError(
            "dimensions is not supported: the model's vectors are returned whole", param="dimensions"
        )
    if body.encoding_format not in ("float", "base64"):
        raise RequestError("encoding_format must be float or base64", param="encoding_format")
    inputs = body.input
    if isinstance(inputs, str) or (inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    ids = _token_lists(engine, inputs, truncate=False, param="input")
    vectors = await engine.embed(ids)
    data = []
    for i, v in enumerate(vectors):
        if body.encoding_format == "base64":
            v = base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": v})
    n = sum(len(x) for x in ids)
    return {
        "object": "list",
        "data": data,
        "model": engine.model_name,
        "usage": {"prompt_tokens": n, "total_tokens": n},
    }


@ollama_router.post("/embed")
async def ollama_embed(body: OllamaEmbedRequest, request: Request) -> dict:
    t0 = time.perf_counter()
    engine = await ollama_api.engine_for(request, body.model, body.keep_alive)
    inputs = [body.input] if isinstance(body.input, str) else body.input
    if not inputs or inputs == [""]:
        return {"model": body.model, "embeddings": []}  # Ollama's answer: the model loaded
    ids = _token_lists(engine, inputs, truncate=body.truncate, param="input")
    vectors = await engine.embed(ids)
    return {
        "model": body.model,
        "embeddings": vectors,
        "total_duration": round((time.perf_counter() - t0) * 1e9),
        "load_duration": round(ollama_api.load_seconds(request) * 1e9),
        "prompt_eval_count": sum(len(x) for x in ids),
    }


@ollama_router.post("/embeddings")
async def ollama_embeddings(body: OllamaEmbeddingsRequest, request: Request) -> dict:
    engine = await ollama_api.engine_for(request, body.model, body.keep_alive)
    if not body.prompt:
        return {"embedding": []}
    ids = _token_lists(engine, [body.prompt], truncate=True, param="prompt")
    return {"embedding": (await engine.embed(ids))[0]}
