"""Chat sessions: create one (published or draft agent), send messages (JSON or SSE), read them, end it.

A published-mode session is refused with 402 when the wallet cannot pay for a chat message, at creation
and before each message; draft mode is never billed. Each answered message is recorded in the session's
conversation (transcript + receipt); ending the session closes the conversation with its outcome.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from pydantic import Field

from control_api.chat import sessions as sessions_repo
from control_api.chat.sse import EventStreamResponse
from control_api.chat.streaming import event_frames, internal_error_frame, terminal_frame
from control_api.chat.turns import Thread, Turn, TurnResult, build_brain
from control_api.chat.views import turn_resource
from control_api.conversations import repository as conversations_repo
from control_api.conversations.outcome import closing_outcome, turn_outcome
from control_api.conversations.repository import NewMessage
from control_api.conversations.views import message_resource
from control_api.errors import PaymentRequired
from control_api.http.envelope import PageParams, ok, page
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.schemas.common import ApiModel
from control_api.services import Services
from runtime import events as ev

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Chat"])


class CreateSession(ApiModel):
    agent_id: str = Field(min_length=1, max_length=40)
    draft_mode: bool = Field(False, description="Run the current draft (compiled now, never billed).")


class SendMessage(ApiModel):
    content: str = Field(min_length=1, max_length=8000)
    stream: bool = Field(False, description="Answer as Server-Sent Events instead of one JSON response.")


async def ensure_can_pay(services: Services, org_id: str) -> None:
    """402 when the organization's wallet cannot pay for one chat message."""
    assert services.meter is not None
    decision = await services.meter.can_serve(org_id, "chat")
    if not decision.allowed:
        raise PaymentRequired(
            "the wallet balance cannot pay for a chat message; add credits or use draftMode to test for free",
            extra={"balanceCredits": decision.balance_credits},
        )


