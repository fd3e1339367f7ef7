"""Knowledge sources, their generations and passages.

A source's index is built in *generations*: ingestion writes generation n+1 (its passages and their
embeddings) and then points the source at it in one transaction, so a reader sees the old index or the
new one, never half of each. The draft searches each source's current generation; a published version
searches the generations its snapshot names. A replaced generation is stamped `superseded_at` and is
deleted by the tick (`collect_garbage`) once no agent version names it and a grace period has passed
(the grace covers a publish that read the old generation while the new one was being written).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import agent_versions, knowledge_chunks, knowledge_generations, knowledge_sources
from control_api.errors import NotFound
from control_api.repositories.keyset import after_cursor_desc, next_cursor
from runtime.knowledge import KnowledgeSnapshot, KnowledgeSourceRef

DEFAULT_REFRESH_HOURS = 168
GARBAGE_GRACE = timedelta(hours=1)

S = knowledge_sources


async def insert(
    conn: AsyncConnection,
    *,
    source_id: str,
    org_id: str,
    agent_id: str,
    kind: str,
    label: str,
    spec: dict[str, Any],
    auto_refresh: bool,
    refresh_interval_hours: int,
    now: datetime,
) -> None:
    await conn.execute(
        S.insert().values(
            id=source_id, org_id=org_id, agent_id=agent_id, kind=kind, label=label, status="pending", error=None,
            spec=spec, content=None, content_hash=None, generation=None, chunk_count=0,
            auto_refresh=auto_refresh, refresh_interval_hours=refresh_interval_hours,
            next_refresh_at=now + timedelta(hours=refresh_interval_hours) if auto_refresh else None,
            queued_at=now, last_checked_at=None, last_changed_at=None, created_at=now, updated_at=now,
            deleted_at=None,
        )
    )


async def get(conn: AsyncConnection, org_id: str, agent_id: str, source_id: str) -> sa.Row[Any]:
    row = (
        await conn.execute(
            sa.select(S).where(
                S.c.org_id == org_id, S.c.agent_id == agent_id, S.c.id == source_id, S.c.deleted_at.is_(None)
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"knowledge source {source_id} not found")
    found: sa.Row[Any] = row
    return found


async def get_by_id(conn: AsyncConnection, source_id: str) -> sa.Row[Any] | None:
    """For the worker: any live source by id, whatever its organization."""
    row = (await conn.execute(sa.select(S).where(S.c.id == source_id, S.c.deleted_at.is_(None)))).first()
    return row


async def list_page(
    conn: AsyncConnection, org_id: str, agent_id: str, *, limit: int, cursor: str | None
) -> tuple[list[sa.Row[Any]], str | None]:
    columns = [c for c in S.c if c.name != "content"]
    query = sa.select(*columns).where(S.c.org_id == org_id, S.c.agent_id == agent_id, S.c.deleted_at.is_(None))
    after = after_cursor_desc(S.c.created_at, S.c.id, cursor, datetime.fromisoformat)
    if after is not None:
        query = query.where(after)
    query = query.order_by(S.c.created_at.desc(), S.c.id.desc()).limit(limit + 1)
    rows = list((await conn.execute(query)).all())
    return rows[:limit], next_cursor(rows, limit, lambda r: (r.created_at, r.id))


async def update(conn: AsyncConnection, source_id: str, **values: Any) -> None:
    await conn.execute(S.update().where(S.c.id == source_id).values(**values))


async def soft_delete(conn: AsyncConnection, row: sa.Row[Any], now: datetime) -> None:
    await update(conn, row.id, deleted_at=now, updated_at=now, queued_at=None, auto_refresh=False,
                 next_refresh_at=None)
    await conn.execute(
        knowledge_generations.update()
        .where(knowledge_generations.c.source_id == row.id, knowledge_generations.c.superseded_at.is_(None))
        .values(superseded_at=now)
    )


async def snapshot(conn: AsyncConnection, org_id: str, agent_id: str) -> KnowledgeSnapshot:
    """The draft's knowledge: every live source with an indexed generation, oldest source first."""
    rows = (
        await conn.execute(
            sa.select(S.c.id, S.c.label, S.c.kind, S.c.generation, S.c.content_hash)
            .where(
                S.c.org_id == org_id, S.c.agent_id == agent_id, S.c.deleted_at.is_(None),
                S.c.generation.is_not(None),
            )
            .order_by(S.c.created_at, S.c.id)
        )
    ).all()
    return KnowledgeSnapshot(
        tuple(KnowledgeSourceRef(r.id, r.label, r.kind, int(r.generation), str(r.content_hash)) for r in rows)
    )


