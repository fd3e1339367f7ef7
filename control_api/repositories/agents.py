"""Agent rows: the draft document, its version counter, and which frozen version is published."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import agent_versions, agents, skills
from control_api.errors import NotFound
from control_api.repositories.keyset import after_cursor_desc, next_cursor

_published = agent_versions.alias("published")

_AGENT_COLUMNS = (*agents.c, _published.c.version_number.label("published_number"))


def _with_published() -> sa.Select[Any]:
    return sa.select(*_AGENT_COLUMNS).select_from(
        agents.outerjoin(_published, _published.c.id == agents.c.published_version_id)
    )


async def get(conn: AsyncConnection, org_id: str, agent_id: str) -> sa.Row[Any]:
    row = (
        await conn.execute(
            _with_published().where(
                agents.c.org_id == org_id, agents.c.id == agent_id, agents.c.deleted_at.is_(None)
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"agent {agent_id} not found")
    found: sa.Row[Any] = row
    return found


async def list_page(
    conn: AsyncConnection,
    org_id: str,
    *,
    status: str | None,
    search: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[sa.Row[Any]], str | None]:
    query = _with_published().where(agents.c.org_id == org_id, agents.c.deleted_at.is_(None))
    if status == "published":
        query = query.where(agents.c.published_version_id.is_not(None))
    elif status == "draft":
        query = query.where(agents.c.published_version_id.is_(None))
    if search:
        query = query.where(sa.func.lower(agents.c.name).contains(search.lower(), autoescape=True))
    after = after_cursor_desc(agents.c.created_at, agents.c.id, cursor, datetime.fromisoformat)
    if after is not None:
        query = query.where(after)
    query = query.order_by(agents.c.created_at.desc(), agents.c.id.desc()).limit(limit + 1)
    rows = list((await conn.execute(query)).all())
    return rows[:limit], next_cursor(rows, limit, lambda r: (r.created_at, r.id))


async def insert(
    conn: AsyncConnection, *, org_id: str, agent_id: str, draft: dict[str, Any], now: datetime
) -> None:
    await conn.execute(
        agents.insert().values(
            id=agent_id,
            org_id=org_id,
            name=draft["name"],
            draft=draft,
            draft_version=1,
            guardrails=[],
            caller_verification=[],
            published_version_id=None,
            created_at=now,
            updated_at=now,
        )
    )


async def update_draft(
    conn: AsyncConnection,
    org_id: str,
    agent_id: str,
    *,
    expected_version: int,
    draft: dict[str, Any],
    now: datetime,
) -> bool:
    """Compare-and-set: writes only if the draft is still at `expected_version`. False means it moved."""
    result = await conn.execute(
        agents.update()
        .where(
            agents.c.org_id == org_id,
            agents.c.id == agent_id,
            agents.c.deleted_at.is_(None),
            agents.c.draft_version == expected_version,
        )
        .values(draft=draft, name=draft["name"], draft_version=expected_version + 1, updated_at=now)
    )
    return result.rowcount == 1


async def set_policies(
    conn: AsyncConnection, org_id: str, agent_id: str, *, column: str, value: list[dict[str, Any]],
    now: datetime,
) -> None:
    """Replace the guardrails or caller-verification list (full overwrite, as the API documents)."""
    if column not in ("guardrails", "caller_verification"):
        raise ValueError(column)
    await conn.execute(
        agents.update()
        .where(agents.c.org_id == org_id, agents.c.id == agent_id, agents.c.deleted_at.is_(None))
        .values({column: value, "updated_at": now})
    )


async def touch(conn: AsyncConnection, org_id: str, agent_id: str, now: datetime) -> None:
    await conn.execute(
        agents.update().where(agents.c.org_id == org_id, agents.c.id == agent_id).values(updated_at=now)
    )


async def soft_delete(conn: AsyncConnection, org_id: str, agent_id: str, now: datetime) -> None:
    await get(conn, org_id, agent_id)
    await conn.execute(
        agents.update()
        .where(agents.c.org_id == org_id, agents.c.id == agent_id)
        .values(deleted_at=now, updated_at=now)
    )


async def set_published(conn: AsyncConnection, org_id: str, agent_id: str, version_id: str,
                        now: datetime) -> None:
    await conn.execute(
        agents.update()
        .where(agents.c.org_id == org_id, agents.c.id == agent_id)
        .values(published_version_id=version_id, updated_at=now)
    )


async def skill_specs(conn: AsyncConnection, org_id: str, agent_id: str) -> list[dict[str, Any]]:
    """The agent's skills in creation order, each as its stored spec plus its id."""
    rows = (
        await conn.execute(
            sa.select(skills.c.id, skills.c.spec)
            .where(skills.c.org_id == org_id, skills.c.agent_id == agent_id)
            .order_by(skills.c.created_at, skills.c.id)
        )
    ).all()
    return [{**row.spec, "id": row.id} for row in rows]
