"""The OpenAI API of `ktx serve` through the official `openai` client, on the demo model.

Oracles: the runtime's own single-request generation (`prefill_and_generate`, greedy) for
the tokens; the tokenizer for usage counts; the error-object shape OpenAI documents.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
from live_server import fail_forward_step

from ktx.core.runtime.generate import prefill_and_generate
from ktx.server.protocol import chat_prompt_ids

PROMPTS = [
    "Write a poem about the sea.",
    "The capital of France is",
    "List three colours.",
    "def add(a, b):",
    "Once upon a time",
    "Explain gravity to a child.",
    "What is 2 + 2?",
    "Name a famous painter.",
]


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _messages(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def single_run(live, text: str, n: int) -> str:
    """The runtime alone, one request, greedy: what the server must reproduce in any batch."""
    live.wait_idle()  # the scheduler thread is parked: the model is free for this thread
    engine = live.engine
    ids = chat_prompt_ids(engine.tokenizer, _messages(text))
    return prefill_and_generate(engine.model, engine.tokenizer, ids, n).text


def test_models_lists_the_served_model(client, live):
    models = client.models.list().data
    assert [m.id for m in models] == [live.engine.model_name]
    assert client.models.retrieve(live.engine.model_name).id == live.engine.model_name


def test_chat_non_streaming_matches_a_single_run_and_counts_usage(client, live):
    r = client.chat.completions.create(
        model=live.engine.model_name, messages=_messages(PROMPTS[1]), max_tokens=12, temperature=0
    )
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == single_run(live, PROMPTS[1], 12)
    prompt = len(chat_prompt_ids(live.engine.tokenizer, _messages(PROMPTS[1])))
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (prompt, 12)
    assert r.usage.total_tokens == prompt + 12 and r.choices[0].finish_reason == "length"


def test_streaming_chunks_usage_and_done(client, live):
    stream = client.chat.completions.create(
        model=live.engine.model_name,
        messages=_messages(PROMPTS[0]),
        max_completion_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == single_run(live, PROMPTS[0], 10)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_max_completion_tokens_wins_over_max_tokens(client, live):
    r = client.chat.completions.create(
        model=live.engine.model_name,
        messages=_messages(PROMPTS[2]),
        max_tokens=20,
        max_completion_tokens=3,
        temperature=0,
    )
    assert r.usage.completion_tokens == 3


def test_stop_sequence_ends_the_answer_before_it(client, live):
    full = single_run(live, PROMPTS[4], 32)
    words = full.split()
    assert len(words) > 3, full
    stop = words[2]
    start = full.index(stop)
    r = client.chat.completions.create(
        model=live.engine.model_name,
        messages=_messages(PROMPTS[4]),
        max_tokens=32,
        temperature=0,
        stop=[stop],
    )
    assert r.choices[0].message.content == full[:start]
    assert r.choices[0].finish_reason == "stop"


def test_legacy_completions_and_n_choices_with_seeds(client, live):
    r = client.completions.create(
        model=live.engine.model_name, prompt="The sky is", max_tokens=6, temperature=0
    )
    ids = live.engine.tokenizer.encode("The sky is")
    live.wait_idle()
    expected = prefill_and_generate(live.engine.model, live.engine.tokenizer, ids, 6).text
    assert r.choices[0].text == expected and r.usage.prompt_tokens == len(ids)
    a = client.completions.create(
        model=live.engine.model_name, prompt="The sky is", max_tokens=8, temperature=1.0, seed=7, n=3
    )
    b = client.completions.create(
        model=live.engine.model_name, prompt="The sky is", max_tokens=8, temperature=1.0, seed=7, n=3
    )
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # seeded: reproducible
    assert sorted(c.index for c in a.choices) == [0, 1, 2] and a.usage.completion_tokens == 24
    assert len({c.text for c in a.choices}) > 1  # each choice its own seed


def test_sixteen_concurrent_streams_give_the_single_run_tokens_and_free_the_pool(client, live):
    texts = [PROMPTS[i % len(PROMPTS)] + (" " + "again" * (i // len(PROMPTS))) for i in range(16)]
    expected = {t: single_run(live, t, 24) for t in set(texts)}
    got: dict[int, str] = {}
    errors = []

    def run(i: int) -> None:
        try:
            stream = client.chat.completions.create(
                model=live.engine.model_name,
                messages=_messages(texts[i]),
                max_tokens=24,
                temperature=0,
                stream=True,
            )
            got[i] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        except Exception as e:  # reported below, with the others
            errors.append(e)

    batch_sizes = live.engine.metrics.batch_size
    before = batch_sizes._sum.get()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors
    assert {i: got[i] for i in range(16)} == {i: expected[texts[i]] for i in range(16)}
    assert batch_sizes._sum.get() - before > 0
    live.wait_idle()
    assert live.engine.stats()["kv_blocks_in_requests"] == 0


def test_a_client_that_disconnects_frees_its_blocks(live, monkeypatch):
    finished = live.engine.metrics.finished.labels("cancelled")
    before = finished._value.get()
    monkeypatch.setattr(live.engine, "eos", set())  # only the client's leaving ends it
    body = {"messages": _messages(PROMPTS[5]), "max_tokens": 2000, "stream": True}
    with httpx.stream("POST", f"{live.url}/v1/chat/completions", json=body, timeout=60) as r:
        for i, _ in enumerate(r.iter_lines()):
            if i > 6:
                break  # leave mid-stream
    deadline = time.monotonic() + 30
    while finished._value.get() == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert finished._value.get() == before + 1
    live.wait_idle()
    assert live.engine.stats()["kv_blocks_in_requests"] == 0


def test_prefix_cache_skips_the_shared_prefill(client, live):
    long = "Here is a long document about ships and harbours. " * 30
    first = client.chat.completions.create(
        model=live.engine.model_name, messages=_messages(long + "Summarise it."), max_tokens=6, temperature=0
    )
    second = client.chat.completions.create(
        model=live.engine.model_name, messages=_messages(long + "Summarise it."), max_tokens=6, temperature=0
    )
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens - 64 and cached % 64 == 0  # whole blocks but the last
    assert second.choices[0].message.content == first.choices[0].message.content
    assert f"ktx_prefix_cache_hit_tokens_total {float(cached)}" in httpx.get(f"{live.url}/metrics").text


BAD = [
    ("malformed JSON", b'{"messages": [', 400, None),
    ("no body", b"", 400, None),
    ("messages not a list", {"messages": "hi"}, 400, "messages"),
    ("empty messages", {"messages": []}, 400, "messages"),
    ("unknown role", {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role"),
    ("max_tokens a string", {"messages": _messages("x"), "max_tokens": "many"}, 400, "max_tokens"),
    ("max_tokens huge", {"messages": _messages("x"), "max_tokens": 10**9}, 400, "max_tokens"),
    ("temperature negative", {"messages": _messages("x"), "temperature": -1}, 400, "temperature"),
    ("n zero", {"messages": _messages("x"), "n": 0}, 400, "n"),
    ("five stops", {"messages": _messages("x"), "stop": list("abcde")}, 400, "stop"),
    ("image part", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, None),
    ("unknown model", {"model": "gpt-9", "messages": _messages("x")}, 404, "model"),
    ("prompt over the context", {"messages": _messages("word " * 17000)}, 400, "messages"),
]


@pytest.mark.parametrize("body,status,param", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_gets_an_openai_error_object(live, body, status, param):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(
        f"{live.url}/v1/chat/completions", headers={"content-type": "application/json"}, timeout=60, **kwargs
    )
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    assert "Traceback" not in r.text


def test_unknown_route_and_wrong_method_are_error_objects(live):
    assert httpx.get(f"{live.url}/v1/nothing").json()["error"]["type"] == "not_found_error"
    assert httpx.get(f"{live.url}/v1/chat/completions").status_code == 405


def test_a_failure_mid_stream_is_an_error_event_the_client_raises(client, live, monkeypatch):
    fail_forward_step(monkeypatch)
    stream = client.chat.completions.create(
        model=live.engine.model_name, messages=_messages(PROMPTS[3]), max_tokens=20, stream=True
    )
    with pytest.raises(openai.APIError, match="simulated kernel failure"):
        for _ in stream:
            pass
    monkeypatch.undo()
    live.wait_idle()
    assert live.engine.stats()["kv_blocks_in_requests"] == 0
    # and the server goes on serving
    r = client.chat.completions.create(model=live.engine.model_name, messages=_messages("Hi"), max_tokens=2)
    assert r.usage.completion_tokens == 2


def test_health_and_metrics(client, live):
    client.chat.completions.create(model=live.engine.model_name, messages=_messages("Hi"), max_tokens=3)
    health = httpx.get(f"{live.url}/health").json()
    assert health["status"] == "ok" and health["kv_blocks_total"] == 16384 // 64
    text = httpx.get(f"{live.url}/metrics").text
    for name in (
        "ktx_requests_total",
        "ktx_generated_tokens_total",
        "ktx_prompt_tokens_total",
        "ktx_time_to_first_token_seconds_bucket",
        "ktx_inter_token_latency_seconds_bucket",
        "ktx_batch_size_bucket",
        "ktx_kv_blocks_used",
        "ktx_prefix_cache_hit_tokens_total",
    ):
        assert name in text, name


def test_requests_during_shutdown_get_503_not_a_cut_stream(live):
    live.engine._drain = True  # what shutdown sets first
    try:
        for stream in (False, True):
            body = {"messages": _messages("Hi"), "max_tokens": 2, "stream": stream}
            r = httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=30)
            assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    finally:
        live.engine._drain = False


def test_a_non_streaming_client_that_leaves_cancels_its_generation(live, monkeypatch):
    finished = live.engine.metrics.finished.labels("cancelled")
    before = finished._value.get()
    # no end-of-sequence token ends it first (the request samples; an early EOS, rare but
    # possible, would answer before the client leaves): only the client's leaving can
    monkeypatch.setattr(live.engine, "eos", set())
    body = {"messages": _messages(PROMPTS[6]), "max_tokens": 3000}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{live.url}/v1/chat/completions", json=body, timeout=1.5)
    deadline = time.monotonic() + 30
    while finished._value.get() == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert finished._value.get() == before + 1  # not 3000 tokens later
    live.wait_idle()
    assert live.engine.stats()["kv_blocks_in_requests"] == 0


def test_a_request_whose_sampling_fails_ends_alone(client, live, monkeypatch):
    # a sampler error (settings that pass validation but break sampling) must not fail the
    # other requests of the batch
    from ktx.core.runtime import sampler as sampler_mod

    real = sampler_mod.Sampler.sample

    def picky(self, logits, *args, **kwargs):
        if self.params.seed == 666:
            raise ValueError("nothing to sample")
        return real(self, logits, *args, **kwargs)

    monkeypatch.setattr(sampler_mod.Sampler, "sample", picky)
    results = {}

    def run(seed):
        try:
            r = client.chat.completions.create(
                model=live.engine.model_name, messages=_messages("Hi"), max_tokens=8, seed=seed
            )
            results[seed] = r.usage.completion_tokens
        except openai.APIError as e:
            results[seed] = e

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 666, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results[1] == 8 and results[2] == 8
    assert isinstance(results[666], openai.APIError) and "sampling failed" in str(results[666])


def test_each_request_is_one_log_line_when_it_ends_with_its_tokens(client, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="ktx.server")
    stream = client.chat.completions.create(
        model=client.models.list().data[0].id, messages=_messages("Hi"), max_tokens=5, stream=True
    )
    chunks = list(stream)

    def logged():
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ktx.server"]
        return lines, [line for line in lines if line["path"] == "/v1/chat/completions"]

    # the line is written once the server has sent the stream's end, which the client may read first
    deadline = time.monotonic() + 30
    while not logged()[1] and time.monotonic() < deadline:
        time.sleep(0.05)
    lines, chat = logged()
    assert len(chat) == 1, lines  # once, at the end of the stream
    line = chat[0]
    answered = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert line["status"] == 200 and line["prompt_tokens"] > 0
    assert 1 <= line["completion_tokens"] <= 5 and answered <= line["completion_tokens"]
    assert line["ttft_ms"] > 0 and line["finish"] in (["length"], ["stop"])
