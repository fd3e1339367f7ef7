"""The billing API end to end: wallet, manual credit, top-up, auto-reload settings, plans, subscription and
renewal, usage records and items, invoices (JSON and PDF), each reconciled with the ledger."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from control_api.billing import ledger, payments
from control_api.billing.subscriptions import renew_subscriptions
from control_api.billing.usage import add_usage_item
from control_api.db.tables import ledger_entries, payment_intents, subscriptions
from tests.test_billing_support import billing_env

NOW = datetime(2031, 5, 20, 10, 0, 0)


def data(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


async def test_wallet_and_manual_credit_idempotency(database_url: str) -> None:
    async with billing_env(database_url, NOW) as env:
        tenant = await env.tenants()
        wallet = data(await tenant.get("/billing/wallet"))
        assert wallet == {"balanceCredits": 0, "balanceUsd": 0.0, "currency": "USD",
                          "autoReload": {"enabled": False, "thresholdUsd": 0.0, "amountUsd": 0.0},
                          "updatedAt": wallet["updatedAt"]}
        headers = {"Idempotency-Key": "credit-1"}
        first = await tenant.post("/billing/wallet/credit", json={"amountUsd": 12.5, "note": "welcome"},
                                  headers=headers)
        body = data(first)
        assert body["wallet"]["balanceCredits"] == 1250 and body["entry"]["key"] == "credit:credit-1"
        assert body["entry"]["description"] == "welcome"
        replay = await tenant.post("/billing/wallet/credit", json={"amountUsd": 12.5, "note": "welcome"},
                                   headers=headers)
        assert replay.headers["Idempotent-Replayed"] == "true" and replay.json() == first.json()
        reused = await tenant.post("/billing/wallet/credit", json={"amountCredits": 99}, headers=headers)
        assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
        # Without a key every request is its own credit (keyed by its request id).
        data(await tenant.post("/billing/wallet/credit", json={"amountCredits": 50}))
        data(await tenant.post("/billing/wallet/credit", json={"amountCredits": 50}))
        assert data(await tenant.get("/billing/wallet"))["balanceCredits"] == 1350 == await env.recomputed(
            tenant.org_id)
        assert await env.count(ledger_entries, tenant.org_id) == 3
        for bad in ({}, {"amountUsd": 1, "amountCredits": 100}, {"amountUsd": 0}, {"amountUsd": 1.234},
                    {"amountCredits": -5}):
            response = await tenant.post("/billing/wallet/credit", json=bad)
            assert response.status_code == 400, (bad, response.text)


async def test_auto_reload_settings_are_validated(database_url: str) -> None:
    async with billing_env(database_url, NOW) as env:
        tenant = await env.tenants()
        saved = data(await tenant.put("/billing/wallet/auto-reload",
                                      json={"enabled": True, "thresholdUsd": 10, "amountUsd": 25.5}))
        assert saved["autoReload"] == {"enabled": True, "thresholdUsd": 10.0, "amountUsd": 25.5}
        too_small = await tenant.put("/billing/wallet/auto-reload",
                                     json={"enabled": True, "thresholdUsd": 10, "amountUsd": 4.99})
        assert too_small.status_code == 400 and too_small.json()["errors"][0]["field"] == "amountUsd"
        negative = await tenant.put("/billing/wallet/auto-reload",
                                    json={"enabled": True, "thresholdUsd": -1, "amountUsd": 10})
        assert negative.status_code == 400 and negative.json()["errors"][0]["field"] == "thresholdUsd"
        off = data(await tenant.put("/billing/wallet/auto-reload",
                                    json={"enabled": False, "thresholdUsd": 0, "amountUsd": 0}))
        assert off["autoReload"]["enabled"] is False


async def test_topup_with_an_idempotency_key_charges_once(database_url: str) -> None:
    async with billing_env(database_url, NOW) as env:
        tenant = await env.tenants()
        headers = {"Idempotency-Key": "topup-1"}
        first = data(await tenant.post("/billing/wallet/topup", json={"amountUsd": 25}, headers=headers), 201)
        assert first["status"] == "succeeded" and first["amountUsd"] == 25.0
        assert first["paymentIntentId"].startswith("pi_") and first["clientSecret"]
        again = await tenant.post("/billing/wallet/topup", json={"amountUsd": 25}, headers=headers)
        assert again.status_code == 201 and again.json()["data"] == first
        assert await env.count(payment_intents, tenant.org_id) == 1
        assert len(await env.entries(tenant.org_id, "topup")) == 1
        assert await env.balance(tenant.org_id) == 2500
        assert (await tenant.post("/billing/wallet/topup", json={"amountUsd": 4})).status_code == 400


async def test_topup_credits_when_the_payment_settles_and_only_once(database_url: str) -> None:
    async with billing_env(database_url, NOW, settle_immediately=False) as env:
        tenant = await env.tenants()
        intent = data(await tenant.post("/billing/wallet/topup", json={"amountUsd": 40},
                                        headers={"Idempotency-Key": "t-2"}), 201)
        assert intent["status"] == "processing" and await env.balance(tenant.org_id) == 0
        ref = (await env.intents(tenant.org_id))[0].provider_ref
        intent_id = await payments.find_intent_id(env.services.engine, "local", ref)
        assert intent_id == intent["paymentIntentId"]
        for _ in range(2):  # the provider delivers the settlement twice
            await payments.settle_intent(env.services.engine, env.clock, intent_id)
        assert await env.balance(tenant.org_id) == 4000 == await env.recomputed(tenant.org_id)
        assert len(await env.entries(tenant.org_id, "topup")) == 1
        assert (await env.intents(tenant.org_id))[0].status == "succeeded"
        assert await payments.settle_intent(env.services.engine, env.clock, "pi_unknown") is None


async def test_plans_and_subscription_changes(database_url: str) -> None:
    async with billing_env(database_url, NOW) as env:
        tenant = await env.tenants()
        plans = data(await tenant.get("/billing/plans"))
        assert [p["id"] for p in plans] == ["payg", "starter", "growth", "scale"]
        current = data(await tenant.get("/billing/subscription"))
        assert (current["planId"], current["status"], current["currentPeriod"]) == ("payg", "active", "2031-05")
        assert current["renewsAt"] is None

        broke = await tenant.post("/billing/subscription", json={"planId": "starter"})
        assert broke.status_code == 402 and broke.json()["code"] == "insufficient_funds"
        assert data(await tenant.get("/billing/subscription"))["planId"] == "payg"
        assert await env.count(ledger_entries, tenant.org_id) == 0

        await env.credit(tenant.org_id, 8_000, "seed")
        changed = data(await tenant.post("/billing/subscription", json={"planId": "starter"}))
        assert (changed["planId"], changed["status"], changed["includedMinutes"]) == ("starter", "active", 500)
        assert changed["renewsAt"] == "2031-06-01T00:00:00.000Z"
        again = data(await tenant.post("/billing/subscription", json={"planId": "starter"}))
        assert again["planId"] == "starter"
        assert await env.balance(tenant.org_id) == 3_000  # charged once
        too_dear = await tenant.post("/billing/subscription", json={"planId": "growth"})
        assert too_dear.status_code == 402
        assert data(await tenant.get("/billing/subscription"))["planId"] == "starter"
        assert await env.balance(tenant.org_id) == 3_000
        unknown = await tenant.post("/billing/subscription", json={"planId": "platinum"})
        assert unknown.status_code == 400 and unknown.json()["errors"][0]["field"] == "planId"
        charges = await env.entries(tenant.org_id, "subscription")
        assert [e.key for e in charges] == ["subscription:2031-05:starter"]


async def test_renewal_is_idempotent_and_lapses_to_past_due(database_url: str) -> None:
    async with billing_env(database_url, NOW) as env:
        tenant = await env.tenants()
        org = tenant.org_id
        await env.credit(org, 10_000, "seed")
        data(await tenant.post("/billing/subscription", json={"planId": "starter"}))  # 10000 -> 5000
        await renew_subscriptions(env.services)  # this month is paid: nothing to do for this organization
        assert await env.balance(org) == 5_000

        env.clock.t = datetime(2031, 6, 1, 0, 5)
        assert await renew_subscriptions(env.services) >= 1
        assert await renew_subscriptions(env.services) == 0
        assert await env.balance(org) == 0
        sub = data(await tenant.get("/billing/subscription"))
        assert (sub["planId"], sub["status"], sub["currentPeriod"]) == ("starter", "active", "2031-06")

        env.clock.t = datetime(2031, 7, 2, 3, 0)  # the wallet cannot pay July
        await renew_subscriptions(env.services)
        sub = data(await tenant.get("/billing/subscription"))
        assert (sub["planId"], sub["status"], sub["subscribedPlanId"]) == ("payg", "past_due", "starter")
        assert await env.balance(org) == 0  # never negative for a subscription
        usage = await env.meter.record_usage(org, None, "voice", 60, "jul-1", env.clock.now())
        assert usage.credits == 12  # rated pay-as-you-go while past due

        await env.credit(org, 6_000, "rescue")
        assert await renew_subscriptions(env.services) >= 1  # the next run retries and reactivates
        sub = data(await tenant.get("/billing/subscription"))
        assert (sub["planId"], sub["status"]) == ("starter", "active")
        keys = [e.key for e in await env.entries(org, "subscription")]
        assert keys == ["subscription:2031-05:starter", "subscription:2031-06:starter",
                        "subscription:2031-07:starter"]
        assert await env.balance(org) == await env.recomputed(org) == 6_000 - 12 - 5_000
        async with env.services.engine.connect() as conn:
            period = await conn.scalar(sa.select(subscriptions.c.current_period).where(
                subscriptions.c.org_id == org))
        assert period == "2031-07"


async def test_usage_and_invoices_reconcile_with_the_ledger(database_url: str) -> None:
    async with billing_env(database_url, datetime(2031, 4, 28, 9, 0)) as env:
        tenant = await env.tenants()
        org = tenant.org_id
        meter = env.meter
        await env.credit(org, 2_000, "april-seed")
        await meter.record_usage(org, "agt_a", "voice", 125, "a-1", env.clock.now())  # 3 min * 12 = 36
        await meter.record_usage(org, "agt_b", "chat", 4, "a-2", datetime(2031, 4, 28, 8, 0))  # 8
        env.clock.t = datetime(2031, 5, 3, 12, 0)
        data(await tenant.post("/billing/wallet/topup", json={"amountUsd": 50}), 201)  # 1956 -> 6956
        data(await tenant.post("/billing/subscription", json={"planId": "starter"}))  # -> 1956
        await meter.record_usage(org, "agt_a", "voice", 600, "m-1", datetime(2031, 5, 3, 11, 0))  # included
        await meter.record_usage(org, "agt_a", "transfer_minute", 61, "m-2", datetime(2031, 5, 3, 11, 30))  # 10
        await meter.record_usage(org, "agt_b", "chat", 2, "m-3", datetime(2031, 5, 2, 8, 0))  # 4
        await meter.record_usage(org, "agt_b", "voice", 30, "m-4", datetime(2031, 5, 2, 7, 0), toll_free=True)
        # A number's setup fee and first month, written the way control_api.numbers bills them.
        async with env.services.engine.begin() as conn:
            for minute, key, kind, unit, credits in ((0, "number_setup:num_1", "number_setup", "setup", 100),
                                                     (1, "rental:num_1:2031-05", "number_rental", "month", 150)):
                at = datetime(2031, 5, 3, 12, minute)
                entry = await ledger.post(conn, org_id=org, key=key, kind=kind, amount_credits=-credits,
                                          description=key, now=at)
                await add_usage_item(conn, org_id=org, event_id=key, ledger_entry_id=entry.id, agent_id=None,
                                     channel="number", quantity=1, unit=unit, credits=credits, occurred_at=at,
                                     now=at)
        balance = await env.balance(org)
        assert balance == await env.recomputed(org)

        # Items: one per event, newest first, and their credits equal the usage debits.
        items = data(await tenant.get("/billing/usage/items", params={"limit": 100}))
        assert [i["eventId"] for i in items] == ["rental:num_1:2031-05", "number_setup:num_1", "m-2", "m-1", "m-3",
                                                 "m-4", "a-1", "a-2"]
        usage_debits = -sum([e.amount_credits for kind in ("usage", "number_setup", "number_rental")
                             for e in await env.entries(org, kind)])
        assert sum(i["credits"] for i in items) == usage_debits == await env.item_credits(org)
        assert usage_debits == 36 + 8 + 10 + 4 + 2 + 100 + 150
        m1 = next(i for i in items if i["eventId"] == "m-1")
        assert (m1["channel"], m1["quantity"], m1["unit"], m1["credits"]) == ("voice", 10, "minute", 0)
        assert m1["detail"]["includedMinutes"] == 10
        paged = data(await tenant.get("/billing/usage/items", params={"limit": 2, "channel": "voice"}))
        assert len(paged) == 2 and {i["channel"] for i in paged} == {"voice"}
        filtered = data(await tenant.get("/billing/usage/items", params={"agentId": "agt_b", "from": "2031-05-01"}))
        assert sorted(i["eventId"] for i in filtered) == ["m-3", "m-4"]

        # Daily records group the same items by day.
        records = data(await tenant.get("/billing/usage"))
        assert [r["date"] for r in records] == ["2031-05-03", "2031-05-02", "2031-04-28"]
        assert sum(r["credits"] for r in records) == usage_debits
        may3 = records[0]
        assert (may3["voiceMinutes"], may3["transferMinutes"], may3["numberMonths"], may3["credits"]) == (
            10, 2, 1, 10 + 250)
        first_page = await tenant.get("/billing/usage", params={"limit": 1})
        cursor = first_page.json()["pagination"]["nextCursor"]
        second = data(await tenant.get("/billing/usage", params={"limit": 1, "cursor": cursor}))
        assert second[0]["date"] == "2031-05-02"
        by_agent = data(await tenant.get("/billing/usage", params={"agentId": "agt_a", "to": "2031-04-30"}))
        assert by_agent == [{**by_agent[0], "date": "2031-04-28", "agentId": "agt_a", "voiceMinutes": 3,
                             "credits": 36}]

        # Invoices: one per month with activity, newest first; each reconciles, and months chain.
        invoices = data(await tenant.get("/billing/invoices"))
        assert [(i["id"], i["status"]) for i in invoices] == [("inv_2031-05", "open"), ("inv_2031-04", "finalized")]
        may, april = invoices
        for invoice in invoices:
            assert invoice["openingBalanceCredits"] + invoice["creditsAddedCredits"] - invoice["chargesCredits"] \
                == invoice["closingBalanceCredits"]
            lines = invoice["lineItems"]
            assert sum(li["credits"] for li in lines if li["type"] == "charge") == invoice["chargesCredits"]
            assert sum(li["credits"] for li in lines if li["type"] == "credit") == invoice["creditsAddedCredits"]
        assert april["openingBalanceCredits"] == 0 and april["closingBalanceCredits"] == 2_000 - 44
        assert may["openingBalanceCredits"] == april["closingBalanceCredits"]
        assert may["closingBalanceCredits"] == balance
        voice = next(li for li in may["lineItems"] if li.get("channel") == "voice")
        assert (voice["quantity"], voice["credits"]) == (11, 2)
        assert {li.get("kind") for li in may["lineItems"]} >= {"subscription", "topup"}
        numbers = sorted((li["description"], li["quantity"], li["credits"]) for li in may["lineItems"]
                         if li.get("channel") == "number")
        assert numbers == [("Phone number rental (months)", 1, 150), ("Phone number setup", 1, 100)]
        assert may["url"] == "/api/v1/billing/invoices/inv_2031-05/pdf"
        assert data(await tenant.get("/billing/invoices/inv_2031-04")) == april
        paged_invoices = await tenant.get("/billing/invoices", params={"limit": 1})
        assert paged_invoices.json()["pagination"]["hasMore"] is True
        older = data(await tenant.get("/billing/invoices", params={
            "limit": 1, "cursor": paged_invoices.json()["pagination"]["nextCursor"]}))
        assert older == [april]
        for missing in ("inv_2031-03", "inv_2031-13", "2031-05", "inv_x"):
            response = await tenant.get(f"/billing/invoices/{missing}")
            assert response.status_code == 404 and response.json()["code"] == "not_found"
        stranger = await env.tenants()
        assert (await stranger.get("/billing/invoices/inv_2031-05")).status_code == 404
        assert data(await stranger.get("/billing/invoices")) == []
        assert data(await stranger.get("/billing/usage/items")) == []


async def test_invoice_pdf_is_a_real_pdf(database_url: str) -> None:
    async with billing_env(database_url, NOW) as env:
        tenant = await env.tenants()
        await env.credit(tenant.org_id, 1_000, "seed")
        await env.meter.record_usage(tenant.org_id, "agt_a", "voice", 90, "p-1", NOW)
        invoice = data(await tenant.get("/billing/invoices"))[0]
        response = await tenant.get(invoice["url"][len("/api/v1"):])
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/pdf"
        pdf = response.content
        assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
        assert b"Statement inv_2031-05" in pdf and b"Voice minutes" in pdf
        # The cross-reference table points at real objects.
        xref = int(pdf.rsplit(b"startxref", 1)[1].split()[0])
        assert pdf[xref:].startswith(b"xref")
        first_object = int(pdf[xref:].split(b"\n")[3].split()[0])
        assert pdf[first_object:].startswith(b"1 0 obj")
        assert (await tenant.get("/billing/invoices/inv_2031-01/pdf")).status_code == 404
