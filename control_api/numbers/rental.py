"""What owning a number costs: a one-off setup charge and a monthly rental, each exactly once.

Every charge is one ledger entry plus one usage item (channel `number`) in the caller's transaction, under
a natural key that makes it land once whatever retries or restarts happen:

    number_setup:<number_id>               at purchase
    rental:<number_id>:<YYYY-MM>           the first month at purchase, then each month by the job

`charge_number_rentals(services)` is the job: it charges every live number with a monthly cost for the
current month (UTC, from the injected clock) that has no rental entry for it yet. Run it as often as you
like (at start, hourly): a second run in the same month, or a run after a crash or restart, charges
nothing twice. Imported numbers cost 0 and are never charged. Rentals may take the wallet below zero (the
number is already owned and in service); the purchase itself requires funds.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.billing import ledger
from control_api.billing.usage import add_usage_item
from control_api.db.tables import ledger_entries, phone_numbers
from control_api.services import Services

log = logging.getLogger("flowyte.numbers")

SETUP_KIND = "number_setup"
RENTAL_KIND = "number_rental"


def period_of(now: datetime) -> str:
    return now.strftime("%Y-%m")


def setup_key(number_id: str) -> str:
    return f"number_setup:{number_id}"


def rental_key(number_id: str, period: str) -> str:
    return f"rental:{number_id}:{period}"


async def charge_setup(conn: AsyncConnection, number: sa.Row[Any], credits: int, now: datetime) -> bool:
    return await _charge(
        conn, number, key=setup_key(number.id), kind=SETUP_KIND, credits=credits, unit="setup",
        description=f"Phone number {number.e164}: setup", now=now, require_funds=True, detail={},
    )


async def charge_month(conn: AsyncConnection, number: sa.Row[Any], now: datetime, *, require_funds: bool) -> bool:
    """Charge the rental of `number` for the month containing `now`; False if it was already charged."""
    period = period_of(now)
    return await _charge(
        conn, number, key=rental_key(number.id, period), kind=RENTAL_KIND, credits=int(number.monthly_cost_credits),
        unit="month", description=f"Phone number {number.e164}: rental {period}", now=now,
        require_funds=require_funds, detail={"period": period},
    )


async def _charge(
    conn: AsyncConnection, number: sa.Row[Any], *, key: str, kind: str, credits: int, unit: str,
    description: str, now: datetime, require_funds: bool, detail: dict[str, Any],
) -> bool:
    if credits <= 0:
        return False
    entry = await ledger.post(
        conn, org_id=number.org_id, key=key, kind=kind, amount_credits=-credits, description=description,
        now=now, agent_id=number.agent_id, reference_id=number.id, require_funds=require_funds,
    )
    if entry.duplicate:
        return False
    await add_usage_item(
        conn, org_id=number.org_id, event_id=key, ledger_entry_id=entry.id, agent_id=number.agent_id,
        channel="number", quantity=1, unit=unit, credits=credits, occurred_at=now, now=now,
        detail={"numberId": number.id, "e164": number.e164, **detail},
    )
    return True


def _due(period: str) -> sa.Select[Any]:
    """Live numbers with a monthly cost and no rental entry for `period` yet."""
    key = sa.literal("rental:") + phone_numbers.c.id + sa.literal(f":{period}")
    charged = sa.exists().where(
        ledger_entries.c.org_id == phone_numbers.c.org_id, ledger_entries.c.entry_key == key
    )
    return (
        sa.select(phone_numbers.c.org_id, phone_numbers.c.id)
        .where(phone_numbers.c.released_at.is_(None), phone_numbers.c.monthly_cost_credits > 0, ~charged)
        .order_by(phone_numbers.c.org_id, phone_numbers.c.id)
    )


async def charge_number_rentals(services: Services) -> int:
    """Charge this month's rental on every live number not yet charged for it; returns how many were."""
    now = services.clock.now()
    async with services.engine.connect() as conn:
        due = (await conn.execute(_due(period_of(now)))).all()
    charged = 0
    for org_id, number_id in due:
        try:  # one number per transaction, so one failure holds up no other; the next run retries it
            charged += await _charge_one(services, org_id, number_id, now)
        except Exception:
            log.exception("could not charge the rental of number %s (organization %s)", number_id, org_id)
    return charged


async def _charge_one(services: Services, org_id: str, number_id: str, now: datetime) -> int:
    async with services.engine.begin() as conn:
        number = (
            await conn.execute(
                sa.select(phone_numbers).where(
                    phone_numbers.c.org_id == org_id, phone_numbers.c.id == number_id,
                    phone_numbers.c.released_at.is_(None),
                )
            )
        ).first()
        return int(number is not None and await charge_month(conn, number, now, require_funds=False))
