"""Monthly statements ("invoices"), computed from the ledger so they always reconcile with it.

An organization has one statement per calendar month (UTC) with ledger activity, id `inv_<YYYY-MM>`;
the current month's is `open`, earlier ones `finalized` (the ledger is append-only, so a past month
never changes). For a month:

    openingBalanceCredits  the balance at the start of the month (the sum of every earlier entry)
    chargesCredits         the sum of the month's debits, as a positive number
    creditsAddedCredits    the sum of the month's credits (top-ups, reloads, manual credits)
    closingBalanceCredits  opening + creditsAdded - charges: the balance after the month's last entry

Line items break the month down: debits that carry a usage item group by channel and unit (quantity =
billed units; a number's setup fee is its own line), every other entry groups by ledger kind
(subscription, topup, auto_reload, credit, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.billing.pdf import Document
from control_api.billing.plans import month_bounds, month_of, month_start, next_month
from control_api.billing.reports import number
from control_api.db.tables import ledger_entries, usage_items
from control_api.errors import NotFound
from control_api.http.routing import API_PREFIX

_CHANNELS = {
    ("voice", "minute"): "Voice minutes",
    ("chat", "message"): "Chat messages",
    ("transfer_minute", "minute"): "Transferred call minutes",
    ("number", "month"): "Phone number rental (months)",
    ("number", "setup"): "Phone number setup",
}
_KINDS = {
    "subscription": "Plan subscription",
    "topup": "Card top-up",
    "auto_reload": "Auto-reload",
    "credit": "Credit added",
    "usage": "Usage",
}
_ID = re.compile(r"^inv_(\d{4}-(0[1-9]|1[0-2]))$")


@dataclass(frozen=True)
class LineItem:
    description: str
    type: str  # charge | credit
    channel: str | None
    kind: str | None
    quantity: int | float
    credits: int  # positive: what was charged or added

    def to_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"description": self.description, "type": self.type}
        if self.channel is not None:
            item["channel"] = self.channel
        else:
            item["kind"] = self.kind
        item.update(quantity=self.quantity, credits=self.credits)
        return item


@dataclass(frozen=True)
class Statement:
    period: str
    status: str
    opening_credits: int
    charges_credits: int
    credits_added_credits: int
    entries: int
    line_items: list[LineItem] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"inv_{self.period}"

    @property
    def closing_credits(self) -> int:
        return self.opening_credits + self.credits_added_credits - self.charges_credits

    @property
    def url(self) -> str:
        return f"{API_PREFIX}/billing/invoices/{self.id}/pdf"

    def to_json(self) -> dict[str, Any]:
        start = month_start(self.period)
        return {
            "id": self.id,
            "period": self.period,
            "periodStart": start.date().isoformat(),
            "periodEnd": month_start(next_month(self.period)).date().isoformat(),
            "status": self.status,
            "currency": "USD",
            "openingBalanceCredits": self.opening_credits,
            "chargesCredits": self.charges_credits,
            "creditsAddedCredits": self.credits_added_credits,
            "closingBalanceCredits": self.closing_credits,
            "lineItems": [item.to_json() for item in self.line_items],
            "url": self.url,
        }


def parse_invoice_id(invoice_id: str) -> str:
    match = _ID.match(invoice_id)
    if match is None:
        raise NotFound(f"no invoice {invoice_id}; invoice ids look like inv_2025-01")
    return match.group(1)


def _month(conn: AsyncConnection, column: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
    if conn.dialect.name == "postgresql":
        return sa.func.to_char(column, "YYYY-MM")
    return sa.func.strftime("%Y-%m", column)


async def _totals(conn: AsyncConnection, org_id: str) -> list[Any]:
    amount = ledger_entries.c.amount_credits
    month = _month(conn, ledger_entries.c.created_at).label("month")
    query = (
        sa.select(
            month,
            sa.func.coalesce(sa.func.sum(sa.case((amount < 0, -amount), else_=0)), 0).label("charges"),
            sa.func.coalesce(sa.func.sum(sa.case((amount > 0, amount), else_=0)), 0).label("added"),
            sa.func.count().label("entries"),
        )
        .where(ledger_entries.c.org_id == org_id)
        .group_by(month)
        .order_by(month)
    )
    return list((await conn.execute(query)).all())


async def _line_items(conn: AsyncConnection, org_id: str, first: str, last: str) -> dict[str, list[LineItem]]:
    """Line items of every month from `first` to `last` (inclusive), by month."""
    start, _ = month_bounds(first)
    _, end = month_bounds(last)
    amount = ledger_entries.c.amount_credits
    month = _month(conn, ledger_entries.c.created_at).label("month")
    joined = ledger_entries.outerjoin(
        usage_items,
        sa.and_(usage_items.c.ledger_entry_id == ledger_entries.c.id, usage_items.c.org_id == org_id),
    )
    in_range = (ledger_entries.c.org_id == org_id, ledger_entries.c.created_at >= start,
                ledger_entries.c.created_at < end)
    usage = (
        sa.select(month, usage_items.c.channel, usage_items.c.unit,
                  sa.func.sum(usage_items.c.quantity).label("quantity"), sa.func.sum(-amount).label("credits"))
        .select_from(joined)
        .where(*in_range, usage_items.c.id.is_not(None))
        .group_by(month, usage_items.c.channel, usage_items.c.unit)
        .order_by(month, usage_items.c.channel, usage_items.c.unit)
    )
    direction = sa.case((amount > 0, "credit"), else_="charge").label("direction")
    other = (
        sa.select(month, ledger_entries.c.kind, direction, sa.func.count().label("quantity"),
                  sa.func.sum(sa.func.abs(amount)).label("credits"))
        .select_from(joined)
        .where(*in_range, usage_items.c.id.is_(None), amount != 0)
        .group_by(month, ledger_entries.c.kind, direction)
        .order_by(month, direction, ledger_entries.c.kind)
    )
    by_month: dict[str, list[LineItem]] = {}
    for row in (await conn.execute(usage)).all():
        by_month.setdefault(row.month, []).append(LineItem(
            _CHANNELS.get((row.channel, row.unit), f"{row.channel} ({row.unit})"), "charge", row.channel, None,
            number(row.quantity),
            int(row.credits or 0),
        ))
    for row in (await conn.execute(other)).all():
        label = _KINDS.get(row.kind, row.kind.replace("_", " ").capitalize())
        by_month.setdefault(row.month, []).append(LineItem(
            label, row.direction, None, row.kind, int(row.quantity), int(row.credits or 0)
        ))
    return by_month


async def statements(
    conn: AsyncConnection, org_id: str, now: datetime, *, before: str | None = None, limit: int | None = None
) -> tuple[list[Statement], bool]:
    """Statements newest first (periods earlier than `before`, at most `limit`), and whether more remain."""
    current = month_of(now)
    opening = 0
    computed: list[Statement] = []
    for row in await _totals(conn, org_id):
        charges, added = int(row.charges), int(row.added)
        computed.append(Statement(row.month, "finalized" if row.month < current else "open", opening, charges,
                                  added, int(row.entries)))
        opening += added - charges
    computed.reverse()
    if before is not None:
        computed = [s for s in computed if s.period < before]
    more = limit is not None and len(computed) > limit
    chosen = computed[:limit] if limit is not None else computed
    if not chosen:
        return [], False
    items = await _line_items(conn, org_id, chosen[-1].period, chosen[0].period)
    filled = [Statement(s.period, s.status, s.opening_credits, s.charges_credits, s.credits_added_credits,
                        s.entries, items.get(s.period, [])) for s in chosen]
    return filled, more


async def statement(conn: AsyncConnection, org_id: str, invoice_id: str, now: datetime) -> Statement:
    period = parse_invoice_id(invoice_id)
    found, _ = await statements(conn, org_id, now, before=next_month(period), limit=1)
    if not found or found[0].period != period:
        raise NotFound(f"no invoice {invoice_id}: the organization had no billing activity in {period}")
    return found[0]


def _money(credits: int) -> str:
    sign = "-" if credits < 0 else ""
    return f"{sign}${abs(credits) / 100:,.2f}"


def render_pdf(statement: Statement, org_name: str, now: datetime) -> bytes:
    """The statement as a PDF: header, summary, then one row per line item (Courier keeps columns aligned)."""
    doc = Document(title=f"Flowyte statement {statement.period}")
    doc.line("Flowyte", font="F2", size=20)
    doc.line(f"Statement {statement.id}", font="F2", size=13)
    doc.line(f"Organization: {org_name}")
    doc.line(f"Period: {statement.period} (UTC)    Status: {statement.status}")
    doc.line(f"Generated: {now:%Y-%m-%d %H:%M} UTC    1 credit = $0.01")
    doc.space(10)
    summary = (
        ("Opening balance", statement.opening_credits),
        ("Credits added", statement.credits_added_credits),
        ("Charges", -statement.charges_credits),
        ("Closing balance", statement.closing_credits),
    )
    for label, credits in summary:
        doc.line(f"{label:<36}{credits:>14,} cr {_money(credits):>14}", font="F3", size=10)
    doc.space(10)
    doc.line("Line items", font="F2", size=12)
    doc.line(f"{'Description':<36}{'Quantity':>10}{'Credits':>14} {'USD':>13}", font="F3", size=9)
    for item in statement.line_items:
        signed = item.credits if item.type == "credit" else -item.credits
        quantity = f"{item.quantity:,}"
        doc.line(f"{item.description[:36]:<36}{quantity:>10}{signed:>14,} {_money(signed):>13}", font="F3", size=9)
    if not statement.line_items:
        doc.line("(no activity)", font="F3", size=9)
    return doc.render()
