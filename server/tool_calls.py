"""Tool calling for the OpenAI and Ollama APIs.

The tools reach the model through its own chat template (`tools=` as transformers'
apply_chat_template passes them); the answer is read back in the family's format
(tool_formats.py). A template that renders no tools gets them in a system message that asks for
Hermes-style `<tool_call>` blocks, and its history's tool calls and results are written the same
way. `tool_choice: "required"` or a named function is enforced by a grammar that admits only
calls with arguments valid against the function's schema, so even a weak model returns a valid
call; "auto" lets the model choose; "none" leaves the tools out of the prompt.

While streaming, content is sent as it comes until the text could be the start of a call; from
there the answer is held back and its calls are sent when it ends.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import RequestError
from .tool_formats import Call, Grammar, Mistral, ToolFormat, detect

GENERIC_PROMPT = (
    "You can call these tools. Their signatures are JSON schemas:\n<tools>\n{tools}\n</tools>\n"
    "To call a tool, answer with one block per call and nothing else:\n"
    '<tool_call>\n{{"name": <tool name>, "arguments": <arguments as a JSON object>}}\n</tool_call>'
)


@dataclass
class ToolPlan:
    tools: list[dict[str, Any]]
    fmt: ToolFormat
    generic: bool  # the template renders no tools: a system message explains the format
    parallel: bool = True
    forced: str | None = None  # None: the model chooses; "*": some call; else that function
    # the vocabulary's control tokens, which the answer is decoded with (call markers may be
    # among them) and which content shows no more than it does without tools
    controls: re.Pattern | None = None

    def template_kwargs(self) -> dict[str, Any]:
        return {} if self.generic else {"tools": self.tools}

    def clean(self, text: str) -> str:
        return self.controls.sub("", text) if self.controls is not None and text else text

    def read(self, text: str) -> tuple[str, list[Call]]:
        """(content, calls) of a whole answer."""
        content, calls = self.fmt.parse(text, self.tools)
        return self.clean(content), calls


def chat_prompt(
    tokenizer,
    messages: list[dict[str, Any]],
    tools: Any,
    tool_choice: Any = None,
    parallel: bool | None = True,
    **extra,
) -> tuple[list[int], ToolPlan | None]:
    """A chat request's prompt ids and its tool plan: the file's separate `tool_use` template
    when the request has tools and the file has one (as transformers picks it), the tools and
    `extra` (enable_thinking, reasoning_effort ...) handed to the template."""
    from .protocol import chat_prompt_ids

    named = "tool_use" if tools and "tool_use" in tokenizer.chat_templates else None
    template = tokenizer.chat_templates[named] if named else tokenizer.chat_template
    tool_plan = plan(tokenizer, template, tools, tool_choice, parallel)
    kwargs = {**(tool_plan.template_kwargs() if tool_plan else {}), **extra}
    if named:
        kwargs["chat_template"] = named
    ids = chat_prompt_ids(tokenizer, prepare_messages(messages, template, tool_plan), **kwargs)
    return ids, tool_plan


def check_tools(tools: Any, param: str = "tools") -> list[dict[str, Any]]:
    """OpenAI's (and Ollama's) tool list, checked: type function, a name, an object schema."""
    if not isinstance(tools, list):
        raise RequestError(f"{param} must be a list", param=param)
    out = []
    for i, t in enumerate(tools):
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(t, dict) or t.get("type", "function") != "function" or not isinstance(fn, dict):
            raise RequestError(
                f"{param}[{i}] must be {{'type': 'function', 'function': {{...}}}}", param=param
            )
        name = fn.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", name):
            raise RequestError(f"{param}[{i}].function.name must be 1-64 letters, digits, _ . -", param=param)
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise RequestError(f"{param}[{i}].function.parameters must be a JSON schema object", param=param)
        # a description always there: templates print it (transformers' schemas always have one)
        fn = {"description": "", **fn, "parameters": params}
        out.append({"type": "function", "function": fn})
    return out


def plan(
    tokenizer, template: str, tools: Any, tool_choice: Any = None, parallel: bool | None = True
) -> ToolPlan | None:
    """What a request's tools ask of the server; None when no tool may be called."""
    if tools is None or tools == []:
        if tool_choice not in (None, "none", "auto"):
            raise RequestError("tool_choice needs tools", param="tool_choice")
        return None
    tools = check_tools(tools)
    choice = "auto" if tool_choice is None else tool_choice
    if choice == "none":
        return None
    names = [t["function"]["name"] for t in tools]
    if choice == "auto":
        forced = None
    elif choice == "required":
        forced = "*"
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        forced = choice["function"].get("name")
        if forced not in names:
            raise RequestError(
                f"tool_choice names {forced!r}, which is not among the tools", param="tool_choice"
            )
    else:
        shapes = '"none", "auto", "required" or {"type": "function", "function": {"name": ...}}'
        raise RequestError(f"tool_choice must be {shapes}", param="tool_choice")
    fmt = detect(template)
    return ToolPlan(
        tools,
        fmt or ToolFormat(),
        generic=fmt is None,
        parallel=parallel is not False,
        forced=forced,
        controls=control_tokens(tokenizer),
    )


