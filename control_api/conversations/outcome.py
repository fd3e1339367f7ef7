"""How a conversation ended, and its one-line summary: both derived, deterministically, with no LLM.

Outcomes, in the order they win when several apply to the last turn:

    transferred      the agent handed the conversation off (a `handoff` event)
    ended_by_agent   the agent ended it (an `end` event)
    error            the last turn failed (an `error` event, e.g. the LLM was down)
    completed        it ran and closed normally (the user ended the session, a completion was answered)
    abandoned        it closed with no user message, or the client went away mid-answer
    refused          a call that was not taken (agent never published, nothing to pay with)

The summary names what the user first asked and the outcome, so the history list reads at a glance:
`Asked "Do you deliver to 80202?" - completed.`
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

Outcome = Literal["completed", "transferred", "ended_by_agent", "abandoned", "error", "refused"]
OUTCOMES: tuple[Outcome, ...] = ("completed", "transferred", "ended_by_agent", "abandoned", "error", "refused")

_LABELS: dict[str | None, str] = {
    None: "in progress",
    "completed": "completed",
    "transferred": "transferred to a person",
    "ended_by_agent": "ended by the agent",
    "abandoned": "abandoned",
    "error": "ended with an error",
    "refused": "refused",
}

SUMMARY_QUOTE_CHARS = 120


# Errors after which the turn still answered properly (the knowledge search failed, the model replied).
NON_FATAL_ERRORS = frozenset({"knowledge_unavailable"})


def is_fatal(event: Mapping[str, Any]) -> bool:
    """An `error` event that means the turn failed (its reply, if any, is an apology)."""
    return event.get("type") == "error" and event.get("code") not in NON_FATAL_ERRORS


def turn_outcome(events: Iterable[Mapping[str, Any]]) -> Outcome | None:
    """The outcome a turn's events (receipt JSON) force: handoff, end, a failure; None when it ran normally."""
    seen = list(events)
    types = {e.get("type") for e in seen}
    if "handoff" in types:
        return "transferred"
    if "end" in types:
        return "ended_by_agent"
    if any(is_fatal(e) for e in seen):
        return "error"
    return None


def closing_outcome(last_turn: Outcome | None, *, user_messages: int) -> Outcome:
    """The outcome of a conversation closed by its channel (session ended, completion answered)."""
    if last_turn is not None:
        return last_turn
    return "completed" if user_messages > 0 else "abandoned"


def one_line(text: str, limit: int = SUMMARY_QUOTE_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def summarize(first_user_text: str | None, outcome: str | None) -> str:
    label = _LABELS.get(outcome, outcome or "in progress")
    if not first_user_text or not first_user_text.strip():
        return f"No message from the user - {label}."
    return f'Asked "{one_line(first_user_text)}" - {label}.'
