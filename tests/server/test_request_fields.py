"""Request fields: what ktx honours beyond the basics (logit_bias, the deprecated functions /
function_call, reasoning_effort), unknown fields ignored, and the fields it knows and cannot
honour refused with a 400 that names them."""

from __future__ import annotations

import httpx
import pytest

ASK = [{"role": "user", "content": "Say something"}]


@pytest.fixture(scope="module")
def live(tiny_live):
    return tiny_live


def _post(live, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{live.url}{path}", json={"model": live.engine.model_name, **body}, timeout=120)


def _first_token(live, **extra) -> int:
    r = _post(
        live,
        "/v1/chat/completions",
        {"messages": ASK, "max_tokens": 1, "temperature": 0, "logprobs": True, **extra},
    )
    assert r.status_code == 200, r.text
    entry = r.json()["choices"][0]["logprobs"]["content"][0]
    from ktx.core.runtime.grammar import token_table

    table = token_table(live.engine.tokenizer)
    raw = bytes(entry["bytes"])
    return next(i for i in range(live.engine.tokenizer.vocab_size) if table.decode_bytes([i]) == raw)


def test_logit_bias_moves_greedy_choices(live):
    greedy = _first_token(live)
    assert _first_token(live, logit_bias={str(greedy): -100}) != greedy
    target = 300 if greedy != 300 else 301
    assert _first_token(live, logit_bias={str(target): 100}) == target
    r = _post(live, "/v1/chat/completions", {"messages": ASK, "logit_bias": {"tok": 1}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "logit_bias"


def test_deprecated_functions_are_read_as_tools(live):
    fn = {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["a"],
            "additionalProperties": False,
        },
    }
    r = _post(
        live,
        "/v1/chat/completions",
        {"messages": ASK, "functions": [fn], "function_call": {"name": "add"}, "max_tokens": 200, "seed": 3},
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert (
        choice["finish_reason"] == "tool_calls"
        and choice["message"]["tool_calls"][0]["function"]["name"] == "add"
    )


def test_unknown_fields_pass_and_known_unsupported_ones_are_refused(live):
    ok = _post(
        live,
        "/v1/chat/completions",
        {
            "messages": ASK,
            "max_tokens": 1,
            "user": "u",
            "metadata": {"a": "b"},
            "store": False,
            "reasoning_effort": "low",
        },
    )
    assert ok.status_code == 200
    refused = [
        ("/v1/chat/completions", {"messages": ASK, "audio": {"voice": "alloy"}}, "audio"),
        ("/v1/chat/completions", {"messages": ASK, "modalities": ["text", "audio"]}, "modalities"),
        ("/v1/chat/completions", {"messages": ASK, "web_search_options": {}}, "web_search_options"),
        ("/v1/completions", {"prompt": "x", "echo": True}, "echo"),
        ("/v1/completions", {"prompt": "x", "suffix": "y"}, "suffix"),
        ("/v1/completions", {"prompt": "x", "best_of": 3}, "best_of"),
        ("/v1/embeddings", {"input": "x", "dimensions": 4}, "dimensions"),
        ("/v1/chat/completions", {"messages": ASK, "top_logprobs": 2}, "top_logprobs"),
    ]
    for path, body, param in refused:
        r = _post(live, path, body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (path, body, r.text)
