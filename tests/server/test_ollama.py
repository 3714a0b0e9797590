"""The Ollama API of `ktx serve` through the official `ollama` client, on the demo model.

Oracles: the OpenAI endpoint's greedy text for the same conversation (a cross-API check), the
tokenizer for prompt counts, the GGUF file for sizes, and Ollama's documented shapes (NDJSON
lines, integer nanosecond durations, `{"error": "..."}`).
"""

from __future__ import annotations

import json
import os
from datetime import datetime

import httpx
import ollama
import pytest
from live_server import fail_forward_step

from ktx.server.errors import RequestError
from ktx.server.protocol import chat_prompt_ids

GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def client(live):
    return ollama.Client(host=live.url, timeout=120)


@pytest.fixture(scope="module")
def name(live):
    return f"{live.engine.model_name}:latest"


@pytest.fixture(autouse=True)
def frees_its_blocks(live):
    """Every test leaves no KV block held by a request (streams closed, errors cleaned up)."""
    yield
    live.wait_idle()
    assert live.engine.stats()["kv_blocks_in_requests"] == 0


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _check_final(r, n_prompt: int) -> None:
    assert r.done is True and r.done_reason in ("stop", "length")
    assert r.prompt_eval_count == n_prompt and r.load_duration == 0
    for field in ("total_duration", "prompt_eval_duration", "eval_duration"):
        value = getattr(r, field)
        assert isinstance(value, int) and value > 0, field
    assert r.total_duration >= r.prompt_eval_duration + r.eval_duration
    assert r.created_at.endswith("Z") and datetime.fromisoformat(r.created_at.replace("Z", "+00:00"))


def test_chat_streams_pieces_then_a_final_object_and_agrees_when_not_streamed(client, live, name):
    n_prompt = len(chat_prompt_ids(live.engine.tokenizer, _user("Write a poem about the sea.")))
    options = {"num_predict": 8, **GREEDY}
    parts = list(client.chat(name, _user("Write a poem about the sea."), stream=True, options=options))
    assert all(p.done is False and p.message.role == "assistant" for p in parts[:-1])
    final = parts[-1]
    _check_final(final, n_prompt)
    assert final.done_reason == "length" and final.eval_count == 8 and final.message.content == ""
    text = "".join(p.message.content for p in parts)
    assert text.strip()
    whole = client.chat(name, _user("Write a poem about the sea."), stream=False, options=options)
    _check_final(whole, n_prompt)
    assert whole.message.content == text and whole.eval_count == 8 and whole.done_reason == "length"


def test_the_stream_is_ndjson_and_streaming_is_the_default(live, name):
    body = {"model": name, "messages": _user("Hi"), "options": {"num_predict": 4}}
    with httpx.stream("POST", f"{live.url}/api/chat", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) >= 2 and lines[-1]["done"] is True
    assert all(line["done"] is False for line in lines[:-1])
    assert lines[-1]["eval_count"] == 4 or lines[-1]["done_reason"] == "stop"


def test_greedy_is_deterministic_and_matches_the_openai_api(client, live, name):
    messages = [{"role": "system", "content": "Answer briefly."}, *_user("Name a famous painter.")]
    options = {"num_predict": 12, **GREEDY}
    first = client.chat(name, messages, options=options).message.content
    second = client.chat(name, messages, options=options).message.content
    assert first and first == second
    r = httpx.post(
        f"{live.url}/v1/chat/completions",
        json={"model": live.engine.model_name, "messages": messages, "temperature": 0, "max_tokens": 12},
        timeout=60,
    )
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == first


def test_generate_templated_is_a_one_message_chat(client, live, name):
    prompt, options = "What is 2 + 2?", {"num_predict": 10, **GREEDY}
    chat = client.chat(name, _user(prompt), options=options)
    parts = list(client.generate(name, prompt, stream=True, options=options))
    assert "".join(p.response for p in parts) == chat.message.content
    _check_final(parts[-1], chat.prompt_eval_count)
    whole = client.generate(name, prompt, options=options)
    assert whole.response == chat.message.content and whole.eval_count == chat.eval_count
    # a system prompt goes through the template before the user's
    with_system = client.generate(name, prompt, system="You are terse.", options=options)
    ids = chat_prompt_ids(
        live.engine.tokenizer, [{"role": "system", "content": "You are terse."}, *_user(prompt)]
    )
    assert with_system.prompt_eval_count == len(ids)


