"""Server-Sent Events: the frame format and a streaming response that always closes its producer.

Frames are `event: <type>\\ndata: <json>\\n\\n` (the OpenAI-compatible endpoint sends bare `data:` lines).
The response is a starlette `StreamingResponse` whose producer is an async generator. When the client
goes away, starlette cancels the task reading the generator; `EventStreamResponse` then closes the
generator itself (shielded from that cancellation), so its `finally` blocks run at once, close the
brain's and the LLM's streams (cancelling generation) and record what happened. Without this, a
generator suspended at `yield` when the client left would only be closed whenever it is collected.

While the producer is quiet (the local model can think for a minute before its first token), a comment
line `: keep-alive` goes out every `HEARTBEAT_S`, so proxies and clients do not drop an idle stream; SSE
parsers (OpenAI's SDKs included) ignore comments.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

HEARTBEAT_S = 15.0
HEARTBEAT = b": keep-alive\n\n"

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # tell a fronting nginx not to buffer the stream
}


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


def frame(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {_json(data)}\n\n".encode()


def data_frame(data: Any) -> bytes:
    """A frame without an event name (what OpenAI clients read); `[DONE]` is sent raw."""
    payload = data if isinstance(data, str) else _json(data)
    return f"data: {payload}\n\n".encode()


async def with_heartbeats(producer: AsyncGenerator[bytes, None], interval_s: float) -> AsyncGenerator[bytes, None]:
    """`producer`'s chunks, with a heartbeat comment whenever it has been silent for `interval_s`.

    The producer is stepped in a task of its own so the wait can time out without disturbing it; if this
    generator is cancelled or closed, that task is cancelled and awaited (the producer's cleanup runs).
    """
    done = object()

    async def step() -> object:
        try:
            return await anext(producer)
        except StopAsyncIteration:
            return done

    pending: asyncio.Task[object] | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(step())
            finished, _ = await asyncio.wait({pending}, timeout=interval_s)
            if not finished:
                yield HEARTBEAT
                continue
            chunk, pending = pending.result(), None
            if chunk is done:
                return
            assert isinstance(chunk, bytes)
            yield chunk
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.wait({pending})


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"

    def __init__(
        self,
        producer: AsyncGenerator[bytes, None],
        *,
        on_close: Callable[[], Awaitable[None]] | None = None,
        headers: dict[str, str] | None = None,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self._stream = with_heartbeats(producer, heartbeat_s)
        super().__init__(self._stream, headers={**SSE_HEADERS, **(headers or {})}, media_type=self.media_type)
        self._producer = producer
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream; then, however it ended, close the producer and run `on_close` (which also runs when
        the client left before the producer ever started, when closing it runs none of its code)."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                try:
                    await self._stream.aclose()  # stops a producer step in flight, then the producer
                    await self._producer.aclose()
                finally:
                    if self._on_close is not None:
                        await self._on_close()