def control_tokens(tokenizer) -> re.Pattern | None:
    """One pattern for the vocabulary's control tokens (built once per tokenizer)."""
    if tokenizer is None:
        return None
    cached = getattr(tokenizer, "_ktx_controls", False)
    if cached is not False:
        return cached
    types = getattr(tokenizer, "token_types", None)
    names = []
    if types is not None:
        from ktx.core.tokenizer.gguf_vocab import CONTROL

        for i in (types == CONTROL).nonzero()[0].tolist():
            t = tokenizer.id_to_token(i)
            if t:
                names.append(t)
    pattern = re.compile("|".join(map(re.escape, sorted(names, key=len, reverse=True)))) if names else None
    tokenizer._ktx_controls = pattern
    return pattern


def grammar_of(tool_plan: ToolPlan, tokenizer):
    """The grammar of a forced choice (None when the model chooses); a 400 if it cannot compile."""
    from ktx.core.runtime.grammar import Grammar as Compiled
    from ktx.core.runtime.grammar import GrammarError

    if tool_plan.forced is None:
        return None
    tools = tool_plan.tools
    if tool_plan.forced != "*":
        tools = [t for t in tools if t["function"]["name"] == tool_plan.forced]
    lark = tool_plan.fmt.lark(Grammar(tokenizer), tools, tool_plan.parallel)
    try:
        return Compiled.lark(tokenizer, lark)
    except GrammarError as e:
        raise RequestError(f"tools: a function's parameters cannot be enforced: {e}", param="tools") from None


def _arguments_as_text(template: str) -> bool:
    """DeepSeek's templates concatenate a call's arguments as a string; the others (as
    transformers documents) take a mapping and write it themselves."""
    return re.search(r"\+\s*\w+\[['\"]function['\"]\]\[['\"]arguments['\"]\]", template) is not None