def test_generate_raw_continues_the_text_as_given(client, live, name):
    prompt, options = "The capital of France is", {"num_predict": 8, **GREEDY}
    parts = list(client.generate(name, prompt, raw=True, stream=True, options=options))
    text = "".join(p.response for p in parts)
    assert text.strip()
    _check_final(parts[-1], len(live.engine.tokenizer.encode(prompt)))
    whole = client.generate(name, prompt, raw=True, options=options)
    assert whole.response == text and whole.done_reason == parts[-1].done_reason
    r = httpx.post(
        f"{live.url}/v1/completions",
        json={"model": live.engine.model_name, "prompt": prompt, "temperature": 0, "max_tokens": 8},
        timeout=60,
    )
    assert r.json()["choices"][0]["text"] == text


def test_a_stop_string_ends_the_answer_right_before_it(client, name):
    messages, options = _user("List three colours."), {"num_predict": 16, **GREEDY}
    text = client.chat(name, messages, options=options).message.content
    stop = next(w for w in text.split() if len(w) >= 3 and text.find(w) > 0)
    cut = client.chat(name, messages, options={**options, "stop": [stop]})
    assert cut.message.content == text[: text.find(stop)] and cut.done_reason == "stop"
    streamed = list(client.chat(name, messages, stream=True, options={**options, "stop": [stop]}))
    assert "".join(p.message.content for p in streamed) == cut.message.content
    assert streamed[-1].done_reason == "stop"


def test_an_empty_conversation_only_loads_the_model(client, name):
    for stream in (False, True):
        r = client.chat(name, [], stream=stream)
        r = list(r)[-1] if stream else r
        assert r.done and r.done_reason == "load" and r.message.content == ""
    r = client.generate(name, "")
    assert r.done and r.done_reason == "load" and r.response == ""


def test_tags_show_ps_and_version_describe_the_model(client, live, name):
    path = live.engine.model.gguf.paths[0]
    (entry,) = client.list().models
    assert entry.model == name and entry.size == os.path.getsize(path) and len(entry.digest) == 64
    assert entry.modified_at.timestamp() == pytest.approx(os.path.getmtime(path), abs=1e-3)
    d = entry.details
    assert (d.format, d.family, d.families) == ("gguf", "gemma3", ["gemma3"])
    assert d.parameter_size == "268M" and d.quantization_level == "Q4_K_M"

    for alias in (name, live.engine.model_name):
        shown = client.show(alias)
        assert shown.details == d and shown.capabilities == ["completion", "tools"]
        assert shown.modelinfo["general.architecture"] == "gemma3"
        assert shown.modelinfo["gemma3.context_length"] == 32768
        assert shown.modelinfo["gemma3.embedding_length"] == 640
        assert shown.modelinfo["gemma3.block_count"] == 18
        assert "<start_of_turn>" in shown.template and path in shown.modelfile

    (running,) = client.ps().models
    assert running.model == name and running.digest == entry.digest and running.size_vram == 0
    assert running.expires_at.year > 2100 and running.details == d

    from ktx.core import __version__

    # Ollama's clients gate features on an Ollama version: ktx answers one, and its own beside it
    version = httpx.get(f"{live.url}/api/version").json()
    assert version == {"version": "0.12.0", "ktx_version": __version__}
    card = httpx.get(f"{live.url}/v1/models").json()["data"][0]
    assert card["meta"]["family"] == d.family and card["meta"]["quantization"] == "Q4_K_M"
    assert card["meta"]["context_length"] == min(32768, live.engine.pool.capacity)
    assert card["meta"]["size_bytes"] == entry.size


