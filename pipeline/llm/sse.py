"""Server-sent events and OpenAI chat-completion chunks, sans-I/O: lines in, events out.

`SSEParser` follows the WHATWG event-stream rules that matter here: `data:` lines accumulate (joined with
newlines) until a blank line dispatches them; comments (`:`), `event:`, `id:` and `retry:` are ignored.

`ChunkAccumulator` turns the JSON of each `chat.completion.chunk` into our events: `delta.content` becomes
a `TextDelta` at once; `delta.tool_calls` fragments are merged by `index` (the id and name come in the
first fragment, `function.arguments` arrives as string pieces) and become `ToolCall`s only when the
choice finishes, after the name is checked against the declared tools and the joined arguments are
parsed and validated against the tool's schema. `usage` (sent in a last chunk when requested with
`stream_options.include_usage`) becomes `Usage`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from pipeline.llm.errors import LLMBadResponse, LLMUnavailable
from pipeline.llm.types import FinishReason, TextDelta, ToolCall, ToolSpec, Usage

DONE = "[DONE]"


class SSEParser:
    def __init__(self) -> None:
        self._data: list[str] = []

    def feed_line(self, line: str) -> str | None:
        """Feed one line (without its line ending); returns an event's data when a blank line ends one."""
        if line == "":
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def close(self) -> str | None:
        """The stream ended: an event not yet closed by a blank line is dispatched anyway."""
        return self.feed_line("")


@dataclass
class _PendingCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


_FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "stop",
}


class ChunkAccumulator:
    def __init__(self, tools: Sequence[ToolSpec]) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.calls: dict[int, _PendingCall] = {}
        self.finish_reason: FinishReason | None = None
        self.started = False  # a content or tool-call chunk has arrived (the model's first token)

    def feed(self, data: str) -> list[TextDelta | ToolCall | Usage]:
        """One SSE data payload (not `[DONE]`) in, the events it completes out."""
        try:
            chunk = json.loads(data)
        except ValueError as exc:
            raise LLMBadResponse(f"stream chunk is not JSON: {data[:200]!r}") from exc
        if not isinstance(chunk, dict):
            raise LLMBadResponse(f"stream chunk is not an object: {data[:200]!r}")
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise LLMUnavailable(f"the endpoint reported an error mid-stream: {message}")
        events: list[TextDelta | ToolCall | Usage] = []
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # we never ask for n > 1
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                self.started = True
                events.append(TextDelta(content))
            for fragment in delta.get("tool_calls") or []:
                self.started = True
                self._merge(fragment)
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = _FINISH_REASONS.get(reason, "stop")
                events.extend(self.completed_calls())
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details") or {}
            events.append(
                Usage(
                    int(usage.get("prompt_tokens") or 0),
                    int(usage.get("completion_tokens") or 0),
                    int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
                )
            )
        return events

    def _merge(self, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            raise LLMBadResponse(f"tool call fragment is not an object: {fragment!r}")
        pending = self.calls.setdefault(int(fragment.get("index", 0)), _PendingCall())
        pending.id = pending.id or str(fragment.get("id") or "")
        function = fragment.get("function") or {}
        pending.name = pending.name or str(function.get("name") or "")
        piece = function.get("arguments")
        if isinstance(piece, str):
            pending.arguments.append(piece)
        elif isinstance(piece, dict):  # a few servers send the object whole
            pending.arguments.append(json.dumps(piece))

    def completed_calls(self) -> list[ToolCall]:
        calls = [self._finish(index, pending) for index, pending in sorted(self.calls.items())]
        self.calls.clear()
        return calls

    def _finish(self, index: int, pending: _PendingCall) -> ToolCall:
        tool = self.tools.get(pending.name)
        if tool is None:
            raise LLMBadResponse(f"the model called an undeclared tool {pending.name!r}")
        text = "".join(pending.arguments).strip() or "{}"
        try:
            arguments = json.loads(text)
        except ValueError as exc:
            raise LLMBadResponse(f"arguments for {tool.name} are not JSON: {text[:200]!r}") from exc
        try:
            jsonschema.validate(arguments, dict(tool.parameters))
        except jsonschema.ValidationError as exc:
            raise LLMBadResponse(f"arguments for {tool.name} do not match its schema: {exc.message}") from exc
        return ToolCall(pending.id or f"call_{index}", tool.name, arguments)
