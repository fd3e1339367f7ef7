"""Conversation rows: create one, record a turn (messages + receipt events), finish it, read and search.

Every query filters on `org_id`. Transcript and receipt are ordered by their autoincrement `seq`; a
conversation has at most one turn being written at a time (the channel serializes its turns), so the
order of rows is the order things happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.conversations.outcome import summarize
from control_api.db.tables import conversation_events, conversation_messages, conversations
from control_api.errors import NotFound, field_error
from control_api.http.envelope import decode_cursor, encode_cursor
from control_api.ids import new_id
from control_api.repositories.keyset import after_cursor_desc, next_cursor
from pipeline.llm.types import ChatMessage, ToolCall
from runtime.agent_config import CompiledAgent
from runtime.events import ConversationEvent


@dataclass(frozen=True)
class NewMessage:
    """A message of the model's context to store; `visible` ones form the transcript."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    id: str = field(default_factory=lambda: new_id("msg"))

    @property
    def visible(self) -> bool:
        return self.role == "user" or (self.role == "assistant" and bool(self.content.strip()))

    @classmethod
    def of(cls, message: ChatMessage) -> NewMessage:
        return cls(message.role, message.content, message.tool_calls, message.tool_call_id, message.name)

    def chat_message(self) -> ChatMessage:
        role: Any = self.role
        return ChatMessage(role, self.content, self.tool_calls, self.tool_call_id, self.name)


def _tool_calls_json(calls: Sequence[ToolCall]) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    return [{"id": c.id, "name": c.name, "arguments": dict(c.arguments)} for c in calls]


async def create(
    conn: AsyncConnection,
    *,
    org_id: str,
    agent: CompiledAgent,
    channel: str,
    now: datetime,
    end_user: str | None = None,
    conversation_id: str | None = None,
) -> str:
    conversation_id = conversation_id or new_id("cnv")
    await conn.execute(
        conversations.insert().values(
            id=conversation_id, org_id=org_id, agent_id=agent.agent_id, channel=channel, draft=agent.is_draft,
            agent_version_id=None if agent.is_draft else agent.version_id,
            agent_version_number=None if agent.is_draft else agent.version_number,
            config_hash=agent.config_hash, status="active", outcome=None, summary=summarize(None, None),
            first_user_text=None, end_user=end_user, message_count=0, turn_count=0, search_text="",
            started_at=now, last_activity_at=now, ended_at=None,
        )
    )
    return conversation_id


async def get(conn: AsyncConnection, org_id: str, conversation_id: str) -> sa.Row[Any]:
    row = (
        await conn.execute(
            sa.select(conversations).where(
                conversations.c.org_id == org_id, conversations.c.id == conversation_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"conversation {conversation_id} not found")
    found: sa.Row[Any] = row
    return found


async def record_turn(
    conn: AsyncConnection,
    *,
    org_id: str,
    conversation_id: str,
    turn: int,
    messages: Sequence[NewMessage],
    events: Sequence[ConversationEvent],
    started_at: datetime,
    now: datetime,
    brain_state: dict[str, Any] | None = None,
) -> None:
    """Append one turn's messages and stored receipt events, and update the conversation's counters and the
    brain's guardrail state (in the same transaction, so state and transcript never disagree)."""
    if messages:
        await conn.execute(
            conversation_messages.insert(),
            [
                {"id": m.id, "org_id": org_id, "conversation_id": conversation_id, "turn": turn, "role": m.role,
                 "content": m.content, "tool_calls": _tool_calls_json(m.tool_calls), "tool_call_id": m.tool_call_id,
                 "name": m.name, "visible": m.visible, "created_at": now}
                for m in messages
            ],
        )
    stored = [e for e in events if e.stored]
    if stored:
        await conn.execute(
            conversation_events.insert(),
            [
                {"org_id": org_id, "conversation_id": conversation_id, "turn": turn, "type": e.type,
                 "data": _jsonable(e.data), "t_ms": float(e.t_ms),
                 "occurred_at": started_at + timedelta(milliseconds=e.t_ms)}
                for e in stored
            ],
        )
    row = await get(conn, org_id, conversation_id)
    visible = [m for m in messages if m.visible]
    first_user = row.first_user_text or next((m.content[:500] for m in visible if m.role == "user"), None)
    text = "\n".join(" ".join(m.content.split()) for m in visible).lower()
    await conn.execute(
        conversations.update()
        .where(conversations.c.org_id == org_id, conversations.c.id == conversation_id)
        .values(
            message_count=conversations.c.message_count + len(visible),
            turn_count=max(turn, row.turn_count),
            search_text=conversations.c.search_text + ("\n" + text if text else ""),
            first_user_text=first_user,
            summary=summarize(first_user, row.outcome),
            last_activity_at=now,
            **({"brain_state": brain_state} if brain_state is not None else {}),
        )
    )


async def finish(conn: AsyncConnection, org_id: str, conversation_id: str, outcome: str, now: datetime) -> bool:
    """Close an active conversation with `outcome`; False if it had already ended (its outcome stands)."""
    row = await get(conn, org_id, conversation_id)
    if row.status == "ended":
        return False
    await conn.execute(
        conversations.update()
        .where(conversations.c.org_id == org_id, conversations.c.id == conversation_id,
               conversations.c.status == "active")
        .values(status="ended", outcome=outcome, ended_at=now, last_activity_at=now,
                summary=summarize(row.first_user_text, outcome))
    )
    return True


async def history(conn: AsyncConnection, org_id: str, conversation_id: str) -> list[ChatMessage]:
    """The model's context so far (user, assistant and tool messages), oldest first."""
    rows = (
        await conn.execute(
            sa.select(conversation_messages)
            .where(conversation_messages.c.org_id == org_id,
                   conversation_messages.c.conversation_id == conversation_id)
            .order_by(conversation_messages.c.seq)
        )
    ).all()
    return [
        ChatMessage(
            r.role, r.content,
            tuple(ToolCall(c["id"], c["name"], c.get("arguments") or {}) for c in r.tool_calls or ()),
            r.tool_call_id, r.name,
        )
        for r in rows
    ]


async def transcript(conn: AsyncConnection, org_id: str, conversation_id: str) -> list[sa.Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(conversation_messages)
                .where(conversation_messages.c.org_id == org_id,
                       conversation_messages.c.conversation_id == conversation_id,
                       conversation_messages.c.visible.is_(True))
                .order_by(conversation_messages.c.seq)
            )
        ).all()
    )


