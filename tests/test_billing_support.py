"""Shared pieces for the billing tests (no tests here): a clock the test moves, and an environment with
its own Services (clock, payment provider), API client, tenant factory and meter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import httpx
import sqlalchemy as sa

from control_api.billing import ledger
from control_api.billing.metering import Meter
from control_api.billing.payments import LocalPaymentProvider
from control_api.clock import SystemClock
from control_api.db.engine import create_engine
from control_api.db.tables import ledger_entries, payment_intents, usage_items
from control_api.http.app import create_app
from control_api.services import Services
from tests.conftest import TenantFactory, make_settings


class MovableClock(SystemClock):
    """Wall time stands still until the test moves it."""

    def __init__(self, now: datetime) -> None:
        self.t = now

    def now(self) -> datetime:
        return self.t


@dataclass
class Env:
    services: Services
    clock: MovableClock
    http: httpx.AsyncClient
    tenants: TenantFactory
    meter: Meter

    async def credit(self, org_id: str, credits: int, key: str) -> ledger.Entry:
        async with self.services.engine.begin() as conn:
            return await ledger.post(conn, org_id=org_id, key=key, kind="credit", amount_credits=credits,
                                     description="test credit", now=self.clock.now())

    async def balance(self, org_id: str) -> int:
        async with self.services.engine.connect() as conn:
            return (await ledger.read_wallet(conn, org_id, self.clock.now())).balance_credits

    async def recomputed(self, org_id: str) -> int:
        async with self.services.engine.connect() as conn:
            return await ledger.recompute_balance(conn, org_id)

    async def count(self, table: sa.Table, org_id: str, *where: sa.ColumnElement[bool]) -> int:
        async with self.services.engine.connect() as conn:
            value = await conn.scalar(sa.select(sa.func.count()).select_from(table).where(
                table.c.org_id == org_id, *where))
        return int(value or 0)

    async def entries(self, org_id: str, kind: str) -> list[ledger.Entry]:
        async with self.services.engine.connect() as conn:
            rows = (await conn.execute(sa.select(ledger_entries).where(
                ledger_entries.c.org_id == org_id, ledger_entries.c.kind == kind
            ).order_by(ledger_entries.c.seq))).all()
        return [ledger._entry(r) for r in rows]

    async def intents(self, org_id: str) -> list[sa.Row[tuple[object, ...]]]:
        async with self.services.engine.connect() as conn:
            return list((await conn.execute(sa.select(payment_intents).where(
                payment_intents.c.org_id == org_id).order_by(payment_intents.c.created_at))).all())

    async def item_credits(self, org_id: str) -> int:
        async with self.services.engine.connect() as conn:
            value = await conn.scalar(sa.select(sa.func.coalesce(sa.func.sum(usage_items.c.credits), 0)).where(
                usage_items.c.org_id == org_id))
        return int(value or 0)


@asynccontextmanager
async def billing_env(
    database_url: str, now: datetime | None = None, *, settle_immediately: bool = True
) -> AsyncIterator[Env]:
    engine = create_engine(database_url)
    clock = MovableClock(now or SystemClock().now())
    services = Services(settings=make_settings(database_url), engine=engine, clock=clock,
                        payments=LocalPaymentProvider(settle_immediately=settle_immediately))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(services)),
                                     base_url="http://testserver") as http:
            yield Env(services, clock, http, TenantFactory(services, http),
                      Meter(engine, clock, services.payments))
    finally:
        await engine.dispose()
