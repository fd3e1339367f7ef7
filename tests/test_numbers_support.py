"""Shared helpers for the numbers tests: a movable clock, an app wired to it, wallets, and DB probes.

Every test here shares one database per backend with the rest of the session, so each test that buys or
holds numbers works in its own area codes and asserts only about its own organizations.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa

from control_api.billing import ledger
from control_api.clock import SystemClock
from control_api.db.engine import create_engine
from control_api.db.tables import ledger_entries, number_reservations, phone_numbers, usage_items
from control_api.http.app import create_app
from control_api.numbers.carrier import Carrier, SandboxCarrier
from control_api.services import Services
from tests.conftest import Tenant, TenantFactory, make_settings


class ShiftedClock(SystemClock):
    """System time plus an offset the test moves (never sleeps)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return super().now() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@dataclass
class World:
    services: Services
    clock: ShiftedClock
    tenants: TenantFactory


@asynccontextmanager
async def open_world(database_url: str, carrier: Carrier | None = None) -> AsyncIterator[World]:
    clock = ShiftedClock()
    services = Services(
        settings=make_settings(database_url), engine=create_engine(database_url), clock=clock,
        carrier=carrier or SandboxCarrier(),
    )
    transport = httpx.ASGITransport(app=create_app(services))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield World(services, clock, TenantFactory(services, http))
    finally:
        await services.engine.dispose()


async def fund(services: Services, org_id: str, credits: int) -> None:
    async with services.engine.begin() as conn:
        await ledger.post(
            conn, org_id=org_id, key=f"test-credit-{secrets.token_hex(8)}", kind="credit",
            amount_credits=credits, description="test credit", now=services.clock.now(),
        )


async def balance(services: Services, org_id: str) -> int:
    async with services.engine.connect() as conn:
        wallet = await ledger.read_wallet(conn, org_id, services.clock.now())
        assert await ledger.recompute_balance(conn, org_id) == wallet.balance_credits
    return wallet.balance_credits


async def entries(services: Services, org_id: str) -> list[sa.Row[Any]]:
    async with services.engine.connect() as conn:
        query = sa.select(ledger_entries).where(ledger_entries.c.org_id == org_id).order_by(ledger_entries.c.seq)
        return list((await conn.execute(query)).all())


async def usage(services: Services, org_id: str) -> list[sa.Row[Any]]:
    async with services.engine.connect() as conn:
        query = sa.select(usage_items).where(usage_items.c.org_id == org_id).order_by(usage_items.c.event_id)
        return list((await conn.execute(query)).all())


async def owners(services: Services, e164: str) -> list[sa.Row[Any]]:
    async with services.engine.connect() as conn:
        return list((await conn.execute(sa.select(phone_numbers).where(phone_numbers.c.e164 == e164))).all())


async def hold_row(services: Services, reservation_id: str) -> sa.Row[Any]:
    async with services.engine.connect() as conn:
        query = sa.select(number_reservations).where(number_reservations.c.id == reservation_id)
        return (await conn.execute(query)).one()


async def search(tenant: Tenant, **params: Any) -> list[dict[str, Any]]:
    response = await tenant.get("/numbers/search", params=params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


async def pick(tenant: Tenant, area_code: str, count: int = 1) -> list[str]:
    """Numbers in `area_code` nobody owns or holds yet."""
    found = await search(tenant, areaCode=area_code, bestEffort="false", limit=count)
    assert len(found) == count
    return [n["e164"] for n in found]


async def purchase(tenant: Tenant, e164: str, **body: Any) -> dict[str, Any]:
    response = await tenant.post("/numbers/purchase", json={"e164": e164, **body})
    assert response.status_code == 201, response.text
    number: dict[str, Any] = response.json()["data"]
    return number


def unstocked_number(area_code: str = "646") -> str:
    """A valid US number outside the sandbox inventory, which stocks only the 555 exchange."""
    return f"+1{area_code}{secrets.randbelow(3_000_000) + 2_000_000}"
