"""Skill rows. Every query filters on the organization and the agent, so another tenant's skill (or another
agent's) is simply not found.

Names are unique per agent case-insensitively: `name_key` holds the normalized name and the constraint
`uq_skills_agent_name` enforces it; a write that breaks it becomes 409 `duplicate_name`.

Specs are read through `current_spec`, which upgrades rows written before skills carried `parametersSchema`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import skills
from control_api.errors import Conflict, NotFound
from control_api.repositories import agents as agents_repo
from control_api.repositories.keyset import after_cursor_asc, next_cursor
from control_api.schemas.skills import SkillSpec, name_key, object_schema

_UNIQUE_NAME_MARKERS = ("uq_skills_agent_name", "skills.agent_id, skills.name_key")


def current_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A stored spec in today's form; nothing is written back.

    A spec written before skills carried `parametersSchema` (an http_webhook then also stored
    `executionConfig.parameters` and `timeoutSeconds`) is validated again, which derives and normalizes
    exactly as a new write would. If today's rules reject it (take_message fields that are not identifiers),
    it is kept readable with no arguments, and the next edit of the skill has to fix it.
    """
    if "parametersSchema" in spec:
        return dict(spec)
    try:
        return SkillSpec.model_validate(spec).stored()
    except ValidationError:
        return {**spec, "parametersSchema": object_schema({})}


async def get(conn: AsyncConnection, org_id: str, agent_id: str, skill_id: str) -> sa.Row[Any]:
    row = (
        await conn.execute(
            sa.select(skills).where(
                skills.c.org_id == org_id, skills.c.agent_id == agent_id, skills.c.id == skill_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"skill {skill_id} not found on agent {agent_id}")
    return row


async def list_page(
    conn: AsyncConnection, org_id: str, agent_id: str, *, limit: int, cursor: str | None
) -> tuple[list[sa.Row[Any]], str | None]:
    """Oldest first (the order the compiled config lists them in)."""
    query = sa.select(skills).where(skills.c.org_id == org_id, skills.c.agent_id == agent_id)
    after = after_cursor_asc(skills.c.created_at, skills.c.id, cursor, datetime.fromisoformat)
    if after is not None:
        query = query.where(after)
    query = query.order_by(skills.c.created_at, skills.c.id).limit(limit + 1)
    rows = list((await conn.execute(query)).all())
    return rows[:limit], next_cursor(rows, limit, lambda r: (r.created_at, r.id))


async def ids(conn: AsyncConnection, org_id: str, agent_id: str) -> set[str]:
    result = await conn.scalars(
        sa.select(skills.c.id).where(skills.c.org_id == org_id, skills.c.agent_id == agent_id)
    )
    return set(result.all())


def _duplicate_name(error: IntegrityError, name: str) -> Conflict | None:
    text = str(error.orig)
    if not any(marker in text for marker in _UNIQUE_NAME_MARKERS):
        return None
    return Conflict(
        f"the agent already has a skill named {name!r} (names are compared ignoring case)",
        code="duplicate_name",
    )


async def insert(
    conn: AsyncConnection, *, org_id: str, agent_id: str, skill_id: str, spec: dict[str, Any], now: datetime
) -> None:
    try:
        await conn.execute(
            skills.insert().values(
                id=skill_id,
                org_id=org_id,
                agent_id=agent_id,
                name_key=name_key(spec["name"]),
                skill_type=spec["skillType"],
                spec=spec,
                created_at=now,
                updated_at=now,
            )
        )
    except IntegrityError as error:
        conflict = _duplicate_name(error, spec["name"])
        if conflict is None:
            raise
        raise conflict from None


async def update(
    conn: AsyncConnection, org_id: str, agent_id: str, skill_id: str, *, spec: dict[str, Any], now: datetime
) -> None:
    try:
        await conn.execute(
            skills.update()
            .where(skills.c.org_id == org_id, skills.c.agent_id == agent_id, skills.c.id == skill_id)
            .values(name_key=name_key(spec["name"]), skill_type=spec["skillType"], spec=spec, updated_at=now)
        )
    except IntegrityError as error:
        conflict = _duplicate_name(error, spec["name"])
        if conflict is None:
            raise
        raise conflict from None


async def delete(conn: AsyncConnection, org_id: str, agent_id: str, skill_id: str) -> None:
    await conn.execute(
        skills.delete().where(
            skills.c.org_id == org_id, skills.c.agent_id == agent_id, skills.c.id == skill_id
        )
    )


async def lock_agent(conn: AsyncConnection, org_id: str, agent_id: str, now: datetime) -> sa.Row[Any]:
    """Mark the agent changed and hold its row for the rest of the transaction; return it as it now is.

    Skill deletes check the agent's policies and policy writes check its skills; taking the agent row
    first (a row lock on PostgreSQL; SQLite transactions begin IMMEDIATE) serializes the two, so a
    policy can never end up naming a skill deleted at the same moment. 404 if the agent is not the org's.
    """
    await agents_repo.get(conn, org_id, agent_id)
    await agents_repo.touch(conn, org_id, agent_id, now)
    return await agents_repo.get(conn, org_id, agent_id)
