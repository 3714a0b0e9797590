"""The FastAPI app: OpenAI (/v1) and Ollama (/api) routes, health, metrics, the web UI.

Every error reaches the client as a JSON error object with a fitting status: OpenAI's shape
(`{"error": {"message", "type", "param", "code"}}`) on /v1 and elsewhere, Ollama's
(`{"error": "..."}`) on /api. Malformed JSON and invalid fields are 400s, unknown routes
404s, and anything unexpected a 500 whose body names the error but never carries a traceback
(that goes to the log).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from ktx.core import __version__

from . import embeddings, ollama_api, openai_api
from .engine import FINISHED, Engine, FinishEvent
from .errors import RequestError
from .metrics import Metrics
from .models import Models

log = logging.getLogger("ktx.server")
WEB_DIR = Path(__file__).parent / "web"
# Paths open without the API key: liveness, and the web page's static files (a browser cannot
# send the header when it loads a page; every API call the page makes carries it).
OPEN_PATHS = ("/health",)
OPEN_PREFIXES = ("/web",)


def create_app(
    served: Engine | Models, *, api_key: str | None = None, web: bool = False, grace_s: float = 10.0
) -> FastAPI:
    """The app over one engine (`ktx serve --gguf`) or a directory of models (`--models`)."""
    models = served if isinstance(served, Models) else Models.single(served)
    metrics = next((e.metrics for e in models.engines() if e.metrics), None) or Metrics()
    models.metrics = metrics
    for engine in models.engines():
        engine.metrics = metrics
    metrics.bind(models.stats)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        models.start()
        yield
        models.shutdown(grace_s)  # finishes in-flight requests, cancels what is left

    app = FastAPI(title="ktx", version=__version__, lifespan=lifespan)
    app.state.models = models
    app.state.engine = models.default  # the fixed model (None for a directory)
    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)
    app.include_router(embeddings.openai_router)
    app.include_router(embeddings.ollama_router)

    @app.get("/health", tags=["operations"])
    async def health() -> dict:
        default = models.default
        loaded = [e.name for e in models.loaded()]
        return {
            "status": "ok",
            "model": default.model_name if default else None,
            "loaded": loaded,
            **models.stats(),
        }

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False, response_model=None)
    async def root():
        return RedirectResponse("/web/") if web else PlainTextResponse("ktx is running")

    if web:
        app.mount("/web", StaticFiles(directory=WEB_DIR, html=True), name="web")

        @app.get("/favicon.ico", include_in_schema=False)
        async def favicon() -> RedirectResponse:  # what browsers ask the site's root for
            return RedirectResponse("/web/favicon.svg")

    app.add_middleware(_AuthAndLog, api_key=api_key, metrics=metrics)

    @app.exception_handler(RequestError)
    async def on_request_error(request: Request, e: RequestError):
        return _error_response(request.url.path, e)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, e: RequestValidationError):
        return _error_response(request.url.path, _validation_error(e))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, e: HTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        return _error_response(request.url.path, RequestError(str(e.detail), status=e.status_code, type=kind))

    @app.exception_handler(Exception)
    async def on_any(request: Request, e: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return _error_response(request.url.path, _internal(e))

    return app


class _AuthAndLog:
    """Pure ASGI middleware (not BaseHTTPMiddleware, which hides client disconnects from the
    endpoints): checks the API key, counts error statuses, logs one JSON line per request when
    its response has ended (a stream's too), with its tokens in and out, TTFT and decode rate."""

    def __init__(self, app, api_key: str | None, metrics: Metrics):
        self.app, self.api_key, self.metrics = app, api_key, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, rid, path = time.perf_counter(), uuid.uuid4().hex[:12], scope["path"]
        status = {"code": 500}

        async def send_logged(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        if scope.get("method") in ("POST", "PUT", "PATCH"):
            scope = _json_body(scope)
        finished: list[FinishEvent] = []
        record = FINISHED.set(finished)
        try:
            if self.api_key and path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
                given = dict(scope.get("headers", [])).get(b"authorization", b"")
                if not hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
                    denied = RequestError(
                        "missing or wrong API key (Authorization: Bearer ...)",
                        status=401,
                        type="authentication_error",
                        code="invalid_api_key",
                    )
                    return await _error_response(path, denied)(scope, receive, send_logged)
            await self.app(scope, receive, send_logged)
        finally:
            FINISHED.reset(record)
            if status["code"] >= 400:
                self.metrics.http_errors.labels(str(status["code"])).inc()
            line = {
                "event": "http",
                "id": rid,
                "method": scope.get("method"),
                "path": path,
                "status": status["code"],
                "ms": round((time.perf_counter() - start) * 1e3, 1),
            }
            log.info(json.dumps({**line, **_generation_fields(finished)}))


def _generation_fields(finished: list[FinishEvent]) -> dict:
    """What a request generated (all its choices): tokens in and out, time to the first token,
    decode tokens/s, and why it ended."""
    if not finished:
        return {}
    out = sum(f.completion_tokens for f in finished)
    decode_s = max(f.decode_s for f in finished)
    return {
        "prompt_tokens": sum(f.prompt_tokens for f in finished),
        "cached_tokens": sum(f.cached_tokens for f in finished),
        "completion_tokens": out,
        "ttft_ms": round(1e3 * min(f.queue_s + f.prefill_s for f in finished), 1),
        "decode_tok_s": round((out - len(finished)) / decode_s, 1) if decode_s > 0 else None,
        "finish": sorted({f.finish_reason for f in finished}),
    }


def _json_body(scope: dict) -> dict:
    """The body is read as JSON whatever Content-Type says: Ollama's curl examples send none
    (`curl -d` says form-urlencoded) and Ollama accepts them; so do OpenAI's servers."""
    headers = scope.get("headers", [])
    given = dict(headers).get(b"content-type", b"")
    if given.split(b";")[0].strip().lower() == b"application/json":
        return scope
    kept = [(k, v) for k, v in headers if k != b"content-type"]
    return {**scope, "headers": [*kept, (b"content-type", b"application/json")]}


def _internal(e: Exception) -> RequestError:
    return RequestError(f"internal error: {type(e).__name__}", status=500, type="server_error")


def _validation_error(e: RequestValidationError) -> RequestError:
    """FastAPI's 422 list of problems -> one 400 naming the first field (as OpenAI does)."""
    errors = e.errors()
    if not errors:
        return RequestError("invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        why = first.get("ctx", {}).get("error", "")
        return RequestError(f"the body is not valid JSON: {why}".rstrip(": "))
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return RequestError("the request needs a JSON body")
    if tuple(first.get("loc", ())) == ("body",):  # a list, a string...: not an object of fields
        return RequestError("the body must be a JSON object")
    # A field of several allowed types reports one error per type; the one that is not a mere
    # type mismatch says what is wrong (a list of 5 stops is not "not a string").
    param = _param(first)
    same = [e for e in errors if _param(e) == param]
    best = next((e for e in same if not str(e.get("type", "")).endswith("_type")), first)
    more = len({_param(e) for e in errors}) - 1
    suffix = f" (and {more} more field{'s' if more > 1 else ''})" if more else ""
    return RequestError(f"{param or 'body'}: {best.get('msg', 'invalid')}{suffix}", param=param)


def _param(error: dict) -> str | None:
    """The field's path (`messages.0.role`), without pydantic's union-member tags (`str`, `list[str]`)."""
    parts = []
    for p in error.get("loc", ()):
        if p == "body" and not parts:
            continue
        if isinstance(p, str) and (p in ("str", "int", "float", "bool") or "[" in p):
            continue
        parts.append(str(p))
    return ".".join(parts) or None


def _error_response(path: str, e: RequestError) -> JSONResponse:
    if path.startswith("/api/"):
        return JSONResponse({"error": e.message}, status_code=e.status)
    return JSONResponse(e.openai(), status_code=e.status)
