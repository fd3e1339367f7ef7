"""Buying numbers: ownership and money move together or not at all.

Area codes used here (and nowhere else in the session): 415 (the guide's +14155551234), 405, 918, 316,
402, 504.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from control_api.numbers.carrier import AvailableNumber, SandboxCarrier
from control_api.numbers.rental import period_of
from control_api.services import Services
from tests.conftest import Tenant, TenantFactory
from tests.test_numbers_support import (
    World,
    balance,
    entries,
    fund,
    hold_row,
    open_world,
    owners,
    pick,
    search,
    unstocked_number,
    usage,
)

GUIDE_NUMBER = "+14155551234"
COST = 215  # $1.00 setup + $1.15 first month


async def test_the_buy_a_number_guide_end_to_end(services: Services, tenant: Tenant) -> None:
    await fund(services, tenant.org_id, 1000)
    found = await search(tenant, areaCode="415", numberType="local", features="voice")
    assert GUIDE_NUMBER in {n["e164"] for n in found}

    held = await tenant.post("/numbers/reserve", json={"e164": "(415) 555-1234"})
    assert held.status_code == 201, held.text
    hold = held.json()["data"]
    assert set(hold) == {"id", "e164", "expiresAt", "status"}
    assert hold["e164"] == GUIDE_NUMBER and hold["status"] == "active"

    bought = await tenant.post("/numbers/purchase", json={"e164": GUIDE_NUMBER, "reservationId": hold["id"]})
    assert bought.status_code == 201, bought.text
    number = bought.json()["data"]
    assert number["id"].startswith("num_") and number["e164"] == GUIDE_NUMBER
    assert (number["status"], number["agentId"], number["source"], number["provider"]) == (
        "available", None, "purchased", "sandbox"
    )
    assert (number["monthlyCost"], number["monthlyCostCredits"], number["numberType"]) == (1.15, 115, "local")
    assert (number["locality"], number["region"]) == ("San Francisco", "CA")

    agent = await tenant.create_agent()
    assigned = await tenant.post(f"/numbers/{number['id']}/assign", json={"agentId": agent["id"]})
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["data"]["status"] == "assigned" and assigned.json()["data"]["agentId"] == agent["id"]
    listed = (await tenant.get("/numbers")).json()
    assert [n["id"] for n in listed["data"]] == [number["id"]]
    assert listed["data"][0]["status"] == "assigned"

    assert await balance(services, tenant.org_id) == 1000 - COST
    period = period_of(services.clock.now())
    debits = [(e.entry_key, e.amount_credits, e.kind) for e in await entries(services, tenant.org_id)][1:]
    assert debits == [
        (f"number_setup:{number['id']}", -100, "number_setup"),
        (f"rental:{number['id']}:{period}", -115, "number_rental"),
    ]
    items = await usage(services, tenant.org_id)
    assert sorted((i.channel, int(i.credits), i.unit) for i in items) == [
        ("number", 100, "setup"), ("number", 115, "month")
    ]
    assert {i.event_id for i in items} == {key for key, _, _ in debits}
    assert all(i.ledger_entry_id for i in items)
    assert (await hold_row(services, hold["id"])).status == "consumed"
    again = await tenant.post("/numbers/purchase", json={"e164": GUIDE_NUMBER, "reservationId": hold["id"]})
    assert again.status_code == 409


async def test_two_organizations_buying_one_number_at_once(services: Services, tenants: TenantFactory) -> None:
    first, second = await tenants(), await tenants()
    for org in (first, second):
        await fund(services, org.org_id, 500)
    [e164] = await pick(first, "405")

    responses = await asyncio.gather(
        first.post("/numbers/purchase", json={"e164": e164}),
        second.post("/numbers/purchase", json={"e164": e164}),
    )
    assert sorted(r.status_code for r in responses) == [201, 409]
    winner, loser = (first, second) if responses[0].status_code == 201 else (second, first)
    lost = responses[[first, second].index(loser)]
    assert lost.json()["code"] == "number_unavailable"
    assert await balance(services, loser.org_id) == 500
    assert [e.kind for e in await entries(services, loser.org_id)] == ["credit"]
    assert await usage(services, loser.org_id) == []
    assert await balance(services, winner.org_id) == 500 - COST
    assert [r.org_id for r in await owners(services, e164)] == [winner.org_id]


async def test_too_little_balance_is_402_and_changes_nothing(services: Services, tenant: Tenant) -> None:
    await fund(services, tenant.org_id, COST - 1)
    [e164] = await pick(tenant, "918")
    hold = (await tenant.post("/numbers/reserve", json={"e164": e164})).json()["data"]

    refused = await tenant.post("/numbers/purchase", json={"e164": e164, "reservationId": hold["id"]})
    assert refused.status_code == 402, refused.text
    problem = refused.json()
    assert problem["code"] == "insufficient_funds"
    assert (problem["balanceCredits"], problem["requiredCredits"]) == (COST - 1, COST)
    assert await owners(services, e164) == []
    assert [e.kind for e in await entries(services, tenant.org_id)] == ["credit"]
    assert await usage(services, tenant.org_id) == []
    assert await balance(services, tenant.org_id) == COST - 1
    assert (await hold_row(services, hold["id"])).status == "active"

    await fund(services, tenant.org_id, 1)  # the hold is still good: top up and finish
    bought = await tenant.post("/numbers/purchase", json={"e164": e164, "reservationId": hold["id"]})
    assert bought.status_code == 201, bought.text
    assert await balance(services, tenant.org_id) == 0


class RefusingCarrier(SandboxCarrier):
    """A carrier whose order fails after the number row and the debits were written (in the transaction)."""

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[str] = []

    async def order(self, number: AvailableNumber, *, org_id: str, number_id: str) -> None:
        self.orders.append(number.e164)
        raise RuntimeError("carrier timed out")


@pytest.fixture
async def refusing(database_url: str) -> AsyncIterator[tuple[World, RefusingCarrier]]:
    carrier = RefusingCarrier()
    async with open_world(database_url, carrier) as world:
        yield world, carrier


async def test_a_failure_after_ownership_leaves_neither_ownership_nor_debit(
    refusing: tuple[World, RefusingCarrier],
) -> None:
    world, carrier = refusing
    services = world.services
    org = await world.tenants()
    await fund(services, org.org_id, 1000)
    [e164] = await pick(org, "316")
    hold = (await org.post("/numbers/reserve", json={"e164": e164})).json()["data"]

    failed = await org.post(
        "/numbers/purchase", json={"e164": e164, "reservationId": hold["id"]}, headers={"Idempotency-Key": "k1"}
    )
    assert failed.status_code == 500
    assert carrier.orders == [e164]  # it got as far as the order: the row and the debits had been written
    assert await owners(services, e164) == []
    assert [e.kind for e in await entries(services, org.org_id)] == ["credit"]
    assert await usage(services, org.org_id) == []
    assert await balance(services, org.org_id) == 1000
    assert (await hold_row(services, hold["id"])).status == "active"
    assert e164 in {n["e164"] for n in await search(org, areaCode="316", bestEffort="false", limit=100)}


async def test_an_idempotent_retry_returns_the_same_number_and_charges_once(
    services: Services, tenant: Tenant
) -> None:
    await fund(services, tenant.org_id, 1000)
    [e164] = await pick(tenant, "402")
    headers = {"Idempotency-Key": "buy-omaha-1"}
    first = await tenant.post("/numbers/purchase", json={"e164": e164}, headers=headers)
    replay = await tenant.post("/numbers/purchase", json={"e164": e164}, headers=headers)
    assert first.status_code == replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert len(await owners(services, e164)) == 1
    assert await balance(services, tenant.org_id) == 1000 - COST
    other_key = await tenant.post("/numbers/purchase", json={"e164": e164}, headers={"Idempotency-Key": "buy-2"})
    assert other_key.status_code == 409
    reused = await tenant.post("/numbers/purchase", json={"e164": unstocked_number()}, headers=headers)
    assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"


async def test_purchase_refusals(services: Services, tenants: TenantFactory) -> None:
    buyer, holder = await tenants(), await tenants()
    await fund(services, buyer.org_id, 1000)
    first, second, third = await pick(buyer, "504", 3)
    theirs = (await holder.post("/numbers/reserve", json={"e164": first})).json()["data"]
    mine = (await buyer.post("/numbers/reserve", json={"e164": second})).json()["data"]

    held = await buyer.post("/numbers/purchase", json={"e164": first})
    assert held.status_code == 409 and held.json()["code"] == "number_unavailable"
    foreign = await buyer.post("/numbers/purchase", json={"e164": second, "reservationId": theirs["id"]})
    assert foreign.status_code == 404
    mismatch = await buyer.post("/numbers/purchase", json={"e164": third, "reservationId": mine["id"]})
    assert mismatch.status_code == 400 and mismatch.json()["errors"][0]["field"] == "reservationId"
    unknown = await buyer.post("/numbers/purchase", json={"e164": unstocked_number()})
    assert unknown.status_code == 409 and unknown.json()["code"] == "number_unavailable"
    invalid = await buyer.post("/numbers/purchase", json={"e164": "555-1234"})
    assert invalid.status_code == 400 and invalid.json()["errors"][0]["field"] == "e164"
    extra = await buyer.post("/numbers/purchase", json={"e164": second, "quantity": 2})
    assert extra.status_code == 400 and extra.json()["errors"][0]["field"] == "quantity"
    assert [e.kind for e in await entries(services, buyer.org_id)] == ["credit"]

    # Buying without naming its own hold still consumes it.
    bought = await buyer.post("/numbers/purchase", json={"e164": second})
    assert bought.status_code == 201, bought.text
    assert (await hold_row(services, mine["id"])).status == "consumed"


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with open_world(database_url) as opened:
        yield opened


async def test_an_expired_hold_cannot_be_used_to_purchase(world: World) -> None:
    tenant = await world.tenants()
    await fund(world.services, tenant.org_id, 1000)
    [e164] = await pick(tenant, "504")
    hold = (await tenant.post("/numbers/reserve", json={"e164": e164})).json()["data"]
    world.clock.advance(minutes=30)
    expired = await tenant.post("/numbers/purchase", json={"e164": e164, "reservationId": hold["id"]})
    assert expired.status_code == 409, expired.text
    assert expired.json()["code"] == "reservation_inactive" and expired.json()["reservationStatus"] == "expired"
    assert (await hold_row(world.services, hold["id"])).status == "active"  # the refused request rolled back
    bought = await tenant.post("/numbers/purchase", json={"e164": e164})  # nobody took it meanwhile
    assert bought.status_code == 201, bought.text
    assert (await hold_row(world.services, hold["id"])).status == "expired"
