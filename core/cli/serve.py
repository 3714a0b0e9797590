"""`ktx serve`: the OpenAI- and Ollama-compatible HTTP server (ktx.server) over one model."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from .model_args import add_model_flags, load_model

EXAMPLES = """\
examples:
  ktx serve --web                                   the demo model; chat at http://127.0.0.1:10002/web/
  ktx serve --gguf model.gguf --device cuda --host 0.0.0.0 --api-key $KEY
  curl http://127.0.0.1:10002/v1/chat/completions -H 'content-type: application/json' \\
       -d '{"messages": [{"role": "user", "content": "Hi"}], "stream": true}'
  OLLAMA_HOST=127.0.0.1:10002 ollama run ktx         the Ollama CLI against ktx
  ktx serve --models ~/models --models-memory-gb 96    every GGUF in ~/models, loaded on demand

API: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models (OpenAI); /api/chat,
/api/generate, /api/embed, /api/embeddings, /api/tags, /api/show, /api/ps, /api/version
(Ollama); /health, /metrics (Prometheus); /web. Tools, structured outputs (response_format,
Ollama's format) and logprobs work on both APIs. When a request gives both,
max_completion_tokens wins over max_tokens.
"""


def add_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "serve",
        help="serve a model over OpenAI- and Ollama-compatible HTTP APIs (and a web UI)",
        description="Serve a model over HTTP: OpenAI and Ollama APIs with continuous batching, "
        "a prefix cache, Prometheus metrics and an optional web chat page.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_flags(p, sampling=False)
    p.set_defaults(cache_lens=8192)
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=10002, help="port (default 10002)")
    s.add_argument("--web", action="store_true", help="serve the chat page at /web")
    s.add_argument(
        "--api-key",
        default=os.environ.get("KTX_API_KEY"),
        help="require 'Authorization: Bearer KEY' on every route but /health (default: $KTX_API_KEY)",
    )
    s.add_argument("--served-model-name", metavar="NAME", help="the model's name in the APIs")
    d = p.add_argument_group("models directory")
    d.add_argument(
        "--models",
        type=Path,
        metavar="DIR",
        help="serve every GGUF in DIR (a file, a split set or a folder each), loaded when a request "
        "names it; instead of --gguf",
    )
    d.add_argument(
        "--models-memory-gb",
        type=float,
        metavar="GB",
        help="RAM the loaded models may use together (default: the machine's); least recently used "
        "idle models are unloaded to make room",
    )
    d.add_argument(
        "--keep-alive",
        default="5m",
        metavar="DURATION",
        help="how long a model stays loaded after its last request (default 5m; -1 forever); "
        "Ollama's keep_alive overrides it per request",
    )
    s.add_argument(
        "--max-batch-size", type=int, default=8, metavar="N", help="requests run together (default 8)"
    )
    s.add_argument(
        "--chunk-size", type=int, default=512, metavar="N", help="prefill chunk in tokens (default 512)"
    )
    s.add_argument(
        "--max-new-tokens",
        type=int,
        default=512,
        metavar="N",
        help="completion length when a request names none (default 512)",
    )
    c = p.add_argument_group("prefix cache")
    c.add_argument("--no-prefix-cache", action="store_true", help="do not reuse KV of shared prompt prefixes")
    c.add_argument(
        "--prefix-cache-ram-gb",
        type=float,
        default=2.0,
        metavar="GB",
        help="RAM for prefix blocks evicted from the KV pool (default 2)",
    )
    c.add_argument(
        "--prefix-cache-dir", type=Path, metavar="DIR", help="a disk tier for evicted prefix blocks"
    )
    c.add_argument(
        "--prefix-cache-disk-gb",
        type=float,
        default=10.0,
        metavar="GB",
        help="size cap of the disk tier (default 10)",
    )
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def model_name(gguf: str | None) -> str:
    if gguf is None:
        return "gemma-3-270m-demo"
    path = Path(gguf)
    return (path.stem if path.suffix == ".gguf" else path.name).lower()


def build_app(args: argparse.Namespace):
    """The model, engine and app for these arguments (what `run` serves; tests call it too)."""
    from ktx.server.app import create_app

    for flag in ("max_batch_size", "chunk_size", "max_new_tokens", "cache_lens"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1")
    if getattr(args, "models", None) is not None:
        return create_app(_directory(args), api_key=args.api_key, web=args.web)
    model = load_model(args)
    return create_app(
        make_engine(args, model, args.served_model_name or model_name(args.gguf)),
        api_key=args.api_key,
        web=args.web,
    )


def _directory(args: argparse.Namespace):
    """The models of --models DIR, none loaded yet."""
    from ktx.server.errors import RequestError
    from ktx.server.models import Models, keep_alive_seconds, memory_budget

    if args.gguf is not None or args.served_model_name:
        raise ValueError("--models serves a directory: leave out --gguf and --served-model-name")
    if not args.models.is_dir():
        raise ValueError(f"--models {args.models}: not a directory")
    if args.models_memory_gb is not None and args.models_memory_gb <= 0:
        raise ValueError("--models-memory-gb must be positive")
    try:
        keep = keep_alive_seconds(args.keep_alive, None)
    except RequestError as e:
        raise ValueError(f"--keep-alive: {e.message}") from None

    from .model_args import chat_template_source, load_options

    template = chat_template_source(args.chat_template) if args.chat_template else None  # read once

    def load(entry, on_plan):
        from ktx.core.loader import load as load_gguf

        model = load_gguf(entry.paths[0], on_plan=on_plan, **load_options(args))
        if template is not None:
            model.tokenizer.chat_templates["default"] = template
        return make_engine(args, model, entry.name)

    cap = min(args.cache_lens, args.ctx_size or args.cache_lens)
    return Models(args.models, load, memory_budget(args.models_memory_gb), keep_alive_s=keep, context_cap=cap)


def make_engine(args: argparse.Namespace, model, name: str):
    """The engine serving `model` under `name`, with the server's flags."""
    from ktx.server.engine import Engine
    from ktx.server.prefix_cache import PrefixCache

    source = Path(model.gguf.paths[0])
    stat = source.stat()
    salt = f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{model.model.embed_tokens.device}"
    cache = PrefixCache(
        salt=salt,
        enabled=not args.no_prefix_cache,
        ram_bytes=int(args.prefix_cache_ram_gb * 1e9),
        disk_dir=args.prefix_cache_dir,
        disk_bytes=int(args.prefix_cache_disk_gb * 1e9),
    )
    engine = Engine(
        model,
        model_name=name,
        max_batch_size=args.max_batch_size,
        cache_tokens=args.cache_lens,
        chunk_size=args.chunk_size,
        max_new_tokens=args.max_new_tokens,
        prefix_cache=cache,
    )
    if args.ctx_size:  # one request's context, prompt and answer together; the pool holds all of them
        engine.context = min(engine.context, args.ctx_size)
    return engine


def run(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not _loopback(args.host) and not args.api_key:
        print(
            f"ktx: warning: serving on {args.host} without --api-key: anyone who can reach this port "
            "can use the model",
            file=sys.stderr,
        )
    app = build_app(args)
    models = app.state.models
    base = f"http://{args.host}:{args.port}"
    what = (
        app.state.engine.model_name
        if app.state.engine
        else f"the models in {args.models} ({len(models.entries)})"
    )
    print(f"serving {what} at {base}/v1 (OpenAI) and {base}/api (Ollama)", file=sys.stderr)
    if args.web:
        print(f"web chat: {base}/web/", file=sys.stderr)
    from ktx.server.serving import GracefulServer

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=15,
        access_log=False,  # ktx.server logs each request once, when it ends, with its tokens
    )
    GracefulServer(config, models).run()
    return 0
