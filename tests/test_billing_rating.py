"""Rating is pure: the plan table, per-started-minute rounding, included/overage splits, surcharges."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_api.billing.plans import PAYG, PLANS, find_plan, month_bounds, next_month
from control_api.billing.rating import rate, started_minutes, unit_price

STARTER = find_plan("starter")
assert STARTER is not None


def test_plans_are_declared_once_with_consistent_rates() -> None:
    assert [p.id for p in PLANS] == ["payg", "starter", "growth", "scale"]
    for plan in PLANS[1:]:
        # The effective in-plan rate is exactly the price spread over the included minutes.
        assert plan.per_minute_credits * plan.included_minutes == plan.monthly_price_credits
        assert plan.overage_per_minute_credits > plan.per_minute_credits
        assert plan.overage_per_minute_credits <= PAYG.overage_per_minute_credits
    body = STARTER.to_json()
    assert body["monthlyPrice"] == 50.0 and body["monthlyPriceCredits"] == 5000
    assert body["includedMinutes"] == 500 and body["perMinuteCredits"] == 10


@pytest.mark.parametrize(("seconds", "minutes"), [(0, 0), (1, 1), (59.5, 1), (60, 1), (61, 2), (120, 2),
                                                  (121, 3), (3600, 60)])
def test_per_started_minute_rounding(seconds: float, minutes: int) -> None:
    assert started_minutes(seconds) == minutes


def test_voice_included_then_overage_split_and_toll_free() -> None:
    straddle = rate(STARTER, "voice", 180, included_remaining=1)
    assert (straddle.quantity, straddle.included_minutes, straddle.overage_minutes) == (3, 1, 2)
    assert straddle.credits == 2 * STARTER.overage_per_minute_credits
    toll_free = rate(STARTER, "voice", 61, included_remaining=5, toll_free=True)
    assert toll_free.included_minutes == 2 and toll_free.credits == 2 * 2  # the surcharge applies to included minutes
    payg = rate(PAYG, "voice", 61, included_remaining=0, toll_free=True)
    assert payg.credits == 2 * (PAYG.overage_per_minute_credits + 2)


def test_chat_and_transfer() -> None:
    assert rate(PAYG, "chat", 3, included_remaining=100).credits == 3 * PAYG.chat_message_credits
    transfer = rate(STARTER, "transfer_minute", 61, included_remaining=100)
    assert transfer.quantity == 2 and transfer.included_minutes == 0
    assert transfer.credits == 2 * STARTER.transfer_minute_credits
    assert unit_price(PAYG, "voice", toll_free=True) == PAYG.overage_per_minute_credits + 2


@pytest.mark.parametrize(("channel", "quantity"), [("chat", 1.5), ("voice", -1), ("chat", "x"), ("sms", 1),
                                                   ("voice", float("inf"))])
def test_bad_events_are_refused(channel: str, quantity: object) -> None:
    with pytest.raises(ValueError):
        rate(PAYG, channel, quantity, included_remaining=0)


@given(st.integers(0, 100_000), st.integers(0, 20_000), st.booleans(), st.sampled_from(PLANS))
def test_voice_rating_adds_up(seconds: int, remaining: int, toll_free: bool, plan: object) -> None:
    from control_api.billing.plans import Plan

    assert isinstance(plan, Plan)
    rating = rate(plan, "voice", seconds, included_remaining=remaining, toll_free=toll_free)
    assert rating.included_minutes + rating.overage_minutes == rating.quantity == -(-seconds // 60)
    assert rating.included_minutes <= remaining
    assert rating.credits == rating.overage_minutes * plan.overage_per_minute_credits + (
        2 * rating.quantity if toll_free else 0)


def test_calendar_months() -> None:
    assert next_month("2025-12") == "2026-01" and next_month("2025-01") == "2025-02"
    start, end = month_bounds("2024-02")
    assert (start.day, start.month, end.month, end.year) == (1, 2, 3, 2024)
