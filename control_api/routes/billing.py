"""Billing: the prepaid wallet (balance, manual credit, auto-reload, card top-up), plans and the
subscription, usage records and items, and monthly invoices (JSON and PDF).

Money only moves through `control_api.billing.ledger`; these handlers validate, call the billing modules
and render. Writes that move money accept an Idempotency-Key (see `control_api.idempotency`).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field, model_validator

from control_api import idempotency
from control_api.billing import invoices, ledger, payments, reports
from control_api.billing.ledger import Entry, Wallet, usd
from control_api.billing.plans import PLANS, get_plan, month_of
from control_api.billing.subscriptions import change_plan, included_minutes_used, read_subscription
from control_api.clock import iso
from control_api.db.tables import organizations
from control_api.errors import field_error
from control_api.http.envelope import PageParams, decode_cursor, encode_cursor, ok, page
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.schemas.common import ApiModel

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Billing"])

SELF_HOSTED = (
    " The hosted product completes this through the dashboard session (Stripe checkout); on a self-hosted "
    "server a key with `billing:write` may call it."
)
IDEMPOTENT = " Send an Idempotency-Key so a retried request never acts twice."

Money = Decimal


class CreditRequest(ApiModel):
    amount_usd: Money | None = Field(None, gt=0, le=100_000, decimal_places=2, description="Dollars to add.")
    amount_credits: int | None = Field(None, gt=0, le=10_000_000, description="Or credits (cents) to add.")
    note: str | None = Field(None, max_length=300, description="Why, for the ledger and the statement.")

    @model_validator(mode="after")
    def _one_amount(self) -> CreditRequest:
        if (self.amount_usd is None) == (self.amount_credits is None):
            raise ValueError("send exactly one of amountUsd or amountCredits")
        return self

    def credits(self) -> int:
        if self.amount_credits is not None:
            return self.amount_credits
        assert self.amount_usd is not None
        return cents(self.amount_usd)


class AutoReloadRequest(ApiModel):
    enabled: bool
    threshold_usd: Money = Field(ge=0, le=100_000, decimal_places=2, description="Reload when below this.")
    amount_usd: Money = Field(ge=0, le=10_000, decimal_places=2, description="How much each reload adds.")


class TopupRequest(ApiModel):
    amount_usd: Money = Field(ge=5, le=10_000, decimal_places=2, description="Dollars to charge ($5-$10,000).")


class SubscriptionRequest(ApiModel):
    plan_id: str = Field(min_length=1, max_length=40, description="A plan id from GET /billing/plans.")


def cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def wallet_resource(wallet: Wallet) -> dict[str, Any]:
    return {
        "balanceCredits": wallet.balance_credits,
        "balanceUsd": usd(wallet.balance_credits),
        "currency": "USD",
        "autoReload": {
            "enabled": wallet.auto_reload_enabled,
            "thresholdUsd": usd(wallet.auto_reload_threshold_credits),
            "amountUsd": usd(wallet.auto_reload_amount_credits),
        },
        "updatedAt": iso(wallet.updated_at),
    }


def entry_resource(entry: Entry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "key": entry.key,
        "kind": entry.kind,
        "amountCredits": entry.amount_credits,
        "amountUsd": usd(entry.amount_credits),
        "balanceAfterCredits": entry.balance_after_credits,
        "description": entry.description,
        "createdAt": iso(entry.created_at),
    }


def _request_key(request: Request, idempotency_key: str | None) -> str:
    """The Idempotency-Key, or this request's id when there is none (every request then acts once)."""
    if idempotency_key is not None:
        return idempotency.validate_key(idempotency_key)
    return str(request.state.request_id)


def _replayable(outcome: idempotency.Outcome) -> JSONResponse:
    headers = {idempotency.REPLAYED_HEADER: "true"} if outcome.replayed else {}
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


# --- Wallet ---


