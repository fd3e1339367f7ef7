"""Guardrail policies and caller verification: docs/concepts/guardrails.md and the caller-verification guide
(its bodies sent verbatim), full-replace semantics, validation, skill references and tenant isolation."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from control_api.compile import compile_draft
from control_api.repositories import agents as agents_repo
from control_api.services import Services
from tests.conftest import Tenant, TenantFactory
from tests.test_skills import HANG_UP, add_skill, assert_invalid

# docs/guides/caller-verification.md
VERIFIER_SKILL = {
    "name": "Verify identity",
    "description": "Confirm the caller by date of birth and postcode.",
    "skillType": "http_webhook",
    "executionConfig": {"url": "https://api.example.com/verify", "method": "POST"},
}


def guide_verification(verifier_id: str) -> list[dict[str, Any]]:
    return [{
        "method": "dob_postcode",
        "requiredFields": ["date_of_birth", "postcode"],
        "verifierSkillId": verifier_id,
        "tokenTtlSeconds": 600,
        "maxAttempts": 3,
        "stepUpFor": ["refund"],
    }]


GUIDE_GUARDRAILS = [{"policyType": "verify_before_disclose", "appliesToSkillType": "shopify", "isEnabled": True}]

POLICY_KEYS = {"policyType", "isEnabled", "appliesToSkillType", "appliesToSkillId", "config"}
METHOD_KEYS = {"method", "requiredFields", "verifierSkillId", "tokenTtlSeconds", "maxAttempts", "stepUpFor"}


async def agent_with_verifier(tenant: Tenant) -> tuple[str, str]:
    agent = await tenant.create_agent()
    verifier = await add_skill(tenant, agent["id"], VERIFIER_SKILL)
    return agent["id"], verifier["id"]


async def test_caller_verification_guide_end_to_end(tenant: Tenant, services: Services) -> None:
    agent_id, verifier_id = await agent_with_verifier(tenant)
    assert (await tenant.get(f"/agents/{agent_id}/caller-verification")).json() == {"success": True, "data": []}
    assert (await tenant.get(f"/agents/{agent_id}/guardrails")).json() == {"success": True, "data": []}

    put = await tenant.put(f"/agents/{agent_id}/caller-verification", json=guide_verification(verifier_id))
    assert put.status_code == 200, put.text
    assert put.json() == {"success": True, "data": guide_verification(verifier_id)}
    got = await tenant.get(f"/agents/{agent_id}/caller-verification")
    assert got.json() == put.json()

    rails = await tenant.put(f"/agents/{agent_id}/guardrails", json=GUIDE_GUARDRAILS)
    assert rails.status_code == 200, rails.text
    stored: list[dict[str, Any]] = [
        {"policyType": "verify_before_disclose", "appliesToSkillType": "shopify", "appliesToSkillId": None,
         "isEnabled": True, "config": {}}
    ]
    assert rails.json() == {"success": True, "data": stored}
    assert (await tenant.get(f"/agents/{agent_id}/guardrails")).json()["data"] == stored

    gate = await tenant.patch(
        f"/agents/{agent_id}/skills/{verifier_id}",
        json={"requiresVerifiedIdentity": True, "verificationLevel": "basic"},
    )
    assert gate.status_code == 200, gate.text

    # What the runtime will run: the compiled draft reads both lists as stored.
    async with services.engine.connect() as conn:
        agent = await agents_repo.get(conn, tenant.org_id, agent_id)
        assert all(set(p) == POLICY_KEYS for p in agent.guardrails)
        assert all(set(m) == METHOD_KEYS for m in agent.caller_verification)
        compiled = await compile_draft(conn, tenant.org_id, agent)
    (method,) = compiled.caller_verification
    assert method.method == "dob_postcode" and method.verifier_skill_id == verifier_id
    assert method.required_fields == ("date_of_birth", "postcode") and method.step_up_for == ("refund",)
    (policy,) = compiled.guardrails
    assert policy.policy_type == "verify_before_disclose" and policy.applies_to_skill_type == "shopify"
    assert compiled.skills[0].requires_verified_identity is True
    assert (await tenant.get(f"/agents/{agent_id}")).status_code == 200


async def test_put_replaces_the_whole_list(tenant: Tenant) -> None:
    agent_id, verifier_id = await agent_with_verifier(tenant)
    two = [
        {"policyType": "confirm_before_write"},
        {"policyType": "rate_limit", "appliesToSkillId": verifier_id, "config": {"maxPerCall": 3}},
    ]
    first = await tenant.put(f"/agents/{agent_id}/guardrails", json=two)
    assert first.status_code == 200, first.text
    assert len(first.json()["data"]) == 2
    one = [{"policyType": "business_hours", "isEnabled": False, "config": {}}]
    second = await tenant.put(f"/agents/{agent_id}/guardrails", json=one)
    assert second.json()["data"] == [{
        "policyType": "business_hours", "appliesToSkillType": None, "appliesToSkillId": None, "isEnabled": False,
        "config": {"restrictSkillsAfterHours": True},
    }]
    assert (await tenant.get(f"/agents/{agent_id}/guardrails")).json()["data"] == second.json()["data"]
    cleared = await tenant.put(f"/agents/{agent_id}/guardrails", json=[])
    assert cleared.json() == {"success": True, "data": []}


async def test_every_policy_type_and_its_config(tenant: Tenant) -> None:
    agent_id, verifier_id = await agent_with_verifier(tenant)
    policies = [
        {"policyType": "verify_before_disclose", "appliesToSkillId": verifier_id},
        {"policyType": "field_allowlist", "appliesToSkillType": "http_webhook",
         "config": {"fields": ["status", "eta", "status"]}},
        {"policyType": "confirm_before_write", "appliesToSkillType": "http_webhook"},
        {"policyType": "rate_limit", "config": {"maxPerHour": 20}},
        {"policyType": "business_hours", "config": {"restrictSkillsAfterHours": False}},
        {"policyType": "content_rule", "config": {"blockedTopics": ["medical advice"],
                                                   "response": "I can't help with that."}},
    ]
    response = await tenant.put(f"/agents/{agent_id}/guardrails", json=policies)
    assert response.status_code == 200, response.text
    configs = [p["config"] for p in response.json()["data"]]
    assert configs == [
        {},
        {"fields": ["status", "eta"]},
        {},
        {"maxPerCall": None, "maxPerHour": 20},
        {"restrictSkillsAfterHours": False},
        {"blockedTopics": ["medical advice"], "blockedPhrases": [], "response": "I can't help with that."},
    ]
    assert all(set(p) == POLICY_KEYS for p in response.json()["data"])


INVALID_POLICIES: list[tuple[str, list[Any], str]] = [
    ("unknown type", [{"policyType": "be_nice"}], "[0].policyType"),
    ("missing type", [{"isEnabled": True}], "[0].policyType"),
    ("allowlist without fields", [{"policyType": "field_allowlist"}], "[0].config.fields"),
    ("allowlist with no fields", [{"policyType": "field_allowlist", "config": {"fields": []}}], "[0].config.fields"),
    ("bad field name", [{"policyType": "field_allowlist", "config": {"fields": ["a b"]}}], "[0].config.fields[0]"),
    ("rate limit of nothing", [{"policyType": "rate_limit", "config": {}}], "[0].config.maxPerHour"),
    ("rate limit of zero", [{"policyType": "rate_limit", "config": {"maxPerCall": 0}}], "[0].config.maxPerCall"),
    ("content rule of nothing", [{"policyType": "content_rule", "config": {"response": "no"}}],
     "[0].config.blockedPhrases"),
    ("config for a type without one", [{"policyType": "verify_before_disclose", "config": {"level": 2}}],
     "[0].config.level"),
    ("business hours flag", [{"policyType": "business_hours", "config": {"restrictSkillsAfterHours": "maybe"}}],
     "[0].config.restrictSkillsAfterHours"),
    ("bad skill type", [{"policyType": "confirm_before_write", "appliesToSkillType": "not a type!"}],
     "[0].appliesToSkillType"),
    ("unknown skill", [{"policyType": "confirm_before_write"},
                       {"policyType": "confirm_before_write", "appliesToSkillId": "skl_missing"}],
     "[1].appliesToSkillId"),
    ("unknown field", [{"policyType": "confirm_before_write", "priority": 1}], "[0].priority"),
    ("not a list", {"policyType": "confirm_before_write"}, "body"),  # type: ignore[list-item]
    ("too many", [{"policyType": "confirm_before_write"}] * 51, "body"),
]


@pytest.mark.parametrize(
    ("body", "field"), [c[1:] for c in INVALID_POLICIES], ids=[c[0] for c in INVALID_POLICIES]
)
async def test_invalid_guardrails_name_the_field(tenant: Tenant, body: Any, field: str) -> None:
    agent_id, _ = await agent_with_verifier(tenant)
    before = await tenant.put(f"/agents/{agent_id}/guardrails", json=GUIDE_GUARDRAILS)
    assert before.status_code == 200
    assert_invalid(await tenant.put(f"/agents/{agent_id}/guardrails", json=body), field)
    # Nothing was replaced.
    assert (await tenant.get(f"/agents/{agent_id}/guardrails")).json()["data"] == before.json()["data"]


async def test_fifty_policies_are_allowed(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    response = await tenant.put(f"/agents/{agent['id']}/guardrails", json=[{"policyType": "confirm_before_write"}] * 50)
    assert response.status_code == 200 and len(response.json()["data"]) == 50


@pytest.mark.parametrize(
    ("method", "fields"),
    [
        ("dob_postcode", ["date_of_birth", "postcode"]),
        ("account_pin", ["account_pin"]),
        ("otp_sms", ["phone"]),
    ],
)
async def test_verification_defaults_by_method(tenant: Tenant, method: str, fields: list[str]) -> None:
    agent_id, verifier_id = await agent_with_verifier(tenant)
    body = [{"method": method} | ({} if method == "otp_sms" else {"verifierSkillId": verifier_id})]
    response = await tenant.put(f"/agents/{agent_id}/caller-verification", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [{
        "method": method, "requiredFields": fields,
        "verifierSkillId": None if method == "otp_sms" else verifier_id,
        "tokenTtlSeconds": 600, "maxAttempts": 3, "stepUpFor": [],
    }]


async def test_knowledge_based_names_its_fields(tenant: Tenant) -> None:
    agent_id, verifier_id = await agent_with_verifier(tenant)
    body = [{"method": "knowledge_based", "verifierSkillId": verifier_id,
             "requiredFields": ["first_pet", "street_grew_up_on"]}]
    response = await tenant.put(f"/agents/{agent_id}/caller-verification", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["data"][0]["requiredFields"] == ["first_pet", "street_grew_up_on"]


def _method(**fields: Any) -> dict[str, Any]:
    return {"method": "dob_postcode", "verifierSkillId": "{verifier}", **fields}


INVALID_METHODS: list[tuple[str, list[Any], str]] = [
    ("unknown method", [_method(method="retina")], "[0].method"),
    ("missing method", [{"verifierSkillId": "{verifier}"}], "[0].method"),
    ("no verifier", [{"method": "dob_postcode"}], "[0].verifierSkillId"),
    ("no verifier for a pin", [{"method": "account_pin"}], "[0].verifierSkillId"),
    ("knowledge without fields", [_method(method="knowledge_based")], "[0].requiredFields"),
    ("empty fields", [_method(requiredFields=[])], "[0].requiredFields"),
    ("verifier of no skill", [_method(verifierSkillId="skl_missing")], "[0].verifierSkillId"),
    ("verifier of another agent", [_method(verifierSkillId="{sibling}")], "[0].verifierSkillId"),
    ("verifier of another org", [_method(verifierSkillId="{foreign}")], "[0].verifierSkillId"),
    ("short ttl", [_method(tokenTtlSeconds=29)], "[0].tokenTtlSeconds"),
    ("long ttl", [_method(tokenTtlSeconds=86401)], "[0].tokenTtlSeconds"),
    ("no attempts", [_method(maxAttempts=0)], "[0].maxAttempts"),
    ("many attempts", [_method(maxAttempts=11)], "[0].maxAttempts"),
    ("step-up not a list", [_method(stepUpFor="refund")], "[0].stepUpFor"),
    ("same method twice", [_method(), _method(maxAttempts=5)], "[1].method"),
    ("unknown field", [_method(pin="1234")], "[0].pin"),
    ("not a list", _method(), "body"),  # type: ignore[list-item]
    ("too many", [_method(method="otp_sms")] * 11, "body"),
]


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return ids.get(value.strip("{}"), value) if value.startswith("{") else value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    return value


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in INVALID_METHODS], ids=[c[0] for c in INVALID_METHODS])
async def test_invalid_caller_verification_names_the_field(
    tenants: TenantFactory, body: Any, field: str
) -> None:
    owner, stranger = await tenants(), await tenants()
    agent_id, verifier_id = await agent_with_verifier(owner)
    sibling = await owner.create_agent(name="Sibling")
    sibling_skill = await add_skill(owner, sibling["id"], VERIFIER_SKILL)
    foreign_agent = await stranger.create_agent()
    foreign_skill = await add_skill(stranger, foreign_agent["id"], VERIFIER_SKILL)
    ids = {"verifier": verifier_id, "sibling": sibling_skill["id"], "foreign": foreign_skill["id"]}
    response = await owner.put(f"/agents/{agent_id}/caller-verification", json=_fill(body, ids))
    assert_invalid(response, field)
    assert (await owner.get(f"/agents/{agent_id}/caller-verification")).json()["data"] == []


async def test_a_verifier_in_use_cannot_be_deleted(tenant: Tenant) -> None:
    agent_id, verifier_id = await agent_with_verifier(tenant)
    other = await add_skill(tenant, agent_id, HANG_UP)
    put = await tenant.put(f"/agents/{agent_id}/caller-verification", json=guide_verification(verifier_id))
    assert put.status_code == 200
    refused = await tenant.delete(f"/agents/{agent_id}/skills/{verifier_id}")
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "skill_in_use"
    assert problem["usedBy"] == ["callerVerification[0].verifierSkillId"]
    assert verifier_id in problem["detail"] and "verifierSkillId" in problem["detail"]
    assert (await tenant.get(f"/agents/{agent_id}/skills/{verifier_id}")).status_code == 200
    # Unreferenced skills delete as usual; after the setting is replaced, so does the verifier.
    assert (await tenant.delete(f"/agents/{agent_id}/skills/{other['id']}")).status_code == 200
    await tenant.put(f"/agents/{agent_id}/caller-verification", json=[{"method": "otp_sms"}])
    assert (await tenant.delete(f"/agents/{agent_id}/skills/{verifier_id}")).status_code == 200


async def test_a_skill_a_policy_names_cannot_be_deleted(tenant: Tenant) -> None:
    agent_id, verifier_id = await agent_with_verifier(tenant)
    policies = [{"policyType": "confirm_before_write"},
                {"policyType": "field_allowlist", "appliesToSkillId": verifier_id, "config": {"fields": ["ok"]}}]
    assert (await tenant.put(f"/agents/{agent_id}/guardrails", json=policies)).status_code == 200
    refused = await tenant.delete(f"/agents/{agent_id}/skills/{verifier_id}")
    assert refused.status_code == 409 and refused.json()["usedBy"] == ["guardrails[1].appliesToSkillId"]
    await tenant.put(f"/agents/{agent_id}/guardrails", json=policies[:1])
    assert (await tenant.delete(f"/agents/{agent_id}/skills/{verifier_id}")).status_code == 200


async def test_other_organization_gets_404(tenants: TenantFactory) -> None:
    owner, stranger = await tenants(), await tenants()
    agent_id, verifier_id = await agent_with_verifier(owner)
    await owner.put(f"/agents/{agent_id}/caller-verification", json=guide_verification(verifier_id))
    await owner.put(f"/agents/{agent_id}/guardrails", json=GUIDE_GUARDRAILS)
    attempts: list[httpx.Response] = [
        await stranger.get(f"/agents/{agent_id}/guardrails"),
        await stranger.put(f"/agents/{agent_id}/guardrails", json=[]),
        await stranger.get(f"/agents/{agent_id}/caller-verification"),
        await stranger.put(f"/agents/{agent_id}/caller-verification", json=[]),
        await stranger.put(f"/agents/{agent_id}/caller-verification", json=[{"method": "otp_sms"}]),
    ]
    for response in attempts:
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"
    assert (await owner.get(f"/agents/{agent_id}/guardrails")).json()["data"][0]["appliesToSkillType"] == "shopify"
    assert (await owner.get(f"/agents/{agent_id}/caller-verification")).json()["data"] == guide_verification(
        verifier_id
    )
    assert (await owner.get("/agents/agt_unknown/guardrails")).status_code == 404


async def test_scopes(tenants: TenantFactory) -> None:
    owner = await tenants()
    agent = await owner.create_agent()
    reader = await tenants(scopes=("guardrails:read",), org_name=owner.org_name)
    assert (await reader.get(f"/agents/{agent['id']}/guardrails")).status_code == 200
    assert (await reader.get(f"/agents/{agent['id']}/caller-verification")).status_code == 200
    for path in ("guardrails", "caller-verification"):
        denied = await reader.put(f"/agents/{agent['id']}/{path}", json=[])
        assert denied.status_code == 403 and denied.json()["scope"] == "guardrails:write"
    writer = await tenants(scopes=("guardrails:write",), org_name=owner.org_name)
    assert (await writer.put(f"/agents/{agent['id']}/guardrails", json=[])).status_code == 200
    assert (await writer.get(f"/agents/{agent['id']}/guardrails")).status_code == 403


async def test_racing_delete_and_reference_never_leave_a_dangling_verifier(tenant: Tenant) -> None:
    for _ in range(5):
        agent_id, verifier_id = await agent_with_verifier(tenant)
        put, delete = await asyncio.gather(
            tenant.put(f"/agents/{agent_id}/caller-verification", json=guide_verification(verifier_id)),
            tenant.delete(f"/agents/{agent_id}/skills/{verifier_id}"),
        )
        # Whichever ran first, the other saw its result: a reference to a deleted skill is impossible.
        assert {put.status_code, delete.status_code} in ({200, 409}, {400, 200}), (put.text, delete.text)
        methods = (await tenant.get(f"/agents/{agent_id}/caller-verification")).json()["data"]
        exists = (await tenant.get(f"/agents/{agent_id}/skills/{verifier_id}")).status_code == 200
        assert exists or methods == []


async def test_racing_creates_of_one_name_make_one_skill(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    responses = await asyncio.gather(
        *(
            tenant.post(f"/agents/{agent['id']}/skills", json={**HANG_UP, "name": name})
            for name in ("Hang up", "HANG UP", "hang up", "Hang  Up")
        )
    )
    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409]
    assert all(r.json()["code"] == "duplicate_name" for r in responses if r.status_code == 409)
    assert len((await tenant.get(f"/agents/{agent['id']}/skills")).json()["data"]) == 1
