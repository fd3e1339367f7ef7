"""What a conversation reports: the receipt events, in order, with their timings.

The brain (runtime/brain) yields these while it answers one user turn; the chat channel streams them as
SSE frames (`event: <type>` / `data: <to_json()>`), the conversation record stores them as the receipt,
and the voice pipeline will read the same stream. One vocabulary for every channel:

    user_utterance   what the user said (or typed)
    agent_delta      a piece of the agent's reply as it is generated (streamed, not stored)
    agent_message    the agent's complete reply for this step (stored)
    tool_call        a skill or built-in tool ran: name, arguments, outcome, result as the model saw it
    kb_retrieval     a knowledge lookup: query, passages, top score
    guardrail        a guardrail decision: which policy, allow/deny/filter, why
    verification     a caller-verification attempt and its outcome
    handoff          a transfer was requested: destination, reason, warm or not
    transfer         how a voice transfer went (the SIP NOTIFY outcome): destination, ok, sipStatus
    end              the agent ended the conversation (end_call), with a reason
    error            something failed; the conversation stays usable (e.g. the LLM is down)

`t_ms` is milliseconds since the start of the turn that produced the event, so a receipt shows where
time went (time to first token, tool durations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

EventType = Literal[
    "user_utterance",
    "agent_delta",
    "agent_message",
    "tool_call",
    "kb_retrieval",
    "guardrail",
    "verification",
    "handoff",
    "transfer",
    "end",
    "error",
]

# Events kept in the conversation receipt; deltas are only streamed.
STORED_TYPES: frozenset[str] = frozenset(
    {"user_utterance", "agent_message", "tool_call", "kb_retrieval", "guardrail", "verification", "handoff",
     "transfer", "end", "error"}
)


@dataclass(frozen=True)
class ConversationEvent:
    type: EventType
    data: dict[str, Any] = field(default_factory=dict)
    t_ms: float = 0.0

    @property
    def stored(self) -> bool:
        return self.type in STORED_TYPES

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "tMs": round(self.t_ms, 1), **self.data}


def user_utterance(text: str, t_ms: float = 0.0, *, source: str = "text") -> ConversationEvent:
    return ConversationEvent("user_utterance", {"text": text, "source": source}, t_ms)


def agent_delta(text: str, t_ms: float) -> ConversationEvent:
    return ConversationEvent("agent_delta", {"text": text}, t_ms)


def agent_message(
    text: str, t_ms: float, *, ttft_ms: float | None = None, usage: dict[str, int] | None = None
) -> ConversationEvent:
    """The turn's reply. `usage` sums the model calls of the turn (promptTokens, cachedPromptTokens: of those,
    served from the model's prefix cache, completionTokens) when the model reported it: what a slow first token
    cost is then on the receipt (a prompt the cache did not cover is evaluated before the first word)."""
    data: dict[str, Any] = {"text": text, "ttftMs": ttft_ms}
    if usage is not None:
        data["usage"] = usage
    return ConversationEvent("agent_message", data, t_ms)


def tool_call(
    name: str,
    arguments: dict[str, Any],
    *,
    status: Literal["ok", "error", "timeout", "refused"],
    result: Any,
    duration_ms: float,
    t_ms: float,
    skill_id: str | None = None,
) -> ConversationEvent:
    return ConversationEvent(
        "tool_call",
        {"name": name, "skillId": skill_id, "arguments": arguments, "status": status, "result": result,
         "durationMs": round(duration_ms, 1)},
        t_ms,
    )


def kb_retrieval(query: str, passages: list[dict[str, Any]], top_score: float | None, t_ms: float) -> ConversationEvent:
    return ConversationEvent("kb_retrieval", {"query": query, "passages": passages, "topScore": top_score}, t_ms)


def guardrail(
    policy: str, decision: Literal["allow", "deny", "filter"], reason: str, t_ms: float, **detail: Any
) -> ConversationEvent:
    return ConversationEvent("guardrail", {"policy": policy, "decision": decision, "reason": reason, **detail}, t_ms)


def verification(
    method: str, outcome: Literal["verified", "failed", "locked"], t_ms: float, **detail: Any
) -> ConversationEvent:
    return ConversationEvent("verification", {"method": method, "outcome": outcome, **detail}, t_ms)


def handoff(destination: str | None, reason: str, warm: bool, t_ms: float, **detail: Any) -> ConversationEvent:
    return ConversationEvent("handoff", {"destination": destination, "reason": reason, "warm": warm, **detail}, t_ms)


def transfer(destination: str, *, ok: bool, sip_status: int, reason: str, t_ms: float) -> ConversationEvent:
    return ConversationEvent(
        "transfer", {"destination": destination, "ok": ok, "sipStatus": sip_status, "reason": reason}, t_ms
    )


def end(reason: str, t_ms: float) -> ConversationEvent:
    return ConversationEvent("end", {"reason": reason}, t_ms)


def error(message: str, t_ms: float, *, code: str = "internal") -> ConversationEvent:
    return ConversationEvent("error", {"message": message, "code": code}, t_ms)
