"""Plain data that goes into and comes out of an `LLMProvider`.

In: `ChatMessage`s (the conversation, system prompt first), `ToolSpec`s (what the model may propose to
call, each with a JSON Schema for its arguments) and `GenerationSettings`.

Out, in this order per call: any number of `TextDelta`s and `ToolCall`s, at most one `Usage`, and exactly
one `Finished` last (unless the consumer stops early or an `LLMError` is raised).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ToolChoice = Literal["auto", "none", "required"]
FinishReason = Literal["stop", "length", "tool_calls", "cancelled"]


@dataclass(frozen=True)
class ToolCall:
    """A tool call the model proposes. `arguments` are valid against the tool's `parameters` schema."""

    id: str
    name: str
    arguments: Mapping[str, Any]


@dataclass(frozen=True)
class ChatMessage:
    """One message of the conversation.

    An assistant message that called tools carries them in `tool_calls` (content may be empty); the
    result of each call comes back as a `tool` message with the call's id in `tool_call_id` and the
    tool's name in `name`.
    """

    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may propose: `parameters` is a JSON Schema of type object.

    `examples` are a few things a caller might say that should call this tool (like an intent's sample
    utterances). Large hosted models don't need them; the small local model routes far better with
    two or three (see `pipeline.llm.chat_template`), and falls back to the description without.
    """

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class GenerationSettings:
    max_tokens: int = 256
    temperature: float = 0.0
    tool_choice: ToolChoice = "auto"
    # Which conversation this turn continues (as OpenAI's `prompt_cache_key`): a provider that keeps model
    # state between turns (the local engine's KV states) files it under this key until `release(key)`.
    prompt_cache_key: str | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int = 0  # prompt tokens served from a prefix/KV cache instead of computed


@dataclass(frozen=True)
class Finished:
    """The last event of every completed call.

    `ttft_s` is the time from the call to the first `TextDelta` or `ToolCall` the provider yielded (None
    when it yielded neither); `total_s` is the time from the call to this event.
    """

    finish_reason: FinishReason
    ttft_s: float | None
    total_s: float


LLMEvent = TextDelta | ToolCall | Usage | Finished
