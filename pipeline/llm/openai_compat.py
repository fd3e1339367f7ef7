"""Any OpenAI-compatible `/chat/completions` endpoint, streamed over httpx (no vendor SDK).

One call is one POST with `stream: true`; the SSE body is parsed by `sse.SSEParser` and turned into events
by `sse.ChunkAccumulator` (text at once, tool calls when complete and validated).

Timeouts: `connect_timeout_s` for the TCP/TLS connect, `first_token_timeout_s` from sending the request
to the first content or tool-call chunk, `total_timeout_s` for the whole call. Any of them raises
`LLMUnavailable`.

Retries: connect errors, timeouts and 408/429/5xx answers are retried with exponential backoff (a
`Retry-After` header is honoured up to `max_backoff_s`) — but only while nothing has been yielded. Once
an event has gone to the consumer a failure is raised with `partial=True`: a retry could repeat text the
caller already heard, or propose a tool call again after the runtime executed it. Other 4xx answers
raise `LLMRequestError` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from pipeline.llm.errors import LLMError, LLMRequestError, LLMUnavailable
from pipeline.llm.sse import DONE, ChunkAccumulator, SSEParser
from pipeline.llm.types import (
    ChatMessage,
    Finished,
    FinishReason,
    GenerationSettings,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class OpenAICompatConfig:
    base_url: str  # e.g. https://api.example.com/v1 ; `/chat/completions` is appended
    model: str
    api_key: str | None = None
    connect_timeout_s: float = 5.0
    first_token_timeout_s: float = 15.0
    total_timeout_s: float = 120.0
    max_attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    include_usage: bool = True  # ask for `stream_options.include_usage`

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OpenAICompatConfig | None:
        """`FLOWYTE_LLM_BASE_URL`, `FLOWYTE_LLM_MODEL`, `FLOWYTE_LLM_API_KEY`; None without a base URL."""
        env = os.environ if env is None else env
        base_url = env.get("FLOWYTE_LLM_BASE_URL", "").strip()
        if not base_url:
            return None
        model = env.get("FLOWYTE_LLM_MODEL", "").strip()
        if not model:
            raise ValueError("FLOWYTE_LLM_BASE_URL is set but FLOWYTE_LLM_MODEL is not")
        return cls(base_url=base_url, model=model, api_key=env.get("FLOWYTE_LLM_API_KEY") or None)

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


def message_json(message: ChatMessage) -> dict[str, Any]:
    body: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        body["content"] = message.content or None
        body["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.role == "tool":
        body["tool_call_id"] = message.tool_call_id
        if message.name:
            body["name"] = message.name
    return body


def request_json(
    config: OpenAICompatConfig,
    messages: Sequence[ChatMessage],
    tools: Sequence[ToolSpec],
    settings: GenerationSettings,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": config.model,
        "messages": [message_json(message) for message in messages],
        "stream": True,
        "max_tokens": settings.max_tokens,
        "temperature": settings.temperature,
    }
    if config.include_usage:
        body["stream_options"] = {"include_usage": True}
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": dict(t.parameters)},
            }
            for t in tools
        ]
        body["tool_choice"] = settings.tool_choice
    return body


class _Attempt(Exception):
    """A failure of one attempt, before anything was yielded: retry unless out of attempts/time."""

    def __init__(self, error: LLMError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("retry-after", "")))
    except ValueError:
        return None


class OpenAICompatProvider:
    """`LLMProvider` for an OpenAI-compatible endpoint. Give it a shared `httpx.AsyncClient` to reuse
    connections; otherwise it makes one and `aclose()` closes it."""

    def __init__(
        self,
        config: OpenAICompatConfig,
        *,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.clock = clock
        self._client = client
        self._owns_client = client is None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        settings: GenerationSettings = GenerationSettings(),
    ) -> AsyncGenerator[LLMEvent, None]:
        started = self.clock()
        deadline = started + self.config.total_timeout_s
        body = request_json(self.config, messages, tools, settings)
        declared = tools if settings.tool_choice != "none" else ()
        ttft: float | None = None
        yielded = False
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                async with contextlib.aclosing(self._attempt(body, declared, deadline)) as events:
                    async for event in events:
                        if isinstance(event, TextDelta | ToolCall) and ttft is None:
                            ttft = self.clock() - started
                        if isinstance(event, Finished):
                            yield Finished(event.finish_reason, ttft, self.clock() - started)
                            return
                        yielded = True
                        yield event
                return
            except _Attempt as failure:
                if yielded:  # cannot happen: _attempt only raises _Attempt before its first event
                    failure.error.partial = True
                    raise failure.error from None
                retryable = isinstance(failure.error, LLMUnavailable)
                pause = failure.retry_after_s
                if pause is None:
                    pause = self.config.backoff_s * 2 ** (attempt - 1)
                pause = min(pause, self.config.max_backoff_s)
                if not retryable or attempt == self.config.max_attempts or self.clock() + pause >= deadline:
                    raise failure.error from None
                await asyncio.sleep(pause)
            except LLMError as error:
                error.partial = yielded
                raise

    async def _attempt(
        self, body: dict[str, Any], tools: Sequence[ToolSpec], deadline: float
    ) -> AsyncGenerator[LLMEvent, None]:
        """One POST. Raises `_Attempt` for failures before its first event, `LLMError` after."""
        headers = {"Accept": "text/event-stream"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        remaining = max(0.001, deadline - self.clock())
        timeout = httpx.Timeout(remaining, connect=min(self.config.connect_timeout_s, remaining))
        request = self._http().build_request("POST", self.config.url, json=body, headers=headers, timeout=timeout)
        first_deadline = min(deadline, self.clock() + self.config.first_token_timeout_s)
        emitted = False
        try:
            response = await self._within(self._http().send(request, stream=True), first_deadline, "headers")
        except LLMUnavailable as error:
            raise _Attempt(error) from None
        try:
            if response.status_code != 200:
                text = (await self._within(response.aread(), first_deadline, "error body")).decode(errors="replace")
                message = f"{self.config.url} answered {response.status_code}: {text[:300]}"
                if response.status_code in RETRYABLE_STATUS or response.status_code >= 500:
                    raise _Attempt(LLMUnavailable(message, status=response.status_code), _retry_after(response))
                raise _Attempt(LLMRequestError(message, status=response.status_code))
            async for event in self._events(response, tools, first_deadline, deadline):
                emitted = emitted or isinstance(event, TextDelta | ToolCall)
                yield event
        except LLMError as error:
            if emitted:
                error.partial = True
                raise
            raise _Attempt(error) from None
        finally:
            await response.aclose()

    async def _events(
        self, response: httpx.Response, tools: Sequence[ToolSpec], first_deadline: float, deadline: float
    ) -> AsyncIterator[LLMEvent]:
        parser, chunks = SSEParser(), ChunkAccumulator(tools)
        lines = response.aiter_lines()
        usage: Usage | None = None
        while True:
            what, wait_until = ("stream", deadline) if chunks.started else ("first token", first_deadline)
            line = await self._within(_next_line(lines), wait_until, what)
            data = parser.close() if line is None else parser.feed_line(line)
            if data == DONE or (line is None and data is None):
                break
            if data is None:
                continue
            for event in chunks.feed(data):
                if isinstance(event, Usage):
                    usage = event
                    continue
                yield event
        if chunks.finish_reason is None:
            raise LLMUnavailable("the stream ended before the model finished")
        for call in chunks.completed_calls():
            yield call
        if usage is not None:
            yield usage
        reason: FinishReason = chunks.finish_reason
        yield Finished(reason, None, 0.0)

    async def _within(self, awaitable: Any, deadline: float, what: str) -> Any:
        try:
            async with asyncio.timeout(max(0.0, deadline - self.clock())):
                return await awaitable
        except TimeoutError:
            raise LLMUnavailable(f"timed out waiting for the {what} of {self.config.url}") from None
        except httpx.TimeoutException as exc:
            raise LLMUnavailable(f"timed out talking to {self.config.url}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise LLMUnavailable(f"could not talk to {self.config.url}: {exc!r}") from exc


async def _next_line(lines: AsyncIterator[str]) -> str | None:
    try:
        return await anext(lines)
    except StopAsyncIteration:
        return None
