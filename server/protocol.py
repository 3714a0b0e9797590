"""Request bodies of the OpenAI API as pydantic models, and how they become engine requests.

Validation failures are answered with status 400 and OpenAI's error object (app.py), never a
500. Unknown fields are accepted and ignored, as OpenAI-compatible servers do (clients send
`user`, `metadata`, `store` ... freely), but a field ktx knows and cannot honour is a 400 that
names it (UNSUPPORTED). `max_completion_tokens` wins over `max_tokens` when both are given: it
is the newer name, and what recent clients send. The deprecated `functions` / `function_call`
are read as `tools` / `tool_choice`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ktx.core.runtime.sampler import SamplingParams

from .errors import RequestError

MAX_STOPS = 4
MAX_TOP_CHAT = 20  # OpenAI's bound on top_logprobs (Ollama's too, here)
MAX_TOP_COMPLETIONS = 5  # and on the completions API's logprobs
# fields ktx knows and cannot honour: field -> (what a request may still give, why not)
UNSUPPORTED = {
    "audio": (None, "audio output is not supported (text only)"),
    "web_search_options": (None, "web search is not supported"),
    "suffix": (None, "suffix (fill in the middle) is not supported"),
    "echo": (False, "echo is not supported"),
}


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: str | Annotated[list[str], Field(max_length=MAX_STOPS)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1)] | None = None
    n: Annotated[int, Field(ge=1, le=16)] = 1
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] = 0.0
    stream: bool = False
    stream_options: StreamOptions | None = None
    # extensions vLLM and llama.cpp accept
    top_k: Annotated[int, Field(ge=0)] = 0
    min_p: Annotated[float, Field(ge=0, le=1)] = 0.0
    # bounded so that dividing a logit by it cannot overflow float32 (the fuzzer's 3e-147 did)
    repetition_penalty: Annotated[float, Field(ge=1e-3, le=1e3)] = 1.0
    # structured outputs (structured.py): {"type": "json_object"} or {"type": "json_schema", ...}
    response_format: dict[str, Any] | None = None
    # token id (as a string, OpenAI's way) -> a bias added to its logit before sampling
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    modalities: list[str] | None = None

    def refuse_unsupported(self) -> None:
        extra = self.model_extra or {}
        for name, (allowed, why) in UNSUPPORTED.items():
            if extra.get(name) not in (None, allowed):
                raise RequestError(why, param=name)
        if self.modalities not in (None, ["text"]):
            raise RequestError("modalities: only text is supported", param="modalities")
        best_of = extra.get("best_of")
        if best_of not in (None, 1, self.n):
            raise RequestError("best_of is not supported (use n)", param="best_of")

    def token_bias(self, vocab: int) -> dict[int, float] | None:
        if not self.logit_bias:
            return None
        out = {}
        for key, value in self.logit_bias.items():
            if not key.isdigit() or int(key) >= vocab:
                raise RequestError(f"logit_bias: {key!r} is not a token id below {vocab}", param="logit_bias")
            out[int(key)] = float(value)
        return out

    def sampling(self, index: int = 0) -> SamplingParams:
        """Sampling for choice `index` (choices of one seeded request get seeds seed, seed+1, ...)."""
        seed = None if self.seed is None else (self.seed + index) % 2**64
        params = SamplingParams(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_k=self.top_k,
            top_p=1.0 if self.top_p is None else self.top_p,
            min_p=self.min_p,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=seed,
        )
        try:
            return params.validate()
        except ValueError as e:
            raise RequestError(str(e)) from None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(_Sampling):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    # passed to the chat template (gpt-oss's reads it); a template without it ignores it
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_CHAT)] | None = None

    def tool_request(self) -> tuple[list[dict[str, Any]] | None, Any]:
        """(tools, tool_choice), the deprecated functions / function_call read as them."""
        extra = self.model_extra or {}
        tools, choice = self.tools, self.tool_choice
        if tools is None and isinstance(extra.get("functions"), list):
            tools = [{"type": "function", "function": f} for f in extra["functions"]]
        old = extra.get("function_call")
        if choice is None and old is not None:
            choice = {"type": "function", "function": old} if isinstance(old, dict) else old
        return tools, choice

    def logprob_count(self) -> int | None:
        """None: no logprobs; else how many alternatives each token lists."""
        if self.top_logprobs is not None and not self.logprobs:
            raise RequestError("top_logprobs needs logprobs: true", param="top_logprobs")
        return (self.top_logprobs or 0) if self.logprobs else None

    def max_new_tokens(self) -> tuple[int | None, str]:
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens, "max_completion_tokens"
        return self.max_tokens, "max_tokens"

    def conversation(self) -> list[dict[str, Any]]:
        """The messages as chat templates take them: text content, `developer` read as `system`."""
        out = []
        for i, m in enumerate(self.messages):
            if isinstance(m.content, list):
                parts = []
                for part in m.content:
                    if part.type != "text" or part.text is None:
                        raise RequestError(
                            f"messages[{i}]: content part of type {part.type!r} is not supported (text only)",
                            param=f"messages[{i}].content",
                        )
                    parts.append(part.text)
                text = "".join(parts)
            else:
                text = m.content or ""
            entry: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": text}
            extra = m.model_extra or {}
            if m.role == "assistant" and extra.get("tool_calls"):
                # content stays "" beside them (templates test it as text)
                entry["tool_calls"] = extra["tool_calls"]
            for key in ("tool_call_id", "name"):
                if extra.get(key) is not None:
                    entry[key] = extra[key]
            out.append(entry)
        return out


class CompletionRequest(_Sampling):
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=1)]
        | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    )

    # the completions API's logprobs: how many alternatives each token lists (0: the token's own)
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_COMPLETIONS)] | None = None

    def max_new_tokens(self) -> tuple[int | None, str]:
        return self.max_tokens, "max_tokens"

    def logprob_count(self) -> int | None:
        return self.logprobs


def chat_prompt_ids(tokenizer, messages: list[dict[str, Any]], **template_kwargs: Any) -> list[int]:
    """Token ids of a conversation rendered by the model's chat template, ready for the answer."""
    try:
        return tokenizer.chat_prompt_ids(messages, **template_kwargs)
    except Exception as e:  # a template may refuse a conversation (roles out of order, ...)
        raise RequestError(f"the model's chat template refused the messages: {e}", param="messages") from None


def completion_prompt_ids(tokenizer, prompt: str | list) -> list[int]:
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        vocab = tokenizer.vocab_size
        bad = [t for t in prompt if t >= vocab]
        if bad:
            raise RequestError(f"token id {bad[0]} is not in the vocabulary (0..{vocab - 1})", param="prompt")
        return list(prompt)
    text = prompt[0] if isinstance(prompt, list) else prompt
    return tokenizer.encode(text)
