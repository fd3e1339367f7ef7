"""Usage items: one row per billed thing (a call, a chat message, a forwarded call, a number-month),
written in the same transaction as its ledger entry so items and ledger always reconcile."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import usage_items
from control_api.ids import new_id

Channel = Literal["voice", "chat", "transfer_minute", "number"]
CHANNELS: tuple[str, ...] = ("voice", "chat", "transfer_minute", "number")


async def add_usage_item(
    conn: AsyncConnection,
    *,
    org_id: str,
    event_id: str,
    ledger_entry_id: str | None,
    agent_id: str | None,
    channel: Channel,
    quantity: Decimal | int | float,
    unit: str,
    credits: int,
    occurred_at: datetime,
    now: datetime,
    detail: dict[str, Any] | None = None,
) -> str:
    """Insert one item; `credits` is what was debited (positive). The caller guarantees exactly-once
    through the ledger entry posted in the same transaction (a duplicate event never reaches here)."""
    item_id = new_id("use")
    await conn.execute(
        usage_items.insert().values(
            id=item_id,
            org_id=org_id,
            event_id=event_id,
            ledger_entry_id=ledger_entry_id,
            agent_id=agent_id,
            channel=channel,
            quantity=Decimal(str(quantity)),
            unit=unit,
            credits=credits,
            detail=detail or {},
            usage_date=occurred_at.strftime("%Y-%m-%d"),
            occurred_at=occurred_at,
            created_at=now,
        )
    )
    return item_id
