"""`ktx serve --models DIR`: every GGUF in the directory listed with its metadata, loaded when a
request names it, the least recently used idle model unloaded when the memory budget needs room,
a model that cannot fit refused with its memory plan, keep_alive honoured, Ollama's model
management answered with what to do instead."""

from __future__ import annotations

import shutil
import time

import httpx
import ollama
import openai
import pytest
from live_server import start_server
from tiny_models import make_tiny

from ktx.core.convert.hf_to_gguf import convert_hf

GIB = 1 << 30


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    d = tmp_path_factory.mktemp("models_dir")
    work = tmp_path_factory.mktemp("models_src")
    convert_hf(make_tiny("qwen3moe", work / "a"), d / "Tiny-MoE.gguf", "q8_0", progress=False)
    sub = d / "dense"
    sub.mkdir()
    convert_hf(make_tiny("llama", work / "b"), sub / "model.gguf", "f16", progress=False)
    (d / "broken.gguf").write_bytes(b"GGUF but not really")
    (d / "notes.txt").write_text("not a model")
    srv = start_server(
        "--models", str(d), "--cache-lens", "1024", "--max-new-tokens", "8", "--keep-alive", "-1"
    )
    yield srv
    srv.stop()


@pytest.fixture
def models(live):
    m = live.app.state.models
    yield m
    m.budget = {}  # each test sets its own


def _chat(live, model: str, **kw) -> openai.types.chat.ChatCompletion:
    c = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)
    return c.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2, **kw
    )


def _loaded(live) -> list[str]:
    return sorted(m["name"] for m in httpx.get(f"{live.url}/api/ps", timeout=30).json()["models"])


def test_the_directory_is_listed_with_metadata_before_anything_loads(live):
    cards = {m["id"]: m for m in httpx.get(f"{live.url}/v1/models", timeout=30).json()["data"]}
    assert set(cards) == {"tiny-moe", "dense"}  # broken.gguf is skipped (logged), notes.txt ignored
    assert cards["tiny-moe"]["meta"]["family"] == "qwen3moe" and cards["dense"]["meta"]["family"] == "llama"
    assert cards["dense"]["meta"]["quantization"] == "F16"
    # the context a request will get (--cache-lens 1024), not the file's 4096
    assert {c["meta"]["context_length"] for c in cards.values()} == {1024}
    tags = {m["name"]: m for m in httpx.get(f"{live.url}/api/tags", timeout=30).json()["models"]}
    assert set(tags) == {"tiny-moe:latest", "dense:latest"}
    assert tags["tiny-moe:latest"]["details"]["quantization_level"] == "Q8_0"
    shown = ollama.Client(host=live.url).show("dense")
    assert shown.modelinfo["general.architecture"] == "llama"


def test_load_on_demand_and_lru_unload_under_a_budget(live, models):
    for entry in models.loaded():
        models._unload(entry)
    _chat(live, "tiny-moe")
    assert _loaded(live) == ["tiny-moe:latest"]
    _chat(live, "dense")
    assert _loaded(live) == ["dense:latest", "tiny-moe:latest"]  # the default budget holds both
    plans = {e.name: e.plan.per_device()["cpu"] for e in models.loaded()}
    for entry in models.loaded():
        models._unload(entry)
    models.budget = {"cpu": max(plans.values()) + min(plans.values()) // 2}  # room for one
    _chat(live, "tiny-moe:latest")
    _chat(live, "dense")  # tiny-moe, idle, is unloaded to make room
    assert _loaded(live) == ["dense:latest"]
    models.budget = {"cpu": min(plans.values()) // 2}
    r = httpx.post(
        f"{live.url}/v1/chat/completions",
        json={"model": "tiny-moe", "messages": [{"role": "user", "content": "hi"}]},
        timeout=60,
    )
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "--models-memory-gb" in message and "cpu RAM" in message  # with the plan's own lines
    assert _loaded(live) == ["dense:latest"]  # a refused model unloads nothing


def test_a_model_serving_requests_is_not_unloaded(live, models):
    _chat(live, "dense")
    plans = {e.name: e.plan.per_device()["cpu"] for e in models.loaded()}
    models.budget = {"cpu": plans["dense"] + 1}  # nothing beside it
    # the random model must not end its answer early (an end token sampled after a few tokens
    # left it idle before the next request came, on a busy machine): its end tokens are banned
    (dense,) = (e for e in models.loaded() if e.name == "dense")
    no_end = {str(t): -100 for t in dense.engine.eos}
    c = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)
    stream = c.chat.completions.create(
        model="dense",
        messages=[{"role": "user", "content": "count"}],
        max_tokens=900,
        stream=True,
        logit_bias=no_end,
    )
    next(iter(stream))  # dense is busy now
    r = httpx.post(
        f"{live.url}/v1/chat/completions",
        json={"model": "tiny-moe", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        timeout=60,
    )
    stream.close()
    assert r.status_code == 503 and "try again" in r.json()["error"]["message"]
    deadline = time.monotonic() + 30
    while not all(e.engine.idle() for e in models.loaded()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _chat(live, "tiny-moe").choices  # dense, idle again, made room
    assert _loaded(live) == ["tiny-moe:latest"]


def test_keep_alive(live, models):
    c = ollama.Client(host=live.url, timeout=120)
    c.generate(model="dense", prompt="", keep_alive="10m")  # Ollama's preload
    ps = {m["name"]: m for m in httpx.get(f"{live.url}/api/ps", timeout=30).json()["models"]}
    assert "dense:latest" in ps and not ps["dense:latest"]["expires_at"].startswith("2999")
    r = c.generate(model="dense", prompt="", keep_alive=0)
    assert r.done_reason == "unload"
    loading = c.generate(model="dense", prompt="Hi", options={"num_predict": 1}, keep_alive="10m")
    loaded = c.generate(model="dense", prompt="Hi", options={"num_predict": 1}, keep_alive="10m")
    assert loading.load_duration > loaded.load_duration  # the first waited for the load
    c.generate(model="dense", prompt="", keep_alive=0)
    assert "dense:latest" not in _loaded(live)
    c.generate(model="dense", prompt="Hi", options={"num_predict": 1}, keep_alive=0)  # unloaded once done
    deadline = time.monotonic() + 10
    while "dense:latest" in _loaded(live) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "dense:latest" not in _loaded(live)
    with pytest.raises(ollama.ResponseError):
        c.generate(model="dense", prompt="Hi", keep_alive="soon")


def test_unknown_models_and_model_management(live):
    r = httpx.post(
        f"{live.url}/api/chat",
        json={"model": "llama3:8b", "messages": [{"role": "user", "content": "x"}]},
        timeout=30,
    )
    assert r.status_code == 404 and "dense" in r.json()["error"] and "tiny-moe" in r.json()["error"]
    for route in ("pull", "push", "create", "copy"):
        r = httpx.post(f"{live.url}/api/{route}", json={"model": "llama3"}, timeout=30)
        assert r.status_code == 501 and "--models" in r.json()["error"]
    r = httpx.request("DELETE", f"{live.url}/api/delete", json={"model": "dense"}, timeout=30)
    assert r.status_code == 501 and "does not delete" in r.json()["error"]


def test_a_file_copied_in_while_serving_is_found(live, tmp_path):
    d = live.app.state.models.directory
    src = next(p for p in d.iterdir() if p.name.lower() == "tiny-moe.gguf")
    shutil.copy(src, d / "Second.gguf")
    try:
        assert "second" in [m["id"] for m in httpx.get(f"{live.url}/v1/models", timeout=30).json()["data"]]
    finally:
        (d / "Second.gguf").unlink()
