"""Card payments that fund the wallet: top-ups and auto-reload, through a pluggable PaymentProvider.

The flow, shaped like card payment intents:

1. `open_intent()` asks the provider for an intent (idempotency key `<org id>:<request key>`) and records
   it in `payment_intents` with our id (`pi_…`), the provider's reference and the client secret the
   checkout UI confirms. (org_id, request_key) is unique, so one request key is one intent, ever; the API
   also wraps top-ups in `control_api.idempotency`, so a retried request replays the first response.
2. Credits land only when the payment settles: `settle_intent()` posts ledger key `payment:<intent id>`,
   so a settlement delivered twice credits once. A provider that settles synchronously (the local one,
   or an off-session charge that succeeds at once) is settled inside step 1's transaction.
3. Auto-reload: when a debit takes the balance from at/above the wallet's threshold to below it
   (`Entry.crossed_below`), the debit's transaction computes a `ReloadOrder`; after it commits,
   `run_reload()` opens an intent with request key `auto_reload:<ledger entry id>` for the configured
   amount. One crossing entry is one reload, and the reload is a credit, so it can never trigger another.
   A process that dies between the debit's commit and the reload skips that one reload; the next
   crossing fires again.

`LocalPaymentProvider` settles locally (at once by default; with `settle_immediately=False` intents stay
`processing` until `settle_intent()` is called, as a webhook would). It is the default for tests and
self-hosting, where "payment" means an operator's say-so.

Plugging in a real provider (Stripe), without leaking its types past the adapter::

    class StripePaymentProvider:
        name = "stripe"

        async def create_intent(self, *, amount_credits, currency, idempotency_key, description, purpose):
            intent = await stripe.PaymentIntent.create_async(
                amount=amount_credits,            # 1 credit = 1 cent = Stripe's minor unit for USD
                currency=currency, description=description,
                automatic_payment_methods={"enabled": True},
                # auto-reload: customer=…, payment_method=<saved card>, off_session=True, confirm=True
                idempotency_key=idempotency_key,  # a retried create returns the same PaymentIntent
            )
            status = "succeeded" if intent.status == "succeeded" else "processing"
            return ProviderIntent(intent.id, intent.client_secret, status)

    # The webhook endpoint verifies the signature (stripe.Webhook.construct_event), then:
    #   payment_intent.succeeded      -> settle_intent(engine, clock, await find_intent_id(engine, "stripe", obj.id))
    #   payment_intent.payment_failed -> fail_intent(engine, clock, <same id>)
    # Stripe delivers webhooks at least once; the ledger key makes the credit exactly once.

and pass `Services(payments=StripePaymentProvider(...))`. A real provider's `create_intent` is a network
call made inside the request's transaction: give it a short timeout.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_api.billing import ledger
from control_api.billing.ledger import Entry, usd
from control_api.clock import Clock, iso
from control_api.db.tables import payment_intents
from control_api.ids import new_id

log = logging.getLogger("flowyte.billing")

Purpose = Literal["topup", "auto_reload"]
_DESCRIPTIONS = {"topup": "Card top-up", "auto_reload": "Auto-reload"}


@dataclass(frozen=True)
class ProviderIntent:
    ref: str  # the provider's own id for the payment
    client_secret: str
    status: Literal["processing", "succeeded", "failed"]


class PaymentProvider(Protocol):
    name: str

    async def create_intent(
        self, *, amount_credits: int, currency: str, idempotency_key: str, description: str, purpose: Purpose
    ) -> ProviderIntent:
        """Create (or, for a key seen before, return the same) payment intent."""
        ...


class LocalPaymentProvider:
    """Settles locally: no card, no network. Same key, same intent (as a real provider does)."""

    name = "local"

    def __init__(self, *, settle_immediately: bool = True) -> None:
        self.settle_immediately = settle_immediately
        self._salt = secrets.token_hex(16)

    async def create_intent(
        self, *, amount_credits: int, currency: str, idempotency_key: str, description: str, purpose: Purpose
    ) -> ProviderIntent:
        digest = hashlib.sha256(f"{self._salt}:{idempotency_key}".encode()).hexdigest()
        ref = "pi_local_" + digest[:24]
        status: Literal["processing", "succeeded"] = "succeeded" if self.settle_immediately else "processing"
        return ProviderIntent(ref, f"{ref}_secret_{digest[24:48]}", status)


@dataclass(frozen=True)
class Intent:
    id: str
    org_id: str
    purpose: str
    amount_credits: int
    client_secret: str
    status: str
    created_at: datetime
    settled_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "paymentIntentId": self.id,
            "clientSecret": self.client_secret,
            "status": self.status,
            "amountUsd": usd(self.amount_credits),
            "amountCredits": self.amount_credits,
            "purpose": self.purpose,
            "createdAt": iso(self.created_at),
            "settledAt": iso(self.settled_at),
        }


def _intent(row: Any) -> Intent:
    return Intent(row.id, row.org_id, row.purpose, int(row.amount_credits), row.client_secret, row.status,
                  row.created_at, row.settled_at)


async def get_intent(conn: AsyncConnection, intent_id: str) -> Intent | None:
    row = (await conn.execute(sa.select(payment_intents).where(payment_intents.c.id == intent_id))).first()
    return None if row is None else _intent(row)


async def open_intent(
    conn: AsyncConnection, provider: PaymentProvider, *, org_id: str, request_key: str, amount_credits: int,
    purpose: Purpose, now: datetime,
) -> Intent:
    """The intent for this request key: the existing one, or a new one (settled now if the provider says so)."""
    existing = (
        await conn.execute(
            sa.select(payment_intents).where(
                payment_intents.c.org_id == org_id, payment_intents.c.request_key == request_key
            )
        )
    ).first()
    if existing is not None:
        return _intent(existing)
    created = await provider.create_intent(
        amount_credits=amount_credits, currency="usd", idempotency_key=f"{org_id}:{request_key}",
        description=f"Flowyte {_DESCRIPTIONS[purpose].lower()} of ${usd(amount_credits):.2f}", purpose=purpose,
    )
    intent_id = new_id("pi", 24)
    await conn.execute(
        payment_intents.insert().values(
            id=intent_id, org_id=org_id, provider=provider.name, provider_ref=created.ref, purpose=purpose,
            request_key=request_key, amount_credits=amount_credits, client_secret=created.client_secret,
            status="failed" if created.status == "failed" else "processing", created_at=now, settled_at=None,
        )
    )
    if created.status == "succeeded":
        await settle_in(conn, intent_id, now)
    intent = await get_intent(conn, intent_id)
    assert intent is not None
    return intent


async def settle_in(conn: AsyncConnection, intent_id: str, now: datetime) -> Entry | None:
    """Credit a settled payment inside the caller's transaction, exactly once (ledger key payment:<id>)."""
    row = await get_intent(conn, intent_id)
    if row is None:
        return None
    entry = await ledger.post(
        conn, org_id=row.org_id, key=f"payment:{row.id}", kind=row.purpose, amount_credits=row.amount_credits,
        description=f"{_DESCRIPTIONS.get(row.purpose, row.purpose)} (${usd(row.amount_credits):.2f})",
        now=now, reference_id=row.id,
    )
    await conn.execute(
        payment_intents.update()
        .where(payment_intents.c.id == row.id, payment_intents.c.status != "succeeded")
        .values(status="succeeded", settled_at=now)
    )
    return entry


