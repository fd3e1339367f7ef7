"""`ScriptedLLM`: a fake that implements the real `LLMProvider`, for other packages' unit tests.

    llm = ScriptedLLM(turns=[
        "Hi, this is Tony's Pizza. How can I help?",                     # one text reply
        [ToolCall("call_1", "check_service_area", {"address": "5 Elm"})],  # a tool call
        ["We deliver ", "there!"],                                        # text in these chunks
        LLMUnavailable("upstream down"),                                  # this call fails
    ], ttft_s=0.05)

Each `stream()` call plays the next turn: after `ttft_s` the first event, then the rest `chunk_interval_s`
apart, then `Usage` and `Finished` (with the measured time to first event). A plain string is split
into word chunks. Tool calls are checked like a real provider checks them: the tool must be among
those passed in, and the arguments must match its schema (else `LLMBadResponse`). What each call
received is kept in `calls`; a call whose consumer stopped early is counted in `cancelled`, and emits
nothing more. With no turn left, a call raises `LLMRequestError`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass

import jsonschema

from pipeline.llm.errors import LLMBadResponse, LLMError, LLMRequestError
from pipeline.llm.types import (
    ChatMessage,
    Finished,
    GenerationSettings,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

ScriptItem = str | ToolCall | LLMError
ScriptedTurn = str | LLMError | Sequence[ScriptItem]


@dataclass(frozen=True)
class ScriptedCall:
    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...]
    settings: GenerationSettings


def word_chunks(text: str) -> list[str]:
    """'Hello there, you' -> ['Hello', ' there,', ' you']: how streamed text usually arrives."""
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


class ScriptedLLM:
    def __init__(
        self,
        turns: Sequence[ScriptedTurn],
        *,
        ttft_s: float = 0.05,
        chunk_interval_s: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.turns = list(turns)
        self.ttft_s = ttft_s
        self.chunk_interval_s = chunk_interval_s
        self.sleep = sleep
        self.clock = clock
        self.calls: list[ScriptedCall] = []
        self.cancelled = 0
        self.completed = 0

    @property
    def remaining(self) -> int:
        return len(self.turns)

    def _items(self, turn: ScriptedTurn) -> list[ScriptItem]:
        if isinstance(turn, str):
            return list(word_chunks(turn))
        if isinstance(turn, LLMError):
            return [turn]
        return list(turn)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        settings: GenerationSettings = GenerationSettings(),
    ) -> AsyncGenerator[LLMEvent, None]:
        started = self.clock()
        self.calls.append(ScriptedCall(tuple(messages), tuple(tools), settings))
        if not self.turns:
            raise LLMRequestError(f"ScriptedLLM has no turn left for call {len(self.calls)}")
        items = self._items(self.turns.pop(0))
        declared = {tool.name: tool for tool in tools} if settings.tool_choice != "none" else {}
        ttft: float | None = None
        produced = 0
        try:
            for index, item in enumerate(items):
                await self.sleep(self.ttft_s if index == 0 else self.chunk_interval_s)
                if isinstance(item, LLMError):
                    item.partial = produced > 0
                    raise item
                event: LLMEvent = TextDelta(item) if isinstance(item, str) else _checked(item, declared)
                if ttft is None:
                    ttft = self.clock() - started
                produced += 1
                yield event
            if not items:
                await self.sleep(self.ttft_s)
            calls = any(isinstance(item, ToolCall) for item in items)
            text = "".join(item for item in items if isinstance(item, str))
            yield Usage(sum(len(m.content.split()) for m in messages), len(text.split()) + 8 * calls, 0)
            self.completed += 1
            yield Finished("tool_calls" if calls else "stop", ttft, self.clock() - started)
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled += 1
            raise


def _checked(call: ToolCall, declared: dict[str, ToolSpec]) -> ToolCall:
    tool = declared.get(call.name)
    if tool is None:
        raise LLMBadResponse(f"scripted tool call {call.name!r} is not among the tools passed in")
    try:
        jsonschema.validate(dict(call.arguments), dict(tool.parameters))
    except jsonschema.ValidationError as exc:
        raise LLMBadResponse(f"scripted arguments for {call.name} do not match its schema: {exc.message}") from exc
    return call
