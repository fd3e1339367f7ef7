"""Owned numbers (`phone_numbers`): one row per ownership, live until `released_at` is set.

Status is derived, never stored: `released` once released_at is set, else `assigned` when it points at an
agent, else `available` (in the organization's pool, still owned and billed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.billing.ledger import usd
from control_api.clock import iso
from control_api.db.tables import phone_numbers
from control_api.errors import Conflict, NotFound
from control_api.repositories.keyset import after_cursor_desc, next_cursor

_p = phone_numbers.c


@dataclass(frozen=True)
class NewNumber:
    id: str
    org_id: str
    e164: str
    number_type: str
    features: tuple[str, ...]
    locality: str | None
    region: str | None
    provider: str
    source: str  # purchased | imported
    agent_id: str | None
    monthly_cost_credits: int


def status_of(row: sa.Row[Any]) -> str:
    if row.released_at is not None:
        return "released"
    return "assigned" if row.agent_id else "available"


def resource(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "e164": row.e164,
        "status": status_of(row),
        "agentId": row.agent_id,
        "numberType": row.number_type,
        "features": str(row.features).split(),
        "locality": row.locality,
        "region": row.region,
        "monthlyCost": usd(int(row.monthly_cost_credits)),
        "monthlyCostCredits": int(row.monthly_cost_credits),
        "provider": row.provider,
        "source": row.source,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
        "releasedAt": iso(row.released_at),
    }


def taken(e164: str) -> Conflict:
    return Conflict(f"{e164} is no longer available; search again and pick another number", code="number_unavailable")


async def insert(conn: AsyncConnection, number: NewNumber, now: datetime) -> None:
    """Claim the number; the live-e164 unique index is the backstop against a concurrent owner (409)."""
    try:
        await conn.execute(
            phone_numbers.insert().values(
                id=number.id, org_id=number.org_id, e164=number.e164, number_type=number.number_type,
                features=" ".join(number.features), locality=number.locality, region=number.region,
                provider=number.provider, source=number.source, agent_id=number.agent_id,
                monthly_cost_credits=number.monthly_cost_credits, created_at=now, updated_at=now,
                released_at=None,
            )
        )
    except IntegrityError:
        raise taken(number.e164) from None


async def live_owner(conn: AsyncConnection, e164: str) -> sa.Row[Any] | None:
    row: sa.Row[Any] | None = (
        await conn.execute(sa.select(phone_numbers).where(_p.e164 == e164, _p.released_at.is_(None)))
    ).first()
    return row


async def get(conn: AsyncConnection, org_id: str, number_id: str) -> sa.Row[Any]:
    row: sa.Row[Any] | None = (
        await conn.execute(sa.select(phone_numbers).where(_p.org_id == org_id, _p.id == number_id))
    ).first()
    if row is None:
        raise NotFound(f"number {number_id} not found")
    return row


async def get_live(conn: AsyncConnection, org_id: str, number_id: str) -> sa.Row[Any]:
    row = await get(conn, org_id, number_id)
    if row.released_at is not None:
        raise Conflict(f"number {number_id} was released and can no longer be changed", code="number_released")
    return row


async def list_page(
    conn: AsyncConnection, org_id: str, *, limit: int, cursor: str | None
) -> tuple[list[sa.Row[Any]], str | None]:
    """The organization's live numbers, newest first."""
    query = sa.select(phone_numbers).where(_p.org_id == org_id, _p.released_at.is_(None))
    after = after_cursor_desc(_p.created_at, _p.id, cursor, datetime.fromisoformat)
    if after is not None:
        query = query.where(after)
    query = query.order_by(_p.created_at.desc(), _p.id.desc()).limit(limit + 1)
    rows = list((await conn.execute(query)).all())
    return rows[:limit], next_cursor(rows, limit, lambda r: (r.created_at, r.id))


async def set_agent(conn: AsyncConnection, org_id: str, number_id: str, agent_id: str | None, now: datetime) -> None:
    await conn.execute(
        phone_numbers.update()
        .where(_p.org_id == org_id, _p.id == number_id, _p.released_at.is_(None))
        .values(agent_id=agent_id, updated_at=now)
    )


async def release(conn: AsyncConnection, org_id: str, number_id: str, now: datetime) -> None:
    await conn.execute(
        phone_numbers.update()
        .where(_p.org_id == org_id, _p.id == number_id, _p.released_at.is_(None))
        .values(released_at=now, agent_id=None, updated_at=now)
    )
