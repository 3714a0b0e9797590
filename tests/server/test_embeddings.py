"""Embeddings through OpenAI's and Ollama's clients, on a tiny model made at test time: each vector
is the model's final hidden states mean-pooled and L2-normalised, equal to transformers' float32
forward of the same weights; deterministic, independent of what it is batched with; the options
ktx cannot honour are 400s."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import ollama
import openai
import pytest
import torch
from hf_oracle import hf_model_on_gguf
from live_server import start_server
from tiny_models import make_tiny

from ktx.core.convert.hf_to_gguf import convert_hf

TEXTS = ["The quick brown fox", "Mixture-of-experts models route every token", "def forward(self, x):"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("embed")
    hf = make_tiny("qwen3moe", d / "hf")
    return hf, convert_hf(hf, d / "m.gguf", "f32", progress=False).path


@pytest.fixture(scope="module")
def live(model_dir):
    srv = start_server("--gguf", str(model_dir[1]), "--max-batch-size", "4", "--cache-lens", "512")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _oracle(model_dir, ids: list[int]) -> np.ndarray:
    hf = hf_model_on_gguf(model_dir[0], model_dir[1], "qwen3moe")
    with torch.no_grad():
        h = hf(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]  # after the final norm
    v = h.double().mean(0)
    return (v / v.norm()).numpy()


def test_openai_embeddings_equal_transformers_pooled_states(client, live, model_dir):
    r = client.embeddings.create(model=live.engine.model_name, input=TEXTS)
    assert [d.index for d in r.data] == [0, 1, 2]
    tok = live.engine.tokenizer
    assert r.usage.prompt_tokens == sum(len(tok.encode(t)) for t in TEXTS)
    for text, d in zip(TEXTS, r.data, strict=True):
        v = np.array(d.embedding)
        assert len(v) == live.engine.model.config.hidden_size
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-6)
        assert np.abs(v - _oracle(model_dir, tok.encode(text))).max() < 1e-4
    alone = client.embeddings.create(model=live.engine.model_name, input=TEXTS[1]).data[0].embedding
    assert alone == r.data[1].embedding  # bit for bit, whatever it is batched with
    again = client.embeddings.create(model=live.engine.model_name, input=TEXTS)
    assert [d.embedding for d in again.data] == [d.embedding for d in r.data]
    ids = tok.encode(TEXTS[0])
    by_ids = client.embeddings.create(model=live.engine.model_name, input=[ids]).data[0].embedding
    assert by_ids == r.data[0].embedding


def test_base64_and_refusals(live):
    url, name = f"{live.url}/v1/embeddings", live.engine.model_name
    floats = httpx.post(url, json={"model": name, "input": "hi"}, timeout=60).json()["data"][0]["embedding"]
    packed = httpx.post(url, json={"model": name, "input": "hi", "encoding_format": "base64"}, timeout=60)
    got = np.frombuffer(base64.b64decode(packed.json()["data"][0]["embedding"]), "<f4")
    assert np.array_equal(got, np.array(floats, np.float32))
    r = httpx.post(url, json={"model": name, "input": "hi", "dimensions": 8}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "dimensions"
    r = httpx.post(url, json={"model": name, "input": "word " * 600}, timeout=60)
    assert r.status_code == 400 and "context" in r.json()["error"]["message"]
    r = httpx.post(url, json={"model": "nope", "input": "hi"}, timeout=60)
    assert r.status_code == 404


def test_ollama_embed_and_embeddings(client, live):
    c = ollama.Client(host=live.url, timeout=120)
    name = live.engine.model_name
    r = c.embed(model=name, input=TEXTS[:2])
    ref = client.embeddings.create(model=name, input=TEXTS[:2])
    assert [list(v) for v in r.embeddings] == [d.embedding for d in ref.data]
    assert r.prompt_eval_count == ref.usage.prompt_tokens
    old = c.embeddings(model=name, prompt=TEXTS[0])
    assert list(old.embedding) == ref.data[0].embedding
    long = "word " * 600  # longer than --cache-lens: Ollama cuts it by default, refuses it on request
    assert len(c.embed(model=name, input=long).embeddings[0]) == live.engine.model.config.hidden_size
    with pytest.raises(ollama.ResponseError):
        c.embed(model=name, input=long, truncate=False)


def test_embeddings_between_the_steps_of_running_requests(client, live):
    """A batch of inputs is embedded one input per scheduler step: a request running meanwhile
    gives its lone-run text, and the vectors are those of a quiet server."""
    import threading

    from test_openai import single_run

    quiet = [
        d.embedding for d in client.embeddings.create(model=live.engine.model_name, input=TEXTS * 3).data
    ]
    expected = single_run(live, "The quick brown fox", 24)
    got = {}

    def chat() -> None:
        r = client.chat.completions.create(
            model=live.engine.model_name,
            messages=[{"role": "user", "content": "The quick brown fox"}],
            max_tokens=24,
            temperature=0,
        )
        got["text"] = r.choices[0].message.content

    t = threading.Thread(target=chat)
    t.start()
    busy = [d.embedding for d in client.embeddings.create(model=live.engine.model_name, input=TEXTS * 3).data]
    t.join()
    assert busy == quiet and got["text"] == expected


def test_empty_inputs_are_400s(live):
    for body in ({"input": []}, {"input": [[]]}, {"input": ""}):
        r = httpx.post(
            f"{live.url}/v1/embeddings", json={"model": live.engine.model_name, **body}, timeout=60
        )
        assert r.status_code == 400, (body, r.text)
