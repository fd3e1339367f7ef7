"""The SSE plumbing on its own: frames, heartbeats while the producer is quiet, and closing a producer
that is mid-step (its cleanup runs, in order)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing

from control_api.chat.sse import HEARTBEAT, data_frame, frame, with_heartbeats


def test_frames() -> None:
    assert frame("agent_delta", {"text": "héllo"}) == 'event: agent_delta\ndata: {"text":"héllo"}\n\n'.encode()
    assert data_frame("[DONE]") == b"data: [DONE]\n\n"
    assert data_frame({"a": 1}) == b'data: {"a":1}\n\n'


async def test_heartbeats_fill_the_silences_and_chunks_pass_in_order() -> None:
    gate = asyncio.Event()

    async def producer() -> AsyncGenerator[bytes, None]:
        yield b"one"
        await gate.wait()
        yield b"two"

    out: list[bytes] = []
    async with aclosing(with_heartbeats(producer(), 0.01)) as stream:
        async for chunk in stream:
            out.append(chunk)
            if out.count(HEARTBEAT) == 3:
                gate.set()
    assert out[0] == b"one" and out[-1] == b"two" and out[1:-1] == [HEARTBEAT] * 3


async def test_closing_mid_step_cancels_the_producer_and_runs_its_cleanup() -> None:
    log: list[str] = []

    async def producer() -> AsyncGenerator[bytes, None]:
        try:
            yield b"first"
            await asyncio.Event().wait()  # a model that never answers
            yield b"never"
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        finally:
            await asyncio.sleep(0)  # cleanup may await
            log.append("cleaned up")

    stream = with_heartbeats(producer(), 0.01)
    assert await anext(stream) == b"first"
    assert await anext(stream) == HEARTBEAT  # the producer is now suspended inside its step
    await stream.aclose()
    assert log == ["cancelled", "cleaned up"]