def test_num_predict_beyond_the_context_is_capped_as_ollama_does(live, monkeypatch):
    engine = live.engine
    room = min(engine.context, engine.pool.capacity) - 5
    assert engine.resolve_max_tokens(5, 10**9, "num_predict", cap=True) == room
    with pytest.raises(RequestError, match="exceeds"):  # OpenAI's max_tokens still refuses
        engine.resolve_max_tokens(5, 10**9)
    seen = []
    real = engine.resolve_max_tokens
    monkeypatch.setattr(engine, "resolve_max_tokens", lambda *a, **k: seen.append(k) or real(*a, **k))
    body = {"model": engine.model_name, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}}
    assert httpx.post(f"{live.url}/api/generate", json=body, timeout=60).status_code == 200
    assert seen and all(k.get("cap") for k in seen)  # the Ollama routes ask for the cap


def test_an_unknown_model_is_a_404(client):
    calls = [
        lambda: client.chat("llama3:8b", _user("Hi")),
        lambda: client.generate("llama3:8b", "Hi"),
        lambda: client.show("llama3:8b"),
        lambda: list(client.chat("llama3:8b", _user("Hi"), stream=True)),
    ]
    for call in calls:
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == 404 and "llama3:8b" in e.value.error


@pytest.mark.parametrize(
    "path,body,match",
    [
        ("/api/chat", "{not json", "JSON"),
        ("/api/chat", {"messages": _user("Hi")}, "model is required"),
        ("/api/chat", {"messages": _user("Hi"), "options": {"temperature": "hot"}}, "temperature"),
        ("/api/chat", {"messages": [{"role": "robot", "content": "Hi"}]}, "role"),
        ("/api/chat", {"messages": _user("Hi"), "options": {"top_p": 5}}, "top_p"),
        ("/api/chat", {"messages": _user("Hi"), "options": {"num_predict": 0}}, "num_predict"),
        ("/api/generate", {"prompt": "Hi", "stream": "maybe"}, "stream"),
        ("/api/generate", {"prompt": "def f(", "suffix": "return 1"}, "suffix"),
        ("/api/generate", {"prompt": "What is this?", "images": ["aGk="]}, "images"),
    ],
)
def test_bad_input_is_a_400_with_an_ollama_error(live, name, path, body, match):
    if isinstance(body, dict) and match != "model is required":
        body = {"model": name, **body}
    content = body if isinstance(body, str) else json.dumps(body)
    r = httpx.post(f"{live.url}{path}", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and match in error


def test_a_failure_mid_stream_is_an_error_line_the_client_raises(client, live, name, monkeypatch):
    calls = fail_forward_step(monkeypatch)
    with pytest.raises(ollama.ResponseError, match="simulated kernel failure"):
        for _ in client.chat(name, _user("def add(a, b):"), stream=True, options={"num_predict": 20}):
            pass
    calls["n"] = 0
    with pytest.raises(ollama.ResponseError, match="simulated kernel failure") as e:
        client.generate(name, "def add(a, b):", options={"num_predict": 20})
    assert e.value.status_code == 500
    monkeypatch.undo()
    assert client.chat(name, _user("Hi"), options={"num_predict": 2}).eval_count == 2


def test_a_client_that_disconnects_frees_its_blocks(live, name):
    body = {"model": name, "prompt": "Count to fifty.", "options": {"num_predict": 30}}
    with httpx.stream("POST", f"{live.url}/api/generate", json=body, timeout=60) as r:
        first = next(r.iter_lines())
        assert json.loads(first)["done"] is False
    # the autouse fixture checks that the request is gone and its blocks are back


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
@pytest.mark.parametrize("path", ["/api/chat", "/api/show", "/v1/chat/completions"])
def test_a_json_body_is_read_whatever_its_content_type(live, name, path, content_type):
    """Ollama's curl examples send no Content-Type (`curl -d` says form-urlencoded): accepted."""
    body = {"model": name, "messages": _user("Hi"), "stream": False, "options": {"num_predict": 2}}
    if path == "/v1/chat/completions":
        body = {"model": name, "messages": _user("Hi"), "max_tokens": 2}
    headers = {"content-type": content_type} if content_type else {}
    r = httpx.post(f"{live.url}{path}", content=json.dumps(body), headers=headers, timeout=60)
    assert r.status_code == 200, r.text


def test_a_body_that_is_not_an_object_says_so_plainly(live):
    r = httpx.post(f"{live.url}/api/chat", content="[1, 2]", timeout=30)
    assert r.status_code == 400 and r.json()["error"] == "the body must be a JSON object"
