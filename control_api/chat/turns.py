"""One user turn of a text conversation: rebuild the brain, stream its events, record and bill the turn.

Every channel (chat sessions, /chat/completions, simulate) answers a message the same way:

    thread = Thread(org_id, agent, conversation_id, history, turn)   # loaded by the channel
    turn = Turn(services, thread, "Do you deliver to 80202?")
    async for event in turn.events(): ...                               # runtime.events, deltas included
    turn.result                                                         # messages, receipt, outcome, bill

A fresh `AgentBrain` answers each turn, rebuilt from the stored context (`load_history`), so no state lives
in the process between messages. No database connection is held while the model generates. When the
stream ends, or is closed early (the client went away: closing it closes the brain's stream, which
cancels generation), the turn is written in one transaction: the user's message, the messages the turn
added to the context, and the stored receipt events. A turn that delivered a reply and is not a draft is
then billed as one chat message (`Meter.record_usage`, exactly once per reply id; the meter commits in its
own batched transaction, so it follows the turn's).

Failures: the brain turns LLM failures into an `error` event and an apology; anything else that escapes
it is logged and becomes the same pair here, so the conversation stays usable and a stream never breaks
off without a last frame.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio

from control_api.billing.metering import UsageResult
from control_api.conversations import repository as conversations_repo
from control_api.conversations.outcome import Outcome, is_fatal, turn_outcome
from control_api.conversations.repository import NewMessage
from control_api.llm import event_timeout_s
from control_api.net_guard import guarded_client
from control_api.services import Services
from pipeline.llm.types import ChatMessage
from runtime import events as ev
from runtime.agent_config import CompiledAgent
from runtime.brain import AgentBrain, BrainDeps
from runtime.events import ConversationEvent

log = logging.getLogger("flowyte.chat")

APOLOGY = "Sorry, something went wrong on my side. Please try again in a moment."


@dataclass
class Thread:
    """A conversation as the runtime needs it: the pinned agent, its record and the context so far."""

    org_id: str
    agent: CompiledAgent
    conversation_id: str
    history: list[ChatMessage] = field(default_factory=list)
    turns: int = 0  # turns answered so far; the next one is `turns + 1`
    caller_id: str | None = None
    # The brain's guardrail state after the last turn (verification, lockouts, skill runs), from our own
    # storage: without it every turn would start unverified and maxAttempts would count per message.
    brain_state: dict[str, Any] | None = None

    @property
    def billable(self) -> bool:
        return not self.agent.is_draft


@dataclass
class TurnResult:
    number: int
    user_message: NewMessage
    messages: list[NewMessage] = field(default_factory=list)  # everything the turn added to the context
    receipt: list[ConversationEvent] = field(default_factory=list)  # the stored events, in order
    error: ConversationEvent | None = None
    completed: bool = False  # ran to its end (not cut short by a disconnect)
    ended: bool = False  # the agent ended the conversation (end_call or a handoff)
    usage: UsageResult | None = None
    recorded_at: datetime | None = None

    @property
    def replies(self) -> list[NewMessage]:
        return [m for m in self.messages if m.role == "assistant" and m.visible]

    @property
    def reply_text(self) -> str:
        """The agent's complete reply (the last `agent_message`, which is authoritative)."""
        message = next((e for e in reversed(self.receipt) if e.type == "agent_message"), None)
        return "" if message is None else str(message.data.get("text", ""))

    @property
    def outcome(self) -> Outcome | None:
        return turn_outcome(e.to_json() for e in self.receipt)


def brain_deps(services: Services) -> BrainDeps:
    assert services.llm is not None
    return BrainDeps(
        llm=services.llm,
        knowledge=services.knowledge,
        gaps=services.knowledge,
        http_client=guarded_client,  # webhook skills reach only public addresses (or allow-listed hosts)
        now=lambda: services.clock.now().replace(tzinfo=UTC),
        llm_timeout_s=event_timeout_s(services.llm),
    )


