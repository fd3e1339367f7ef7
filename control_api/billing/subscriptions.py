"""Subscriptions: which plan rates an organization's usage, plan changes, and monthly renewal.

An organization with no row is on pay-as-you-go. A row names the plan the organization chose, its
status (`active` | `past_due`) and `current_period`, the calendar month (UTC, YYYY-MM) last paid for.

- **Changing plan** charges the new plan's monthly price for the current month from the wallet at once
  (ledger key `subscription:<YYYY-MM>:<planId>`, so each plan is charged at most once per month: switching
  away and back costs nothing more). A wallet that cannot pay gets 402 and nothing changes. The new plan
  takes effect immediately.
- **Included minutes** are a monthly allowance against *all* voice minutes of the calendar month: minutes
  used earlier in the month, on any plan, count toward it, so switching plans never resets it.
- **Renewal** (`renew_subscriptions`, run it at server start and daily): every subscribed organization
  whose period is not the current month is charged its plan's price for the new month. When the wallet
  cannot pay, the organization falls back to pay-as-you-go rating with status `past_due` (the wallet never
  goes negative for a subscription); later runs retry the charge, so a past-due organization that tops
  up is renewed by the next run. Idempotent per organization and month (the ledger key). Until renewal
  runs in a new month, usage is rated on the plan as it stands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.billing import ledger
from control_api.billing.ledger import Entry
from control_api.billing.payments import ReloadOrder, reload_order, run_reload
from control_api.billing.plans import PAYG, Plan, find_plan, month_of, month_start, next_month
from control_api.clock import iso
from control_api.db.tables import subscriptions, usage_items
from control_api.errors import PaymentRequired

if TYPE_CHECKING:
    from control_api.services import Services

log = logging.getLogger("flowyte.billing")

ACTIVE, PAST_DUE = "active", "past_due"


@dataclass(frozen=True)
class Subscription:
    org_id: str
    plan_id: str  # the plan chosen (the lapsed one while past due)
    status: str
    current_period: str
    started_at: datetime | None

    @property
    def plan(self) -> Plan:
        """The plan that rates usage now: pay-as-you-go while past due."""
        if self.status != ACTIVE:
            return PAYG
        return find_plan(self.plan_id) or PAYG

    def to_json(self, included_used: int) -> dict[str, Any]:
        plan = self.plan
        chosen = find_plan(self.plan_id) or PAYG
        renews = chosen.monthly_price_credits > 0
        return {
            "planId": plan.id,
            "planName": plan.name,
            "status": self.status,
            "subscribedPlanId": chosen.id,
            "currentPeriod": self.current_period,
            "renewsAt": iso(month_start(next_month(self.current_period))) if renews else None,
            "includedMinutes": plan.included_minutes,
            "includedMinutesUsed": included_used,
            "startedAt": iso(self.started_at),
        }


async def read_subscription(conn: AsyncConnection, org_id: str, now: datetime) -> Subscription:
    row = (await conn.execute(sa.select(subscriptions).where(subscriptions.c.org_id == org_id))).first()
    if row is None:
        return Subscription(org_id, PAYG.id, ACTIVE, month_of(now), None)
    return Subscription(org_id, row.plan_id, row.status, row.current_period, row.started_at)


async def included_minutes_used(conn: AsyncConnection, org_id: str, month: str, allowance: int) -> int:
    """Voice minutes of `month` already covered by the allowance: min(allowance, the month's voice minutes).

    Every voice item with minutes is worth at least one, so reading `allowance` of them is enough: the
    scan is bounded by the allowance, not by the month's traffic.
    """
    if allowance <= 0:
        return 0
    first, after = month + "-01", next_month(month) + "-01"
    minutes = (
        sa.select(usage_items.c.quantity)
        .where(
            usage_items.c.org_id == org_id,
            usage_items.c.usage_date >= first,
            usage_items.c.usage_date < after,
            usage_items.c.channel == "voice",
            usage_items.c.quantity > 0,
        )
        .limit(allowance)
        .subquery()
    )
    total = await conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(minutes.c.quantity), 0)))
    return min(allowance, int(total or 0))


async def _store(
    conn: AsyncConnection, org_id: str, plan_id: str, status: str, period: str, started_at: datetime,
    now: datetime,
) -> None:
    values = dict(org_id=org_id, plan_id=plan_id, status=status, current_period=period, started_at=started_at,
                  updated_at=now)
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(subscriptions).values(**values)
    await conn.execute(statement.on_conflict_do_update(
        index_elements=["org_id"],
        set_={k: statement.excluded[k] for k in ("plan_id", "status", "current_period", "started_at",
                                                  "updated_at")},
    ))


def charge_key(month: str, plan: Plan) -> str:
    return f"subscription:{month}:{plan.id}"


async def _charge(conn: AsyncConnection, org_id: str, plan: Plan, month: str, now: datetime) -> Entry:
    return await ledger.post(
        conn, org_id=org_id, key=charge_key(month, plan), kind="subscription",
        amount_credits=-plan.monthly_price_credits, description=f"{plan.name} plan, {month}",
        now=now, reference_id=plan.id, require_funds=True,
    )


async def change_plan(
    conn: AsyncConnection, org_id: str, plan: Plan, now: datetime
) -> tuple[Subscription, ReloadOrder | None]:
    """Switch to `plan` now, charging its price for this month (402 and no change when unaffordable)."""
    await ledger.lock_wallet(conn, org_id, now)
    current = await read_subscription(conn, org_id, now)
    month = month_of(now)
    order = None
    if plan.monthly_price_credits > 0:
        entry = await _charge(conn, org_id, plan, month, now)
        order = await reload_order(conn, entry, now)
    started = current.started_at if current.plan_id == plan.id and current.started_at is not None else now
    await _store(conn, org_id, plan.id, ACTIVE, month, started, now)
    return await read_subscription(conn, org_id, now), order


async def renew_subscriptions(services: Services) -> int:
    """Charge every subscribed organization for the current month; returns how many were charged.

    Safe to run any number of times (at start, daily, from two processes at once)."""
    now = services.clock.now()
    month = month_of(now)
    query = sa.select(subscriptions.c.org_id).where(
        sa.or_(subscriptions.c.current_period < month,
               sa.and_(subscriptions.c.status == PAST_DUE, subscriptions.c.current_period == month))
    )
    async with services.engine.connect() as conn:
        org_ids = [row.org_id for row in (await conn.execute(query)).all()]
    renewed = 0
    for org_id in org_ids:
        try:
            renewed += await _renew(services, org_id, month)
        except Exception:  # one organization's failure must not stop the others' renewals
            log.exception("could not renew the subscription of %s for %s", org_id, month)
    return renewed


async def _renew(services: Services, org_id: str, month: str) -> int:
    now = services.clock.now()
    order: ReloadOrder | None = None
    charged = 0
    async with services.engine.begin() as conn:
        await ledger.lock_wallet(conn, org_id, now)
        sub = await read_subscription(conn, org_id, now)
        if sub.current_period > month or (sub.current_period == month and sub.status == ACTIVE):
            return 0  # another run got here first
        plan = find_plan(sub.plan_id) or PAYG
        status = ACTIVE
        if plan.monthly_price_credits > 0:
            try:
                entry = await _charge(conn, org_id, plan, month, now)
            except PaymentRequired:
                status = PAST_DUE
                log.warning("%s cannot pay for %s in %s: falling back to pay-as-you-go", org_id, plan.id, month)
            else:
                charged = 0 if entry.duplicate else 1
                order = await reload_order(conn, entry, now)
        await _store(conn, org_id, sub.plan_id, status, month, sub.started_at or now, now)
    await run_reload(services.engine, services.clock, services.payments, order)
    return charged
