"""Structured outputs and logprobs through the real clients, on a random-weight tiny model: a
JSON-schema answer at temperature 1 parses and validates every time, batched with unconstrained
requests whose tokens stay those of a lone run; Ollama's `format`; a schema that cannot be
compiled is a 400 naming it; logprobs equal log-softmax of the logits the runtime computes."""

from __future__ import annotations

import json
import threading

import httpx
import jsonschema
import ollama
import openai
import pytest
import torch
from test_openai import _messages, single_run

from ktx.core.runtime.context import Segment
from ktx.core.runtime.generate import forward_step, make_pool, prefill
from ktx.core.runtime.kv_cache import SequenceKV
from ktx.server.protocol import chat_prompt_ids

# every string and number bounded, so a random model's answer ends well inside max_tokens
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def live(tiny_live):
    return tiny_live


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}


def test_json_schema_answers_validate_every_time_beside_unconstrained_requests(client, live):
    plain = ["The quick brown fox", "def forward(self, x):"]
    expected = {t: single_run(live, t, 12) for t in plain}
    answers, texts, errors = {}, {}, []

    def constrained(seed: int) -> None:
        try:
            r = client.chat.completions.create(
                model=live.engine.model_name,
                messages=_messages(f"Describe person {seed} as JSON."),
                response_format=_schema_format(SCHEMA),
                temperature=1.0,
                seed=seed,
                max_tokens=300,
            )
            answers[seed] = r.choices[0]
        except Exception as e:
            errors.append(e)

    def unconstrained(text: str) -> None:
        r = client.chat.completions.create(
            model=live.engine.model_name, messages=_messages(text), max_tokens=12, temperature=0
        )
        texts[text] = r.choices[0].message.content

    threads = [threading.Thread(target=constrained, args=(s,)) for s in range(6)]
    threads += [threading.Thread(target=unconstrained, args=(t,)) for t in plain]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert texts == expected
    for seed, choice in answers.items():
        assert choice.finish_reason == "stop", (seed, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), SCHEMA)
    assert len({c.message.content for c in answers.values()}) > 1  # temperature 1 did sample


def test_json_object_and_streamed_json_schema(client, live):
    r = client.chat.completions.create(
        model=live.engine.model_name,
        messages=_messages("Any JSON object"),
        response_format={"type": "json_object"},
        temperature=1.0,
        seed=3,
        max_tokens=400,
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # an unbounded object may run out of tokens; what there is is JSON's beginning
        assert r.choices[0].message.content.startswith("{")
    stream = client.chat.completions.create(
        model=live.engine.model_name,
        messages=_messages("A person"),
        response_format=_schema_format(SCHEMA),
        temperature=1.0,
        seed=4,
        max_tokens=300,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), SCHEMA)


def test_ollama_format_schema_and_json(live):
    c = ollama.Client(host=live.url, timeout=120)
    for seed in (1, 2):
        r = c.chat(
            model=live.engine.model_name,
            messages=_messages("A person"),
            format=SCHEMA,
            options={"temperature": 1.0, "seed": seed, "num_predict": 300},
        )
        jsonschema.validate(json.loads(r.message.content), SCHEMA)
    r = c.generate(
        model=live.engine.model_name,
        prompt="JSON please",
        format="json",
        options={"temperature": 0, "num_predict": 400},
    )
    assert r.response.startswith("{")


def test_a_schema_that_cannot_compile_is_a_400_naming_it(live):
    body = {
        "model": live.engine.model_name,
        "messages": _messages("hi"),
        "response_format": _schema_format({"type": "object", "properties": {"a": {"type": "strnig"}}}),
    }
    r = httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"].startswith("response_format") and "strnig" in error["message"]
    body["response_format"] = {"type": "xml"}
    r = httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and "xml" in r.json()["error"]["message"]
    r = httpx.post(
        f"{live.url}/api/chat",
        json={
            "model": live.engine.model_name,
            "messages": _messages("hi"),
            "format": "yaml",
            "stream": False,
        },
        timeout=60,
    )
    assert r.status_code == 400 and "format" in r.json()["error"]


def _reference_logprobs(live, prompt: list[int], tokens: list[int]) -> list[torch.Tensor]:
    """log-softmax of the logits the runtime computes alone for each generated position."""
    live.wait_idle()
    model = live.engine.model
    pool = make_pool(model, 1024)
    seq = SequenceKV()
    logits = [prefill(model, pool, seq, prompt)]
    for t in tokens[:-1]:
        logits.append(forward_step(model, pool, [Segment(seq, seq.length, 1)], torch.tensor([t]))[0])
    pool.free(seq)
    return [torch.log_softmax(x.float(), -1) for x in logits]


def test_chat_logprobs_are_log_softmax_of_the_runtimes_logits(client, live):
    text = "Mixture-of-experts models"
    r = client.chat.completions.create(
        model=live.engine.model_name,
        messages=_messages(text),
        max_tokens=8,
        temperature=0.7,
        seed=11,
        logprobs=True,
        top_logprobs=3,
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    tok = live.engine.tokenizer
    ids = [tok.encode(e.token, add_special_tokens=False) for e in content]
    table = [bytes(e.bytes) for e in content]
    generated = [_id_of(tok, b) for b in table]
    assert all(i is not None for i in generated), ids
    prompt = chat_prompt_ids(tok, _messages(text))
    ref = _reference_logprobs(live, prompt, generated)
    for entry, token, lp in zip(content, generated, ref, strict=True):
        assert entry.logprob == pytest.approx(float(lp[token]), abs=1e-5)
        best = lp.topk(3)
        assert [a.logprob for a in entry.top_logprobs] == pytest.approx(best.values.tolist(), abs=1e-5)
        assert [_id_of(tok, bytes(a.bytes)) for a in entry.top_logprobs] == best.indices.tolist()
    assert "".join(bytes(e.bytes).decode("utf-8", "replace") for e in content) == r.choices[0].message.content


def _id_of(tok, raw: bytes) -> int | None:
    """The token id whose bytes are `raw` (a tiny vocabulary's tokens are unique byte strings)."""
    from ktx.core.runtime.grammar import token_table

    table = token_table(tok)
    ids = [i for i in range(tok.vocab_size) if table.decode_bytes([i]) == raw]
    return ids[0] if len(ids) == 1 else None


def test_completions_and_ollama_logprobs(client, live):
    r = client.completions.create(
        model=live.engine.model_name, prompt="Once upon a time", max_tokens=6, temperature=0, logprobs=2
    )
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    # greedy: the chosen token is the likeliest of its step
    for top, chosen in zip(lp.top_logprobs, lp.token_logprobs, strict=True):
        assert max(top.values()) == pytest.approx(chosen)
    c = ollama.Client(host=live.url, timeout=120)
    g = c.generate(
        model=live.engine.model_name,
        prompt="Once upon a time",
        raw=True,
        logprobs=True,
        top_logprobs=2,
        options={"temperature": 0, "num_predict": 6},
    )
    assert [e.logprob for e in g.logprobs] == pytest.approx(lp.token_logprobs, abs=1e-6)
    streamed = list(
        c.generate(
            model=live.engine.model_name,
            prompt="Once upon a time",
            raw=True,
            logprobs=True,
            stream=True,
            options={"temperature": 0, "num_predict": 6},
        )
    )
    got = [e.logprob for part in streamed for e in part.logprobs or []]
    assert got == pytest.approx(lp.token_logprobs, abs=1e-6)