def build_brain(services: Services, thread: Thread) -> AgentBrain:
    brain = AgentBrain(
        thread.agent, brain_deps(services), channel="chat", conversation_id=thread.conversation_id,
        org_id=thread.org_id, caller_id=thread.caller_id,
    )
    brain.load_history(thread.history)
    if thread.brain_state:
        brain.load_state(thread.brain_state)
    return brain


def _context(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    return [m for m in messages if m.role != "system"]


class Turn:
    def __init__(self, services: Services, thread: Thread, text: str) -> None:
        self.services = services
        self.thread = thread
        self.text = text
        self.result = TurnResult(thread.turns + 1, NewMessage("user", text))

    async def events(self) -> AsyncGenerator[ConversationEvent, None]:
        """The brain's events for this turn as they happen; the turn is recorded when this closes."""
        started = self.services.clock.now()
        clock = self.services.clock.monotonic
        t0 = clock()
        collected: list[ConversationEvent] = []
        brain: AgentBrain | None = None
        try:
            brain = build_brain(self.services, self.thread)
            async with aclosing(brain.respond(self.text)) as stream:
                async for event in stream:
                    collected.append(event)
                    yield event
        except Exception as error:  # the brain only yields LLM failures; this is anything else
            log.exception("turn %s of conversation %s failed", self.result.number, self.thread.conversation_id)
            t_ms = (clock() - t0) * 1000
            for event in (ev.error(f"the agent failed: {type(error).__name__}", t_ms, code="internal"),
                          ev.agent_message(APOLOGY, t_ms)):
                collected.append(event)
                yield event
            brain = None  # its history is not to be trusted: record the user message and the apology
            self.result.completed = True
        else:
            self.result.completed = True
        finally:
            with anyio.CancelScope(shield=True):
                await self._record(brain, collected, started)

    def _added_messages(self, brain: AgentBrain | None, collected: Sequence[ConversationEvent]) -> list[NewMessage]:
        user = self.result.user_message
        if brain is not None:  # what the brain kept, a turn cut short included (it closes what it began)
            before = len(_context(self.thread.history))
            added = _context(brain.history)[before:]
            if added and added[0].role == "user":
                return [user, *(NewMessage.of(m) for m in added[1:])]
            return [user, *(NewMessage.of(m) for m in added)]
        # The brain itself failed: keep what the user said, and the apology.
        replies = [NewMessage("assistant", str(e.data.get("text", ""))) for e in collected if e.type == "agent_message"]
        return [user, *replies]

    async def _record(
        self, brain: AgentBrain | None, collected: Sequence[ConversationEvent], started: datetime
    ) -> None:
        result = self.result
        result.messages = self._added_messages(brain, collected)
        result.receipt = [e for e in collected if e.stored]
        result.error = next((e for e in reversed(collected) if is_fatal(e.to_json())), None)
        result.ended = bool(brain is not None and brain.ended) or result.outcome in ("transferred", "ended_by_agent")
        services = self.services
        result.recorded_at = services.clock.now()
        try:
            async with services.engine.begin() as conn:
                await conversations_repo.record_turn(
                    conn, org_id=self.thread.org_id, conversation_id=self.thread.conversation_id,
                    turn=result.number, messages=result.messages, events=result.receipt, started_at=started,
                    now=result.recorded_at, brain_state=None if brain is None else brain.state,
                )
        except Exception:
            log.exception("could not record turn %s of conversation %s", result.number, self.thread.conversation_id)
            if result.completed:
                raise
            return
        self.thread.history = [*self.thread.history, *(m.chat_message() for m in result.messages)]
        if brain is not None:
            self.thread.brain_state = brain.state
        self.thread.turns = result.number
        if self.thread.billable and result.completed and result.error is None and result.replies:
            result.usage = await self._bill(result.replies[-1])

    async def _bill(self, reply: NewMessage) -> UsageResult | None:
        meter = self.services.meter
        assert meter is not None
        try:
            return await meter.record_usage(
                self.thread.org_id, self.thread.agent.agent_id, "chat", 1, event_id=reply.id,
                occurred_at=self.services.clock.now(),
            )
        except Exception:  # the reply was delivered; a billing fault must not turn it into an error
            log.exception("could not meter chat message %s", reply.id)
            return None
