"""Frozen agent versions: inserted once by publish, never updated."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import agent_versions
from control_api.errors import Conflict, NotFound
from control_api.repositories.keyset import after_cursor_desc, next_cursor
from runtime.agent_config import canonical_json, config_hash

PUBLISH_ATTEMPTS = 5


async def insert_next(
    conn: AsyncConnection,
    *,
    org_id: str,
    agent_id: str,
    version_id: str,
    config: dict[str, Any],
    note: str | None,
    published_by: str | None,
    now: Any,
) -> int:
    """Insert the config as the agent's next version number; returns that number.

    Two publishes racing for the same number meet the unique constraint; the loser retries with the
    next number inside a savepoint, so both publishes land as consecutive versions.
    """
    text = canonical_json(config)
    for _ in range(PUBLISH_ATTEMPTS):
        latest = await conn.scalar(
            sa.select(sa.func.max(agent_versions.c.version_number)).where(
                agent_versions.c.org_id == org_id, agent_versions.c.agent_id == agent_id
            )
        )
        number = int(latest or 0) + 1
        try:
            async with conn.begin_nested():
                await conn.execute(
                    agent_versions.insert().values(
                        id=version_id,
                        org_id=org_id,
                        agent_id=agent_id,
                        version_number=number,
                        config_json=text,
                        config_hash=config_hash(config),
                        note=note,
                        published_by=published_by,
                        created_at=now,
                    )
                )
            return number
        except IntegrityError:
            continue
    raise Conflict("another publish of this agent is in progress; retry", code="publish_race")


async def get(conn: AsyncConnection, org_id: str, agent_id: str, version_id: str) -> sa.Row[Any]:
    row = (
        await conn.execute(
            sa.select(agent_versions).where(
                agent_versions.c.org_id == org_id,
                agent_versions.c.agent_id == agent_id,
                agent_versions.c.id == version_id,
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"version {version_id} of agent {agent_id} not found")
    return row


async def list_page(
    conn: AsyncConnection, org_id: str, agent_id: str, *, limit: int, cursor: str | None
) -> tuple[list[sa.Row[Any]], str | None]:
    query = sa.select(agent_versions).where(
        agent_versions.c.org_id == org_id, agent_versions.c.agent_id == agent_id
    )
    after = after_cursor_desc(agent_versions.c.version_number, agent_versions.c.id, cursor, int)
    if after is not None:
        query = query.where(after)
    query = query.order_by(agent_versions.c.version_number.desc(), agent_versions.c.id.desc())
    rows = list((await conn.execute(query.limit(limit + 1))).all())
    return rows[:limit], next_cursor(rows, limit, lambda r: (r.version_number, r.id))