def prepare_messages(
    messages: list[dict[str, Any]], template: str, tool_plan: ToolPlan | None
) -> list[dict[str, Any]]:
    """The conversation as the template wants it: each call's arguments as text or as a mapping;
    for a template without tools, the tools, calls and results written out in Hermes' format."""
    as_text = _arguments_as_text(template)
    family = detect(template)
    hermes = family is None  # a template that renders no tools (a generic plan's too)
    out = []
    for m in messages:
        m = dict(m)
        calls = m.get("tool_calls")
        if calls and m.get("content") is None:
            m["content"] = ""  # OpenAI clients send null beside calls; templates test it as text
        if calls:
            m["tool_calls"] = [_call_for_template(c, as_text) for c in calls]
        if isinstance(family, Mistral):
            for c in m.get("tool_calls") or ():
                c["id"] = Mistral.history_id(c["id"])
            if m.get("tool_call_id"):
                m["tool_call_id"] = Mistral.history_id(m["tool_call_id"])
        if hermes and calls:
            blocks = "\n".join(
                "<tool_call>\n"
                + json.dumps({"name": c["function"]["name"], "arguments": _args(c)})
                + "\n</tool_call>"
                for c in m.pop("tool_calls")
            )
            m["content"] = ((m.get("content") or "") + "\n" + blocks).strip()
        if hermes and m.get("role") == "tool":
            m = {"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"}
        out.append(m)
    if tool_plan is not None and tool_plan.generic:
        listing = "\n".join(json.dumps(t["function"]) for t in tool_plan.tools)
        text = GENERIC_PROMPT.format(tools=listing)
        if out and out[0].get("role") == "system":
            out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{text}".strip()}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out


def _args(call: dict) -> dict:
    args = call["function"].get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args or "{}")
        except ValueError:
            raise RequestError(
                f"a tool call's arguments are not JSON: {args[:80]!r}", param="messages"
            ) from None
    return args if isinstance(args, dict) else {}


def _call_for_template(call: dict, as_text: bool) -> dict:
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise RequestError("messages: each tool call needs a function with a name", param="messages")
    args = _args(call)
    fn = {**call["function"], "arguments": json.dumps(args) if as_text else args}
    return {"id": call.get("id") or new_id(), "type": "function", **call, "function": fn}


def new_id() -> str:
    return ToolFormat().call_id("", 0)


class ToolStream:
    """Content of a streamed answer, held back from where a tool call may begin."""

    def __init__(self, tool_plan: ToolPlan):
        self.plan, self.fmt = tool_plan, tool_plan.fmt
        self.raw = ""
        self.sent = 0  # characters of raw sent as content
        self.in_call = False

    def push(self, text: str) -> str:
        self.raw += text
        if self.in_call or self.fmt.hold_all:
            return ""
        rest = self.raw[self.sent :]
        hits = [i for i in (rest.find(m) for m in self.fmt.markers) if i >= 0]
        if self.sent == 0 or not self.raw[: self.sent].strip():
            stripped = len(rest) - len(rest.lstrip())
            hits += [stripped for m in self.fmt.at_start if rest.lstrip().startswith(m)]
        if hits:
            self.in_call = True
            before = self._send(min(hits))
            return before if before.strip() else ""  # no lone whitespace ahead of the calls
        return self._send(len(rest) - _held(rest, self.fmt))

    def _send(self, n: int) -> str:
        out = self.raw[self.sent : self.sent + n]
        self.sent += n
        return self.plan.clean(out)

    def finish(self) -> tuple[str, list[Call]]:
        """(content not yet sent, the calls) once the answer has ended."""
        content, calls = self.plan.read(self.raw)
        if self.fmt.hold_all:
            return content, calls
        return ("", calls) if calls else (self._send(len(self.raw) - self.sent), [])


def _held(text: str, fmt: ToolFormat) -> int:
    """Characters at the end of `text` that could begin a marker."""
    best = 0
    for m in (*fmt.markers, *(fmt.at_start if not text.strip() else ())):
        for k in range(min(len(m) - 1, len(text)), 0, -1):
            if text.endswith(m[:k]):
                best = max(best, k)
                break
    return best


def openai_calls(calls: list[Call], tool_plan: ToolPlan) -> list[dict[str, Any]]:
    calls = calls if tool_plan.parallel else calls[:1]
    return [
        {
            "id": tool_plan.fmt.call_id(c.name, i),
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
        }
        for i, c in enumerate(calls)
    ]


def ollama_calls(calls: list[Call]) -> list[dict[str, Any]]:
    return [{"function": {"index": i, "name": c.name, "arguments": c.arguments}} for i, c in enumerate(calls)]
