"""The server with a model whose layers keep a recurrent state per sequence (Qwen3-Next's gated
DeltaNet): concurrent requests, prefilled and decoded in shared steps, each give the text of the
runtime alone; the prefix cache is off, so a repeated prompt is computed again, not resumed from
blocks without their state."""

from __future__ import annotations

import threading

import openai
import pytest
from live_server import start_server
from test_openai import _messages, single_run
from tiny_models import make_tiny

from ktx.core.convert.hf_to_gguf import convert_hf

PROMPTS = [
    "The quick brown fox",
    "Mixture-of-experts models route every token to a few experts, and",
    "def forward(self, x):",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich, und",
]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    d = tmp_path_factory.mktemp("q3n")
    gguf = convert_hf(make_tiny("qwen3next", d / "hf"), d / "m.gguf", "q8_0", progress=False).path
    srv = start_server(
        "--gguf", str(gguf), "--max-batch-size", "4", "--cache-lens", "2048", "--max-new-tokens", "16"
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _ask(client, live, text: str) -> str:
    r = client.chat.completions.create(
        model=live.engine.model_name, messages=_messages(text), max_tokens=12, temperature=0
    )
    return r.choices[0].message.content


def test_concurrent_requests_each_give_the_single_run_text(client, live, monkeypatch):
    from ktx.server import engine as engine_module

    expected = {t: single_run(live, t, 12) for t in PROMPTS}
    widest = [0]  # the most sequences one decode step carried
    step = engine_module.forward_step

    def counting(model, pool, segments, ids):
        if all(seg.length == 1 for seg in segments):
            widest[0] = max(widest[0], len(segments))
        return step(model, pool, segments, ids)

    monkeypatch.setattr(engine_module, "forward_step", counting)
    got: dict[str, str] = {}
    errors: list[Exception] = []

    def run(text: str) -> None:
        try:
            got[text] = _ask(client, live, text)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(t,)) for t in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert got == expected
    assert widest[0] > 1, "the requests never shared a decode step"
    live.wait_idle()
    assert len(live.engine.pool.free_blocks) == live.engine.pool.num_blocks  # nothing left held


def test_a_repeated_prompt_is_computed_again_not_resumed(client, live):
    assert not live.engine.cache.enabled
    first = _ask(client, live, PROMPTS[1])
    assert _ask(client, live, PROMPTS[1]) == first
