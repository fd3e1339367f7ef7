"""`POST /chat/completions`: the OpenAI-compatible endpoint; `model` is the agent id, the published version
answers (see control_api.chat.completions for what is read).

Every request is one conversation record on channel `api`: the messages sent before the last one are its
opening context (turn 0), the answer is turn 1, and it closes when the answer is delivered (or abandoned
when the client goes away first). Errors are problem+json: 400 (validation, or a `model` that is not an
agent of the caller's organization), 401/403, 402 when the wallet cannot pay, 409 no_published_version.
An LLM failure is not an HTTP error: the user gets the agent's short apology as the reply.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC
from typing import Any

import anyio
from fastapi import APIRouter, Request

from control_api.chat import completions as shapes
from control_api.chat import sessions as sessions_repo
from control_api.chat.sse import EventStreamResponse, data_frame
from control_api.chat.turns import Thread, Turn
from control_api.conversations import repository as conversations_repo
from control_api.conversations.outcome import closing_outcome
from control_api.conversations.repository import NewMessage
from control_api.errors import ApiError, NotFound, field_error
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.routes.chat import ensure_can_pay
from control_api.services import Services

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Chat"])
log = logging.getLogger("flowyte.chat")

# The errors this handler raises are not worth retrying; OpenAI SDKs would otherwise retry a 409.
_NO_RETRY = {"x-should-retry": "false"}


@router.post(
    "/chat/completions",
    openapi_extra=scope("chat:write"),
    summary="OpenAI-compatible chat completions",
    description="An OpenAI-compatible chat completions endpoint where the model field is your agent ID. Set "
    "stream to true for streamed chunks. Existing OpenAI SDK clients work by pointing the base URL at this API.",
    response_model=None,
)
async def create_completion(
    body: shapes.CompletionRequest, request: Request
) -> dict[str, Any] | EventStreamResponse:
    services, principal = services_of(request), principal_of(request)
    org_id = principal.org_id
    try:
        async with services.engine.connect() as conn:
            try:
                agent = await sessions_repo.resolve_agent(conn, org_id, body.model, draft=False)
            except NotFound:
                raise field_error("model", f"{body.model} is not an agent of your organization; set model to "
                                  "an agent id") from None
        history, question = shapes.split_messages(body.messages)
        await ensure_can_pay(services, org_id)
    except ApiError as error:
        error.headers.update(_NO_RETRY)
        error.extra.setdefault("message", error.detail)  # where OpenAI SDKs look for the error's text
        raise
    now = services.clock.now()
    async with services.engine.begin() as conn:
        conversation_id = await conversations_repo.create(
            conn, org_id=org_id, agent=agent, channel="api", now=now, end_user=(body.user or "")[:200] or None
        )
        if history:
            await conversations_repo.record_turn(
                conn, org_id=org_id, conversation_id=conversation_id, turn=0,
                messages=[NewMessage(m.role, m.content) for m in history], events=[], started_at=now, now=now,
            )
    turn = Turn(services, Thread(org_id, agent, conversation_id, history), question)
    completion_id = f"chatcmpl-{conversation_id}"
    created = int(now.replace(tzinfo=UTC).timestamp())

    async def close() -> None:
        await _close(services, turn)

    if body.stream:
        return EventStreamResponse(_chunks(turn, completion_id, created, body.model, close), on_close=close)
    try:
        async for _ in turn.events():
            pass
    finally:
        await close()
    return shapes.completion(completion_id, created, body.model, turn.result.reply_text)


async def _chunks(turn: Turn, completion_id: str, created: int, model: str, close: Any) -> AsyncGenerator[bytes, None]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return data_frame(shapes.chunk(completion_id, created, model, delta, finish_reason))

    text = shapes.ReplyText()
    try:
        yield chunk({"role": "assistant", "content": ""})
        async with aclosing(turn.events()) as events:
            async for event in events:
                if event.type == "agent_delta":
                    piece = text.delta(str(event.data.get("text", "")))
                elif event.type == "agent_message":
                    piece = text.message(str(event.data.get("text", "")))
                else:
                    continue
                if piece:
                    yield chunk({"content": piece})
        await close()
        yield chunk({}, "stop")
        yield data_frame("[DONE]")
    except Exception:
        log.exception("completion %s failed mid-stream", completion_id)
        # How OpenAI reports a failure after the stream started; its SDKs raise on it.
        yield data_frame({"error": {"message": "an unexpected error occurred", "type": "server_error",
                                    "code": "internal_error"}})


async def _close(services: Services, turn: Turn) -> None:
    """Close the conversation: its outcome from the answer, or abandoned if the answer was cut short."""
    result = turn.result
    outcome = closing_outcome(result.outcome, user_messages=1) if result.completed else "abandoned"
    with anyio.CancelScope(shield=True):
        try:
            async with services.engine.begin() as conn:
                await conversations_repo.finish(
                    conn, turn.thread.org_id, turn.thread.conversation_id, outcome, services.clock.now()
                )
        except Exception:
            log.exception("could not close conversation %s", turn.thread.conversation_id)
