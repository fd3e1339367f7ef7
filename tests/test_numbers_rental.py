"""The monthly rental job: exactly one charge per live number per month, whatever reruns or restarts.

Area code used here (and nowhere else in the session): 615. The job charges every organization's numbers,
so the assertions look at this test's organization only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

import pytest

from control_api.numbers.rental import charge_number_rentals, period_of
from tests.test_numbers_support import (
    World,
    balance,
    entries,
    fund,
    open_world,
    pick,
    purchase,
    unstocked_number,
    usage,
)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    async with open_world(database_url) as opened:
        yield opened


def _next_month(now: datetime) -> datetime:
    return datetime(now.year + now.month // 12, now.month % 12 + 1, 1, 0, 30)


async def _rentals(world: World, org_id: str) -> list[tuple[str, int]]:
    return sorted(
        (e.entry_key, e.amount_credits) for e in await entries(world.services, org_id) if e.kind == "number_rental"
    )


async def test_each_live_number_is_charged_once_a_month(world: World) -> None:
    org = await world.tenants()
    await fund(world.services, org.org_id, 430)
    first, second = await pick(org, "615", 2)
    kept, dropped = await purchase(org, first), await purchase(org, second)
    await org.post("/numbers/import", json={"e164": unstocked_number()})  # costs nothing, never charged
    month = period_of(world.clock.now())
    charged_at_purchase = [(f"rental:{kept['id']}:{month}", -115), (f"rental:{dropped['id']}:{month}", -115)]
    assert await _rentals(world, org.org_id) == sorted(charged_at_purchase)

    await charge_number_rentals(world.services)
    assert await charge_number_rentals(world.services) == 0  # a rerun (or a restart) charges nothing
    assert await _rentals(world, org.org_id) == sorted(charged_at_purchase)
    assert await balance(world.services, org.org_id) == 0

    now = world.clock.now()
    world.clock.advance(seconds=(_next_month(now) - now).total_seconds())
    following = period_of(world.clock.now())
    assert await charge_number_rentals(world.services) >= 2
    assert await charge_number_rentals(world.services) == 0
    assert await _rentals(world, org.org_id) == sorted(
        [*charged_at_purchase, (f"rental:{kept['id']}:{following}", -115),
         (f"rental:{dropped['id']}:{following}", -115)]
    )
    assert await balance(world.services, org.org_id) == -230  # rent may overdraw: the lines are in service
    items = [i for i in await usage(world.services, org.org_id) if i.event_id.endswith(following)]
    assert sorted((i.channel, i.unit, int(i.credits)) for i in items) == [("number", "month", 115)] * 2

    await org.delete(f"/numbers/{dropped['id']}")
    now = world.clock.now()
    world.clock.advance(seconds=(_next_month(now) - now).total_seconds())
    await charge_number_rentals(world.services)
    third = period_of(world.clock.now())
    assert [key for key, _ in await _rentals(world, org.org_id) if key.endswith(third)] == [
        f"rental:{kept['id']}:{third}"
    ]
