"""Tool calling through the real clients on a random-weight tiny model (no chat template of its
own: the tools reach it in a system message, calls come back in Hermes' format): `required` and
a named choice give valid calls every time, streamed or not; a whole loop (call, the tool's
result, an answer) runs through the OpenAI and the Ollama APIs; what cannot be honoured is a 400."""

from __future__ import annotations

import json

import httpx
import jsonschema
import ollama
import openai
import pytest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city for some days",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {
                # bounded both ways: a random model's number ends within a few digits
                "a": {"type": "integer", "minimum": 0, "maximum": 999},
                "b": {"type": "integer", "minimum": 0, "maximum": 999},
            },
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, ADD]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def live(tiny_live):
    return tiny_live


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused", max_retries=0, timeout=120)


def _check(calls, name: str | None = None) -> None:
    assert calls
    for c in calls:
        assert c.type == "function" and c.id
        assert name is None or c.function.name == name
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])


@pytest.mark.parametrize("seed", range(3))
def test_required_gives_a_valid_call(client, live, seed):
    r = client.chat.completions.create(
        model=live.engine.model_name,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=1.0,
        seed=seed,
        max_tokens=300,
    )
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert len(choice.message.tool_calls) == 1
    _check(choice.message.tool_calls)


def test_named_choice_streamed(client, live):
    stream = client.chat.completions.create(
        model=live.engine.model_name,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}},
        temperature=1.0,
        seed=7,
        max_tokens=300,
        stream=True,
    )
    chunks = [c for c in stream if c.choices]
    deltas = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or []]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert [d.index for d in deltas] == list(range(len(deltas)))
    _check(deltas, "add")


def test_a_tool_loop_through_openai(client, live):
    first = client.chat.completions.create(
        model=live.engine.model_name,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=300,
        seed=1,
    )
    message = first.choices[0].message
    call = message.tool_calls[0]
    history = [
        *ASK,
        message.model_dump(exclude_none=True),  # content None, tool_calls: as clients send it back
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"forecast": "sunny", "c": 21})},
    ]
    second = client.chat.completions.create(
        model=live.engine.model_name,
        messages=history,
        tools=TOOLS,
        tool_choice="none",
        max_tokens=8,
        temperature=0,
    )
    answer = second.choices[0]
    assert answer.finish_reason in ("stop", "length") and answer.message.tool_calls is None
    assert isinstance(answer.message.content, str)
    # the call and its result reached the prompt (tool_choice "none" leaves the tools out)
    alone = client.chat.completions.create(model=live.engine.model_name, messages=ASK, max_tokens=1)
    assert second.usage.prompt_tokens > alone.usage.prompt_tokens + 10


def test_auto_lets_a_model_that_writes_no_call_answer_in_text(client, live):
    r = client.chat.completions.create(
        model=live.engine.model_name, messages=ASK, tools=TOOLS, max_tokens=8, temperature=0
    )
    plain = client.chat.completions.create(
        model=live.engine.model_name, messages=ASK, max_tokens=8, temperature=0
    )
    assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "length"
    assert isinstance(r.choices[0].message.content, str)
    assert r.usage.prompt_tokens > plain.usage.prompt_tokens  # the tools were in the prompt


def test_a_tool_loop_through_ollama(live):
    name = live.engine.model_name
    body = {
        "model": name,
        "messages": ASK,
        "tools": TOOLS,
        "options": {"num_predict": 300, "temperature": 1.0, "seed": 2},
        "tool_choice": "required",  # ktx's extension of Ollama's API (Ollama's models always choose)
    }
    first = httpx.post(f"{live.url}/api/chat", json={**body, "stream": False}, timeout=120).json()
    calls = first["message"]["tool_calls"]
    assert calls and first["done_reason"] == "stop"
    for call in calls:
        jsonschema.validate(call["function"]["arguments"], SCHEMAS[call["function"]["name"]])
    with httpx.stream("POST", f"{live.url}/api/chat", json=body, timeout=120) as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    streamed = [c for line in lines for c in line.get("message", {}).get("tool_calls", [])]
    assert streamed == calls and lines[-1]["done"]
    history = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [{"function": c["function"]} for c in calls]},
        {"role": "tool", "content": "sunny, 21 C", "tool_name": calls[0]["function"]["name"]},
    ]
    c = ollama.Client(host=live.url, timeout=120)
    second = c.chat(model=name, messages=history, tools=TOOLS, options={"num_predict": 8, "temperature": 0})
    assert second.message.content and not second.message.tool_calls
    # the call and its result were read (against the same client's prompt without them: the
    # ollama client drops schema keywords such as minimum from the tools it sends)
    alone = c.chat(model=name, messages=ASK, tools=TOOLS, options={"num_predict": 1})
    assert second.prompt_eval_count > alone.prompt_eval_count + 10


def test_what_cannot_be_honoured_is_a_400(live):
    url, name = f"{live.url}/v1/chat/completions", live.engine.model_name
    cases = [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "nope"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0]"),
        ({"tool_choice": "required"}, "needs tools"),
        (
            {"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
        ),
    ]
    for extra, why in cases:
        r = httpx.post(url, json={"model": name, "messages": ASK, **extra}, timeout=60)
        assert r.status_code == 400 and why in r.json()["error"]["message"], (extra, r.text)
