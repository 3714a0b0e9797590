"""How each model family writes a tool call, read back from its answer and forced by a grammar.

A family is picked from the chat template's own text (the markers it renders for an assistant's
tool calls); a template that renders no tools at all gets the Hermes format, explained to the
model in a system message (tool_calls.py). Each family:

- `markers`: text that opens a call: what the server holds back while streaming content;
- `parse(text)`: (the content outside the calls, the calls) from a whole answer, decoded with its
  special tokens;
- `lark(tools, parallel)`: a grammar (llguidance's Lark, with a JSON schema per call's
  arguments) that admits only calls, for `tool_choice: "required"` or a named function.

Families: Hermes / Qwen (`<tool_call>{json}</tool_call>`), Llama 3 (`{"name", "parameters"}`),
Mistral (`[TOOL_CALLS][...]` or `[TOOL_CALLS]name[ARGS]{...}`), DeepSeek-V3/R1 and V3.1
(`<｜tool▁call▁begin｜>...`), Kimi-K2 (`<|tool_call_begin|>functions.name:0...`), GLM-4.5/4.6
(`<tool_call>name<arg_key>..</arg_key><arg_value>..</arg_value>`), MiniMax-M2
(`<minimax:tool_call><invoke name=..><parameter name=..>`) and gpt-oss's harmony
(`to=functions.name<|channel|>commentary json<|message|>{...}<|call|>`).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

DS = {  # DeepSeek's markers (full-width bars, "▁" for spaces)
    "calls_begin": "<｜tool▁calls▁begin｜>",
    "calls_end": "<｜tool▁calls▁end｜>",
    "begin": "<｜tool▁call▁begin｜>",
    "sep": "<｜tool▁sep｜>",
    "end": "<｜tool▁call▁end｜>",
}
NL = '"\\n"'  # a newline in Lark
KIMI = {
    "section_begin": "<|tool_calls_section_begin|>",
    "section_end": "<|tool_calls_section_end|>",
    "begin": "<|tool_call_begin|>",
    "args": "<|tool_call_argument_begin|>",
    "end": "<|tool_call_end|>",
}


@dataclass
class Call:
    name: str
    arguments: dict[str, Any]


def _json_at(text: str, start: int) -> tuple[Any, int] | None:
    """The JSON value starting at `start` (after whitespace) and where it ends, or None."""
    m = re.compile(r"\s*").match(text, start)
    try:
        return json.JSONDecoder().raw_decode(text, m.end())
    except ValueError:
        return None


def _spans(text: str, begin: str, middle: str, end: str) -> list[tuple[str, str]]:
    """(head, body) of each `begin head middle body end` in text; the last may lack its end."""
    pattern = re.escape(begin) + r"\s*(.*?)\s*" + re.escape(middle) + r"(.*?)(?:" + re.escape(end) + "|$)"
    return [(m.group(1), m.group(2)) for m in re.finditer(pattern, text, re.S)]


def _call_of(obj: Any, args_key: str = "arguments") -> Call | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(args_key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError:
            return None
    return Call(obj["name"], args) if isinstance(args, dict) else None


def _value(text: str, schema: dict | None) -> Any:
    """An XML-style argument's value: text for a string parameter, else JSON where it parses."""
    if schema and schema.get("type") == "string":
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def _text(schema: dict) -> str:
    """A string parameter written as bare text (the XML families): one of its enum values, or
    text without "<" within its length bounds (a pattern or format is not enforced here)."""
    if isinstance(schema.get("enum"), list):
        return "(" + " | ".join(json.dumps(str(v)) for v in schema["enum"]) + ")"
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    return f"/[^<]{{{low},{'' if high is None else int(high)}}}/"


def _params(tools: list[dict], name: str) -> dict:
    for t in tools:
        if t["function"]["name"] == name:
            return t["function"].get("parameters") or {}
    return {}


