"""Skills on an agent and the skill-type catalog: docs/concepts/skills.md, the warm-transfer and take-orders
guides (their request bodies are sent verbatim), validation, uniqueness, pagination and tenant isolation."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from control_api.clock import iso
from control_api.compile import compile_draft
from control_api.db.tables import skills
from control_api.repositories import agents as agents_repo
from control_api.services import Services
from tests.conftest import Tenant, TenantFactory

SPEC_KEYS = {
    "name", "description", "skillType", "executionConfig", "enabled", "requiresVerifiedIdentity",
    "verificationLevel", "allowedFields", "requiresConfirmation", "stakes",
}

# docs/guides/warm-transfer.md
WARM_TRANSFER_SKILL = {
    "name": "Transfer to billing",
    "description": "Transfer the caller to a billing specialist when they ask about an invoice, charge, or refund.",
    "skillType": "transfer",
    "executionConfig": {"destination": "+14155550111"},
    "requiresConfirmation": True,
    "stakes": "medium",
}

# docs/guides/take-orders.md
DELIVERY_AREA_SKILL = {
    "name": "Check delivery area",
    "description": "Check whether the caller's delivery address is within our delivery zone before taking a "
    "delivery order.",
    "skillType": "geo",
    "executionConfig": {"action": "check_service_area", "originAddress": "120 Main St, Boulder, CO",
                        "radiusMiles": 5},
}
SUBMIT_ORDER_SKILL = {
    "name": "Submit order",
    "description": "Send the confirmed order to the kitchen. Use after the caller confirms items and (for "
    "delivery) the address is in range.",
    "skillType": "http_webhook",
    "executionConfig": {
        "method": "POST",
        "url": "https://tonyspizza.com/api/orders",
        "parameters": [
            {"name": "items", "description": "The ordered items with size and quantity"},
            {"name": "fulfillment", "description": "delivery or pickup"},
            {"name": "address", "description": "Delivery address, if delivery"},
            {"name": "phone", "description": "Callback number"},
        ],
    },
}

HANG_UP = {"name": "Hang up", "description": "End the call when the caller is done.", "skillType": "end_call"}


class ManualClock:
    """Wall time that moves only when the test moves it."""

    def __init__(self) -> None:
        self.at = datetime(2026, 3, 1, 12, 0, 0)
        self.mono = 0.0

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)
        self.mono += seconds


async def add_skill(tenant: Tenant, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await tenant.post(f"/agents/{agent_id}/skills", json=body)
    assert response.status_code == 201, response.text
    skill: dict[str, Any] = response.json()["data"]
    return skill


def assert_invalid(response: httpx.Response, field: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == "validation_error"
    fields = [e["field"] for e in body["errors"]]
    assert field in fields, fields
    return body


async def test_warm_transfer_guide_skill(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    response = await tenant.post(f"/agents/{agent['id']}/skills", json=WARM_TRANSFER_SKILL)
    assert response.status_code == 201, response.text
    skill = response.json()["data"]
    assert response.headers["Location"] == f"/api/v1/agents/{agent['id']}/skills/{skill['id']}"
    assert skill["id"].startswith("skl_") and skill["agentId"] == agent["id"]
    assert skill["name"] == "Transfer to billing"
    assert skill["skillType"] == "transfer"
    assert skill["executionConfig"] == {"destination": "+14155550111", "announce": None}
    assert skill["requiresConfirmation"] is True and skill["stakes"] == "medium"
    # The documented defaults.
    assert skill["enabled"] is True
    assert skill["requiresVerifiedIdentity"] is False
    assert skill["verificationLevel"] == "basic"
    assert skill["allowedFields"] is None
    assert skill["createdAt"].endswith("Z") and skill["updatedAt"] == skill["createdAt"]

    got = await tenant.get(f"/agents/{agent['id']}/skills/{skill['id']}")
    assert got.status_code == 200 and got.json() == {"success": True, "data": skill}
    listed = (await tenant.get(f"/agents/{agent['id']}/skills")).json()
    assert listed["data"] == [skill]
    assert listed["pagination"] == {"nextCursor": None, "hasMore": False, "limit": 20}


async def test_take_orders_guide_skills(tenant: Tenant) -> None:
    pizza = await tenant.post("/agents", json={"name": "Tony's Pizza", "primaryLanguage": "en"})
    agent_id = pizza.json()["data"]["id"]
    geo = await add_skill(tenant, agent_id, DELIVERY_AREA_SKILL)
    assert geo["executionConfig"] == {
        "action": "check_service_area", "origin": None, "originAddress": "120 Main St, Boulder, CO",
        "radiusMiles": 5,
    }
    order = await add_skill(tenant, agent_id, SUBMIT_ORDER_SKILL)
    config = order["executionConfig"]
    assert config["url"] == "https://tonyspizza.com/api/orders" and config["method"] == "POST"
    assert config["timeoutSeconds"] == 10 and config["headers"] is None
    assert [p["name"] for p in config["parameters"]] == ["items", "fulfillment", "address", "phone"]
    assert all(p["type"] == "string" and p["required"] is True for p in config["parameters"])
    listed = (await tenant.get(f"/agents/{agent_id}/skills")).json()["data"]
    assert [s["id"] for s in listed] == [geo["id"], order["id"]]


async def test_geo_accepts_coordinates_instead_of_an_address(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    skill = await add_skill(tenant, agent["id"], {
        **DELIVERY_AREA_SKILL,
        "executionConfig": {"action": "check_service_area", "origin": {"lat": 40.0150, "lng": -105.2705},
                            "radiusMiles": 7.5},
    })
    assert skill["executionConfig"]["origin"] == {"lat": 40.015, "lng": -105.2705}
    assert skill["executionConfig"]["originAddress"] is None


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("(415) 555-0111", "+14155550111"),
        ("415-555-0111", "+14155550111"),
        ("+44 20 7946 0958", "+442079460958"),
        ("sip:billing@pbx.example.com", "sip:billing@pbx.example.com"),
    ],
)
async def test_transfer_destination_is_normalized(tenant: Tenant, given: str, stored: str) -> None:
    agent = await tenant.create_agent()
    skill = await add_skill(tenant, agent["id"], {**WARM_TRANSFER_SKILL, "executionConfig": {"destination": given}})
    assert skill["executionConfig"]["destination"] == stored


async def test_transfer_destination_may_be_left_to_a_lookup_skill(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    skill = await add_skill(tenant, agent["id"], {**WARM_TRANSFER_SKILL, "executionConfig": {}})
    assert skill["executionConfig"]["destination"] is None


async def test_end_call_and_take_message_defaults(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    hang_up = await add_skill(tenant, agent["id"], HANG_UP)
    assert hang_up["executionConfig"] == {"goodbyeMessage": None}
    message = await add_skill(tenant, agent["id"], {
        "name": "Take a message", "description": "Take a message when nobody can help now.",
        "skillType": "take_message",
        "executionConfig": {"recipientEmail": "frontdesk@example.com"},
    })
    assert message["executionConfig"] == {
        "fields": ["name", "phone", "message"], "recipientEmail": "frontdesk@example.com", "webhookUrl": None,
    }


def _geo(**config: Any) -> dict[str, Any]:
    return {**DELIVERY_AREA_SKILL, "executionConfig": {"action": "check_service_area", **config}}


def _hook(**config: Any) -> dict[str, Any]:
    return {**SUBMIT_ORDER_SKILL, "executionConfig": {"url": "https://example.com/hook", **config}}


INVALID_SKILLS: list[tuple[str, dict[str, Any], str]] = [
    ("missing name", {k: v for k, v in HANG_UP.items() if k != "name"}, "name"),
    ("blank name", {**HANG_UP, "name": "   "}, "name"),
    ("missing description", {k: v for k, v in HANG_UP.items() if k != "description"}, "description"),
    ("unknown type", {**HANG_UP, "skillType": "teleport"}, "skillType"),
    ("missing type", {k: v for k, v in HANG_UP.items() if k != "skillType"}, "skillType"),
    ("zero radius", _geo(originAddress="1 Main St", radiusMiles=0), "executionConfig.radiusMiles"),
    ("huge radius", _geo(originAddress="1 Main St", radiusMiles=501), "executionConfig.radiusMiles"),
    ("no radius", _geo(originAddress="1 Main St"), "executionConfig.radiusMiles"),
    ("no origin", _geo(radiusMiles=5), "executionConfig.originAddress"),
    ("no config", {k: v for k, v in DELIVERY_AREA_SKILL.items() if k != "executionConfig"},
     "executionConfig.radiusMiles"),
    ("bad latitude", _geo(origin={"lat": 91, "lng": 0}, radiusMiles=5), "executionConfig.origin.lat"),
    ("bad longitude", _geo(origin={"lat": 0, "lng": -181}, radiusMiles=5), "executionConfig.origin.lng"),
    ("unknown action", _geo(action="find_nearest", originAddress="x", radiusMiles=5), "executionConfig.action"),
    ("missing action", {**DELIVERY_AREA_SKILL, "executionConfig": {"radiusMiles": 5, "originAddress": "x"}},
     "executionConfig.action"),
    ("ftp url", _hook(url="ftp://example.com/x"), "executionConfig.url"),
    ("javascript url", _hook(url="javascript:alert(1)"), "executionConfig.url"),
    ("no url", {**SUBMIT_ORDER_SKILL, "executionConfig": {"method": "POST"}}, "executionConfig.url"),
    ("long url", _hook(url="https://example.com/" + "a" * 2000), "executionConfig.url"),
    ("bad method", _hook(method="TRACE"), "executionConfig.method"),
    ("slow", _hook(timeoutSeconds=31), "executionConfig.timeoutSeconds"),
    ("too fast", _hook(timeoutSeconds=0.1), "executionConfig.timeoutSeconds"),
    ("bad parameter name", _hook(parameters=[{"name": "1st", "description": "x"}]),
     "executionConfig.parameters[0].name"),
    ("bad parameter type", _hook(parameters=[{"name": "a", "description": "x", "type": "date"}]),
     "executionConfig.parameters[0].type"),
    ("twice the same parameter", _hook(parameters=[{"name": "a", "description": "x"},
                                                   {"name": "a", "description": "y"}]),
     "executionConfig.parameters"),
    ("too many headers", _hook(headers={f"X-H{i}": "v" for i in range(21)}), "executionConfig.headers"),
    ("bad header name", _hook(headers={"Bad Header": "v"}), "executionConfig.headers"),
    ("header injection", _hook(headers={"X-Ok": "a\r\nHost: evil"}), "executionConfig.headers"),
    ("config of another type", {**WARM_TRANSFER_SKILL, "executionConfig": {"url": "https://x.example"}},
     "executionConfig.url"),
    ("bad destination", {**WARM_TRANSFER_SKILL, "executionConfig": {"destination": "call me"}},
     "executionConfig.destination"),
    ("bad sip uri", {**WARM_TRANSFER_SKILL, "executionConfig": {"destination": "sip:nohost"}},
     "executionConfig.destination"),
    ("config not an object", {**HANG_UP, "executionConfig": ["x"]}, "executionConfig"),
    ("bad email", {"name": "Msg", "description": "x", "skillType": "take_message",
                   "executionConfig": {"recipientEmail": "not-an-email"}}, "executionConfig.recipientEmail"),
    ("empty fields", {"name": "Msg", "description": "x", "skillType": "take_message",
                      "executionConfig": {"fields": []}}, "executionConfig.fields"),
    ("bad stakes", {**HANG_UP, "stakes": "extreme"}, "stakes"),
    ("bad level", {**HANG_UP, "verificationLevel": "max"}, "verificationLevel"),
    ("bad allowed field", {**HANG_UP, "allowedFields": ["ok", "not ok"]}, "allowedFields[1]"),
    ("id is not writable", {**HANG_UP, "id": "skl_mine"}, "id"),
    # docs/integrations/custom.md sends a top-level parametersSchema; here parameters live in executionConfig.
    ("unknown field", {**HANG_UP, "parametersSchema": {}}, "parametersSchema"),
]


@pytest.mark.parametrize(("body", "field"), [c[1:] for c in INVALID_SKILLS], ids=[c[0] for c in INVALID_SKILLS])
async def test_invalid_skill_names_the_field(tenant: Tenant, body: dict[str, Any], field: str) -> None:
    agent = await tenant.create_agent()
    assert_invalid(await tenant.post(f"/agents/{agent['id']}/skills", json=body), field)
    assert (await tenant.get(f"/agents/{agent['id']}/skills")).json()["data"] == []


async def test_every_config_error_is_reported_at_once(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    body = {**DELIVERY_AREA_SKILL, "executionConfig": {"originAddress": "x", "radiusMiles": -1}, "stakes": "x"}
    response = await tenant.post(f"/agents/{agent['id']}/skills", json=body)
    problem = assert_invalid(response, "stakes")
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"stakes", "executionConfig.radiusMiles", "executionConfig.action"}


async def test_names_are_unique_per_agent_ignoring_case(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    await add_skill(tenant, agent["id"], WARM_TRANSFER_SKILL)
    again = await tenant.post(
        f"/agents/{agent['id']}/skills", json={**WARM_TRANSFER_SKILL, "name": "TRANSFER  to Billing"}
    )
    assert again.status_code == 409, again.text
    assert again.headers["content-type"].startswith("application/problem+json")
    assert again.json()["code"] == "duplicate_name"
    # Another agent may use the name.
    other = await tenant.create_agent(name="Other")
    await add_skill(tenant, other["id"], WARM_TRANSFER_SKILL)
    # Renaming onto a taken name is a conflict too; changing only the case of one's own name is not.
    second = await add_skill(tenant, agent["id"], HANG_UP)
    clash = await tenant.patch(f"/agents/{agent['id']}/skills/{second['id']}", json={"name": "transfer to billing"})
    assert clash.status_code == 409 and clash.json()["code"] == "duplicate_name"
    recased = await tenant.patch(f"/agents/{agent['id']}/skills/{second['id']}", json={"name": "HANG UP"})
    assert recased.status_code == 200 and recased.json()["data"]["name"] == "HANG UP"


async def test_patch_replaces_top_level_fields_and_keeps_the_rest(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    skill = await add_skill(tenant, agent["id"], SUBMIT_ORDER_SKILL)
    path = f"/agents/{agent['id']}/skills/{skill['id']}"
    # docs/guides/caller-verification.md, "Gate a skill", verbatim.
    gated = await tenant.patch(path, json={"requiresVerifiedIdentity": True, "verificationLevel": "basic"})
    assert gated.status_code == 200, gated.text
    data = gated.json()["data"]
    assert data["requiresVerifiedIdentity"] is True and data["verificationLevel"] == "basic"
    assert {k: data[k] for k in ("name", "description", "skillType", "executionConfig", "stakes")} == {
        k: skill[k] for k in ("name", "description", "skillType", "executionConfig", "stakes")
    }
    # executionConfig is replaced whole, not merged, and revalidated.
    replaced = await tenant.patch(path, json={"executionConfig": {"url": "http://pos.local/orders"}})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["data"]["executionConfig"] == {
        "url": "http://pos.local/orders", "method": "POST", "parameters": [], "timeoutSeconds": 10,
        "headers": None,
    }
    assert_invalid(await tenant.patch(path, json={"executionConfig": {"url": "mailto:x@y.z"}}), "executionConfig.url")
    # allowedFields: a list caps what may be read back; null lifts the cap.
    capped = await tenant.patch(path, json={"allowedFields": ["status", "eta", "status"]})
    assert capped.json()["data"]["allowedFields"] == ["status", "eta"]
    lifted = await tenant.patch(path, json={"allowedFields": None})
    assert lifted.json()["data"]["allowedFields"] is None
    # A required field cannot be cleared.
    assert_invalid(await tenant.patch(path, json={"name": None}), "name")
    assert_invalid(await tenant.patch(path, json={"enabled": None}), "enabled")
    assert_invalid(await tenant.patch(path, json={"skillId": "x"}), "skillId")
    final = (await tenant.get(path)).json()["data"]
    assert final["executionConfig"]["url"] == "http://pos.local/orders" and final["name"] == "Submit order"


async def test_patch_revalidates_the_config_against_a_new_type(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    skill = await add_skill(tenant, agent["id"], DELIVERY_AREA_SKILL)
    path = f"/agents/{agent['id']}/skills/{skill['id']}"
    assert_invalid(await tenant.patch(path, json={"executionConfig": {"action": "check_service_area",
                                                                        "originAddress": "x",
                                                                        "radiusMiles": 0}}),
                   "executionConfig.radiusMiles")
    # The stored geo config is not a transfer config.
    assert_invalid(await tenant.patch(path, json={"skillType": "transfer"}), "executionConfig.action")
    assert_invalid(await tenant.patch(path, json={"skillType": "portal"}), "skillType")
    moved = await tenant.patch(
        path, json={"skillType": "transfer", "executionConfig": {"destination": "(415) 555-0111"}}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["data"]["skillType"] == "transfer"
    assert moved.json()["data"]["executionConfig"] == {"destination": "+14155550111", "announce": None}


async def test_delete_removes_the_skill(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    keep = await add_skill(tenant, agent["id"], HANG_UP)
    gone = await add_skill(tenant, agent["id"], WARM_TRANSFER_SKILL)
    deleted = await tenant.delete(f"/agents/{agent['id']}/skills/{gone['id']}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"success": True, "data": {"id": gone["id"], "deleted": True}}
    missing = await tenant.get(f"/agents/{agent['id']}/skills/{gone['id']}")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert (await tenant.delete(f"/agents/{agent['id']}/skills/{gone['id']}")).status_code == 404
    assert [s["id"] for s in (await tenant.get(f"/agents/{agent['id']}/skills")).json()["data"]] == [keep["id"]]
    # The name is free again.
    await add_skill(tenant, agent["id"], WARM_TRANSFER_SKILL)


async def test_pagination_walks_every_skill_once(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    created = [
        (await add_skill(tenant, agent["id"], {**HANG_UP, "name": f"Skill {i}"}))["id"] for i in range(5)
    ]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = (await tenant.get(f"/agents/{agent['id']}/skills", params=params)).json()
        pages += 1
        assert len(body["data"]) <= 2 and body["pagination"]["limit"] == 2
        seen += [s["id"] for s in body["data"]]
        cursor = body["pagination"]["nextCursor"]
        assert body["pagination"]["hasMore"] is (cursor is not None)
        if cursor is None:
            break
    assert pages == 3
    assert seen == created  # oldest first, no repeats, nothing skipped
    assert_invalid(await tenant.get(f"/agents/{agent['id']}/skills", params={"cursor": "nonsense"}), "cursor")
    assert_invalid(await tenant.get(f"/agents/{agent['id']}/skills", params={"limit": 0}), "limit")


async def test_skill_types_catalog(tenant: Tenant) -> None:
    response = await tenant.get("/skill-types")
    assert response.status_code == 200, response.text
    catalog = {t["type"]: t for t in response.json()["data"]}
    assert set(catalog) == {"transfer", "end_call", "http_webhook", "geo", "take_message"}
    for entry in catalog.values():
        assert entry["name"] and entry["description"]
        assert entry["executionConfigSchema"]["type"] == "object"
    geo = catalog["geo"]["executionConfigSchema"]
    assert {"action", "radiusMiles"} <= set(geo["required"])
    assert {"origin", "originAddress"} <= set(geo["properties"])
    hook = catalog["http_webhook"]["executionConfigSchema"]
    assert hook["required"] == ["url"]
    assert hook["properties"]["timeoutSeconds"]["default"] == 10
    assert set(hook["properties"]["method"]["enum"]) == {"GET", "POST", "PUT", "PATCH", "DELETE"}
    assert "destination" in catalog["transfer"]["executionConfigSchema"]["properties"]


async def test_scopes(tenants: TenantFactory) -> None:
    owner = await tenants()
    agent = await owner.create_agent()
    reader = await tenants(scopes=("skills:read",), org_name=owner.org_name)
    assert (await reader.get(f"/agents/{agent['id']}/skills")).status_code == 200
    assert (await reader.get("/skill-types")).status_code == 200
    denied = await reader.post(f"/agents/{agent['id']}/skills", json=HANG_UP)
    assert denied.status_code == 403 and denied.json()["scope"] == "skills:write"
    writer = await tenants(scopes=("skills:write",), org_name=owner.org_name)
    assert (await writer.post(f"/agents/{agent['id']}/skills", json=HANG_UP)).status_code == 201
    assert (await writer.get("/skill-types")).status_code == 403


async def test_other_organization_and_other_agent_get_404(tenants: TenantFactory) -> None:
    owner, stranger = await tenants(), await tenants()
    agent = await owner.create_agent()
    skill = await add_skill(owner, agent["id"], WARM_TRANSFER_SKILL)
    base, one = f"/agents/{agent['id']}/skills", f"/agents/{agent['id']}/skills/{skill['id']}"
    attempts = [
        await stranger.get(base),
        await stranger.post(base, json=HANG_UP),
        await stranger.get(one),
        await stranger.patch(one, json={"description": "pwned"}),
        await stranger.delete(one),
    ]
    for response in attempts:
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "not_found"
    # The stranger's own agent cannot reach the owner's skill either.
    theirs = await stranger.create_agent()
    assert (await stranger.get(f"/agents/{theirs['id']}/skills/{skill['id']}")).status_code == 404
    # Nor can another agent of the same organization.
    sibling = await owner.create_agent(name="Sibling")
    assert (await owner.get(f"/agents/{sibling['id']}/skills/{skill['id']}")).status_code == 404
    assert (await owner.delete(f"/agents/{sibling['id']}/skills/{skill['id']}")).status_code == 404
    assert (await owner.get("/agents/agt_nope/skills")).status_code == 404
    assert (await owner.get(one)).json()["data"] == skill
    assert [s["id"] for s in (await owner.get(base)).json()["data"]] == [skill["id"]]


async def test_deleted_agent_hides_its_skills(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    skill = await add_skill(tenant, agent["id"], HANG_UP)
    assert (await tenant.delete(f"/agents/{agent['id']}")).status_code == 200
    assert (await tenant.get(f"/agents/{agent['id']}/skills")).status_code == 404
    assert (await tenant.get(f"/agents/{agent['id']}/skills/{skill['id']}")).status_code == 404
    assert (await tenant.post(f"/agents/{agent['id']}/skills", json=WARM_TRANSFER_SKILL)).status_code == 404


async def test_stored_spec_is_what_the_runtime_reads(tenant: Tenant, services: Services) -> None:
    agent = await tenant.create_agent()
    for body in (WARM_TRANSFER_SKILL, DELIVERY_AREA_SKILL, SUBMIT_ORDER_SKILL, HANG_UP):
        await add_skill(tenant, agent["id"], body)
    async with services.engine.connect() as conn:
        rows = (await conn.execute(sa.select(skills).where(skills.c.agent_id == agent["id"]))).all()
        assert all(set(row.spec) == SPEC_KEYS for row in rows)
        assert {row.name_key for row in rows} == {
            "transfer to billing", "check delivery area", "submit order", "hang up"
        }
        assert {row.skill_type for row in rows} == {"transfer", "geo", "http_webhook", "end_call"}
        compiled = await compile_draft(conn, tenant.org_id, await agents_repo.get(conn, tenant.org_id, agent["id"]))
    by_name = {s.name: s for s in compiled.skills}
    transfer = by_name["Transfer to billing"]
    assert transfer.requires_confirmation and transfer.stakes == "medium"
    assert transfer.execution_config["destination"] == "+14155550111"
    assert by_name["Check delivery area"].execution_config["radiusMiles"] == 5
    assert [s.name for s in compiled.skills] == [
        "Transfer to billing", "Check delivery area", "Submit order", "Hang up"
    ]


async def test_skill_changes_mark_the_agent_updated(tenant: Tenant, services: Services) -> None:
    clock = ManualClock()
    services.clock = clock
    agent = await tenant.create_agent()
    assert agent["updatedAt"] == iso(clock.at)

    async def agent_updated_at() -> str:
        return str((await tenant.get(f"/agents/{agent['id']}")).json()["data"]["updatedAt"])

    clock.advance(60)
    skill = await add_skill(tenant, agent["id"], HANG_UP)
    assert skill["createdAt"] == iso(clock.at) and await agent_updated_at() == iso(clock.at)
    clock.advance(60)
    patched = (await tenant.patch(f"/agents/{agent['id']}/skills/{skill['id']}", json={"stakes": "high"})).json()
    assert patched["data"]["updatedAt"] == iso(clock.at) and patched["data"]["createdAt"] == skill["createdAt"]
    assert await agent_updated_at() == iso(clock.at)
    clock.advance(60)
    await tenant.delete(f"/agents/{agent['id']}/skills/{skill['id']}")
    assert await agent_updated_at() == iso(clock.at)