@router.get("/billing/wallet", openapi_extra=scope("billing:read"), summary="Get wallet balance")
async def get_wallet(request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        wallet = await ledger.read_wallet(conn, principal.org_id, services.clock.now())
    return ok(wallet_resource(wallet))


@router.post(
    "/billing/wallet/credit",
    openapi_extra=scope("billing:write"),
    summary="Add credit to the wallet",
    description="Adds funds directly to the wallet without a card payment (manual adjustment or onboarding) "
    "and returns the updated wallet with the ledger entry." + IDEMPOTENT,
)
async def credit_wallet(
    body: CreditRequest,
    request: Request,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    services, principal = services_of(request), principal_of(request)
    key = f"credit:{_request_key(request, idempotency_key)}"

    async def action(conn: Any) -> tuple[int, dict[str, Any]]:
        now = services.clock.now()
        entry = await ledger.post(
            conn, org_id=principal.org_id, key=key, kind="credit", amount_credits=body.credits(),
            description=body.note or "Manual credit", now=now, reference_id=principal.key_id,
        )
        wallet = await ledger.read_wallet(conn, principal.org_id, now)
        return 200, ok({"wallet": wallet_resource(wallet), "entry": entry_resource(entry)})

    fingerprint = idempotency.fingerprint("POST", request.url.path, await request.body())
    return _replayable(await idempotency.run(services, principal.org_id, idempotency_key, fingerprint, action))


@router.put(
    "/billing/wallet/auto-reload",
    openapi_extra=scope("billing:write"),
    summary="Configure wallet auto-reload",
    description="When a debit takes the balance below `thresholdUsd`, the platform charges `amountUsd` "
    "once; it fires again only after the balance has recovered and crosses the threshold again. "
    "`amountUsd` must be at least 5 when enabled." + SELF_HOSTED,
)
async def configure_auto_reload(body: AutoReloadRequest, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    if body.enabled and body.amount_usd < 5:
        raise field_error("amountUsd", "must be at least 5 when auto-reload is enabled")
    async with services.engine.begin() as conn:
        wallet = await ledger.set_auto_reload(
            conn, principal.org_id, enabled=body.enabled, threshold_credits=cents(body.threshold_usd),
            amount_credits=cents(body.amount_usd), now=services.clock.now(),
        )
    return ok(wallet_resource(wallet))


@router.post(
    "/billing/wallet/topup",
    status_code=201,
    openapi_extra=scope("billing:write"),
    summary="Top up the wallet by card",
    description="Starts a card payment and returns the payment intent's `clientSecret` for the checkout UI "
    "to confirm; the credits land when the payment settles (at once with the built-in local provider)."
    + IDEMPOTENT + SELF_HOSTED,
)
async def topup(
    body: TopupRequest,
    request: Request,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    services, principal = services_of(request), principal_of(request)
    request_key = f"topup:{_request_key(request, idempotency_key)}"

    async def action(conn: Any) -> tuple[int, dict[str, Any]]:
        intent = await payments.open_intent(
            conn, services.payments, org_id=principal.org_id, request_key=request_key,
            amount_credits=cents(body.amount_usd), purpose="topup", now=services.clock.now(),
        )
        return 201, ok(intent.to_json())

    fingerprint = idempotency.fingerprint("POST", request.url.path, await request.body())
    return _replayable(await idempotency.run(services, principal.org_id, idempotency_key, fingerprint, action))


# --- Plans and subscription ---


@router.get("/billing/plans", openapi_extra=scope("billing:read"), summary="List billing plans")
async def list_plans() -> dict[str, Any]:
    return ok([plan.to_json() for plan in PLANS])


async def _subscription_json(conn: Any, org_id: str, now: Any) -> dict[str, Any]:
    sub = await read_subscription(conn, org_id, now)
    used = await included_minutes_used(conn, org_id, month_of(now), sub.plan.included_minutes)
    return sub.to_json(used)


@router.get("/billing/subscription", openapi_extra=scope("billing:read"), summary="Get current subscription")
async def get_subscription(request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        return ok(await _subscription_json(conn, principal.org_id, services.clock.now()))


@router.post(
    "/billing/subscription",
    openapi_extra=scope("billing:write"),
    summary="Change subscription plan",
    description="Switches plan at once and charges the new plan's monthly price for the current month from "
    "the wallet (each plan at most once a month); 402 and no change when the wallet cannot pay. Included "
    "minutes count per calendar month (UTC)." + IDEMPOTENT + SELF_HOSTED,
)
async def change_subscription(
    body: SubscriptionRequest,
    request: Request,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    services, principal = services_of(request), principal_of(request)
    plan = get_plan(body.plan_id)
    orders: list[payments.ReloadOrder | None] = []

    async def action(conn: Any) -> tuple[int, dict[str, Any]]:
        now = services.clock.now()
        _, order = await change_plan(conn, principal.org_id, plan, now)
        orders.append(order)
        return 200, ok(await _subscription_json(conn, principal.org_id, now))

    fingerprint = idempotency.fingerprint("POST", request.url.path, await request.body())
    outcome = await idempotency.run(services, principal.org_id, idempotency_key, fingerprint, action)
    for order in orders:
        await payments.run_reload(services.engine, services.clock, services.payments, order)
    return _replayable(outcome)


# --- Usage ---


@router.get("/billing/usage", openapi_extra=scope("billing:read"), summary="List usage records")
async def list_usage(
    request: Request,
    paging: PageParams = Depends(),
    from_: date | None = Query(None, alias="from", description="First day (UTC, inclusive), YYYY-MM-DD."),
    to: date | None = Query(None, description="Last day (UTC, inclusive), YYYY-MM-DD."),
    agent_id: str | None = Query(None, alias="agentId", max_length=40, description="Only this agent's usage."),
) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    where = reports.UsageFilter(principal.org_id, from_, to, agent_id)
    async with services.engine.connect() as conn:
        records, cursor = await reports.daily_records(conn, where, limit=paging.limit, cursor=paging.cursor)
    return page(records, cursor, paging.limit)


@router.get("/billing/usage/items", openapi_extra=scope("billing:read"), summary="List itemized usage charges")
async def list_usage_items(
    request: Request,
    paging: PageParams = Depends(),
    from_: date | None = Query(None, alias="from", description="First day (UTC, inclusive), YYYY-MM-DD."),
    to: date | None = Query(None, description="Last day (UTC, inclusive), YYYY-MM-DD."),
    agent_id: str | None = Query(None, alias="agentId", max_length=40),
    channel: Literal["voice", "chat", "transfer_minute", "number"] | None = Query(None),
) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    where = reports.UsageFilter(principal.org_id, from_, to, agent_id, channel)
    async with services.engine.connect() as conn:
        found, cursor = await reports.items(conn, where, limit=paging.limit, cursor=paging.cursor)
    return page(found, cursor, paging.limit)


# --- Invoices ---


@router.get("/billing/invoices", openapi_extra=scope("billing:read"), summary="List invoices")
async def list_invoices(request: Request, paging: PageParams = Depends()) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    before = str(decode_cursor(paging.cursor, 1)[0]) if paging.cursor is not None else None
    async with services.engine.connect() as conn:
        found, more = await invoices.statements(
            conn, principal.org_id, services.clock.now(), before=before, limit=paging.limit
        )
    cursor = encode_cursor([found[-1].period]) if more else None
    return page([s.to_json() for s in found], cursor, paging.limit)


@router.get("/billing/invoices/{invoice_id}", openapi_extra=scope("billing:read"), summary="Get an invoice")
async def get_invoice(invoice_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        found = await invoices.statement(conn, principal.org_id, invoice_id, services.clock.now())
    return ok(found.to_json())


@router.get(
    "/billing/invoices/{invoice_id}/pdf",
    openapi_extra=scope("billing:read"),
    summary="Download an invoice PDF",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def get_invoice_pdf(invoice_id: str, request: Request) -> Response:
    services, principal = services_of(request), principal_of(request)
    now = services.clock.now()
    async with services.engine.connect() as conn:
        found = await invoices.statement(conn, principal.org_id, invoice_id, now)
        name = await conn.scalar(sa.select(organizations.c.name).where(organizations.c.id == principal.org_id))
    return Response(
        invoices.render_pdf(found, str(name or principal.org_id), now),
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="flowyte-{found.id}.pdf"'},
    )
