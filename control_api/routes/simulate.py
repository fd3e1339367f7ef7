"""`POST /agents/{agentId}/simulate`: run a scripted text conversation and stream its audit events.

The request names the user's side (`transcript[]`, or one `message`); each is answered in order by one
agent, the draft compiled now (`draftMode`, the default: never billed) or the published version (409
no_published_version if there is none; billed as chat messages, 402 when the wallet cannot pay). Every
event streams as an SSE frame (`event: <type>` / `data: <json>`, the same shapes the receipt stores);
the stream ends with `event: done` (the conversation and its transcript), or `event: error` when a
turn failed, which also stops the script. The run is recorded as a conversation on channel `simulate`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request
from pydantic import Field, model_validator

from control_api.chat import sessions as sessions_repo
from control_api.chat.sse import EventStreamResponse
from control_api.chat.streaming import event_frames, internal_error_frame, terminal_frame
from control_api.chat.turns import Thread, Turn, TurnResult
from control_api.chat.views import turn_resource
from control_api.conversations import repository as conversations_repo
from control_api.conversations.outcome import closing_outcome
from control_api.conversations.views import conversation_resource
from control_api.errors import field_error
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.routes.chat import ensure_can_pay
from control_api.schemas.common import ApiModel
from control_api.services import Services

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Test"])

MAX_TURNS = 50


class SimulateRequest(ApiModel):
    mode: Literal["text", "voice"] = "text"
    draft_mode: bool = Field(
        True, description="Run the draft compiled now (not billed); false runs the published version."
    )
    transcript: list[str] | None = Field(
        None, min_length=1, max_length=MAX_TURNS, description="The user's messages, answered in order."
    )
    message: str | None = Field(None, min_length=1, max_length=8000, description="One user message.")

    @model_validator(mode="after")
    def _one_script(self) -> SimulateRequest:
        if (self.transcript is None) == (self.message is None):
            raise ValueError("send either transcript (the user's messages) or message, not both")
        if self.transcript is not None and any(not m.strip() or len(m) > 8000 for m in self.transcript):
            raise ValueError("each transcript message must be 1-8000 characters")
        return self

    @property
    def script(self) -> list[str]:
        return list(self.transcript) if self.transcript is not None else [self.message or ""]


@router.post(
    "/agents/{agent_id}/simulate",
    openapi_extra=scope("agents:write"),
    summary="Simulate a conversation",
    description="Runs a text simulation against the agent and streams the conversation back as server-sent "
    "events, ending with `event: done` (or `event: error`). draftMode (default true) tests the draft without "
    "billing.",
    response_model=None,
)
async def simulate(agent_id: str, body: SimulateRequest, request: Request) -> EventStreamResponse:
    services, principal = services_of(request), principal_of(request)
    org_id = principal.org_id
    async with services.engine.connect() as conn:
        agent = await sessions_repo.resolve_agent(conn, org_id, agent_id, draft=body.draft_mode)
    if body.mode != "text":
        raise field_error("mode", 'only "text" can be simulated over the API; test voice in the in-browser tester')
    if not agent.is_draft:
        await ensure_can_pay(services, org_id)
    async with services.engine.begin() as conn:
        conversation_id = await conversations_repo.create(
            conn, org_id=org_id, agent=agent, channel="simulate", now=services.clock.now()
        )
    thread = Thread(org_id, agent, conversation_id)
    results: list[TurnResult] = []

    async def close(finished: bool = False) -> None:
        await _close(services, thread, results, finished=finished)

    return EventStreamResponse(_run(services, thread, body.script, results, close), on_close=close)


async def _run(
    services: Services, thread: Thread, script: list[str], results: list[TurnResult], close: Any
) -> AsyncGenerator[bytes, None]:
    try:
        for text in script:
            turn = Turn(services, thread, text)
            results.append(turn.result)
            async for chunk in event_frames(turn):
                yield chunk
            if turn.result.error is not None or turn.result.ended:
                break
        await close(True)
        async with services.engine.connect() as conn:
            conversation = await conversations_repo.get(conn, thread.org_id, thread.conversation_id)
        payload = {"conversation": conversation_resource(conversation), "turns": [turn_resource(r) for r in results]}
        yield terminal_frame(results[-1] if results else None, payload)
    except Exception:
        yield internal_error_frame(f"simulation {thread.conversation_id}")


async def _close(services: Services, thread: Thread, results: list[TurnResult], *, finished: bool) -> None:
    """Close the conversation: the outcome of its last turn, or abandoned if the client left before the
    script was played to its end."""
    last = results[-1] if results else None
    if last is None or not last.completed or not finished:
        outcome = "abandoned"
    else:
        outcome = closing_outcome(last.outcome, user_messages=len(results))
    with anyio.CancelScope(shield=True):
        async with services.engine.begin() as conn:
            await conversations_repo.finish(conn, thread.org_id, thread.conversation_id, outcome, services.clock.now())