@router.post("/chat/sessions", status_code=201, openapi_extra=scope("chat:write"), summary="Create a chat session")
async def create_session(body: CreateSession, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        agent = await sessions_repo.resolve_agent(conn, principal.org_id, body.agent_id, draft=body.draft_mode)
    if not agent.is_draft:
        await ensure_can_pay(services, principal.org_id)
    now = services.clock.now()
    async with services.engine.begin() as conn:
        conversation_id = await conversations_repo.create(
            conn, org_id=principal.org_id, agent=agent, channel="chat", now=now
        )
        session_id = await sessions_repo.create(
            conn, org_id=principal.org_id, agent=agent, conversation_id=conversation_id, now=now
        )
        greeting = build_brain(services, Thread(principal.org_id, agent, conversation_id)).greeting()
        if greeting:
            await conversations_repo.record_turn(
                conn, org_id=principal.org_id, conversation_id=conversation_id, turn=0,
                messages=[NewMessage("assistant", greeting)], events=[ev.agent_message(greeting, 0.0)],
                started_at=now, now=now,
            )
        row = await sessions_repo.get(conn, principal.org_id, session_id)
    return ok({**sessions_repo.session_resource(row), "greeting": greeting or None})


@router.get("/chat/sessions/{session_id}", openapi_extra=scope("chat:read"), summary="Get a chat session")
async def get_session(session_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        row = await sessions_repo.get(conn, principal.org_id, session_id)
    return ok(sessions_repo.session_resource(row))


@router.get(
    "/chat/sessions/{session_id}/messages",
    openapi_extra=scope("chat:read"),
    summary="List chat messages",
    description="The session's transcript, oldest first, a page at a time.",
)
async def list_messages(session_id: str, request: Request, paging: PageParams = Depends()) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        session = await sessions_repo.get(conn, principal.org_id, session_id)
        rows, cursor = await conversations_repo.messages_page(
            conn, principal.org_id, session.conversation_id, limit=paging.limit, cursor=paging.cursor
        )
    return page([{**message_resource(r), "sessionId": session_id} for r in rows], cursor, paging.limit)


@router.post(
    "/chat/sessions/{session_id}/messages",
    openapi_extra=scope("chat:write"),
    summary="Send a chat message",
    description="Answers with the user's message, the agent's reply and the turn's receipt events; with "
    "`stream: true`, as Server-Sent Events (`event: <type>` / `data: <json>`) ending with `event: done` "
    "(or `event: error`).",
    response_model=None,
)
async def send_message(session_id: str, body: SendMessage, request: Request) -> dict[str, Any] | EventStreamResponse:
    services, principal = services_of(request), principal_of(request)
    org_id = principal.org_id
    async with services.engine.connect() as conn:
        session = await sessions_repo.get(conn, org_id, session_id)
    if session.status != "active":
        raise sessions_repo.ended(session_id)
    if not session.draft:
        await ensure_can_pay(services, org_id)
    async with services.engine.begin() as conn:
        claim = await sessions_repo.claim_turn(conn, org_id, session_id, services.clock.now())

    async def release() -> None:
        with anyio.CancelScope(shield=True):
            async with services.engine.begin() as conn:
                await sessions_repo.release_turn(conn, org_id, session_id, claim, services.clock.now())

    try:
        async with services.engine.connect() as conn:
            agent = await sessions_repo.pinned_agent(conn, session)
            history = await conversations_repo.history(conn, org_id, session.conversation_id)
            conversation = await conversations_repo.get(conn, org_id, session.conversation_id)
    except BaseException:
        await release()
        raise
    thread = Thread(org_id, agent, session.conversation_id, history, conversation.turn_count,
                    brain_state=conversation.brain_state)
    turn = Turn(services, thread, body.content)
    if body.stream:
        return EventStreamResponse(_stream(services, session_id, turn, release), on_close=release)
    try:
        async for _ in turn.events():
            pass
        return ok(await _answered(services, org_id, session_id, turn.result))
    finally:
        await release()


async def _stream(
    services: Services, session_id: str, turn: Turn, release: Callable[[], Awaitable[None]]
) -> AsyncGenerator[bytes, None]:
    try:
        async for chunk in event_frames(turn):
            yield chunk
        payload = await _answered(services, turn.thread.org_id, session_id, turn.result)
        await release()  # before the last frame: a client may send its next message as soon as it has it
        yield terminal_frame(turn.result, payload)
    except Exception:
        yield internal_error_frame(f"chat session {session_id}")


async def _answered(services: Services, org_id: str, session_id: str, result: TurnResult) -> dict[str, Any]:
    """Close the session if the agent ended it; the turn's JSON with the session's state after it."""
    async with services.engine.begin() as conn:
        session = await sessions_repo.get(conn, org_id, session_id)
        if result.ended:
            now = services.clock.now()
            await sessions_repo.end(conn, org_id, session_id, now)
            await conversations_repo.finish(conn, org_id, session.conversation_id, result.outcome or "completed", now)
            session = await sessions_repo.get(conn, org_id, session_id)
    return {"session": sessions_repo.session_resource(session), **turn_resource(result)}


@router.post("/chat/sessions/{session_id}/end", openapi_extra=scope("chat:write"), summary="End a chat session")
async def end_session(session_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    org_id = principal.org_id
    now = services.clock.now()
    async with services.engine.begin() as conn:
        session = await sessions_repo.get(conn, org_id, session_id)
        if await sessions_repo.end(conn, org_id, session_id, now):
            conversation = await conversations_repo.get(conn, org_id, session.conversation_id)
            last = await conversations_repo.turn_events(conn, org_id, conversation.id, conversation.turn_count)
            outcome = closing_outcome(
                turn_outcome(last) if conversation.turn_count else None,
                user_messages=1 if conversation.first_user_text else 0,
            )
            await conversations_repo.finish(conn, org_id, conversation.id, outcome, now)
        session = await sessions_repo.get(conn, org_id, session_id)
    return ok(sessions_repo.session_resource(session))
