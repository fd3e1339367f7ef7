"""What makes a number unavailable on this platform, whatever carrier it comes from.

Two platform facts, each a SQL predicate over an e164 column so a query can filter on it:

- **owned**: some organization holds it live (`phone_numbers.released_at IS NULL`; the partial unique
  index `uq_phone_numbers_live_e164` guarantees at most one such row);
- **held by another organization**: an `active` hold whose `expires_at` is still ahead. An active row past
  its expiry counts for nothing when read, and is marked `expired` by the next write touching that e164
  (see `holds.expire_stale`), so no background task is needed.

The sandbox carrier adds its own rule (a released number sits in quarantine before it is sold again).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import number_reservations, phone_numbers


def owned(e164: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    return sa.exists().where(phone_numbers.c.e164 == e164, phone_numbers.c.released_at.is_(None))


def held_by_other(e164: sa.ColumnElement[Any], viewer_org_id: str, now: datetime) -> sa.ColumnElement[bool]:
    return sa.exists().where(
        number_reservations.c.e164 == e164,
        number_reservations.c.status == "active",
        number_reservations.c.expires_at > now,
        number_reservations.c.org_id != viewer_org_id,
    )


async def blocked(conn: AsyncConnection, e164s: Iterable[str], viewer_org_id: str, now: datetime) -> set[str]:
    """The numbers among `e164s` that `viewer_org_id` cannot take right now (owned, or held by another)."""
    wanted = sorted(set(e164s))
    if not wanted:
        return set()
    live = sa.select(phone_numbers.c.e164).where(
        phone_numbers.c.e164.in_(wanted), phone_numbers.c.released_at.is_(None)
    )
    held = sa.select(number_reservations.c.e164).where(
        number_reservations.c.e164.in_(wanted),
        number_reservations.c.status == "active",
        number_reservations.c.expires_at > now,
        number_reservations.c.org_id != viewer_org_id,
    )
    return set((await conn.execute(sa.union(live, held))).scalars())
