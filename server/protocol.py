"""Request bodies of the OpenAI API as pydantic models, and how they become engine requests.

Validation failures are answered with status 400 and OpenAI's error object (app.py), never a
500. Extra fields are accepted and ignored, as OpenAI-compatible servers do (clients send
`user`, `logit_bias`, ... freely). `max_completion_tokens` wins over `max_tokens` when both
are given: it is the newer name, and what recent clients send.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ktx.core.runtime.sampler import SamplingParams

from .errors import RequestError

MAX_STOPS = 4


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
            out.append({"role": "system" if m.role == "developer" else m.role, "content": text})
        return out


class CompletionRequest(_Sampling):
    prompt: (
        str
        | Annotated[list[str], Field(min_length=1, max_length=1)]
        | Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]
    )

    def max_new_tokens(self) -> tuple[int | None, str]:
        return self.max_tokens, "max_tokens"


def chat_prompt_ids(tokenizer, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of a conversation rendered by the model's chat template, ready for the answer."""
    try:
        return tokenizer.chat_prompt_ids(messages)
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
