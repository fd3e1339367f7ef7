"""Publish, versions, diff, pre-publish report and rollback: the loop of docs/concepts/versioning.md."""

from __future__ import annotations

import asyncio
import hashlib
import json

from control_api.agent_store import DatabaseAgentSource
from control_api.services import Services
from runtime.agent_config import canonical_json
from tests.conftest import Tenant, TenantFactory


async def test_publish_returns_201_with_frozen_version(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    response = await tenant.post(f"/agents/{agent['id']}/publish", json={"note": "first"})
    assert response.status_code == 201, response.text
    version = response.json()["data"]
    assert version["version"] == 1
    assert version["note"] == "first"
    assert version["isLive"] is True
    assert version["config"]["name"] == "Acme Support"
    expected_hash = hashlib.sha256(canonical_json(version["config"]).encode()).hexdigest()
    assert version["configHash"] == expected_hash
    got = (await tenant.get(f"/agents/{agent['id']}")).json()["data"]
    assert got["status"] == "published"
    assert got["publishedVersionId"] == version["id"]
    assert got["publishedVersion"] == 1
    assert got["hasUnpublishedChanges"] is False


async def test_publish_without_body_as_in_the_quickstart(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    response = await tenant.post(f"/agents/{agent['id']}/publish")
    assert response.status_code == 201, response.text
    assert response.json()["data"]["note"] is None


async def test_published_config_never_changes_after_edits(tenant: Tenant, services: Services) -> None:
    agent = await tenant.create_agent(greeting="Hello from v1")
    v1 = (await tenant.post(f"/agents/{agent['id']}/publish")).json()["data"]
    await tenant.patch(f"/agents/{agent['id']}", json={"greeting": "Hello from the draft"})
    await tenant.post(
        f"/agents/{agent['id']}/skills",
        json={"name": "Hang up", "description": "End the call", "skillType": "end_call",
              "executionConfig": {}},
    )
    again = (await tenant.get(f"/agents/{agent['id']}/versions/{v1['id']}")).json()["data"]
    assert again["configHash"] == v1["configHash"]
    assert again["config"] == v1["config"]
    assert hashlib.sha256(canonical_json(again["config"]).encode()).hexdigest() == v1["configHash"]
    source = DatabaseAgentSource(services.engine)
    live = await source.published(tenant.org_id, agent["id"])
    assert live is not None and live.config_hash == v1["configHash"] and live.greeting == "Hello from v1"
    draft = await source.draft(tenant.org_id, agent["id"])
    assert draft is not None and draft.is_draft and draft.greeting == "Hello from the draft"
    got = (await tenant.get(f"/agents/{agent['id']}")).json()["data"]
    assert got["hasUnpublishedChanges"] is True


async def test_diff_lists_changes_against_the_draft(tenant: Tenant) -> None:
    agent = await tenant.create_agent(greeting="Hi", persona={"goals": ["book visits"]})
    v1 = (await tenant.post(f"/agents/{agent['id']}/publish")).json()["data"]
    await tenant.patch(
        f"/agents/{agent['id']}",
        json={"greeting": "Hello", "handoffConfig": {"warm": True, "transferDestination": "4155550100"}},
    )
    diff = (await tenant.get(f"/agents/{agent['id']}/versions/{v1['id']}/diff")).json()["data"]
    changes = {c["field"]: c for c in diff["changes"]}
    assert changes["greeting"] == {"field": "greeting", "before": "Hi", "after": "Hello", "kind": "changed"}
    assert changes["handoffConfig.transferDestination"]["kind"] == "added"
    assert changes["handoffConfig.transferDestination"]["after"] == "+14155550100"
    assert changes["handoffConfig.warm"]["kind"] == "changed"
    assert "persona.goals" not in changes
    assert diff["versionHash"] == v1["configHash"] and diff["draftHash"] != v1["configHash"]


async def test_rollback_repoints_live_version_without_touching_the_draft(
    tenant: Tenant, services: Services
) -> None:
    agent = await tenant.create_agent(greeting="one")
    v1 = (await tenant.post(f"/agents/{agent['id']}/publish", json={"note": "v1"})).json()["data"]
    await tenant.patch(f"/agents/{agent['id']}", json={"greeting": "two"})
    v2 = (await tenant.post(f"/agents/{agent['id']}/publish", json={"note": "v2"})).json()["data"]
    assert v2["version"] == 2
    source = DatabaseAgentSource(services.engine)
    live = await source.published(tenant.org_id, agent["id"])
    assert live is not None and live.greeting == "two" and live.version_number == 2
    response = await tenant.post(f"/agents/{agent['id']}/rollback", json={"versionId": v1["id"]})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["publishedVersion"]["id"] == v1["id"]
    live = await source.published(tenant.org_id, agent["id"])
    assert live is not None and live.greeting == "one" and live.version_id == v1["id"]
    got = (await tenant.get(f"/agents/{agent['id']}")).json()["data"]
    assert got["greeting"] == "two" and got["publishedVersionId"] == v1["id"]
    versions = (await tenant.get(f"/agents/{agent['id']}/versions")).json()
    assert [v["version"] for v in versions["data"]] == [2, 1]
    assert [v["isLive"] for v in versions["data"]] == [False, True]
    by_version = await source.version(tenant.org_id, agent["id"], v2["id"])
    assert by_version is not None and by_version.greeting == "two"


async def test_rollback_to_unknown_or_foreign_version_is_404(tenants: TenantFactory) -> None:
    a, b = await tenants(), await tenants()
    agent_a = await a.create_agent()
    agent_b = await b.create_agent()
    foreign = (await b.post(f"/agents/{agent_b['id']}/publish")).json()["data"]
    for version_id in ("ver_missing", foreign["id"]):
        response = await a.post(f"/agents/{agent_a['id']}/rollback", json={"versionId": version_id})
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


async def test_version_pagination_walks_every_version_once(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    for _ in range(5):
        assert (await tenant.post(f"/agents/{agent['id']}/publish")).status_code == 201
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = (await tenant.get(f"/agents/{agent['id']}/versions", params=params)).json()
        seen += [v["version"] for v in body["data"]]
        cursor = body["pagination"]["nextCursor"]
        if cursor is None:
            assert body["pagination"]["hasMore"] is False
            break
    assert seen == [5, 4, 3, 2, 1]


async def test_idempotent_publish_replays_and_rejects_a_different_body(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    headers = {"Idempotency-Key": "5f3c-publish-1"}
    first = await tenant.post(f"/agents/{agent['id']}/publish", json={"note": "x"}, headers=headers)
    again = await tenant.post(f"/agents/{agent['id']}/publish", json={"note": "x"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    other = await tenant.post(f"/agents/{agent['id']}/publish", json={"note": "y"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    versions = (await tenant.get(f"/agents/{agent['id']}/versions")).json()["data"]
    assert len(versions) == 1


async def test_concurrent_publishes_with_one_key_make_one_version(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    headers = {"Idempotency-Key": "race-key"}
    responses = await asyncio.gather(
        *[tenant.post(f"/agents/{agent['id']}/publish", json={"note": "n"}, headers=headers) for _ in range(6)]
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    assert 201 in statuses
    created = {r.json()["data"]["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    for r in responses:
        if r.status_code == 409:
            assert r.json()["code"] == "idempotency_in_flight"
    versions = (await tenant.get(f"/agents/{agent['id']}/versions")).json()["data"]
    assert len(versions) == 1


async def test_concurrent_publishes_without_key_get_consecutive_numbers(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    responses = await asyncio.gather(*[tenant.post(f"/agents/{agent['id']}/publish") for _ in range(4)])
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    numbers = sorted(r.json()["data"]["version"] for r in responses)
    assert numbers == [1, 2, 3, 4]


async def test_prepublish_report_names_what_goes_where_and_warns(tenant: Tenant) -> None:
    agent = await tenant.create_agent(
        greeting="Thanks for calling Acme",
        persona={"role": "receptionist", "goals": ["book visits"], "neverDo": ["quote prices"]},
        callControl={"onNoResponseAction": "transfer"},
    )
    await tenant.post(
        f"/agents/{agent['id']}/skills",
        json={"name": "Order lookup", "description": "Look up the caller's order status",
              "skillType": "http_webhook",
              "executionConfig": {"url": "https://api.example.com/orders", "method": "POST",
                                  "parameters": [{"name": "order_number", "description": "the order"}]}},
    )
    await tenant.post(
        f"/agents/{agent['id']}/skills",
        json={"name": "Transfer", "description": "Transfer to a person", "skillType": "transfer",
              "executionConfig": {}},
    )
    data = (await tenant.get(f"/agents/{agent['id']}/prepublish-report")).json()["data"]
    assert data["willSay"]["greeting"] == "Thanks for calling Acme"
    assert data["wontSay"]["neverDo"] == ["quote prices"]
    flows = {f["skillName"]: f for f in data["dataFlows"]}
    assert flows["Order lookup"]["sendsTo"] == "api.example.com"
    assert flows["Order lookup"]["fields"] == ["order_number"]
    codes = {w["code"] for w in data["warnings"]}
    assert {"transfer_without_destination", "unverified_account_data"} <= codes
    assert data["hasUnpublishedChanges"] is True and data["publishedVersion"] is None
    await tenant.post(f"/agents/{agent['id']}/publish")
    data = (await tenant.get(f"/agents/{agent['id']}/prepublish-report")).json()["data"]
    assert data["hasUnpublishedChanges"] is False and data["changeCount"] == 0


async def test_compiled_config_round_trips_through_json(tenant: Tenant, services: Services) -> None:
    agent = await tenant.create_agent(
        businessHours={"timezone": "America/Denver",
                       "weekly": {"monday": [{"open": "09:00", "close": "17:00"}]},
                       "holidays": [{"date": "2026-12-25", "name": "Christmas"}]},
        afterHours={"allowHumanTransfer": True, "number": "+14155550199"},
        languages=["es"], voiceMap={"es": "es_ES-voice"},
    )
    version = (await tenant.post(f"/agents/{agent['id']}/publish")).json()["data"]
    source = DatabaseAgentSource(services.engine)
    live = await source.published(tenant.org_id, agent["id"])
    assert live is not None
    assert live.to_config() == version["config"]
    assert json.loads(canonical_json(live.to_config())) == version["config"]
    assert live.voice.for_language("es") == "es_ES-voice"