async def messages_page(
    conn: AsyncConnection, org_id: str, conversation_id: str, *, limit: int, cursor: str | None
) -> tuple[list[sa.Row[Any]], str | None]:
    """Transcript messages oldest first, `limit` at a time; the cursor is the last message's seq."""
    query = sa.select(conversation_messages).where(
        conversation_messages.c.org_id == org_id,
        conversation_messages.c.conversation_id == conversation_id,
        conversation_messages.c.visible.is_(True),
    )
    if cursor is not None:
        (after,) = decode_cursor(cursor, 1)
        if not isinstance(after, int):
            raise field_error("cursor", "is not a cursor returned by this endpoint")
        query = query.where(conversation_messages.c.seq > after)
    rows = list((await conn.execute(query.order_by(conversation_messages.c.seq).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor([rows[-1].seq]) if more else None


async def receipt(conn: AsyncConnection, org_id: str, conversation_id: str) -> list[sa.Row[Any]]:
    return list(
        (
            await conn.execute(
                sa.select(conversation_events)
                .where(conversation_events.c.org_id == org_id,
                       conversation_events.c.conversation_id == conversation_id)
                .order_by(conversation_events.c.seq)
            )
        ).all()
    )


@dataclass(frozen=True)
class Filters:
    q: str | None = None
    agent_id: str | None = None
    channel: str | None = None
    outcome: str | None = None
    started_from: datetime | None = None
    started_to: datetime | None = None


async def list_page(
    conn: AsyncConnection, org_id: str, filters: Filters, *, limit: int, cursor: str | None
) -> tuple[list[sa.Row[Any]], str | None]:
    """Newest first; `q` matches the transcript or the summary, case-insensitively (a portable LIKE)."""
    c = conversations.c
    query = sa.select(conversations).where(c.org_id == org_id)
    if filters.agent_id:
        query = query.where(c.agent_id == filters.agent_id)
    if filters.channel:
        query = query.where(c.channel == filters.channel)
    if filters.outcome:
        query = query.where(c.outcome == filters.outcome)
    if filters.started_from is not None:
        query = query.where(c.started_at >= filters.started_from)
    if filters.started_to is not None:
        query = query.where(c.started_at < filters.started_to)
    if filters.q:
        needle = " ".join(filters.q.lower().split())
        query = query.where(
            sa.or_(c.search_text.contains(needle, autoescape=True),
                   sa.func.lower(c.summary).contains(needle, autoescape=True))
        )
    after = after_cursor_desc(c.started_at, c.id, cursor, datetime.fromisoformat)
    if after is not None:
        query = query.where(after)
    rows = list((await conn.execute(query.order_by(c.started_at.desc(), c.id.desc()).limit(limit + 1))).all())
    return rows[:limit], next_cursor(rows, limit, lambda r: (r.started_at, r.id))


def _jsonable(value: Any) -> Any:
    """Receipt data goes into a JSON column: anything the JSON encoder cannot take becomes its string."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


async def turn_events(conn: AsyncConnection, org_id: str, conversation_id: str, turn: int) -> list[dict[str, Any]]:
    """The receipt events of one turn as JSON (what decides how a conversation that ends now ended)."""
    rows = await conn.execute(
        sa.select(conversation_events.c.type, conversation_events.c.data).where(
            conversation_events.c.org_id == org_id,
            conversation_events.c.conversation_id == conversation_id,
            conversation_events.c.turn == turn,
        )
    )
    return [{**(r.data or {}), "type": r.type} for r in rows]
