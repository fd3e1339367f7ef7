"""Chat session rows, and which agent a session (or any chat) runs.

A session pins its agent when it starts: the published version's id, or in draft mode the draft compiled
then, stored as canonical JSON, so edits made while it runs never change its behaviour. Only one message
is answered at a time per session: `claim_turn` marks the session busy with a conditional UPDATE (a mark
older than `STALE_TURN` is taken over, so a crashed process cannot wedge a session), `release_turn`
clears it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.clock import iso
from control_api.compile import compile_draft
from control_api.db.tables import agent_versions, chat_sessions, conversations
from control_api.errors import Conflict, NotFound
from control_api.ids import new_id
from control_api.repositories import agents as agents_repo
from runtime.agent_config import CompiledAgent, canonical_json

STALE_TURN = timedelta(minutes=5)


def no_published_version(agent_id: str) -> Conflict:
    return Conflict(
        f"agent {agent_id} has no published version; publish it or retry with draftMode:true",
        code="no_published_version",
        title="No published version",
    )


async def resolve_agent(conn: AsyncConnection, org_id: str, agent_id: str, *, draft: bool) -> CompiledAgent:
    """The draft compiled now, or the live published version (409 no_published_version if none)."""
    row = await agents_repo.get(conn, org_id, agent_id)  # 404 for a missing or foreign agent
    if draft:
        return await compile_draft(conn, org_id, row)
    if row.published_version_id is None:
        raise no_published_version(agent_id)
    return await _version(conn, org_id, row.published_version_id)


async def _version(conn: AsyncConnection, org_id: str, version_id: str) -> CompiledAgent:
    version = (
        await conn.execute(
            sa.select(agent_versions).where(agent_versions.c.org_id == org_id, agent_versions.c.id == version_id)
        )
    ).first()
    if version is None:  # versions are immutable and never deleted: only a broken database gets here
        raise NotFound(f"agent version {version_id} not found")
    return CompiledAgent.from_config(
        json.loads(version.config_json), version_id=version.id, version_number=version.version_number
    )


async def create(
    conn: AsyncConnection, *, org_id: str, agent: CompiledAgent, conversation_id: str, now: datetime
) -> str:
    session_id = new_id("chs")
    await conn.execute(
        chat_sessions.insert().values(
            id=session_id, org_id=org_id, agent_id=agent.agent_id, conversation_id=conversation_id,
            draft=agent.is_draft, agent_version_id=None if agent.is_draft else agent.version_id,
            agent_config=canonical_json(agent.to_config()) if agent.is_draft else None,
            status="active", turn_started_at=None, created_at=now, updated_at=now, ended_at=None,
        )
    )
    return session_id


_WITH_CONVERSATION = sa.select(
    chat_sessions,
    conversations.c.outcome,
    conversations.c.summary,
    conversations.c.message_count,
    conversations.c.agent_version_number,
    conversations.c.config_hash,
).select_from(chat_sessions.join(conversations, conversations.c.id == chat_sessions.c.conversation_id))


async def get(conn: AsyncConnection, org_id: str, session_id: str) -> sa.Row[Any]:
    row = (
        await conn.execute(
            _WITH_CONVERSATION.where(chat_sessions.c.org_id == org_id, chat_sessions.c.id == session_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"chat session {session_id} not found")
    found: sa.Row[Any] = row
    return found


async def pinned_agent(conn: AsyncConnection, session: sa.Row[Any]) -> CompiledAgent:
    """The agent the session started with, whatever has been edited or published since."""
    if session.agent_config is not None:
        return CompiledAgent.from_config(json.loads(session.agent_config), is_draft=True)
    return await _version(conn, session.org_id, session.agent_version_id)


def ended(session_id: str) -> Conflict:
    return Conflict(f"chat session {session_id} has ended; start a new session", code="session_ended")


async def claim_turn(conn: AsyncConnection, org_id: str, session_id: str, now: datetime) -> datetime:
    """Mark the session busy answering a message; 409 if it has ended or another message is in flight.
    Returns the claim (its time), which `release_turn` must present."""
    result = await conn.execute(
        chat_sessions.update()
        .where(
            chat_sessions.c.org_id == org_id,
            chat_sessions.c.id == session_id,
            chat_sessions.c.status == "active",
            sa.or_(chat_sessions.c.turn_started_at.is_(None), chat_sessions.c.turn_started_at < now - STALE_TURN),
        )
        .values(turn_started_at=now, updated_at=now)
    )
    if result.rowcount == 1:
        return now
    session = await get(conn, org_id, session_id)
    if session.status != "active":
        raise ended(session_id)
    raise Conflict(
        f"chat session {session_id} is still answering the previous message; send the next one when it is done",
        code="turn_in_progress",
    )


async def release_turn(conn: AsyncConnection, org_id: str, session_id: str, claim: datetime, now: datetime) -> None:
    """Clear the busy mark if it is still this claim's (a stale claim may have been taken over since)."""
    await conn.execute(
        chat_sessions.update()
        .where(chat_sessions.c.org_id == org_id, chat_sessions.c.id == session_id,
               chat_sessions.c.turn_started_at == claim)
        .values(turn_started_at=None, updated_at=now)
    )


async def end(conn: AsyncConnection, org_id: str, session_id: str, now: datetime) -> bool:
    """End an active session; False if it had already ended."""
    result = await conn.execute(
        chat_sessions.update()
        .where(chat_sessions.c.org_id == org_id, chat_sessions.c.id == session_id,
               chat_sessions.c.status == "active")
        .values(status="ended", ended_at=now, updated_at=now)
    )
    return result.rowcount == 1


def session_resource(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "agentId": row.agent_id,
        "conversationId": row.conversation_id,
        "draftMode": bool(row.draft),
        "agentVersionId": row.agent_version_id,
        "agentVersion": row.agent_version_number,
        "configHash": row.config_hash,
        "status": row.status,
        "outcome": row.outcome,
        "summary": row.summary,
        "messageCount": row.message_count,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "endedAt": iso(row.ended_at),
    }
