"""The `LLMProvider` Protocol: one streaming call per model turn.

Contract every implementation keeps:

- `stream()` returns an async generator (an `AsyncIterator` with `aclose()`); nothing happens until it is first awaited.
- It yields `TextDelta`s and `ToolCall`s as they become known, then at most one `Usage`, then `Finished`.
- A `ToolCall` is only a proposal: the provider never executes tools. Its `name` is one of `tools` and its
  arguments are valid against that tool's schema, or the provider raises `LLMBadResponse`.
- `settings.tool_choice`: "none" never yields a `ToolCall`; "required" yields at least one.
- The consumer may stop early with `aclose()` (or by cancelling the task iterating it): generation is
  cancelled promptly and no more tokens are produced. A client disconnecting mid-stream does this.
- Failures raise `pipeline.llm.errors.LLMError`. Retries happen only before the first event.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Protocol, runtime_checkable

from pipeline.llm.types import ChatMessage, GenerationSettings, LLMEvent, ToolSpec


class LLMProvider(Protocol):
    def stream(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        settings: GenerationSettings,
    ) -> AsyncGenerator[LLMEvent, None]: ...


@runtime_checkable
class StatefulLLM(Protocol):
    """A provider that keeps model state between calls (the local engine), and so can be told about it:
    `warm_up` computes the state of a system prompt and tools before the first turn needs it (while a call's
    greeting plays); `prepare` computes the prompt of a turn that may come (the caller has paused, their words
    are transcribed, the turn is not over yet), so that the turn, if it comes with these very messages, does
    not; `release` drops what was kept for one conversation (`prompt_cache_key`) once it is over.
    """

    async def warm_up(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> None: ...

    async def prepare(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], settings: GenerationSettings
    ) -> None: ...

    async def release(self, prompt_cache_key: str) -> None: ...
