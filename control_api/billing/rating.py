"""Rating: what one usage event costs under a plan. Pure functions, no I/O, no clock.

Rules:
- **Voice** is billed per *started* minute of connected time: the runtime reports connected seconds and
  the billed minutes are ceil(seconds / 60), so 1-60 s is one minute, 61 s two, and 0 s (a call that
  never connected) nothing. Minutes come out of the month's remaining included minutes first (they were
  prepaid by the plan's monthly price, so they debit 0 credits); the rest are billed at the plan's
  overage rate. An event that straddles the boundary is split: part included, part overage.
- **Toll-free inbound** voice adds a flat surcharge per billed minute on every plan, included minutes
  too (the number owner pays the carrier's called-party cost).
- **Transfers** are billed per started minute of the forwarded leg at the plan's transfer rate; they
  never use included minutes (they are not AI minutes).
- **Chat** is billed per message at the plan's chat rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from control_api.billing.plans import TOLL_FREE_SURCHARGE_CREDITS_PER_MINUTE, Plan

METERED_CHANNELS = ("voice", "chat", "transfer_minute")


@dataclass(frozen=True)
class Rating:
    channel: str
    quantity: int  # billed units: minutes for voice and transfers, messages for chat
    unit: str  # "minute" | "message"
    credits: int  # what the event debits, >= 0
    rate_credits: int  # per unit beyond the included minutes
    included_minutes: int = 0
    overage_minutes: int = 0
    toll_free_credits: int = 0

    def detail(self, plan: Plan, raw_quantity: Any) -> dict[str, Any]:
        detail: dict[str, Any] = {"planId": plan.id, "rateCredits": self.rate_credits}
        if self.unit == "minute":
            detail["seconds"] = float(_decimal(raw_quantity))
        if self.channel == "voice":
            detail["includedMinutes"] = self.included_minutes
            detail["overageMinutes"] = self.overage_minutes
            detail["tollFreeCredits"] = self.toll_free_credits
        return detail


def _decimal(value: Any) -> Decimal:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"quantity {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"quantity must be a finite number >= 0, not {value!r}")
    return number


def started_minutes(seconds: Any) -> int:
    """Per-started-minute rounding: ceil(seconds / 60)."""
    return math.ceil(_decimal(seconds) / 60)


def rate(plan: Plan, channel: str, quantity: Any, *, included_remaining: int, toll_free: bool = False) -> Rating:
    """Price one event. `quantity` is connected seconds (voice, transfer_minute) or messages (chat)."""
    if channel == "voice":
        minutes = started_minutes(quantity)
        included = min(minutes, max(included_remaining, 0))
        overage = minutes - included
        surcharge = minutes * TOLL_FREE_SURCHARGE_CREDITS_PER_MINUTE if toll_free else 0
        rate_credits = plan.overage_per_minute_credits
        return Rating(
            "voice", minutes, "minute", overage * rate_credits + surcharge, rate_credits,
            included_minutes=included, overage_minutes=overage, toll_free_credits=surcharge,
        )
    if channel == "transfer_minute":
        minutes = started_minutes(quantity)
        return Rating(channel, minutes, "minute", minutes * plan.transfer_minute_credits,
                      plan.transfer_minute_credits)
    if channel == "chat":
        messages = _decimal(quantity)
        if messages != messages.to_integral_value():
            raise ValueError(f"chat quantity counts messages and must be a whole number, not {quantity!r}")
        count = int(messages)
        return Rating(channel, count, "message", count * plan.chat_message_credits, plan.chat_message_credits)
    raise ValueError(f"channel must be one of {', '.join(METERED_CHANNELS)}, not {channel!r}")


def unit_price(plan: Plan, channel: str, *, toll_free: bool = False) -> int:
    """What one more unit (a minute or a message) costs beyond any included minutes."""
    if channel == "voice":
        return plan.overage_per_minute_credits + (TOLL_FREE_SURCHARGE_CREDITS_PER_MINUTE if toll_free else 0)
    if channel == "transfer_minute":
        return plan.transfer_minute_credits
    if channel == "chat":
        return plan.chat_message_credits
    raise ValueError(f"channel must be one of {', '.join(METERED_CHANNELS)}, not {channel!r}")