async def settle_intent(engine: AsyncEngine, clock: Clock, intent_id: str) -> Entry | None:
    """What a provider's "payment succeeded" event calls. Delivered twice, it credits once (the second call
    returns the original entry marked `duplicate`). None for an unknown intent."""
    async with engine.begin() as conn:
        return await settle_in(conn, intent_id, clock.now())


async def fail_intent(engine: AsyncEngine, clock: Clock, intent_id: str) -> None:
    """A declined or abandoned payment: mark it failed (a settled one stays settled)."""
    async with engine.begin() as conn:
        await conn.execute(
            payment_intents.update()
            .where(payment_intents.c.id == intent_id, payment_intents.c.status == "processing")
            .values(status="failed", settled_at=clock.now())
        )


async def find_intent_id(engine: AsyncEngine, provider_name: str, provider_ref: str) -> str | None:
    """Our intent id for the provider's reference (what a webhook carries)."""
    async with engine.connect() as conn:
        value = await conn.scalar(
            sa.select(payment_intents.c.id).where(
                payment_intents.c.provider == provider_name, payment_intents.c.provider_ref == provider_ref
            )
        )
    return None if value is None else str(value)


# --- Auto-reload ---


@dataclass(frozen=True)
class ReloadOrder:
    org_id: str
    entry_id: str  # the debit that crossed the threshold
    amount_credits: int


async def reload_order(conn: AsyncConnection, entry: Entry | None, now: datetime) -> ReloadOrder | None:
    """Inside the debit's transaction (wallet locked): a reload is due when this debit crossed the threshold."""
    if entry is None or entry.duplicate:
        return None
    return reload_due(await ledger.read_wallet(conn, entry.org_id, now), entry)


def reload_due(wallet: ledger.Wallet, entry: Entry) -> ReloadOrder | None:
    """The same decision from the wallet's settings as read under the lock."""
    if entry.duplicate or not wallet.auto_reload_enabled or wallet.auto_reload_amount_credits <= 0:
        return None
    if not entry.crossed_below(wallet.auto_reload_threshold_credits):
        return None
    return ReloadOrder(entry.org_id, entry.id, wallet.auto_reload_amount_credits)


async def run_reload(
    engine: AsyncEngine, clock: Clock, provider: PaymentProvider, order: ReloadOrder | None
) -> Intent | None:
    """After the debit committed: open (and, if the provider settles at once, credit) the reload intent.
    A failure is logged, never raised: the debit that triggered it already happened."""
    if order is None:
        return None
    try:
        async with engine.begin() as conn:
            return await open_intent(
                conn, provider, org_id=order.org_id, request_key=f"auto_reload:{order.entry_id}",
                amount_credits=order.amount_credits, purpose="auto_reload", now=clock.now(),
            )
    except Exception:
        log.exception("auto-reload for %s after entry %s failed", order.org_id, order.entry_id)
        return None
