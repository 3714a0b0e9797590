"""Operating `ktx serve`: the API key, the warning for open binds, graceful shutdown, and a
schema fuzzer (schemathesis) that must find no 5xx on any route of the OpenAPI schema."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from live_server import start_server

from ktx.core.cli import serve


@pytest.fixture(scope="module")
def keyed(demo_gguf):
    srv = start_server("--api-key", "sekret", "--max-new-tokens", "4")
    yield srv
    srv.stop()


def test_api_key_guards_every_route_but_health(keyed):
    assert httpx.get(f"{keyed.url}/health").status_code == 200
    for path in ("/v1/models", "/metrics", "/api/tags"):
        r = httpx.get(f"{keyed.url}{path}")
        assert r.status_code == 401, path
        body = r.json()
        message = body["error"] if path.startswith("/api/") else body["error"]["message"]
        assert "API key" in message
    wrong = httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = httpx.get(f"{keyed.url}/v1/models", headers={"Authorization": "Bearer sekret"})
    assert ok.status_code == 200 and ok.json()["data"]


def test_open_bind_without_a_key_warns(monkeypatch, capsys):
    assert serve._loopback("127.0.0.1") and serve._loopback("::1") and serve._loopback("localhost")
    assert not serve._loopback("0.0.0.0") and not serve._loopback("192.168.1.5")

    class FakeApp:
        class state:
            models = None

            class engine:
                model_name = "m"

    monkeypatch.setattr(serve, "build_app", lambda args: FakeApp())
    monkeypatch.setattr("ktx.server.serving.GracefulServer.run", lambda self: None)
    from ktx.core.cli.main import main

    assert main(["serve", "--host", "0.0.0.0", "--api-key", ""]) == 0
    assert "without --api-key" in capsys.readouterr().err
    assert main(["serve", "--host", "0.0.0.0", "--api-key", "k"]) == 0
    assert "without --api-key" not in capsys.readouterr().err


def test_graceful_shutdown_finishes_the_request_in_flight(demo_gguf):
    srv = start_server("--max-new-tokens", "4")
    lines: list[str] = []
    started = threading.Event()

    def stream() -> None:
        body = {
            "messages": [{"role": "user", "content": "Count to fifty."}],
            "max_tokens": 40,
            "stream": True,
        }
        with httpx.stream("POST", f"{srv.url}/v1/chat/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                lines.append(line)
                started.set()

    t = threading.Thread(target=stream)
    t.start()
    assert started.wait(60)
    srv.stop()  # SIGTERM's path: stop accepting, let the stream end, then stop the engine
    t.join(timeout=60)
    assert [line for line in lines if line][-1] == "data: [DONE]"
    assert not srv.thread.is_alive() and not srv.engine._thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/health", timeout=2)


def _stream_through_shutdown(srv, max_tokens: int, before_stop=lambda: None) -> list[str]:
    """Streams a long completion, stops the server once it has begun (after `before_stop()`);
    -> the stream's lines, as the client got them."""
    srv.engine.eos = set()  # a sampled end-of-sequence token would end the stream first
    lines: list[str] = []
    started = threading.Event()

    def stream() -> None:
        body = {"prompt": "Count to a thousand:", "max_tokens": max_tokens, "stream": True}
        with httpx.stream("POST", f"{srv.url}/v1/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    started.set()

    t = threading.Thread(target=stream)
    t.start()
    assert started.wait(60)
    before_stop()
    srv.stop()
    t.join(timeout=60)
    assert not srv.thread.is_alive() and not srv.engine._thread.is_alive()
    return lines


def test_shutdown_ends_a_stream_it_cannot_wait_for_with_a_finish_reason(demo_gguf):
    # 2 s of grace (the engine ends requests after 0.5 s) against 2,000 tokens: no machine
    # finishes in time, so the stream must end as a whole answer, cut at its tokens so far
    lines = _stream_through_shutdown(start_server("--max-new-tokens", "4", graceful_s=2.5), 2000)
    assert lines[-1] == "data: [DONE]", lines[-3:]
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    finish = [e["choices"][0]["finish_reason"] for e in events if e.get("choices")]
    assert finish[-1] == "length" and all(f is None for f in finish[:-1])
    assert len(finish) < 2000  # ended early, not run to its budget


@pytest.fixture(scope="module")
def fuzz_target(demo_gguf):
    srv = start_server("--max-new-tokens", "2", "--cache-lens", "4096")
    yield srv
    srv.stop()


# fields that would make a fuzzed request generate for minutes; their validation is fuzzed
# all the same (a value over the cap is replaced only when it is a plausible number)
_CAPS = {"max_tokens": 3, "max_completion_tokens": 3, "n": 2}


def _capped(body):
    if isinstance(body, dict):
        # a random model name is a 404 before anything else is looked at (tested elsewhere):
        # without it the fuzzer reaches the generation path
        body.pop("model", None)
        for key, cap in _CAPS.items():
            value = body.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > cap:
                body[key] = cap
        options = body.get("options")
        value = options.get("num_predict") if isinstance(options, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            options["num_predict"] = min(value, 3)
    return body


def test_schema_fuzzing_finds_no_server_errors(fuzz_target):
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{fuzz_target.url}/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models"} <= paths
    failures = []
    statuses: dict[str, set[int]] = {}

    def fuzz(op) -> None:
        @given(case=op.as_strategy())
        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def check(case):
            case.body = _capped(case.body) if case.body is not None else None
            r = case.call(base_url=fuzz_target.url, timeout=60)
            statuses.setdefault(f"{op.method.upper()} {op.path}", set()).add(r.status_code)
            if r.status_code >= 500:
                failures.append(
                    f"{op.method.upper()} {op.path}: {r.status_code} {r.text[:200]} for {case.body!r}"
                )

        check()

    import torch

    # loading set flush-to-zero on this thread (the model's speed); hypothesis needs subnormals
    torch.set_flush_denormal(False)
    try:
        for op in operations:
            fuzz(op)
    finally:
        torch.set_flush_denormal(True)
    assert not failures, "\n".join(failures[:5])
    # the fuzzer got past validation too: generation ran for valid bodies (chat bodies mostly
    # meet the demo's strict Gemma template, which refuses roles out of turn: a 400)
    assert 200 in statuses["POST /v1/completions"], statuses
    fuzz_target.wait_idle(60)
    assert fuzz_target.engine.stats()["kv_blocks_in_requests"] == 0


def test_shutdown_waits_for_a_step_slower_than_its_grace(demo_gguf, monkeypatch):
    """A step that outlasts uvicorn's whole grace (a slow machine): the stream still ends whole."""
    import ktx.server.engine as engine_mod

    real = engine_mod.forward_step

    def slow(*args, **kwargs):
        time.sleep(3.0)  # each step: longer than uvicorn's whole 2.6 s grace
        return real(*args, **kwargs)

    srv = start_server("--max-new-tokens", "4", graceful_s=2.6)
    lines = _stream_through_shutdown(srv, 200, lambda: monkeypatch.setattr(engine_mod, "forward_step", slow))
    assert lines[-1] == "data: [DONE]", lines[-3:]
    assert json.loads(lines[-2][6:])["choices"][0]["finish_reason"] == "length"
