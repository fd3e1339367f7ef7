"""Owning numbers: what others can see, holds that expire, quarantine, import, assign, release, routing.

Area codes used here (and nowhere else in the session): 702, 801, 208, 503. Imports use unstocked
numbers (area codes 646, 332, and toll-free exchanges outside 555).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from control_api.numbers.inbound import DatabaseNumberRouter
from control_api.services import Services
from runtime.routing import NoRoute, RouteDecision
from tests.conftest import Tenant, TenantFactory
from tests.test_numbers_support import (
    World,
    fund,
    hold_row,
    open_world,
    pick,
    purchase,
    search,
    unstocked_number,
)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with open_world(database_url) as opened:
        yield opened


async def _e164s(tenant: Tenant, area_code: str) -> set[str]:
    return {n["e164"] for n in await search(tenant, areaCode=area_code, bestEffort="false", limit=100)}


async def test_a_purchased_number_vanishes_for_every_organization(services: Services, tenants: TenantFactory) -> None:
    buyer, other = await tenants(), await tenants()
    await fund(services, buyer.org_id, 1000)
    [e164] = await pick(buyer, "702")
    assert (await other.get(f"/numbers/available/{e164}")).json()["data"]["e164"] == e164
    await purchase(buyer, e164)
    for org in (buyer, other):
        assert e164 not in await _e164s(org, "702")
        assert e164 not in {n["e164"] for n in await search(org, endsWith=e164[-4:], bestEffort="false", limit=100)}
        assert (await org.get(f"/numbers/available/{e164}")).status_code == 404
    taken = await other.post("/numbers/reserve", json={"e164": e164})
    assert taken.status_code == 409 and taken.json()["code"] == "number_unavailable"


async def test_a_hold_hides_the_number_from_others_until_it_expires(world: World) -> None:
    holder, other = await world.tenants(), await world.tenants()
    [e164] = await pick(holder, "801")
    held = await holder.post("/numbers/reserve", json={"e164": e164})
    assert held.status_code == 201
    hold = held.json()["data"]
    assert e164 in await _e164s(holder, "801")  # the holder still sees it
    assert e164 not in await _e164s(other, "801")
    assert (await other.get(f"/numbers/available/{e164}")).status_code == 404
    assert (await other.post("/numbers/reserve", json={"e164": e164})).status_code == 409
    await fund(world.services, other.org_id, 1000)
    assert (await other.post("/numbers/purchase", json={"e164": e164})).status_code == 409

    world.clock.advance(minutes=29)
    assert e164 not in await _e164s(other, "801")
    world.clock.advance(minutes=1, seconds=1)
    assert e164 in await _e164s(other, "801")  # expired on read: no task had to run
    assert (await hold_row(world.services, hold["id"])).status == "active"
    taken_over = await other.post("/numbers/reserve", json={"e164": e164})
    assert taken_over.status_code == 201, taken_over.text
    assert (await hold_row(world.services, hold["id"])).status == "expired"  # written by that write
    gone = await holder.delete(f"/numbers/reserve/{hold['id']}")
    assert gone.status_code == 200 and gone.json()["data"]["status"] == "expired"


async def test_reserving_twice_and_releasing_a_hold(tenants: TenantFactory) -> None:
    holder, other = await tenants(), await tenants()
    first, second = await pick(holder, "503", 2)
    created = await holder.post("/numbers/reserve", json={"e164": first})
    assert created.status_code == 201
    again = await holder.post("/numbers/reserve", json={"e164": first})
    assert again.status_code == 200 and again.json()["data"] == created.json()["data"]
    conflict = await other.post("/numbers/reserve", json={"e164": first})
    assert conflict.status_code == 409 and conflict.json()["code"] == "number_unavailable"

    hold_id = created.json()["data"]["id"]
    assert (await other.delete(f"/numbers/reserve/{hold_id}")).status_code == 404
    released = await holder.delete(f"/numbers/reserve/{hold_id}")
    assert released.status_code == 200 and released.json()["data"]["status"] == "released"
    assert first in await _e164s(other, "503")
    assert (await other.post("/numbers/reserve", json={"e164": first})).status_code == 201

    assert (await holder.post("/numbers/reserve", json={"e164": unstocked_number()})).status_code == 409
    bad = await holder.post("/numbers/reserve", json={"e164": "+1415"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "e164"
    assert (await holder.delete("/numbers/reserve/res_nope")).status_code == 404
    national = await holder.post("/numbers/reserve", json={"e164": second[2:]})
    assert national.status_code == 201 and national.json()["data"]["e164"] == second


async def test_a_released_number_returns_to_sale_after_quarantine(world: World) -> None:
    owner, other = await world.tenants(), await world.tenants()
    await fund(world.services, owner.org_id, 1000)
    await fund(world.services, other.org_id, 1000)
    [e164] = await pick(owner, "208")
    number = await purchase(owner, e164)
    released = await owner.delete(f"/numbers/{number['id']}")
    assert released.status_code == 200
    assert released.json()["data"]["status"] == "released" and released.json()["data"]["releasedAt"]

    world.clock.advance(days=29, hours=23)
    assert e164 not in await _e164s(other, "208")
    assert (await other.get(f"/numbers/available/{e164}")).status_code == 404
    assert (await other.post("/numbers/reserve", json={"e164": e164})).status_code == 409
    world.clock.advance(hours=2)
    assert e164 in await _e164s(other, "208")
    rebought = await purchase(other, e164)
    assert rebought["id"] != number["id"]


async def test_import_brings_a_number_without_charge_and_refuses_live_ones(
    services: Services, tenants: TenantFactory
) -> None:
    owner, other = await tenants(), await tenants()
    agent = await owner.create_agent()
    e164 = unstocked_number("646")
    imported = await owner.post("/numbers/import", json={"e164": e164, "agentId": agent["id"]})
    assert imported.status_code == 201, imported.text
    number = imported.json()["data"]
    assert (number["provider"], number["source"], number["status"], number["agentId"]) == (
        "byoc", "imported", "assigned", agent["id"]
    )
    assert (number["monthlyCost"], number["monthlyCostCredits"], number["numberType"]) == (0.0, 0, "local")
    assert (await other.post("/numbers/import", json={"e164": e164})).status_code == 409
    assert (await owner.post("/numbers/import", json={"e164": e164})).status_code == 409
    foreign_agent = await other.post("/numbers/import", json={"e164": unstocked_number(), "agentId": agent["id"]})
    assert foreign_agent.status_code == 404

    toll_free = await owner.post("/numbers/import", json={"e164": unstocked_number("888")})
    assert toll_free.json()["data"]["numberType"] == "toll_free"
    assert (await owner.delete(f"/numbers/{number['id']}")).status_code == 200
    again = await other.post("/numbers/import", json={"e164": e164})  # only a live number blocks an import
    assert again.status_code == 201, again.text

    await fund(services, owner.org_id, 1000)
    [bought] = await pick(owner, "702")
    await purchase(owner, bought)
    assert (await other.post("/numbers/import", json={"e164": bought})).status_code == 409
    held_e164 = (await pick(owner, "702"))[0]
    await owner.post("/numbers/reserve", json={"e164": held_e164})
    assert (await other.post("/numbers/import", json={"e164": held_e164})).status_code == 409


async def test_assign_unassign_and_release(tenants: TenantFactory) -> None:
    owner, other = await tenants(), await tenants()
    agent, foreign_agent = await owner.create_agent(), await other.create_agent()
    number = (await owner.post("/numbers/import", json={"e164": unstocked_number("332")})).json()["data"]
    assert number["status"] == "available" and number["agentId"] is None
    path = f"/numbers/{number['id']}"

    assert (await owner.post(f"{path}/assign", json={"agentId": foreign_agent["id"]})).status_code == 404
    assert (await owner.post(f"{path}/assign", json={})).status_code == 400
    assigned = await owner.post(f"{path}/assign", json={"agentId": agent["id"]})
    assert assigned.json()["data"]["status"] == "assigned"
    unassigned = await owner.delete(f"{path}/assign")
    assert unassigned.status_code == 200
    assert (unassigned.json()["data"]["status"], unassigned.json()["data"]["agentId"]) == ("available", None)
    assert [n["id"] for n in (await owner.get("/numbers")).json()["data"]] == [number["id"]]  # still owned

    for method, suffix, body in (
        ("GET", "", None),
        ("POST", "/assign", {"agentId": agent["id"]}),
        ("DELETE", "/assign", None),
        ("DELETE", "", None),
    ):
        response = await other.request(method, f"{path}{suffix}", json=body)
        assert response.status_code == 404, (method, suffix)
    assert (await owner.get("/numbers/num_nope")).status_code == 404

    released = await owner.delete(path)
    assert released.json()["data"]["status"] == "released"
    assert (await owner.get("/numbers")).json()["data"] == []
    assert (await owner.get(path)).json()["data"]["status"] == "released"
    refused = await owner.post(f"{path}/assign", json={"agentId": agent["id"]})
    assert refused.status_code == 409 and refused.json()["code"] == "number_released"
    assert (await owner.delete(path)).status_code == 200  # releasing twice changes nothing


async def test_the_list_is_paginated_newest_first(tenant: Tenant) -> None:
    created = []
    for _ in range(5):
        response = await tenant.post("/numbers/import", json={"e164": unstocked_number("332")})
        created.append(response.json()["data"]["id"])
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await tenant.get("/numbers", params=params)).json()
        seen += [n["id"] for n in body["data"]]
        cursor = body["pagination"]["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(created) and len(seen) == 5
    assert (await tenant.get("/numbers", params={"cursor": "garbage"})).status_code == 400


async def test_route_inbound_names_why_a_call_has_nowhere_to_go(services: Services, tenant: Tenant) -> None:
    router = DatabaseNumberRouter(services.engine)
    e164 = unstocked_number("646")
    assert await router.route_inbound(e164) == NoRoute("unknown")
    assert await router.route_inbound("not a number") == NoRoute("unknown")

    number = (await tenant.post("/numbers/import", json={"e164": e164})).json()["data"]
    assert await router.route_inbound(e164) == NoRoute("unassigned")

    agent = await tenant.create_agent()
    await tenant.post(f"/numbers/{number['id']}/assign", json={"agentId": agent["id"]})
    decision = RouteDecision(
        org_id=tenant.org_id, agent_id=agent["id"], number_id=number["id"], e164=e164, number_type="local"
    )
    assert await router.route_inbound(e164) == decision
    assert await router.route_inbound(e164[2:]) == decision  # the national form, as some trunks send it

    assert (await tenant.delete(f"/agents/{agent['id']}")).status_code == 200
    assert await router.route_inbound(e164) == NoRoute("agent_deleted")
    assert (await tenant.get(f"/numbers/{number['id']}")).json()["data"]["status"] == "assigned"

    await tenant.delete(f"/numbers/{number['id']}")
    assert await router.route_inbound(e164) == NoRoute("unknown")

    toll_free = unstocked_number("833")
    other_agent = await tenant.create_agent()
    await tenant.post("/numbers/import", json={"e164": toll_free, "agentId": other_agent["id"]})
    routed = await router.route_inbound(toll_free)
    assert isinstance(routed, RouteDecision) and routed.number_type == "toll_free"
