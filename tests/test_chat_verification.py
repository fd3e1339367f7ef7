"""Guardrail state outlives a turn: a chat session stays verified across messages, and failed attempts
count across messages (a fresh brain per turn must not hand out fresh attempts)."""

from __future__ import annotations

import pytest

from control_api.services import Services
from pipeline.llm.types import ToolCall
from tests import test_chat_support as support
from tests.conftest import Tenant
from tests.test_brain_support import Loopback, Reply, Seen
from tests.test_chat_support import Script, fund, say, session

script = support.script


def verifier(seen: Seen) -> Reply:
    ok = (seen.json or {}).get("date_of_birth") == "1990-01-01"
    return Reply(body={"verified": ok})


async def gated_agent(tenant: Tenant, loopback: Loopback) -> str:
    agent = await tenant.create_agent()
    base = f"/agents/{agent['id']}"
    verify = await tenant.post(f"{base}/skills", json={
        "name": "Verify caller", "description": "Check date of birth and postcode", "skillType": "http_webhook",
        "executionConfig": {"url": loopback.url("/verify"), "method": "POST"}})
    assert verify.status_code == 201, verify.text
    lookup = await tenant.post(f"{base}/skills", json={
        "name": "Order lookup", "description": "Look up the caller's order", "skillType": "http_webhook",
        "requiresVerifiedIdentity": True,
        "executionConfig": {"url": loopback.url("/orders"), "method": "POST"},
        "parametersSchema": {"type": "object", "properties": {"order_number": {"type": "string"}},
                             "required": ["order_number"]}})
    assert lookup.status_code == 201, lookup.text
    methods = await tenant.put(f"{base}/caller-verification", json=[{
        "method": "dob_postcode", "verifierSkillId": verify.json()["data"]["id"], "maxAttempts": 2}])
    assert methods.status_code == 200, methods.text
    assert (await tenant.post(f"{base}/publish")).status_code == 201
    return str(agent["id"])


def tool_events(response_json: dict[str, object]) -> list[dict[str, object]]:
    events = response_json["data"]["events"]  # type: ignore[index]
    return [e for e in events if e["type"] in ("tool_call", "guardrail", "verification")]  # type: ignore[index]


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWYTE_FETCH_ALLOW_HOSTS", "127.0.0.1")


async def test_verified_in_one_message_stays_verified_in_the_next(
    services: Services, tenant: Tenant, script: Script
) -> None:
    await fund(services, tenant)
    async with Loopback().running() as loopback:
        loopback.routes["/verify"] = verifier
        loopback.routes["/orders"] = Reply(body={"status": "shipped"})
        agent_id = await gated_agent(tenant, loopback)
        script(
            [ToolCall("c1", "verify_identity", {"date_of_birth": "1990-01-01", "postcode": "80202"})],
            "Thanks, you're verified.",
            [ToolCall("c2", "order_lookup", {"order_number": "A1"})],
            "Your order has shipped.",
        )
        chat = await session(tenant, agent_id)
        first = await say(tenant, chat["id"], "My birthday is 1990-01-01, postcode 80202")
        assert first.status_code == 200, first.text
        second = await say(tenant, chat["id"], "Where is order A1?")
        assert second.status_code == 200, second.text
        calls = [e for e in tool_events(second.json()) if e["type"] == "tool_call"]
        assert calls and calls[0]["name"] == "order_lookup" and calls[0]["status"] == "ok", calls
        assert "/orders" in loopback.paths()


async def test_failed_attempts_count_across_messages(services: Services, tenant: Tenant, script: Script) -> None:
    await fund(services, tenant)
    async with Loopback().running() as loopback:
        loopback.routes["/verify"] = verifier
        loopback.routes["/orders"] = Reply(body={"status": "shipped"})
        agent_id = await gated_agent(tenant, loopback)
        wrong = {"date_of_birth": "2000-02-02", "postcode": "80202"}
        script(
            [ToolCall("c1", "verify_identity", wrong)], "That didn't match.",
            [ToolCall("c2", "verify_identity", wrong)], "Still no match.",
            [ToolCall("c3", "verify_identity", {"date_of_birth": "1990-01-01", "postcode": "80202"})], "Sorry.",
        )
        chat = await session(tenant, agent_id)
        for text in ("I was born 2000-02-02", "Try 2000-02-02 again"):
            assert (await say(tenant, chat["id"], text)).status_code == 200
        third = await say(tenant, chat["id"], "Fine: 1990-01-01")
        outcomes = [e.get("outcome") for e in tool_events(third.json()) if e["type"] == "verification"]
        assert outcomes == ["locked"], tool_events(third.json())
        assert loopback.paths().count("/verify") == 2  # the locked attempt never reached the verifier
