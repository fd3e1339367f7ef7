"""Metering against real databases: exactly-once under load, rating by plan, draft mode, auto-reload."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime, timedelta

import sqlalchemy as sa

from control_api.billing import payments
from control_api.billing.plans import PAYG, find_plan
from control_api.billing.rating import rate
from control_api.billing.subscriptions import change_plan
from control_api.db.tables import ledger_entries, payment_intents, usage_items
from tests.test_billing_support import Env, billing_env

NOW = datetime(2031, 3, 15, 12, 0, 0)
STARTER = find_plan("starter")
assert STARTER is not None


async def subscribe(env: Env, org_id: str, plan_id: str) -> None:
    plan = find_plan(plan_id)
    assert plan is not None
    async with env.services.engine.begin() as conn:
        await change_plan(conn, org_id, plan, env.clock.now())


async def test_ten_thousand_concurrent_events_with_duplicates_apply_exactly_once(database_url: str) -> None:
    async with billing_env(database_url, NOW) as env:
        org = (await env.tenants()).org_id
        await env.credit(org, 1_000_000, "seed")
        await subscribe(env, org, "starter")
        rng = random.Random(7)
        unique = []
        for n in range(8_000):
            channel = rng.choice(("voice", "voice", "voice", "chat", "transfer_minute"))
            quantity = rng.randint(1, 5) if channel == "chat" else rng.randint(0, 600)
            unique.append((f"evt-{n}", channel, quantity, channel == "voice" and rng.random() < 0.1))
        events = unique + [rng.choice(unique) for _ in range(2_000)]
        rng.shuffle(events)

        started = time.perf_counter()
        results = await asyncio.gather(*(
            env.meter.record_usage(org, f"agt_{n % 7}", channel, quantity, event_id,
                                   NOW - timedelta(minutes=n % 500), toll_free=toll_free)
            for n, (event_id, channel, quantity, toll_free) in enumerate(events)
        ))
        elapsed = time.perf_counter() - started
        print(f"\n10,000 record_usage calls on {database_url.split(':')[0]}: {elapsed:.1f} s")

        # The expected total does not depend on the order: included minutes are used up first, then overage.
        voice_minutes = sum(rate(PAYG, "voice", q, included_remaining=0).quantity
                            for _, c, q, _ in unique if c == "voice")
        toll_free_minutes = sum(rate(PAYG, "voice", q, included_remaining=0).quantity
                                for _, c, q, t in unique if c == "voice" and t)
        included = min(voice_minutes, STARTER.included_minutes)
        expected_usage = (
            (voice_minutes - included) * STARTER.overage_per_minute_credits + 2 * toll_free_minutes
            + sum(rate(STARTER, c, q, included_remaining=0).credits for _, c, q, _ in unique if c != "voice")
        )
        expected = 1_000_000 - STARTER.monthly_price_credits - expected_usage
        assert await env.balance(org) == expected
        assert await env.recomputed(org) == expected
        assert await env.count(ledger_entries, org, ledger_entries.c.kind == "usage") == 8_000
        assert await env.count(usage_items, org) == 8_000
        assert await env.item_credits(org) == expected_usage
        assert sum(r.duplicate for r in results) == 2_000
        assert sum(r.included_minutes for r in results if not r.duplicate) == included
        by_event: dict[str, set[tuple[int, str | None]]] = {}
        for r in results:
            by_event.setdefault(r.event_id, set()).add((r.credits, r.ledger_entry_id))
        assert all(len(v) == 1 for v in by_event.values())  # a duplicate returns the original result


async def test_rating_by_plan_across_the_included_boundary(database_url: str) -> None:
    async with billing_env(database_url, NOW) as env:
        org = (await env.tenants()).org_id
        await env.credit(org, 10_000, "seed")
        await subscribe(env, org, "starter")
        record = env.meter.record_usage
        first = await record(org, "agt_1", "voice", 499 * 60, "call-1", NOW)
        assert (first.quantity, first.included_minutes, first.credits) == (499, 499, 0)
        straddle = await record(org, "agt_1", "voice", 150, "call-2", NOW)  # 3 minutes: 1 included, 2 overage
        assert (straddle.quantity, straddle.included_minutes, straddle.credits) == (3, 1, 22)
        over = await record(org, "agt_1", "voice", 61, "call-3", NOW)  # 61 s -> 2 started minutes
        assert (over.quantity, over.included_minutes, over.credits) == (2, 0, 22)
        toll_free = await record(org, "agt_1", "voice", 61, "call-4", NOW, toll_free=True)
        assert toll_free.credits == 2 * 11 + 2 * 2
        chat = await record(org, "agt_2", "chat", 3, "chat-1", NOW)
        assert (chat.quantity, chat.unit, chat.credits) == (3, "message", 3 * STARTER.chat_message_credits)
        transfer = await record(org, "agt_1", "transfer_minute", 61, "xfer-1", NOW)
        assert (transfer.quantity, transfer.included_minutes, transfer.credits) == (2, 0, 10)
        draft = await record(org, "agt_1", "voice", 600, "draft-1", NOW, draft=True)
        assert draft.draft and draft.credits == 0 and draft.ledger_entry_id is None
        charged = 22 + 22 + 26 + 6 + 10
        assert await env.balance(org) == 10_000 - 5_000 - charged == await env.recomputed(org)
        assert await env.count(usage_items, org) == 6  # the draft wrote nothing
        assert await env.count(usage_items, org, usage_items.c.event_id == "draft-1") == 0
        again = await record(org, "agt_1", "voice", 150, "call-2", NOW)
        assert again.duplicate and again.credits == 22 and again.included_minutes == 1
        assert await env.balance(org) == 10_000 - 5_000 - charged

        # Next calendar month: a fresh allowance (the plan as it stands rates it).
        later = await record(org, "agt_1", "voice", 120, "call-5", datetime(2031, 4, 2, 9, 0))
        assert (later.included_minutes, later.credits) == (2, 0)

        payg_org = (await env.tenants()).org_id
        payg = await record(payg_org, None, "voice", 61, "call-1", NOW)  # same event id, other org: independent
        assert payg.credits == 2 * PAYG.overage_per_minute_credits and not payg.duplicate
        assert payg.balance_credits == -24  # delivered service may take the balance negative


async def test_can_serve_follows_included_minutes_and_balance(database_url: str) -> None:
    async with billing_env(database_url, NOW) as env:
        org = (await env.tenants()).org_id
        decision = await env.meter.can_serve(org, "voice")
        assert (decision.allowed, decision.reason, decision.balance_credits) == (False, "insufficient_funds", 0)
        assert (await env.meter.can_serve(org, "voice", draft=True)).allowed
        await env.credit(org, 5_000, "seed")
        await subscribe(env, org, "starter")  # balance is 0 again, but 500 minutes are included
        assert (await env.meter.can_serve(org, "voice")).reason == "included_minutes"
        assert not (await env.meter.can_serve(org, "chat")).allowed
        await env.meter.record_usage(org, None, "voice", 500 * 60, "big", NOW)
        assert not (await env.meter.can_serve(org, "voice")).allowed
        await env.credit(org, 11, "more")
        assert (await env.meter.can_serve(org, "voice")).reason == "balance"
        assert not (await env.meter.can_serve(org, "voice", toll_free=True)).allowed


async def test_auto_reload_fires_once_per_crossing(database_url: str) -> None:
    async with billing_env(database_url, NOW, settle_immediately=False) as env:
        tenant = await env.tenants()
        org = tenant.org_id
        await env.credit(org, 1_000, "seed")
        configured = await tenant.put("/billing/wallet/auto-reload",
                                      json={"enabled": True, "thresholdUsd": 5, "amountUsd": 20})
        assert configured.status_code == 200, configured.text
        chat = PAYG.chat_message_credits
        crossing = await env.meter.record_usage(org, None, "chat", 300, "m-1", NOW)  # 1000 -> 400
        assert crossing.balance_credits == 1_000 - 300 * chat and crossing.auto_reload_intent_id is not None
        still_below = await env.meter.record_usage(org, None, "chat", 10, "m-2", NOW)
        assert still_below.auto_reload_intent_id is None
        intents = await env.intents(org)
        assert len(intents) == 1 and intents[0].status == "processing"
        assert intents[0].request_key == f"auto_reload:{crossing.ledger_entry_id}"

        # The settlement is delivered twice: one credit.
        first = await payments.settle_intent(env.services.engine, env.clock, intents[0].id)
        second = await payments.settle_intent(env.services.engine, env.clock, intents[0].id)
        assert first is not None and second is not None and second.duplicate and first.id == second.id
        assert await env.balance(org) == 380 + 2_000
        assert len(await env.entries(org, "auto_reload")) == 1

        # Recovered above the threshold: the next crossing fires again, exactly once.
        again = await env.meter.record_usage(org, None, "chat", 1_000, "m-3", NOW)  # 2380 -> 380
        assert again.auto_reload_intent_id is not None
        assert len(await env.intents(org)) == 2
        assert await env.balance(org) == await env.recomputed(org) == 380


async def test_auto_reload_that_settles_at_once_never_loops(database_url: str) -> None:
    async with billing_env(database_url, NOW) as env:
        tenant = await env.tenants()
        org = tenant.org_id
        await env.credit(org, 600, "seed")
        await tenant.put("/billing/wallet/auto-reload", json={"enabled": True, "thresholdUsd": 5, "amountUsd": 5})
        result = await env.meter.record_usage(org, None, "voice", 600, "c-1", NOW)  # 10 min * 12 = 120
        assert result.auto_reload_intent_id is not None
        assert await env.balance(org) == 600 - 120 + 500
        assert len(await env.entries(org, "auto_reload")) == 1
        async with env.services.engine.connect() as conn:
            statuses = (await conn.execute(sa.select(payment_intents.c.status).where(
                payment_intents.c.org_id == org))).scalars().all()
        assert statuses == ["succeeded"]
        await env.meter.record_usage(org, None, "voice", 60 * 80, "c-2", NOW)  # 980 -> 20: crosses, reloads to 520
        await env.meter.record_usage(org, None, "voice", 60, "c-3", NOW)  # 520 -> 508: no crossing
        assert len(await env.entries(org, "auto_reload")) == 2
        assert await env.balance(org) == 980 - 960 + 500 - 12
