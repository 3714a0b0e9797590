"""Tool-call families (server/tool_formats.py, tool_calls.py) without a server: each family's
parser reads back the calls its chat template renders; each family's grammar, driven by random
logits, only ever yields calls that parse and validate against the function's schema; the
conversation reaches a template in the shape it expects; streamed content is held back only
where a call may begin."""

from __future__ import annotations

import json

import jsonschema
import pytest
from grammar_walk import random_walk
from tiny_tokenizers import byte_level_gguf
from tool_templates import TEMPLATES

from ktx.core.tokenizer import Tokenizer
from ktx.core.tokenizer.chat_template import render
from ktx.server.errors import RequestError
from ktx.server.tool_calls import ToolStream, check_tools, grammar_of, plan, prepare_messages
from ktx.server.tool_formats import detect

TOOLS = check_tools(
    [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
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
        },
        {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}, "b": {"type": "number"}},
                    "required": ["a", "b"],
                    "additionalProperties": False,
                },
            },
        },
    ]
)
CALLS = [
    {
        "id": "functions.get_weather:0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris <7e>", "days": 3}'},
    },
    {
        "id": "functions.add:1",
        "type": "function",
        "function": {"name": "add", "arguments": '{"a": 2, "b": 1.5}'},
    },
]
SINGLE_CALL = {"harmony"}  # harmony renders one call per assistant message


@pytest.mark.parametrize("family", sorted(TEMPLATES))
def test_each_family_reads_back_the_calls_its_template_renders(family):
    template = TEMPLATES[family]
    fmt = detect(template)
    assert fmt is not None and fmt.name == family.removesuffix("-v3")
    calls = CALLS[:1] if family in SINGLE_CALL else CALLS
    messages = [
        {"role": "user", "content": "weather and a sum"},
        {"role": "assistant", "content": None, "tool_calls": calls},
    ]
    history = render(template, [messages[0]], add_generation_prompt=True, tools=TOOLS)
    whole = render(
        template, prepare_messages(messages, template, None), add_generation_prompt=False, tools=TOOLS
    )
    assert whole.startswith(history)
    answer = whole[len(history) :].removesuffix("<|end|>")
    content, got = fmt.parse(answer, TOOLS)
    assert [(c.name, c.arguments) for c in got] == [
        (c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls
    ]
    assert content == ""


def test_arguments_reach_templates_as_text_or_mapping():
    def args_of(template):
        messages = prepare_messages(
            [{"role": "assistant", "content": None, "tool_calls": CALLS}], template, None
        )
        return messages[0]["tool_calls"][0]["function"]["arguments"], messages[0]["content"]

    assert args_of(TEMPLATES["deepseek"]) == ('{"city": "Paris <7e>", "days": 3}', "")
    assert args_of(TEMPLATES["glm"]) == ({"city": "Paris <7e>", "days": 3}, "")


def test_a_template_without_tools_gets_them_in_a_system_message():
    template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"
    p = plan(None, template, TOOLS, "auto")
    assert p.generic and p.fmt.name == "hermes" and p.template_kwargs() == {}
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": CALLS[:1]},
        {"role": "tool", "tool_call_id": "x", "content": "sunny"},
    ]
    out = prepare_messages(history, template, p)
    assert out[0]["role"] == "system" and out[0]["content"].startswith("Be brief.")
    assert '"name": "get_weather"' in out[0]["content"] and "<tool_call>" in out[0]["content"]
    assert p.read(out[2]["content"])[1][0].arguments == {"city": "Paris <7e>", "days": 3}
    assert out[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}


def test_bad_tools_and_choices_are_400s():
    template = TEMPLATES["hermes"]
    with pytest.raises(RequestError, match="not among the tools"):
        plan(None, template, TOOLS, {"type": "function", "function": {"name": "nope"}})
    with pytest.raises(RequestError, match="tool_choice must be"):
        plan(None, template, TOOLS, "sometimes")
    with pytest.raises(RequestError, match="tools\\[0\\]"):
        plan(None, template, [{"type": "retrieval"}], "auto")
    with pytest.raises(RequestError, match="needs tools"):
        plan(None, template, None, "required")
    assert plan(None, template, TOOLS, "none") is None


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    tmp = tmp_path_factory.mktemp("tools_tok")
    return Tokenizer.from_gguf(byte_level_gguf(tmp / "bpe.gguf"), cache_dir=tmp / "cache")


def _sample(tok: Tokenizer, grammar, seed: int) -> str:
    return tok.decode(random_walk(tok, grammar, seed, limit=4000, scale=3))


@pytest.mark.parametrize("family", sorted(TEMPLATES))
@pytest.mark.parametrize("choice", ["required", "add"])
def test_each_familys_grammar_gives_valid_calls(tok, family, choice):
    forced = choice if choice == "required" else {"type": "function", "function": {"name": choice}}
    p = plan(tok, TEMPLATES[family], TOOLS, forced, parallel=family not in SINGLE_CALL)
    grammar = grammar_of(p, tok)
    names = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for seed in range(3):
        text = _sample(tok, grammar, seed)
        content, calls = p.read(text)
        assert calls and content == "", text
        for c in calls:
            assert c.name in names and (choice == "required" or c.name == choice)
            jsonschema.validate(c.arguments, names[c.name])


@pytest.mark.parametrize(
    ("family", "pieces", "shown"),
    [
        (
            "hermes",
            [
                "Let me ",
                "check.<to",
                "ol_call>\n{",
                '"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>',
            ],
            "Let me check.",
        ),
        ("hermes", ["a <", "b> c"], "a <b> c"),
        ("llama3", ['  {"name": "add", ', '"parameters": {"a": 1, "b": 2}}'], ""),
        ("llama3", ["Sure ", "{not a call}"], "Sure {not a call}"),
    ],
)
def test_streamed_content_is_held_only_where_a_call_may_begin(family, pieces, shown):
    p = plan(None, TEMPLATES[family], TOOLS, "auto")
    stream = ToolStream(p)
    sent = "".join(stream.push(x) for x in pieces)
    rest, calls = stream.finish()
    assert sent + rest == shown
    assert bool(calls) == (shown != "".join(pieces))


def test_mistral_gets_call_ids_it_accepts_the_same_for_call_and_result():
    history = [
        {"role": "assistant", "content": None, "tool_calls": CALLS[:1]},
        {"role": "tool", "tool_call_id": CALLS[0]["id"], "content": "sunny"},
    ]
    out = prepare_messages(history, TEMPLATES["mistral"], None)
    given = out[0]["tool_calls"][0]["id"]
    assert len(given) == 9 and given.isalnum() and out[1]["tool_call_id"] == given
    assert plan(None, TEMPLATES["mistral"], TOOLS, "auto").fmt.call_id("add", 0).isalnum()
