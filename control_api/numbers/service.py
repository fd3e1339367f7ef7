"""The number operations behind the API: search, hold, purchase, import, assign, release.

Each write is one database transaction. A purchase, in order (see `carrier.py` for why the carrier order
comes last):

    expire a stale hold on the e164 -> check the hold (409 held by another org; the caller's own hold, named
    or not, is consumed) -> ask the carrier for the current price (409 when it no longer sells it) ->
    insert phone_numbers (409 when another buyer won: the live-e164 unique index) -> check the wallet
    covers setup + first month (402) -> post both debits and their usage items -> consume the hold ->
    carrier.order() -> commit

Any failure on the way rolls all of it back: nothing owned, nothing charged, the hold still active.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api import idempotency
from control_api.billing import ledger
from control_api.errors import Conflict, NotFound, PaymentRequired, field_error
from control_api.http.envelope import ok
from control_api.ids import new_id
from control_api.numbers import availability, holds, rental
from control_api.numbers import repository as numbers_repo
from control_api.numbers.carrier import AvailableNumber, SearchQuery
from control_api.numbers.inventory import BY_CODE, TOLL_FREE_PREFIXES
from control_api.numbers.repository import NewNumber
from control_api.repositories import agents as agents_repo
from control_api.services import Services

BYOC_PROVIDER = "byoc"
IMPORTED_FEATURES = ("voice",)


@dataclass(frozen=True)
class Caller:
    """Who asks, and what makes a retry the same request (for Idempotency-Key)."""

    org_id: str
    idempotency_key: str | None
    fingerprint: str


async def search(services: Services, query: SearchQuery) -> list[AvailableNumber]:
    now = services.clock.now()
    async with services.engine.connect() as conn:
        found = await services.carrier.search(conn, query, now)
        blocked = await availability.blocked(conn, [n.e164 for n in found], query.viewer_org_id, now)
    return [n for n in found if n.e164 not in blocked]


async def available(services: Services, org_id: str, e164: str) -> AvailableNumber:
    now = services.clock.now()
    async with services.engine.connect() as conn:
        offer = await services.carrier.check(conn, e164, now)
        if offer is None or e164 in await availability.blocked(conn, [e164], org_id, now):
            raise NotFound(f"{e164} is not available for purchase; search again")
    return offer


async def _offer(conn: AsyncConnection, services: Services, org_id: str, e164: str, now: datetime) -> AvailableNumber:
    offer = await services.carrier.check(conn, e164, now)
    if offer is None or e164 in await availability.blocked(conn, [e164], org_id, now):
        raise numbers_repo.taken(e164)
    return offer


# --- holds -------------------------------------------------------------------------------------------------


async def reserve(services: Services, org_id: str, e164: str) -> tuple[int, dict[str, Any]]:
    """A new hold (201), or the one this organization already has on the number (200)."""
    now = services.clock.now()
    async with services.engine.begin() as conn:
        await holds.expire_stale(conn, e164, now)
        current = await holds.active(conn, e164, now)
        if current is not None:
            if current.org_id != org_id:
                raise holds.held_elsewhere(e164)
            return 200, holds.resource(current, now)
        await _offer(conn, services, org_id, e164, now)
        created = await holds.create(conn, org_id, e164, now)
        return 201, holds.resource(created, now)


async def release_hold(services: Services, org_id: str, reservation_id: str) -> dict[str, Any]:
    now = services.clock.now()
    async with services.engine.begin() as conn:
        row = await holds.get(conn, org_id, reservation_id)
        if row.status == "active":
            ended = "released" if holds.status_of(row, now) == "active" else "expired"
            await holds.set_status(conn, reservation_id, ended)
            row = await holds.get(conn, org_id, reservation_id)
        return holds.resource(row, now)


async def _claim_hold(
    conn: AsyncConnection, org_id: str, e164: str, reservation_id: str | None, now: datetime
) -> sa.Row[Any] | None:
    """The hold this purchase consumes (the caller's own, if any); raises if another org holds the number."""
    await holds.expire_stale(conn, e164, now)
    current = await holds.active(conn, e164, now)
    if current is not None and current.org_id != org_id:
        raise holds.held_elsewhere(e164)
    if reservation_id is None:
        return current
    named = await holds.get(conn, org_id, reservation_id)
    if named.e164 != e164:
        raise field_error("reservationId", f"holds {named.e164}, not {e164}")
    if current is None or current.id != named.id:
        status = holds.status_of(named, now)
        raise Conflict(
            f"reservation {reservation_id} is {status}, not active; reserve {e164} again, or purchase without it",
            code="reservation_inactive",
            extra={"reservationStatus": status},
        )
    return current


# --- purchase and import -----------------------------------------------------------------------------------


async def purchase(services: Services, caller: Caller, e164: str, reservation_id: str | None) -> idempotency.Outcome:
    ordered: list[AvailableNumber] = []

    async def action(conn: AsyncConnection) -> tuple[int, dict[str, Any]]:
        now = services.clock.now()
        hold = await _claim_hold(conn, caller.org_id, e164, reservation_id, now)
        offer = await _offer(conn, services, caller.org_id, e164, now)
        number_id = new_id("num")
        await numbers_repo.insert(conn, _purchased(number_id, caller.org_id, offer), now)
        row = await numbers_repo.get(conn, caller.org_id, number_id)
        await _require_funds(conn, caller.org_id, offer.setup_cost_credits + offer.monthly_cost_credits, now)
        await rental.charge_setup(conn, row, offer.setup_cost_credits, now)
        await rental.charge_month(conn, row, now, require_funds=True)
        if hold is not None:
            await holds.set_status(conn, hold.id, "consumed")
        await services.carrier.order(offer, org_id=caller.org_id, number_id=number_id)
        ordered.append(offer)
        return 201, ok(numbers_repo.resource(row))

    try:
        return await idempotency.run(services, caller.org_id, caller.idempotency_key, caller.fingerprint, action)
    except BaseException:
        for offer in ordered:  # ordered at the carrier, but the purchase did not commit: give it back
            await services.carrier.release(offer.e164)
        raise


def _purchased(number_id: str, org_id: str, offer: AvailableNumber) -> NewNumber:
    return NewNumber(
        id=number_id, org_id=org_id, e164=offer.e164, number_type=offer.number_type, features=offer.features,
        locality=offer.locality, region=offer.region, provider=offer.provider, source="purchased",
        agent_id=None, monthly_cost_credits=offer.monthly_cost_credits,
    )


async def _require_funds(conn: AsyncConnection, org_id: str, credits: int, now: datetime) -> None:
    wallet = await ledger.lock_wallet(conn, org_id, now)
    if wallet.balance_credits < credits:
        raise PaymentRequired(
            f"the wallet holds {wallet.balance_credits} credits (${ledger.usd(wallet.balance_credits):.2f}) but "
            f"this number needs {credits} (${ledger.usd(credits):.2f}: setup and the first month); top up "
            "with POST /billing/wallet/topup and retry",
            extra={"balanceCredits": wallet.balance_credits, "requiredCredits": credits},
        )


async def import_number(services: Services, caller: Caller, e164: str, agent_id: str | None) -> idempotency.Outcome:
    async def action(conn: AsyncConnection) -> tuple[int, dict[str, Any]]:
        now = services.clock.now()
        if agent_id is not None:
            await agents_repo.get(conn, caller.org_id, agent_id)
        hold = await _claim_hold(conn, caller.org_id, e164, None, now)
        if await numbers_repo.live_owner(conn, e164) is not None:
            raise numbers_repo.taken(e164)
        number_id = new_id("num")
        await numbers_repo.insert(conn, _imported(number_id, caller.org_id, e164, agent_id), now)
        if hold is not None:
            await holds.set_status(conn, hold.id, "consumed")
        return 201, ok(numbers_repo.resource(await numbers_repo.get(conn, caller.org_id, number_id)))

    return await idempotency.run(services, caller.org_id, caller.idempotency_key, caller.fingerprint, action)


def _imported(number_id: str, org_id: str, e164: str, agent_id: str | None) -> NewNumber:
    code = e164[2:5]
    place = BY_CODE.get(code)
    return NewNumber(
        id=number_id, org_id=org_id, e164=e164,
        number_type="toll_free" if code in TOLL_FREE_PREFIXES else "local", features=IMPORTED_FEATURES,
        locality=place.city if place else None, region=place.state if place else None,
        provider=BYOC_PROVIDER, source="imported", agent_id=agent_id, monthly_cost_credits=0,
    )


# --- owned numbers -----------------------------------------------------------------------------------------


async def assign(services: Services, org_id: str, number_id: str, agent_id: str | None) -> dict[str, Any]:
    """Point the number at an agent of the same organization, or (None) back to the pool."""
    now = services.clock.now()
    async with services.engine.begin() as conn:
        await numbers_repo.get_live(conn, org_id, number_id)
        if agent_id is not None:
            await agents_repo.get(conn, org_id, agent_id)
        await numbers_repo.set_agent(conn, org_id, number_id, agent_id, now)
        return numbers_repo.resource(await numbers_repo.get(conn, org_id, number_id))


async def release(services: Services, org_id: str, number_id: str) -> dict[str, Any]:
    """Give the number up for good (billing stops); releasing a released number changes nothing."""
    now = services.clock.now()
    async with services.engine.begin() as conn:
        row = await numbers_repo.get(conn, org_id, number_id)
        if row.released_at is None:
            await numbers_repo.release(conn, org_id, number_id, now)
            if row.source == "purchased":
                await services.carrier.release(row.e164)  # before commit: a carrier failure keeps it owned
        return numbers_repo.resource(await numbers_repo.get(conn, org_id, number_id))