class Grammar:
    """Builds llguidance Lark text; a marker that is one special token of the vocabulary is
    written as that token (`<[id]>`), since text cannot spell a control token."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def lit(self, text: str) -> str:
        i = self.tokenizer.token_to_id(text) if text else None
        if i is not None and self.tokenizer.is_control(i):
            return f"<[{i}]>"
        return json.dumps(text)

    @staticmethod
    def json(schema: dict) -> str:
        """A JSON value valid against `schema`, compact as structured outputs write it."""
        from ktx.core.runtime.grammar import JSON_OPTIONS

        return "%json " + json.dumps({"x-guidance": JSON_OPTIONS, **(schema or {"type": "object"})})

    @staticmethod
    def repeat(call: str, parallel: bool, sep: str = "") -> str:
        return f"{call} ({sep} {call})*" if parallel else call


class ToolFormat:
    name = "hermes"
    markers: tuple[str, ...] = ("<tool_call>",)
    at_start: tuple[str, ...] = ()  # markers that count only at the start of the answer
    hold_all = False  # the whole answer is held back (harmony's channels)

    def call_id(self, name: str, index: int) -> str:
        return f"call_{uuid.uuid4().hex[:24]}"

    def parse(self, text: str, tools: list[dict]) -> tuple[str, list[Call]]:
        calls, content, pos = [], [], 0
        for m in re.finditer(r"<tool_call>", text):
            if m.start() < pos:
                continue
            got = _json_at(text, m.end())
            call = _call_of(got[0]) if got else None
            if call is None:
                continue
            content.append(text[pos : m.start()])
            calls.append(call)
            end = re.compile(r"\s*</tool_call>").match(text, got[1])
            pos = end.end() if end else got[1]
        content.append(text[pos:])
        return "".join(content).strip(), calls

    def call_schema(self, tools: list[dict], args_key: str = "arguments") -> dict:
        options = [
            {
                "type": "object",
                "properties": {
                    "name": {"const": t["function"]["name"]},
                    args_key: _params(tools, t["function"]["name"]),
                },
                "required": ["name", args_key],
                "additionalProperties": False,
            }
            for t in tools
        ]
        return options[0] if len(options) == 1 else {"anyOf": options}

    def lark(self, g: Grammar, tools: list[dict], parallel: bool) -> str:
        call = f'{g.lit("<tool_call>")} "\\n" {g.json(self.call_schema(tools))} "\\n" {g.lit("</tool_call>")}'
        return f"start: {g.repeat('call', parallel, NL)}\ncall: {call}\n"


class Llama3(ToolFormat):
    name = "llama3"
    markers = ("<|python_tag|>",)
    at_start = ("{",)

    def parse(self, text, tools):
        body = text.strip().removeprefix("<|python_tag|>").strip()
        calls, pos = [], 0
        while pos < len(body):
            got = _json_at(body, pos)
            call = _call_of(got[0], "parameters") if got else None
            if call is None:
                break
            calls.append(call)
            pos = got[1]
            sep = re.compile(r"\s*;?\s*").match(body, pos)
            pos = sep.end()
        if not calls or body[pos:].strip():
            return text.strip(), []
        return "", calls

    def lark(self, g, tools, parallel):
        # one call: Llama 3.1's template refuses an assistant turn with several
        return f"start: {g.json(self.call_schema(tools, 'parameters'))}\n"


class Mistral(ToolFormat):
    name = "mistral"
    markers = ("[TOOL_CALLS]",)

    def call_id(self, name, index):  # Mistral's templates require 9 letters and digits
        return uuid.uuid4().hex[:9]

    @staticmethod
    def history_id(given: str) -> str:
        """A client's call id as Mistral's templates accept it (9 letters and digits), the same
        for the call and for the tool result that names it."""
        alnum = re.sub(r"[^A-Za-z0-9]", "", given or "")
        return alnum[-9:] if len(alnum) >= 9 else hashlib.sha256(given.encode()).hexdigest()[:9]

    def parse(self, text, tools):
        at = text.find("[TOOL_CALLS]")
        if at < 0:
            return text.strip(), []
        content, rest, calls = text[:at], text[at + len("[TOOL_CALLS]") :], []
        got = _json_at(rest, 0)
        if got and isinstance(got[0], list):  # [TOOL_CALLS][{"name": ..., "arguments": ...}, ...]
            calls = [c for c in map(_call_of, got[0]) if c]
        else:  # newer: [TOOL_CALLS]name[ARGS]{...} (repeated)
            for m in re.finditer(r"([\w.\-]+)(?:\[CALL_ID\]\w+)?\[ARGS\]", rest):
                args = _json_at(rest, m.end())
                if args and isinstance(args[0], dict):
                    calls.append(Call(m.group(1), args[0]))
        return content.strip(), calls

    def lark(self, g, tools, parallel):
        items = {"type": "array", "items": self.call_schema(tools), "minItems": 1}
        if not parallel:
            items["maxItems"] = 1
        return f"start: {g.lit('[TOOL_CALLS]')} {g.json(items)}\n"


class DeepSeek(ToolFormat):
    """V3/R1: `<｜tool▁call▁begin｜>function<｜tool▁sep｜>name\\n```json\\n{...}\\n```<｜tool▁call▁end｜>`;
    V3.1: `<｜tool▁call▁begin｜>name<｜tool▁sep｜>{...}<｜tool▁call▁end｜>`."""

    name = "deepseek"
    markers = (DS["calls_begin"], DS["begin"])

    def __init__(self, v31: bool = True):
        self.v31 = v31

    def parse(self, text, tools):
        first = min((i for i in (text.find(m) for m in self.markers) if i >= 0), default=-1)
        if first < 0:
            return text.strip(), []
        calls = []
        for head, body in _spans(text[first:], DS["begin"], DS["sep"], DS["end"]):
            if head == "function":  # V3/R1: the name, then the arguments in a json fence
                name, _, body = body.partition("\n")
                body = re.sub(r"^\s*```(?:json)?|```\s*$", "", body.strip()).strip()
                head = name.strip()
            got = _json_at(body, 0)
            if got and isinstance(got[0], dict):
                calls.append(Call(head, got[0]))
        return text[:first].strip(), calls

    def lark(self, g, tools, parallel):
        calls = " | ".join(
            f"{g.lit(DS['begin'])} {self._head(g, name)} {g.json(_params(tools, name))} {self._tail(g)}"
            for name in (t["function"]["name"] for t in tools)
        )
        begin, end = g.lit(DS["calls_begin"]), g.lit(DS["calls_end"])
        return f"start: {begin} {g.repeat('call', parallel)} {end}\ncall: {calls}\n"

    def _head(self, g, name: str) -> str:
        if self.v31:
            return f"{json.dumps(name)} {g.lit(DS['sep'])}"
        return f'"function" {g.lit(DS["sep"])} {json.dumps(name + chr(10) + "```json" + chr(10))}'

    def _tail(self, g) -> str:
        return g.lit(DS["end"]) if self.v31 else f'"\\n```" {g.lit(DS["end"])}'


class Kimi(ToolFormat):
    name = "kimi-k2"
    markers = (KIMI["section_begin"],)

    def call_id(self, name, index):  # the template writes ids back as the model learned them
        return f"functions.{name}:{index}"

    def parse(self, text, tools):
        at = text.find(KIMI["section_begin"])
        if at < 0:
            return text.strip(), []
        calls = []
        for ident, body in _spans(text[at:], KIMI["begin"], KIMI["args"], KIMI["end"]):
            # functions.get_weather:0
            name = ident.split(".", 1)[1] if ident.startswith("functions.") else ident
            name = name.rsplit(":", 1)[0]
            got = _json_at(body, 0)
            if got and isinstance(got[0], dict):
                calls.append(Call(name, got[0]))
        return text[:at].strip(), calls

    def lark(self, g, tools, parallel):
        calls = " | ".join(
            f"{g.lit(KIMI['begin'])} {json.dumps('functions.' + t['function']['name'] + ':')} /[0-9]+/ "
            f"{g.lit(KIMI['args'])} {g.json(_params(tools, t['function']['name']))} {g.lit(KIMI['end'])}"
            for t in tools
        )
        begin, end = g.lit(KIMI["section_begin"]), g.lit(KIMI["section_end"])
        return f"start: {begin} {g.repeat('call', parallel)} {end}\ncall: {calls}\n"


class XmlArgs(ToolFormat):
    """GLM-4.5/4.6 and MiniMax-M2: a name, then one element per argument whose value is text for
    string parameters and JSON otherwise."""

    name = "glm"
    markers = ("<tool_call>",)
    open, close = "<tool_call>", "</tool_call>"

    def calls_in(self, block: str) -> list[tuple[str, list[tuple[str, str]]]]:
        name = block.split("<arg_key>", 1)[0]
        pairs = re.findall(r"<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", block, re.S)
        return [(name.strip(), pairs)]

    def parse(self, text, tools):
        at = text.find(self.open)
        if at < 0:
            return text.strip(), []
        calls, content = [], [text[:at]]
        pattern = re.escape(self.open) + r"(.*?)(?:" + re.escape(self.close) + "|$)"
        for m in re.finditer(pattern, text[at:], re.S):
            for name, pairs in self.calls_in(m.group(1)):
                props = _params(tools, name).get("properties", {})
                calls.append(Call(name, {k.strip(): _value(v, props.get(k.strip())) for k, v in pairs}))
        return "".join(content).strip(), calls

    def arg(self, key: str, schema: dict) -> str:
        value = _text(schema) if schema.get("type") == "string" else Grammar.json(schema)
        return f'"<arg_key>{key}</arg_key>\\n<arg_value>" {value} "</arg_value>\\n"'

    def one_call(self, g: Grammar, tool: dict) -> str:
        params = tool["function"].get("parameters") or {}
        props = params.get("properties", {})
        args = " ".join(self.arg(k, props.get(k, {})) for k in params.get("required", []))
        return (
            f"{g.lit(self.open)} {json.dumps(tool['function']['name'] + chr(10))} {args} {g.lit(self.close)}"
        )

    def lark(self, g, tools, parallel):
        calls = " | ".join(self.one_call(g, t) for t in tools)
        return f"start: {g.repeat('call', parallel, NL)}\ncall: {calls}\n"


class MiniMax(XmlArgs):
    name = "minimax-m2"
    markers = ("<minimax:tool_call>",)
    open, close = "<minimax:tool_call>", "</minimax:tool_call>"

    def calls_in(self, block):
        out = []
        for m in re.finditer(r'<invoke name="([^"]+)">(.*?)(?:</invoke>|$)', block, re.S):
            pairs = re.findall(r'<parameter name="([^"]+)">(.*?)</parameter>', m.group(2), re.S)
            out.append((m.group(1), pairs))
        return out

    def arg(self, key, schema):
        value = _text(schema) if schema.get("type") == "string" else Grammar.json(schema)
        return f'"<parameter name=\\"{key}\\">" {value} "</parameter>\\n"'

    def one_call(self, g, tool):
        params = tool["function"].get("parameters") or {}
        props = params.get("properties", {})
        args = " ".join(self.arg(k, props.get(k, {})) for k in params.get("required", []))
        return f'"<invoke name=\\"{tool["function"]["name"]}\\">\\n" {args} "</invoke>\\n"'

    def lark(self, g, tools, parallel):
        calls = " | ".join(self.one_call(g, t) for t in tools)
        body = "call+" if parallel else "call"
        return f'start: {g.lit(self.open)} "\\n" {body} {g.lit(self.close)}\ncall: {calls}\n'


class Harmony(ToolFormat):
    """gpt-oss: `<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>{...}<|call|>`
    (the recipient may also follow the channel); the answer's text is its `final` channel."""

    name = "harmony"
    markers = ("to=functions.",)
    hold_all = True

    def parse(self, text, tools):
        calls = []
        for m in re.finditer(
            r"to=functions\.([\w.\-]+)(.*?)<\|message\|>(.*?)(?:<\|call\|>|<\|end\|>|$)", text, re.S
        ):
            got = _json_at(m.group(3), 0)
            if got and isinstance(got[0], dict):
                calls.append(Call(m.group(1), got[0]))
        final = re.search(r"<\|channel\|>final<\|message\|>(.*?)(?:<\|end\|>|<\|return\|>|$)", text, re.S)
        if final:
            return final.group(1).strip(), calls
        if calls or "<|channel|>" in text:
            return "", calls
        return text.strip(), calls

    def lark(self, g, tools, parallel):
        calls = " | ".join(
            f"{json.dumps(' to=functions.' + name)} {g.lit('<|channel|>')} "
            f'"commentary json" {g.lit("<|message|>")} {g.json(_params(tools, name))}'
            for name in (t["function"]["name"] for t in tools)
        )
        return f"start: call\ncall: {calls}\n"  # harmony has one call per message


def detect(template: str) -> ToolFormat | None:
    """The family whose markers the chat template renders; None: the template knows no tools."""
    if "to=functions." in template or "<|channel|>" in template:
        return Harmony()
    # Kimi-K2: its call markers, or (templates that render no calls) its tool declaration block
    if KIMI["begin"] in template or KIMI["section_begin"] in template or "tool_declare" in template:
        return Kimi()
    if DS["begin"] in template:
        # V3/R1 write the call's type ("function") before the separator, V3.1 its name
        return DeepSeek(v31="tool['type']" not in template and f"function{DS['sep']}" not in template)
    if "<arg_key>" in template:
        return XmlArgs()
    if "<minimax:tool_call>" in template or "<invoke name=" in template:
        return MiniMax()
    if "[TOOL_CALLS]" in template:
        return Mistral()
    if "<|python_tag|>" in template or "ipython" in template:
        return Llama3()
    if "<tool_call>" in template or "tool_calls" in template:
        return ToolFormat()
    return None
