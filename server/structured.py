"""Structured outputs: OpenAI's `response_format` and Ollama's `format` as a grammar the engine
decodes inside (core/runtime/grammar.py).

    {"type": "json_object"}                                   any JSON object
    {"type": "json_schema", "json_schema": {"schema": {...}}} JSON valid against the schema
    Ollama "format": "json" | {...a JSON schema...}

The schema is enforced whether or not `strict` is set (a schema the model may ignore is of no
use to a client that parses the answer). A schema llguidance cannot compile is a 400 that says
why. The token table behind a grammar takes seconds to build for a large vocabulary the first
time, so grammars are compiled off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ktx.core.runtime.grammar import Grammar, GrammarError

from .errors import RequestError


async def compile_json(tokenizer, schema: dict[str, Any] | None, param: str) -> Grammar:
    try:
        return await asyncio.to_thread(Grammar.json_schema, tokenizer, schema)
    except GrammarError as e:
        raise RequestError(f"{param}: {e}", param=param) from None


async def openai_grammar(tokenizer, response_format: dict[str, Any] | None) -> Grammar | None:
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return await compile_json(tokenizer, None, "response_format")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise RequestError("response_format.json_schema must be an object", param="response_format")
        schema = spec.get("schema", {})  # OpenAI: no schema means any JSON
        if not isinstance(schema, dict):
            raise RequestError(
                "response_format.json_schema.schema must be an object", param="response_format"
            )
        return await compile_json(tokenizer, schema or None, "response_format.json_schema.schema")
    raise RequestError(
        f"response_format.type {kind!r} is not supported (text, json_object, json_schema)",
        param="response_format",
    )


async def ollama_grammar(tokenizer, fmt: str | dict[str, Any] | None) -> Grammar | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return await compile_json(tokenizer, None, "format")
    if isinstance(fmt, dict):
        return await compile_json(tokenizer, fmt, "format")
    raise RequestError(f'format must be "json" or a JSON schema, got {fmt!r}')
