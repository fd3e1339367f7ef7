"""Metering: the runtime's way to bill usage as it happens (plain Python, no HTTP, no FastAPI).

    meter = Meter(services.engine, services.clock, services.payments)   # one per process
    decision = await meter.can_serve(org_id, "voice", toll_free=True)   # before answering / each turn
    result = await meter.record_usage(org_id, agent_id, "voice", connected_seconds, event_id, ended_at)

`record_usage` rates one event by the organization's plan (see `rating`: voice and transfers per
*started* minute of connected seconds, so 61 s bills 2 minutes; chat per message; included minutes
first, then overage; the toll-free surcharge) and posts one ledger entry (key `usage:<event_id>`, a
negative amount that may take the balance below zero: the service was already delivered) and one usage
item, committed in the same transaction. The event id makes it exactly once: a duplicate returns the
original result (`duplicate=True`) and moves nothing. Draft-mode use (`draft=True`, a builder testing an
unpublished agent) is never billed: it writes nothing and returns a zero result. A debit that crosses
the wallet's auto-reload threshold triggers the reload after the commit.

Throughput: every movement of an organization's money serializes on its wallet row, so events of one
organization that arrive while another batch of theirs is being written are applied together in one
transaction (group commit, `batching.GroupCommit`: one lock, one subscription read, one commit). If that
transaction fails, each event is retried on its own, so a bad event fails alone. Each batch holds one
pooled connection and at most `max_concurrency` run at once (default: the engine's pool size less two,
leaving room for API requests), so thousands of concurrent calls queue instead of exhausting the pool.

`can_serve` is what the runtime asks before it starts (or keeps going with) a call or chat: allowed when
voice still has included minutes this month on a plan (and, toll-free, the balance covers the
surcharge), or the balance covers at least one unit of the channel; otherwise the runtime refuses or
ends the session gracefully.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_api.billing import ledger
from control_api.billing.batching import GroupCommit
from control_api.billing.ledger import Entry
from control_api.billing.payments import PaymentProvider, ReloadOrder, reload_due, run_reload
from control_api.billing.plans import PAYG, TOLL_FREE_SURCHARGE_CREDITS_PER_MINUTE, month_of
from control_api.billing.rating import rate, unit_price
from control_api.billing.subscriptions import included_minutes_used, read_subscription
from control_api.billing.usage import add_usage_item
from control_api.clock import Clock
from control_api.db.tables import ledger_entries, usage_items

_LABELS = {"voice": "Voice", "chat": "Chat", "transfer_minute": "Transfer"}


@dataclass(frozen=True)
class UsageResult:
    event_id: str
    channel: str
    quantity: int  # billed units: minutes (voice, transfer_minute) or messages (chat)
    unit: str
    credits: int  # debited, >= 0
    included_minutes: int  # of `quantity`, how many came out of the plan's included minutes
    balance_credits: int  # the balance right after this event was applied
    ledger_entry_id: str | None = None
    usage_item_id: str | None = None
    duplicate: bool = False
    draft: bool = False
    auto_reload_intent_id: str | None = None


@dataclass(frozen=True)
class ServeDecision:
    allowed: bool
    reason: str  # draft | included_minutes | balance | insufficient_funds
    balance_credits: int


def _naive_utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is None else ts.astimezone(UTC).replace(tzinfo=None)


def default_concurrency(engine: AsyncEngine) -> int:
    size = getattr(engine.pool, "size", None)
    pool_size = size() if callable(size) else 5
    return max(1, int(pool_size) - 2)


@dataclass(frozen=True)
class UsageEvent:
    agent_id: str | None
    channel: str
    quantity: int | float
    event_id: str
    occurred_at: datetime  # naive UTC
    toll_free: bool


class Meter:
    def __init__(
        self, engine: AsyncEngine, clock: Clock, payments: PaymentProvider, *, max_concurrency: int | None = None,
        max_batch: int = 200,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.payments = payments
        self.max_concurrency = max_concurrency or default_concurrency(engine)
        self._slots = asyncio.Semaphore(self.max_concurrency)
        self._batches: GroupCommit[UsageEvent, UsageResult] = GroupCommit(self._apply_batch, max_batch=max_batch)

    async def record_usage(
        self,
        org_id: str,
        agent_id: str | None,
        channel: str,
        quantity: int | float,
        event_id: str,
        occurred_at: datetime,
        *,
        toll_free: bool = False,
        draft: bool = False,
    ) -> UsageResult:
        """Bill one event exactly once. `quantity`: connected seconds (voice, transfer_minute) or messages."""
        if not 1 <= len(event_id) <= 200:
            raise ValueError("event_id must be 1-200 characters")
        rate(PAYG, channel, quantity, included_remaining=0)  # refuse a malformed event before queueing it
        if draft:
            async with self._slots, self.engine.connect() as conn:
                wallet = await ledger.read_wallet(conn, org_id, self.clock.now())
            return UsageResult(event_id, channel, 0, "", 0, 0, wallet.balance_credits, draft=True)
        event = UsageEvent(agent_id, channel, quantity, event_id, _naive_utc(occurred_at), toll_free)
        return await self._batches.submit(org_id, event)

    async def _apply_batch(self, org_id: str, events: list[UsageEvent]) -> list[UsageResult | Exception]:
        """One transaction for the batch; if it fails, each event on its own so one bad event fails alone."""
        async with self._slots:
            try:
                return list(await self._apply(org_id, events))
            except Exception as error:
                if len(events) == 1:
                    return [error]
            outcomes: list[UsageResult | Exception] = []
            for event in events:
                try:
                    outcomes.extend(await self._apply(org_id, [event]))
                except Exception as error:
                    outcomes.append(error)
            return outcomes

    async def _apply(self, org_id: str, events: list[UsageEvent]) -> list[UsageResult]:
        now = self.clock.now()
        results: list[UsageResult] = []
        by_event: dict[str, UsageResult] = {}
        order: ReloadOrder | None = None
        async with self.engine.begin() as conn:
            wallet = await ledger.lock_wallet(conn, org_id, now)  # rate against an allowance nobody moves
            plan = (await read_subscription(conn, org_id, now)).plan
            known = await _applied(conn, org_id, [e.event_id for e in events])
            used: dict[str, int] = {}  # included minutes used so far, by month
            for event in events:
                earlier = by_event.get(event.event_id) or known.get(event.event_id)
                if earlier is not None:
                    results.append(replace(earlier, duplicate=True, auto_reload_intent_id=None))
                    continue
                month = month_of(event.occurred_at)
                remaining = 0
                if event.channel == "voice" and plan.included_minutes > 0:
                    if month not in used:
                        used[month] = await included_minutes_used(conn, org_id, month, plan.included_minutes)
                    remaining = plan.included_minutes - used[month]
                rating = rate(plan, event.channel, event.quantity, included_remaining=remaining,
                              toll_free=event.toll_free)
                entry = await ledger.post(
                    conn, org_id=org_id, key=f"usage:{event.event_id}", kind="usage",
                    amount_credits=-rating.credits, now=now, agent_id=event.agent_id,
                    description=f"{_LABELS[event.channel]}: {rating.quantity} {rating.unit}(s)",
                    reference_id=event.event_id[:80],
                )
                if entry.duplicate:  # the key was posted by something other than metering
                    results.append(await _original(conn, org_id, event.event_id, entry))
                    continue
                if month in used:
                    used[month] += rating.included_minutes
                item_id = await add_usage_item(
                    conn, org_id=org_id, event_id=event.event_id, ledger_entry_id=entry.id,
                    agent_id=event.agent_id, channel=event.channel,  # type: ignore[arg-type]
                    quantity=rating.quantity, unit=rating.unit, credits=rating.credits,
                    occurred_at=event.occurred_at, now=now,
                    detail={**rating.detail(plan, event.quantity), "tollFree": event.toll_free},
                )
                result = UsageResult(
                    event.event_id, event.channel, rating.quantity, rating.unit, rating.credits,
                    rating.included_minutes, entry.balance_after_credits, entry.id, item_id,
                )
                order = order or reload_due(wallet, entry)
                by_event[event.event_id] = result
                results.append(result)
        intent = await run_reload(self.engine, self.clock, self.payments, order)
        if intent is not None and order is not None:
            results = [replace(r, auto_reload_intent_id=intent.id) if r.ledger_entry_id == order.entry_id
                       and not r.duplicate else r for r in results]
        return results

    async def can_serve(
        self, org_id: str, channel: str, *, toll_free: bool = False, draft: bool = False
    ) -> ServeDecision:
        """May this organization start (or continue) a session on `channel` now?"""
        async with self._slots, self.engine.connect() as conn:
            now = self.clock.now()
            wallet = await ledger.read_wallet(conn, org_id, now)
            balance = wallet.balance_credits
            if draft:
                return ServeDecision(True, "draft", balance)
            plan = (await read_subscription(conn, org_id, now)).plan
            if channel == "voice" and plan.included_minutes > 0:
                used = await included_minutes_used(conn, org_id, month_of(now), plan.included_minutes)
                surcharge = TOLL_FREE_SURCHARGE_CREDITS_PER_MINUTE if toll_free else 0
                if used < plan.included_minutes and balance >= surcharge:
                    return ServeDecision(True, "included_minutes", balance)
            if balance >= unit_price(plan, channel, toll_free=toll_free):
                return ServeDecision(True, "balance", balance)
            return ServeDecision(False, "insufficient_funds", balance)


async def _applied(conn: AsyncConnection, org_id: str, event_ids: list[str]) -> dict[str, UsageResult]:
    """The results of events of this batch that were applied before (their usage items and entries)."""
    query = (
        sa.select(usage_items, ledger_entries.c.balance_after_credits)
        .join(ledger_entries, ledger_entries.c.id == usage_items.c.ledger_entry_id)
        .where(usage_items.c.org_id == org_id, usage_items.c.event_id.in_(sorted(set(event_ids))))
    )
    return {row.event_id: _result(row, int(row.balance_after_credits)) for row in (await conn.execute(query)).all()}


def _result(row: Any, balance: int) -> UsageResult:
    detail = row.detail or {}
    return UsageResult(
        row.event_id, row.channel, int(row.quantity), row.unit, int(row.credits),
        int(detail.get("includedMinutes", 0)), balance, row.ledger_entry_id, row.id, duplicate=True,
    )


async def _original(conn: AsyncConnection, org_id: str, event_id: str, entry: Entry) -> UsageResult:
    """The result the first delivery of this event produced, rebuilt from its usage item and entry."""
    row: Any = (
        await conn.execute(
            sa.select(usage_items).where(usage_items.c.org_id == org_id, usage_items.c.event_id == event_id)
        )
    ).first()
    if row is None:  # an entry posted under this key by something other than metering
        return UsageResult(event_id, "", 0, "", -entry.amount_credits, 0, entry.balance_after_credits,
                           entry.id, None, duplicate=True)
    return _result(row, entry.balance_after_credits)
