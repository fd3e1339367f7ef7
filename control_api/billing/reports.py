"""Usage reports read from usage_items: daily records (grouped on usage_date) and single items.

Both are cursor-paginated, newest first. Daily records sort on the date alone (one record per day), items
on (occurred_at, id). Quantities are billed units: minutes for voice and transfers, messages for chat,
months for number rentals (a number's one-off setup item, unit `setup`, counts in credits only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.billing.ledger import usd
from control_api.clock import iso
from control_api.db.tables import usage_items
from control_api.errors import field_error
from control_api.http.envelope import decode_cursor, encode_cursor
from control_api.repositories.keyset import after_cursor_desc, next_cursor


@dataclass(frozen=True)
class UsageFilter:
    org_id: str
    start: date | None = None  # inclusive
    end: date | None = None  # inclusive
    agent_id: str | None = None
    channel: str | None = None

    def clauses(self) -> list[sa.ColumnElement[bool]]:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise field_error("to", "must be on or after from")
        clauses = [usage_items.c.org_id == self.org_id]
        if self.start is not None:
            clauses.append(usage_items.c.usage_date >= self.start.isoformat())
        if self.end is not None:
            clauses.append(usage_items.c.usage_date <= self.end.isoformat())
        if self.agent_id is not None:
            clauses.append(usage_items.c.agent_id == self.agent_id)
        if self.channel is not None:
            clauses.append(usage_items.c.channel == self.channel)
        return clauses


def number(value: Decimal | int | float | None) -> int | float:
    """A quantity for JSON: whole numbers as integers."""
    if value is None:
        return 0
    as_decimal = Decimal(str(value))
    return int(as_decimal) if as_decimal == as_decimal.to_integral_value() else float(as_decimal)


def _sum_of(channel: str, unit: str | None = None) -> sa.ColumnElement[Any]:
    match = usage_items.c.channel == channel
    if unit is not None:
        match = sa.and_(match, usage_items.c.unit == unit)
    return sa.func.coalesce(sa.func.sum(sa.case((match, usage_items.c.quantity), else_=0)), 0)


async def daily_records(
    conn: AsyncConnection, where: UsageFilter, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    query = sa.select(
        usage_items.c.usage_date,
        _sum_of("voice").label("voice"),
        _sum_of("chat").label("chat"),
        _sum_of("transfer_minute").label("transfer"),
        _sum_of("number", "month").label("number"),  # rentals; a number's setup fee is not a month
        sa.func.coalesce(sa.func.sum(usage_items.c.credits), 0).label("credits"),
    ).where(*where.clauses())
    if cursor is not None:
        (last,) = decode_cursor(cursor, 1)
        query = query.where(usage_items.c.usage_date < str(last))
    query = query.group_by(usage_items.c.usage_date).order_by(usage_items.c.usage_date.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    records = [
        {
            "date": row.usage_date,
            "agentId": where.agent_id,
            "voiceMinutes": number(row.voice),
            "chatMessages": number(row.chat),
            "transferMinutes": number(row.transfer),
            "numberMonths": number(row.number),
            "credits": int(row.credits),
            "costUsd": usd(int(row.credits)),
        }
        for row in rows[:limit]
    ]
    more = encode_cursor([rows[limit - 1].usage_date]) if len(rows) > limit else None
    return records, more


def item_resource(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "eventId": row.event_id,
        "channel": row.channel,
        "quantity": number(row.quantity),
        "unit": row.unit,
        "credits": int(row.credits),
        "costUsd": usd(int(row.credits)),
        "agentId": row.agent_id,
        "occurredAt": iso(row.occurred_at),
        "detail": row.detail or {},
    }


async def items(
    conn: AsyncConnection, where: UsageFilter, *, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    query = sa.select(usage_items).where(*where.clauses())
    after = after_cursor_desc(usage_items.c.occurred_at, usage_items.c.id, cursor, datetime.fromisoformat)
    if after is not None:
        query = query.where(after)
    query = query.order_by(usage_items.c.occurred_at.desc(), usage_items.c.id.desc()).limit(limit + 1)
    rows = list((await conn.execute(query)).all())
    return [item_resource(r) for r in rows[:limit]], next_cursor(rows, limit, lambda r: (r.occurred_at, r.id))
