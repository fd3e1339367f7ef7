"""Every API route × {no key, bad key, key without the route's scope, another organization's key}.

The route list comes from the app itself, so a new route is covered the day it is added; a route with
no entry in BODIES fails here until someone says what a valid request to it looks like, and a route that
declares no scope fails unless it is listed in PUBLIC (where something else in the request is the
credential, checked by its own test).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest
from fastapi.routing import APIRoute

from control_api.auth.scopes import ALL_SCOPES
from control_api.http.routing import required_scope
from tests.conftest import Tenant, TenantFactory

# A valid body for each write operation, so the cross-organization check reaches the handler.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/agents"): {"name": "Intruder"},
    ("PATCH", "/api/v1/agents/{agent_id}"): {"greeting": "pwned"},
    ("PUT", "/api/v1/agents/{agent_id}/voice"): {"voiceId": "v1"},
    ("POST", "/api/v1/agents/{agent_id}/publish"): {"note": "pwned"},
    ("POST", "/api/v1/agents/{agent_id}/rollback"): {"versionId": "{version_id}"},
    ("POST", "/api/v1/agents/{agent_id}/skills"): {
        "name": "Intruder", "description": "x", "skillType": "end_call", "executionConfig": {}
    },
    ("PATCH", "/api/v1/agents/{agent_id}/skills/{skill_id}"): {"description": "pwned"},
    ("PUT", "/api/v1/agents/{agent_id}/guardrails"): [],
    ("PUT", "/api/v1/agents/{agent_id}/caller-verification"): [],
    ("POST", "/api/v1/billing/wallet/credit"): {"amountUsd": 5},
    ("PUT", "/api/v1/billing/wallet/auto-reload"): {"enabled": True, "thresholdUsd": 10, "amountUsd": 20},
    ("POST", "/api/v1/billing/wallet/topup"): {"amountUsd": 10},
    ("POST", "/api/v1/billing/subscription"): {"planId": "payg"},
    ("POST", "/api/v1/numbers/reserve"): {"e164": "+14155551234"},
    ("POST", "/api/v1/numbers/purchase"): {"e164": "+14155551234"},
    ("POST", "/api/v1/numbers/import"): {"e164": "+16465550100"},
    ("POST", "/api/v1/numbers/{number_id}/assign"): {"agentId": "{agent_id}"},
    ("POST", "/api/v1/agents/{agent_id}/knowledge/sources"): {"kind": "text", "label": "Intruder", "text": "x"},
    ("PATCH", "/api/v1/agents/{agent_id}/knowledge/sources/{source_id}"): {"label": "pwned"},
    ("POST", "/api/v1/agents/{agent_id}/knowledge/sources/{source_id}/refresh"): None,
    ("POST", "/api/v1/agents/{agent_id}/knowledge/preview"): {"query": "what do you know?"},
    ("PATCH", "/api/v1/agents/{agent_id}/knowledge-gaps/{gap_id}"): {"status": "dismissed"},
    ("POST", "/api/v1/chat/sessions"): {"agentId": "{agent_id}", "draftMode": True},
    ("POST", "/api/v1/chat/sessions/{session_id}/messages"): {"content": "hello"},
    ("POST", "/api/v1/chat/sessions/{session_id}/end"): None,
    ("POST", "/api/v1/chat/completions"): {"model": "{agent_id}", "messages": [{"role": "user", "content": "hi"}]},
    ("POST", "/api/v1/agents/{agent_id}/simulate"): {"mode": "text", "transcript": ["hello"]},
    ("POST", "/api/v1/agents/{agent_id}/talk-token"): {"draftMode": True},
}

# Operations without an API key, like /healthz and the OpenAPI document (which are not API routes): the
# credential is in the request itself. tests/test_recording.py checks the signature, expiry and org scoping.
PUBLIC = {
    ("GET", "/api/v1/recordings/{token}"),  # the signed recording URL from GET /conversations/{id}/audio
    ("POST", "/api/v1/talk/{room}"),  # the talk token is the credential (tests/test_talk_sessions.py)
}

# Operations that act on no resource of the caller's: another organization's key simply gets its own.
ORG_LEVEL = {
    ("GET", "/api/v1/agents"),
    ("POST", "/api/v1/agents"),
    ("GET", "/api/v1/skill-types"),
    ("GET", "/api/v1/audit-logs"),
    ("GET", "/api/v1/billing/wallet"),
    ("POST", "/api/v1/billing/wallet/credit"),
    ("PUT", "/api/v1/billing/wallet/auto-reload"),
    ("POST", "/api/v1/billing/wallet/topup"),
    ("GET", "/api/v1/billing/plans"),
    ("GET", "/api/v1/billing/subscription"),
    ("POST", "/api/v1/billing/subscription"),
    ("GET", "/api/v1/billing/usage"),
    ("GET", "/api/v1/billing/usage/items"),
    ("GET", "/api/v1/billing/invoices"),
    ("GET", "/api/v1/numbers"),
    ("GET", "/api/v1/numbers/search"),
    ("GET", "/api/v1/numbers/available/{e164}"),
    ("POST", "/api/v1/numbers/reserve"),
    ("POST", "/api/v1/numbers/purchase"),
    ("POST", "/api/v1/numbers/import"),
    ("POST", "/api/v1/uploads"),
    # `model` names the agent: another organization's agent id is a 400 there, as for any unknown model
    # (tests/test_chat_completions.py checks it).
    ("POST", "/api/v1/chat/completions"),
    ("GET", "/api/v1/conversations"),
}


def operations(app: Any) -> list[tuple[str, str, str]]:
    ops = []
    for route in app.state.api_routes:
        assert isinstance(route, APIRoute)
        needed = required_scope(route)
        for method in sorted(route.methods):
            if (method, route.path) in PUBLIC:
                assert needed is None and route.openapi_extra == {"security": []}, f"{route.path} is public"
                continue
            assert needed in ALL_SCOPES, f"{route.path} declares no known scope"
            ops.append((method, route.path, needed))
    return ops


async def test_public_routes_are_exactly_the_declared_ones(tenants: TenantFactory) -> None:
    owner = await tenants()
    app = owner.http._transport.app  # type: ignore[attr-defined]
    public = {(m, r.path) for r in app.state.api_routes for m in r.methods if required_scope(r) is None}
    assert public == PUBLIC
    # No key is asked for; the signature is checked instead.
    response = await owner.http.get("/api/v1/recordings/forged.token")
    assert response.status_code == 403 and "WWW-Authenticate" not in response.headers


async def _owned_resources(owner: Tenant) -> dict[str, str]:
    agent = await owner.create_agent()
    skill = await owner.post(
        f"/agents/{agent['id']}/skills",
        json={"name": "Hang up", "description": "End the call", "skillType": "end_call",
              "executionConfig": {}},
    )
    assert skill.status_code == 201, skill.text
    version = await owner.post(f"/agents/{agent['id']}/publish")
    assert version.status_code == 201, version.text
    number = await owner.post("/numbers/import", json={"e164": _unused_number(), "agentId": agent["id"]})
    assert number.status_code == 201, number.text
    chat = await owner.post("/chat/sessions", json={"agentId": agent["id"], "draftMode": True})
    assert chat.status_code == 201, chat.text
    available = (await owner.get("/numbers/search")).json()["data"][0]["e164"]
    hold = await owner.post("/numbers/reserve", json={"e164": available})
    assert hold.status_code == 201, hold.text
    return {
        "agent_id": agent["id"],
        "skill_id": skill.json()["data"]["id"],
        "version_id": version.json()["data"]["id"],
        "number_id": number.json()["data"]["id"],
        "reservation_id": hold.json()["data"]["id"],
        "session_id": chat.json()["data"]["id"],
        "conversation_id": chat.json()["data"]["conversationId"],
    }


def _unused_number() -> str:
    """A New York number outside the sandbox inventory (its 646 area code is not stocked)."""
    return f"+1646{secrets.randbelow(8_000_000) + 2_000_000}"


def _fill(template: Any, ids: dict[str, str]) -> Any:
    if isinstance(template, str):
        return re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), m.group(0)), template)
    if isinstance(template, dict):
        return {k: _fill(v, ids) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, ids) for v in template]
    return template


async def test_every_route_requires_a_valid_key_and_its_scope(tenants: TenantFactory) -> None:
    owner = await tenants()
    ids = await _owned_resources(owner)
    app = owner.http._transport.app  # type: ignore[attr-defined]
    ops = operations(app)
    assert len(ops) >= 20
    failures = []
    for method, template, needed in ops:
        path = _fill(template, ids)
        body = _fill(BODIES.get((method, template)), ids)
        for label, headers in (
            ("no key", {}),
            ("bad key", {"Authorization": "Bearer flowyte_sk_" + "x" * 40}),
            ("not bearer", {"Authorization": f"Token {owner.key}"}),
        ):
            response = await owner.http.request(method, path, headers=headers, json=body)
            if response.status_code != 401 or "WWW-Authenticate" not in response.headers:
                failures.append((label, method, template, response.status_code))
        narrow = await tenants(scopes=tuple(s for s in ALL_SCOPES if s != needed), org_name=owner.org_name)
        response = await narrow.request(method, path[len("/api/v1"):], json=body)
        if response.status_code != 403 or response.json().get("code") != "insufficient_scope":
            failures.append(("missing scope", method, template, response.status_code))
    assert failures == []


async def test_another_organizations_key_gets_404_on_every_resource(tenants: TenantFactory) -> None:
    owner, stranger = await tenants(), await tenants()
    ids = await _owned_resources(owner)
    app = owner.http._transport.app  # type: ignore[attr-defined]
    failures = []
    for method, template, _ in operations(app):
        if (method, template) in ORG_LEVEL:
            continue
        if method in ("POST", "PUT", "PATCH") and (method, template) not in BODIES:
            failures.append(("no body declared in BODIES", method, template, 0))
            continue
        path = _fill(template, ids)[len("/api/v1"):]
        response = await stranger.request(method, path, json=_fill(BODIES.get((method, template)), ids))
        if response.status_code != 404:
            failures.append(("other org", method, template, response.status_code))
    assert failures == []
    # And nothing the stranger tried changed the owner's agent.
    agent = (await owner.get(f"/agents/{ids['agent_id']}")).json()["data"]
    assert agent["greeting"] is None and agent["publishedVersionId"] == ids["version_id"]
    assert (await owner.get(f"/agents/{ids['agent_id']}/skills/{ids['skill_id']}")).status_code == 200
    number = (await owner.get(f"/numbers/{ids['number_id']}")).json()["data"]
    assert number["status"] == "assigned" and number["agentId"] == ids["agent_id"]


@pytest.mark.parametrize("listing", ["/agents", "/audit-logs"])
async def test_org_level_lists_never_show_another_organization(tenants: TenantFactory, listing: str) -> None:
    owner, stranger = await tenants(), await tenants()
    await _owned_resources(owner)
    body = (await stranger.get(listing)).json()
    assert body["success"] is True
    if listing == "/agents":
        assert body["data"] == []
    else:
        assert all(e["actor"]["id"] != owner.key for e in body["data"])
        owner_key_ids = {e["actor"]["id"] for e in (await owner.get(listing)).json()["data"]}
        assert owner_key_ids.isdisjoint({e["actor"]["id"] for e in body["data"]})
