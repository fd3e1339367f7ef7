"""Observe: the conversation history (searchable), one conversation, its transcript, its receipt, and the
signed URL of its recording.

Scopes follow the contract: the history list is `analytics:read` (the Observe history), one conversation
and its transcript, receipt and recording URL are `calls:read`. The URL itself is served by
`routes/recordings.py` without a key (see `control_api.conversations.recordings`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from control_api.clock import iso
from control_api.conversations import recordings
from control_api.conversations import repository as conversations_repo
from control_api.conversations.outcome import Outcome
from control_api.conversations.views import conversation_resource, event_resource, message_resource
from control_api.errors import field_error
from control_api.http.envelope import PageParams, ok, page
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Observe"])

Channel = Literal["chat", "api", "simulate", "voice"]


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


@router.get(
    "/conversations",
    openapi_extra=scope("analytics:read"),
    summary="List conversations",
    description="Conversation history, newest first, with each row's outcome and one-line summary. `q` searches "
    "the transcripts and summaries (case-insensitive substring).",
)
async def list_conversations(
    request: Request,
    paging: PageParams = Depends(),
    q: str | None = Query(None, max_length=200, description="Text to find in the transcript or summary."),
    agent_id: str | None = Query(None, alias="agentId", max_length=40),
    from_: datetime | None = Query(None, alias="from", description="Started at or after (RFC 3339)."),
    to: datetime | None = Query(None, description="Started before (RFC 3339)."),
    channel: Channel | None = Query(None),
    outcome: Outcome | None = Query(None),
) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    start, end = _naive_utc(from_), _naive_utc(to)
    if start is not None and end is not None and start >= end:
        raise field_error("to", "must be later than from")
    filters = conversations_repo.Filters(
        q=q.strip() or None if q else None, agent_id=agent_id, channel=channel, outcome=outcome,
        started_from=start, started_to=end,
    )
    async with services.engine.connect() as conn:
        rows, cursor = await conversations_repo.list_page(
            conn, principal.org_id, filters, limit=paging.limit, cursor=paging.cursor
        )
    return page([conversation_resource(r) for r in rows], cursor, paging.limit)


@router.get("/conversations/{conversation_id}", openapi_extra=scope("calls:read"), summary="Get a conversation")
async def get_conversation(conversation_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        row = await conversations_repo.get(conn, principal.org_id, conversation_id)
    return ok(conversation_resource(row))


@router.get(
    "/conversations/{conversation_id}/transcript",
    openapi_extra=scope("calls:read"),
    summary="Get a conversation transcript",
    description="The conversation's turns in order: what the user said and what the agent answered.",
)
async def get_transcript(conversation_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        await conversations_repo.get(conn, principal.org_id, conversation_id)
        rows = await conversations_repo.transcript(conn, principal.org_id, conversation_id)
    return ok({"conversationId": conversation_id, "turns": [message_resource(r) for r in rows]})


@router.get(
    "/conversations/{conversation_id}/receipt",
    openapi_extra=scope("calls:read"),
    summary="Get a conversation receipt",
    description="The ordered audit events of the conversation (user_utterance, agent_message, tool_call, "
    "kb_retrieval, guardrail, verification, handoff, ...), each with its timing.",
)
async def get_receipt(conversation_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        row = await conversations_repo.get(conn, principal.org_id, conversation_id)
        events = await conversations_repo.receipt(conn, principal.org_id, conversation_id)
    return ok({
        "conversationId": conversation_id,
        "outcome": row.outcome,
        "events": [event_resource(e, i) for i, e in enumerate(events)],
    })


@router.get(
    "/conversations/{conversation_id}/audio",
    openapi_extra=scope("calls:read"),
    summary="Get a signed recording URL",
    description="A URL of the call's recording (voice calls of agents with `recordCalls` on, once the call has "
    "ended): a stereo 16-bit WAV, the caller left and the agent right. The URL needs no API key and expires "
    f"after {recordings.URL_TTL_SECONDS // 60} minutes (`expiresAt`); ask again for a fresh one. 404 when the "
    "conversation has no recording.",
)
async def get_recording_url(conversation_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        row = await conversations_repo.get(conn, principal.org_id, conversation_id)
    data_dir = services.settings.resolved().data_dir
    recordings.stored_file(data_dir, row.recording_path, conversation_id)
    link = recordings.sign(recordings.load_key(data_dir), principal.org_id, conversation_id, now=services.clock.now())
    url = str(request.url_for("download_recording", token=link.token))
    return ok({"url": url, "expiresAt": iso(link.expires_at)})