async def write_generation(
    conn: AsyncConnection,
    row: sa.Row[Any],
    *,
    content: str,
    content_hash: str,
    passages: Sequence[tuple[int, str, bytes]],
    now: datetime,
) -> int:
    """Store a new generation's passages and make it the source's current one; returns its number."""
    latest = await conn.scalar(
        sa.select(sa.func.max(knowledge_generations.c.generation)).where(
            knowledge_generations.c.source_id == row.id
        )
    )
    generation = int(latest or 0) + 1
    await conn.execute(
        knowledge_generations.update()
        .where(knowledge_generations.c.source_id == row.id, knowledge_generations.c.superseded_at.is_(None))
        .values(superseded_at=now)
    )
    await conn.execute(
        knowledge_generations.insert().values(
            source_id=row.id, generation=generation, org_id=row.org_id, content_hash=content_hash,
            chunk_count=len(passages), created_at=now, superseded_at=None,
        )
    )
    if passages:
        await conn.execute(
            knowledge_chunks.insert(),
            [
                {"source_id": row.id, "generation": generation, "position": p, "text": t, "embedding": e}
                for p, t, e in passages
            ],
        )
    await update(
        conn, row.id, status="indexed", error=None, content=content, content_hash=content_hash,
        generation=generation, chunk_count=len(passages), last_checked_at=now, last_changed_at=now,
        updated_at=now,
    )
    return generation


async def pending_ids(conn: AsyncConnection, limit: int) -> list[str]:
    rows = await conn.execute(
        sa.select(S.c.id)
        .where(sa.or_(S.c.queued_at.is_not(None), S.c.status == "pending"), S.c.deleted_at.is_(None))
        .order_by(S.c.created_at, S.c.id)
        .limit(limit)
    )
    return [r.id for r in rows]


async def queue_due_refreshes(conn: AsyncConnection, now: datetime) -> list[str]:
    """Queue every auto-refreshing URL source whose next refresh is due, and schedule the one after."""
    rows = (
        await conn.execute(
            sa.select(S.c.id, S.c.refresh_interval_hours).where(
                S.c.kind == "url", S.c.auto_refresh.is_(True), S.c.next_refresh_at <= now,
                S.c.deleted_at.is_(None),
            )
        )
    ).all()
    for r in rows:
        await update(
            conn, r.id, queued_at=now, next_refresh_at=now + timedelta(hours=int(r.refresh_interval_hours))
        )
    return [r.id for r in rows]


async def generation_passages(
    conn: AsyncConnection, keys: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], list[tuple[int, str, bytes]]]:
    """(position, text, embedding) of each (source id, generation), in position order."""
    found: dict[tuple[str, int], list[tuple[int, str, bytes]]] = {k: [] for k in keys}
    if not keys:
        return found
    C = knowledge_chunks
    condition = sa.or_(*(sa.and_(C.c.source_id == s, C.c.generation == g) for s, g in keys))
    rows = await conn.execute(
        sa.select(C.c.source_id, C.c.generation, C.c.position, C.c.text, C.c.embedding)
        .where(condition)
        .order_by(C.c.source_id, C.c.generation, C.c.position)
    )
    for r in rows:
        found[(r.source_id, int(r.generation))].append((int(r.position), r.text, bytes(r.embedding)))
    return found


async def collect_garbage(conn: AsyncConnection, now: datetime) -> int:
    """Delete superseded generations (and their passages) that no agent version names any more."""
    G = knowledge_generations
    candidates = (
        await conn.execute(
            sa.select(G.c.source_id, G.c.generation, S.c.agent_id)
            .select_from(G.join(S, S.c.id == G.c.source_id))
            .where(G.c.superseded_at.is_not(None), G.c.superseded_at <= now - GARBAGE_GRACE)
        )
    ).all()
    if not candidates:
        return 0
    referenced: set[tuple[str, int]] = set()
    for agent_id in {c.agent_id for c in candidates}:
        configs = await conn.execute(
            sa.select(agent_versions.c.config_json).where(agent_versions.c.agent_id == agent_id)
        )
        for (text,) in configs:
            snap = KnowledgeSnapshot.from_config(json.loads(text).get("knowledge"))
            referenced.update((s.source_id, s.generation) for s in snap.sources)
    deleted = 0
    for c in candidates:
        if (c.source_id, int(c.generation)) in referenced:
            continue
        await conn.execute(
            knowledge_chunks.delete().where(
                knowledge_chunks.c.source_id == c.source_id, knowledge_chunks.c.generation == c.generation
            )
        )
        await conn.execute(G.delete().where(G.c.source_id == c.source_id, G.c.generation == c.generation))
        deleted += 1
    return deleted
