"""Where phone numbers come from: the `Carrier` interface, and the built-in sandbox carrier.

The platform owns the business rules (who owns a number, holds, the wallet, routing); a carrier owns the
inventory. Everything the platform asks of a carrier is in `Carrier`:

    search(conn, query, now) -> [AvailableNumber]   purchasable numbers matching the filters, at most
                                                    `query.limit`, exact matches first; with
                                                    `query.best_effort` a too-narrow filter is widened
                                                    and each widened result says how (`widened`)
    check(conn, e164, now) -> AvailableNumber|None  one number's current price, or None when the carrier
                                                    will not sell it (sold, aging after release, unknown)
    order(number, org_id=, number_id=)              buy it at the carrier (the purchase hook)
    release(e164)                                   give it back to the carrier (the release hook, and
                                                    the compensation for an order whose purchase failed)

`search` and `check` receive the platform's connection because the sandbox's inventory lives in the same
database; an adapter for a real carrier's number API ignores it and calls the API. The platform still
removes from any carrier's results the numbers it knows are taken (`availability.blocked`: owned here, or
held by another organization), so an adapter only has to report what the carrier itself would sell.

**Ownership and money stay in one transaction even though the order is external.** A purchase runs in one
database transaction: insert the `phone_numbers` row (the partial unique index is the arbiter between two
buyers), post the setup and first-month debits (402 rolls everything back), consume the hold, and only
then call `order()`, as the last step *before commit*. If `order()` raises, the transaction rolls back and
nothing is owned or charged. If the order succeeded but the commit then fails, the caller compensates by
calling `release()` on the number it just ordered (`service.purchase` does this), so the carrier never
keeps billing for a number nobody owns here. Releasing works the same way: mark `released_at`, call
`release()` before commit; a carrier failure leaves the number owned.

`SandboxCarrier` implements all of this over `sandbox_inventory` (see `inventory.py`): what it sells is
every inventory row not owned here and not in quarantine (a released number returns to sale only
`quarantine` after `released_at`), and not held by another organization. Its `order` and `release` do
nothing: ownership in `phone_numbers` is what the sandbox reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import sandbox_inventory
from control_api.numbers import sandbox_search

NumberType = Literal["local", "toll_free"]
FEATURES: tuple[str, ...] = ("voice", "sms", "mms", "fax")
DEFAULT_QUARANTINE = timedelta(days=30)


@dataclass(frozen=True)
class SearchQuery:
    """A search as the API received it, with vanity letters already turned into keypad digits."""

    viewer_org_id: str  # the organization searching: its own holds stay visible to it
    area_code: str | None = None
    locality: str | None = None
    administrative_area: str | None = None
    number_type: NumberType | None = None
    features: tuple[str, ...] = ()
    contains: str | None = None
    ends_with: str | None = None
    best_effort: bool = True
    limit: int = 20


@dataclass(frozen=True)
class AvailableNumber:
    e164: str
    locality: str | None
    region: str | None
    number_type: NumberType
    features: tuple[str, ...]
    monthly_cost_credits: int
    setup_cost_credits: int
    provider: str
    # None for an exact match; otherwise how a best-effort search widened to reach it.
    widened: str | None = None


class Carrier(Protocol):
    provider: str

    async def search(self, conn: AsyncConnection, query: SearchQuery, now: datetime) -> list[AvailableNumber]: ...

    async def check(self, conn: AsyncConnection, e164: str, now: datetime) -> AvailableNumber | None: ...

    async def order(self, number: AvailableNumber, *, org_id: str, number_id: str) -> None: ...

    async def release(self, e164: str) -> None: ...


class SandboxCarrier:
    """A carrier whose inventory is the deterministic pool in `sandbox_inventory`."""

    provider = "sandbox"

    def __init__(self, quarantine: timedelta = DEFAULT_QUARANTINE) -> None:
        self.quarantine = quarantine

    async def search(self, conn: AsyncConnection, query: SearchQuery, now: datetime) -> list[AvailableNumber]:
        found: list[AvailableNumber] = []
        for stage in sandbox_search.plan(query):
            wanted = query.limit - len(found)
            if wanted <= 0:
                break
            seen = [n.e164 for n in found]
            statement = sandbox_search.statement(stage, query, seen, wanted, self._sellable(query, now))
            found += [self._number(row, stage.reason) for row in (await conn.execute(statement)).all()]
        return found

    async def check(self, conn: AsyncConnection, e164: str, now: datetime) -> AvailableNumber | None:
        row = (
            await conn.execute(
                sa.select(sandbox_inventory).where(
                    sandbox_inventory.c.e164 == e164,
                    ~sandbox_search.taken_or_quarantined(sandbox_inventory.c.e164, now - self.quarantine),
                )
            )
        ).first()
        return None if row is None else self._number(row, None)

    async def order(self, number: AvailableNumber, *, org_id: str, number_id: str) -> None:
        return None

    async def release(self, e164: str) -> None:
        return None

    def _sellable(self, query: SearchQuery, now: datetime) -> sa.ColumnElement[bool]:
        return sandbox_search.sellable(query.viewer_org_id, now, now - self.quarantine)

    def _number(self, row: sa.Row[Any], widened: str | None) -> AvailableNumber:
        number_type: NumberType = "toll_free" if row.number_type == "toll_free" else "local"
        return AvailableNumber(
            e164=str(row.e164),
            locality=str(row.locality) or None,
            region=str(row.region) or None,
            number_type=number_type,
            features=tuple(str(row.features).split()),
            monthly_cost_credits=int(row.monthly_cost_credits),
            setup_cost_credits=int(row.setup_cost_credits),
            provider=self.provider,
            widened=widened,
        )
