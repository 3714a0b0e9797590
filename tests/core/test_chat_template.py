"""Chat templates from GGUF metadata, rendered against transformers' apply_chat_template."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import jinja2
import pytest
from tiny_tokenizers import byte_level_metadata, train_byte_level, write_tokenizer_gguf
from tokenizers import Tokenizer as HFTokenizer

from ktx.core.tokenizer import CHATML_TEMPLATE, Tokenizer

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

TEMPLATE = """\
{%- if messages[0]['role'] == 'system' %}{{ bos_token }}{% endif %}
{%- set ns = namespace(turns=0) %}
{%- for message in messages %}
  {%- if message['role'] not in ['system', 'user', 'assistant', 'tool'] %}
    {{- raise_exception('Unknown role: ' + message['role']) }}
  {%- endif %}
  {%- if message['role'] == 'tool' %}{% continue %}{% endif %}
  {%- set ns.turns = ns.turns + 1 %}
<|im_start|>{{ message['role'] }}
{% if message['content'] is string %}{{ message['content'] }}\
{% else %}{{ message['content'] | tojson }}{% endif %}<|im_end|>
{% endfor %}
{%- if tools %}<|im_start|>tools
{{ tools | tojson(indent=2) }}<|im_end|>
{% endif %}
{%- if add_generation_prompt %}<|im_start|>assistant ({{ ns.turns }} turns)
{% if enable_thinking is defined and not enable_thinking %}<think>

</think>

{% endif %}{% endif %}"""

TOOL_TEMPLATE = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{{ eos_token }}"

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": 'What is 2+2? <html> & "quotes"'},
        {"role": "assistant", "content": "4"},
        {"role": "tool", "content": "ignored"},
        {"role": "user", "content": [{"type": "text", "text": "café ☕ — ünïcödé"}]},
    ],
]


def _backend() -> HFTokenizer:
    return train_byte_level(["hello world, the assistant says hi"] * 4, 320, SPECIALS)


def _gguf(path: Path, tk: HFTokenizer, arch: str, templates: dict[str, str]) -> Path:
    meta = byte_level_metadata(tk, SPECIALS)
    meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"] = 0, 2
    for name, source in templates.items():
        meta["tokenizer.chat_template" + ("" if name == "default" else f".{name}")] = source
    return write_tokenizer_gguf(path, arch, meta)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(ours, transformers') over the same vocabulary and template."""
    transformers = pytest.importorskip("transformers")
    tmp = tmp_path_factory.mktemp("chat")
    tk = _backend()
    path = _gguf(tmp / "chat.gguf", tk, "qwen2", {"default": TEMPLATE, "tool_use": TOOL_TEMPLATE})
    ours = Tokenizer.from_gguf(path, cache_dir=tmp / "cache")
    theirs = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|im_end|>"
    )
    return ours, theirs


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("extra", [{}, {"enable_thinking": False}, {"enable_thinking": True}])
def test_rendering_matches_transformers(pair, conversation, add_generation_prompt, extra):
    ours, theirs = pair
    want = theirs.apply_chat_template(
        conversation,
        tokenize=False,
        chat_template=TEMPLATE,
        add_generation_prompt=add_generation_prompt,
        **extra,
    )
    got = ours.apply_chat_template(conversation, add_generation_prompt=add_generation_prompt, **extra)
    assert got == want
    assert ours.has_chat_template


def test_tools_and_named_template(pair):
    ours, theirs = pair
    tools = [{"type": "function", "function": {"name": "get_time", "description": "Zeit — jetzt"}}]
    conversation = CONVERSATIONS[0]
    want = theirs.apply_chat_template(conversation, tools=tools, tokenize=False, chat_template=TEMPLATE)
    assert ours.apply_chat_template(conversation, tools=tools, add_generation_prompt=False) == want
    want = theirs.apply_chat_template(conversation, tokenize=False, chat_template=TOOL_TEMPLATE)
    assert ours.apply_chat_template(conversation, chat_template="tool_use") == want
    ids = ours.apply_chat_template(conversation, tokenize=True)
    assert ids == ours.encode(ours.apply_chat_template(conversation), add_special_tokens=False)
    assert ids.count(ours.token_to_id("<|im_start|>")) == 2


# What agent clients send: an assistant turn with content None beside its tool calls, reasoning
# under any of its names; a template that reads `thinking` (as gpt-oss's does) and content.
REASONING_TEMPLATE = """\
{%- for m in messages %}[{{ m.role }}]
{%- if m.thinking is defined %} thinking={{ m.thinking }}{% endif %}
{%- if m.reasoning_content is defined %} reasoning={{ m.reasoning_content }}{% endif %}
{%- if m.content is defined %} content={{ m.content }}{% else %} (no content){% endif %}
{%- if m.tool_calls is defined %} calls={{ m.tool_calls | tojson }}{% endif %}
{% endfor %}"""


@pytest.mark.parametrize("field", ["reasoning_content", "thinking", "reasoning"])
def test_none_keys_dropped_and_reasoning_under_both_names_as_transformers(pair, field):
    ours, theirs = pair
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    conversation = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, field: "Look it up.", "tool_calls": [call]},
        {"role": "tool", "content": "18C", "tool_calls": None},
        {"role": "assistant", "content": "18C in Paris.", field: None},
    ]
    want = theirs.apply_chat_template(conversation, tokenize=False, chat_template=REASONING_TEMPLATE)
    got = ours.apply_chat_template(conversation, chat_template=REASONING_TEMPLATE)
    assert got == want
    assert "None" not in got and "thinking=Look it up. reasoning=Look it up." in got


def test_raise_exception_and_helpers(pair):
    ours, theirs = pair
    bad = [{"role": "wizard", "content": "x"}]
    with pytest.raises(jinja2.exceptions.TemplateError, match="Unknown role: wizard"):
        theirs.apply_chat_template(bad, tokenize=False, chat_template=TEMPLATE)
    with pytest.raises(jinja2.exceptions.TemplateError, match="Unknown role: wizard"):
        ours.apply_chat_template(bad)
    year = ours.apply_chat_template([], chat_template="{{ strftime_now('%Y') }}")
    assert year == str(datetime.now().year)
    # The sandbox: no reaching into Python internals from a template.
    with pytest.raises(jinja2.exceptions.SecurityError):
        ours.apply_chat_template([], chat_template="{{ messages.__class__.__mro__ }}")


def test_fallback_chatml_without_template(tmp_path):
    tk = _backend()
    tok = Tokenizer.from_gguf(_gguf(tmp_path / "plain.gguf", tk, "qwen2", {}), cache_dir=tmp_path / "c")
    assert not tok.has_chat_template and tok.chat_template == CHATML_TEMPLATE
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.eos_token_ids == {0, 2}  # <|endoftext|> and <|im_end|>: control tokens that end turns


def test_fallback_gemma_format(demo_gguf, tmp_path):
    """Gemma's documented turn format: system text joins the first user turn; "assistant" is "model"."""
    tok = Tokenizer.from_gguf(demo_gguf, cache_dir=tmp_path)
    assert not tok.has_chat_template
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": " Hello "},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Bye"},
    ]
    want = (
        "<bos><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n"
        "<start_of_turn>model\nHi!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert tok.apply_chat_template(conversation) == want
    ids = tok.apply_chat_template(conversation, tokenize=True)
    assert ids[:2] == [tok.bos_token_id, tok.token_to_id("<start_of_turn>")] and ids.count(2) == 1
    with pytest.raises(jinja2.exceptions.TemplateError, match="alternate"):
        tok.apply_chat_template([{"role": "assistant", "content": "first"}])
