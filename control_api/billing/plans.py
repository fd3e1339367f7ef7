"""The plans, declared once as data, and the calendar months that billing counts in.

Every rate is in credits (1 credit = 1 cent). A plan bundles `included_minutes` of voice per calendar
month (UTC), prepaid by its monthly price, so its effective in-plan rate is price / included minutes;
voice beyond them is billed at the overage rate. Chat messages and forwarded (transfer) minutes are
always billed per unit at the plan's rate and never draw on included minutes. The toll-free surcharge
is the same on every plan.

`payg` (pay as you go) is the implicit default of an organization that never subscribed, and where a
lapsed (past-due) subscription falls back to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from control_api.billing.ledger import usd
from control_api.errors import field_error

TOLL_FREE_SURCHARGE_CREDITS_PER_MINUTE = 2


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    monthly_price_credits: int
    included_minutes: int
    overage_per_minute_credits: int
    chat_message_credits: int
    transfer_minute_credits: int
    description: str

    @property
    def per_minute_credits(self) -> int:
        """The effective in-plan voice rate: the monthly price spread over the included minutes."""
        if self.included_minutes == 0:
            return self.overage_per_minute_credits
        return round(self.monthly_price_credits / self.included_minutes)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "monthlyPrice": usd(self.monthly_price_credits),
            "monthlyPriceCredits": self.monthly_price_credits,
            "currency": "USD",
            "includedMinutes": self.included_minutes,
            "perMinuteCredits": self.per_minute_credits,
            "overagePerMinuteCredits": self.overage_per_minute_credits,
            "chatMessageCredits": self.chat_message_credits,
            "transferMinuteCredits": self.transfer_minute_credits,
            "tollFreeSurchargePerMinuteCredits": TOLL_FREE_SURCHARGE_CREDITS_PER_MINUTE,
            "isDefault": self.id == PAYG.id,
        }


PAYG = Plan("payg", "Pay as you go", 0, 0, 12, 2, 6, "No monthly fee: every voice minute at the standard rate.")

PLANS: tuple[Plan, ...] = (
    PAYG,
    Plan("starter", "Starter", 5_000, 500, 11, 2, 5, "500 voice minutes a month at 10 credits a minute."),
    Plan("growth", "Growth", 20_000, 2_500, 9, 1, 4, "2,500 voice minutes a month at 8 credits a minute."),
    Plan("scale", "Scale", 75_000, 12_500, 7, 1, 3, "12,500 voice minutes a month at 6 credits a minute."),
)

_BY_ID = {p.id: p for p in PLANS}


def find_plan(plan_id: str) -> Plan | None:
    return _BY_ID.get(plan_id)


def get_plan(plan_id: str) -> Plan:
    """The plan named in a request; 400 naming `planId` for one that does not exist."""
    plan = _BY_ID.get(plan_id)
    if plan is None:
        raise field_error("planId", f"is not a plan; choose one of {', '.join(_BY_ID)}")
    return plan


# --- Calendar months (UTC), written YYYY-MM ---


def month_of(ts: datetime) -> str:
    return ts.strftime("%Y-%m")


def month_start(month: str) -> datetime:
    return datetime.strptime(month + "-01", "%Y-%m-%d")


def next_month(month: str) -> str:
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """[first instant of the month, first instant of the next) as naive UTC."""
    return month_start(month), month_start(next_month(month))
