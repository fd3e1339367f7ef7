"""The SSE frames of the native chat streams (session messages, simulate).

Each event the brain yields is one frame, `event: <type>` / `data: <event JSON>` (agent_delta, tool_call,
kb_retrieval, guardrail, agent_message, ...). A stream ends with exactly one terminal frame:

    event: done    data: the assembled result (what the non-streamed request answers)
    event: error   data: the error event ({type, code, message, tMs}) plus `result`, when a turn failed
                   (the apology was still streamed as an agent_message before it) or anything else broke

The brain's `error` events are held back: one that failed the turn becomes the terminal frame (so a
client can stop reading at the first `error`); one the turn recovered from (the knowledge search failed
but the model still answered) is only in the receipt, `events` of the result.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from control_api.chat.sse import frame
from control_api.chat.turns import Turn, TurnResult

log = logging.getLogger("flowyte.chat")


async def event_frames(turn: Turn) -> AsyncGenerator[bytes, None]:
    """A frame for every event of the turn except `error` (see the module docstring)."""
    async with aclosing(turn.events()) as events:
        async for event in events:
            if event.type != "error":
                yield frame(event.type, event.to_json())


def terminal_frame(result: TurnResult | None, payload: dict[str, Any]) -> bytes:
    if result is not None and result.error is not None:
        return frame("error", {**result.error.to_json(), "result": payload})
    return frame("done", payload)


def internal_error_frame(where: str) -> bytes:
    log.exception("chat stream failed: %s", where)
    return frame(
        "error",
        {"type": "error", "code": "internal", "message": "an unexpected error occurred; the conversation was "
         "kept and you can send the message again", "tMs": 0.0},
    )
