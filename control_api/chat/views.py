"""The JSON of an answered turn, shared by the session API (the non-streamed answer and the `done` frame)
and simulate."""

from __future__ import annotations

from typing import Any

from control_api.chat.turns import TurnResult
from control_api.clock import iso
from control_api.conversations.repository import NewMessage


def new_message_resource(message: NewMessage, turn: int, result: TurnResult) -> dict[str, Any]:
    return {
        "id": message.id,
        "role": message.role,
        "content": message.content,
        "turn": turn,
        "createdAt": iso(result.recorded_at),
    }


def turn_resource(result: TurnResult) -> dict[str, Any]:
    """The turn's transcript messages (the user's, then the agent's replies) and its receipt events."""
    return {
        "turn": result.number,
        "messages": [new_message_resource(m, result.number, result) for m in result.messages if m.visible],
        "events": [e.to_json() for e in result.receipt],
        "error": None if result.error is None else result.error.to_json(),
        "ended": result.ended,
        "outcome": result.outcome,
    }
