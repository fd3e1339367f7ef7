"""Holds (`number_reservations`): a number kept for one organization for HOLD_DURATION, at no charge.

States of one hold:

    active --purchase by its org-->          consumed
    active --DELETE /numbers/reserve/{id}--> released
    active --expires_at passes-->            expired   (computed on read; written by the next write that
                                                        touches the same e164, via `expire_stale`)

At most one active hold per e164 (partial unique index `uq_number_reservations_active`): a second holder
loses on insert and gets 409, whoever raced whom.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.clock import iso
from control_api.db.tables import number_reservations
from control_api.errors import Conflict, NotFound
from control_api.ids import new_id

HOLD_DURATION = timedelta(minutes=30)

_r = number_reservations.c


def status_of(row: sa.Row[Any], now: datetime) -> str:
    if row.status == "active" and row.expires_at <= now:
        return "expired"
    return str(row.status)


def resource(row: sa.Row[Any], now: datetime) -> dict[str, Any]:
    return {"id": row.id, "e164": row.e164, "expiresAt": iso(row.expires_at), "status": status_of(row, now)}


async def expire_stale(conn: AsyncConnection, e164: str, now: datetime) -> None:
    """Write down the expiry of an active hold on `e164` whose time is up (it already counts for nothing)."""
    await conn.execute(
        number_reservations.update()
        .where(_r.e164 == e164, _r.status == "active", _r.expires_at <= now)
        .values(status="expired")
    )


async def active(conn: AsyncConnection, e164: str, now: datetime) -> sa.Row[Any] | None:
    row: sa.Row[Any] | None = (
        await conn.execute(
            sa.select(number_reservations).where(_r.e164 == e164, _r.status == "active", _r.expires_at > now)
        )
    ).first()
    return row


async def get(conn: AsyncConnection, org_id: str, reservation_id: str) -> sa.Row[Any]:
    row: sa.Row[Any] | None = (
        await conn.execute(sa.select(number_reservations).where(_r.org_id == org_id, _r.id == reservation_id))
    ).first()
    if row is None:
        raise NotFound(f"reservation {reservation_id} not found")
    return row


async def create(conn: AsyncConnection, org_id: str, e164: str, now: datetime) -> sa.Row[Any]:
    reservation_id = new_id("res")
    try:  # the unique index settles a race between two holders; the loser's transaction rolls back
        await conn.execute(
            number_reservations.insert().values(
                id=reservation_id, org_id=org_id, e164=e164, status="active",
                expires_at=now + HOLD_DURATION, created_at=now,
            )
        )
    except IntegrityError:
        raise held_elsewhere(e164) from None
    return await get(conn, org_id, reservation_id)


async def set_status(conn: AsyncConnection, reservation_id: str, status: str) -> None:
    await conn.execute(
        number_reservations.update().where(_r.id == reservation_id, _r.status == "active").values(status=status)
    )


def held_elsewhere(e164: str) -> Conflict:
    return Conflict(
        f"{e164} is held by someone else; search again and pick another number", code="number_unavailable"
    )
