"""The ledger: the only way money moves. Append-only, one row per movement, each with a unique key.

Rules, and how they are kept:
- **Exactly once.** Every entry carries a key (the request's Idempotency-Key, a usage event id, or a
  natural key like `rental:<number>:<YYYY-MM>`), unique per organization. Posting a key that exists
  returns the existing entry marked `duplicate` and moves nothing.
- **Serialized per organization.** `post()` first locks the org's wallet row (SELECT … FOR UPDATE on
  PostgreSQL; SQLite transactions already hold the database write lock from BEGIN IMMEDIATE), so the
  duplicate check, the funds check and the write see one consistent balance.
- **Balance derived from the ledger.** `wallets.balance_credits` is SUM(amount_credits) maintained in the
  same transaction as each entry (so it is never read stale); `recompute_balance()` derives it from the
  entries, and the tests hold the two equal.
- **All or nothing.** `post()` runs inside the caller's transaction: a purchase's ownership row and its
  debit commit together or not at all.

1 credit = 1 cent. Credits in are positive amounts, debits negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import ledger_entries, wallets
from control_api.errors import PaymentRequired
from control_api.ids import new_id


@dataclass(frozen=True)
class Entry:
    id: str
    org_id: str
    key: str
    kind: str
    amount_credits: int
    balance_after_credits: int
    agent_id: str | None
    reference_id: str | None
    description: str
    created_at: datetime
    duplicate: bool = False

    @property
    def balance_before_credits(self) -> int:
        return self.balance_after_credits - self.amount_credits

    def crossed_below(self, threshold_credits: int) -> bool:
        """True when this entry took the balance from at/above the threshold to below it."""
        return (
            not self.duplicate
            and self.amount_credits < 0
            and self.balance_before_credits >= threshold_credits > self.balance_after_credits
        )


@dataclass(frozen=True)
class Wallet:
    org_id: str
    balance_credits: int
    auto_reload_enabled: bool
    auto_reload_threshold_credits: int
    auto_reload_amount_credits: int
    updated_at: datetime


def usd(credits: int) -> float:
    return round(credits / 100, 2)


def credits_from_usd(amount: float) -> int:
    return round(amount * 100)


def _entry(row: Any, duplicate: bool = False) -> Entry:
    return Entry(
        id=row.id,
        org_id=row.org_id,
        key=row.entry_key,
        kind=row.kind,
        amount_credits=int(row.amount_credits),
        balance_after_credits=int(row.balance_after_credits),
        agent_id=row.agent_id,
        reference_id=row.reference_id,
        description=row.description,
        created_at=row.created_at,
        duplicate=duplicate,
    )


async def ensure_wallet(conn: AsyncConnection, org_id: str, now: datetime) -> None:
    values = dict(
        org_id=org_id,
        balance_credits=0,
        auto_reload_enabled=False,
        auto_reload_threshold_credits=0,
        auto_reload_amount_credits=0,
        updated_at=now,
    )
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    await conn.execute(insert(wallets).values(**values).on_conflict_do_nothing(index_elements=["org_id"]))


async def lock_wallet(conn: AsyncConnection, org_id: str, now: datetime) -> Wallet:
    """The org's wallet, locked for the rest of the transaction (created on first use)."""
    await ensure_wallet(conn, org_id, now)
    query = sa.select(wallets).where(wallets.c.org_id == org_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).one()
    return _wallet(row)


async def read_wallet(conn: AsyncConnection, org_id: str, now: datetime) -> Wallet:
    row = (await conn.execute(sa.select(wallets).where(wallets.c.org_id == org_id))).first()
    if row is None:
        return Wallet(org_id, 0, False, 0, 0, now)
    return _wallet(row)


def _wallet(row: Any) -> Wallet:
    return Wallet(
        org_id=row.org_id,
        balance_credits=int(row.balance_credits),
        auto_reload_enabled=bool(row.auto_reload_enabled),
        auto_reload_threshold_credits=int(row.auto_reload_threshold_credits),
        auto_reload_amount_credits=int(row.auto_reload_amount_credits),
        updated_at=row.updated_at,
    )


async def find(conn: AsyncConnection, org_id: str, key: str) -> Entry | None:
    row = (
        await conn.execute(
            sa.select(ledger_entries).where(ledger_entries.c.org_id == org_id, ledger_entries.c.entry_key == key)
        )
    ).first()
    return None if row is None else _entry(row, duplicate=True)


async def post(
    conn: AsyncConnection,
    *,
    org_id: str,
    key: str,
    kind: str,
    amount_credits: int,
    description: str,
    now: datetime,
    agent_id: str | None = None,
    reference_id: str | None = None,
    require_funds: bool = False,
) -> Entry:
    """Append one movement (exactly once per key). With `require_funds`, a debit the balance cannot
    cover raises 402 and writes nothing."""
    wallet = await lock_wallet(conn, org_id, now)
    existing = await find(conn, org_id, key)
    if existing is not None:
        return existing
    balance_after = wallet.balance_credits + amount_credits
    if require_funds and amount_credits < 0 and balance_after < 0:
        raise PaymentRequired(
            f"the wallet holds {wallet.balance_credits} credits (${usd(wallet.balance_credits):.2f}) but "
            f"this needs {-amount_credits} (${usd(-amount_credits):.2f}); top up with POST "
            "/billing/wallet/topup and retry",
            extra={"balanceCredits": wallet.balance_credits, "requiredCredits": -amount_credits},
        )
    entry_id = new_id("led")
    await conn.execute(
        ledger_entries.insert().values(
            id=entry_id,
            org_id=org_id,
            entry_key=key,
            kind=kind,
            amount_credits=amount_credits,
            balance_after_credits=balance_after,
            agent_id=agent_id,
            reference_id=reference_id,
            description=description[:500],
            created_at=now,
        )
    )
    await conn.execute(
        wallets.update()
        .where(wallets.c.org_id == org_id)
        .values(balance_credits=balance_after, updated_at=now)
    )
    return Entry(
        entry_id, org_id, key, kind, amount_credits, balance_after, agent_id, reference_id, description, now
    )


async def recompute_balance(conn: AsyncConnection, org_id: str) -> int:
    """The balance as the ledger defines it: the sum of every entry."""
    total = await conn.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(ledger_entries.c.amount_credits), 0)).where(
            ledger_entries.c.org_id == org_id
        )
    )
    return int(total or 0)


async def set_auto_reload(
    conn: AsyncConnection, org_id: str, *, enabled: bool, threshold_credits: int, amount_credits: int,
    now: datetime,
) -> Wallet:
    await lock_wallet(conn, org_id, now)
    await conn.execute(
        wallets.update()
        .where(wallets.c.org_id == org_id)
        .values(
            auto_reload_enabled=enabled,
            auto_reload_threshold_credits=threshold_credits,
            auto_reload_amount_credits=amount_credits,
            updated_at=now,
        )
    )
    return await read_wallet(conn, org_id, now)
