"""Skills on an agent and the skill-type catalog: docs/concepts/skills.md, the warm-transfer and take-orders
guides and docs/integrations/custom.md (their request bodies are sent verbatim), arguments
(parametersSchema), validation, uniqueness, pagination and tenant isolation."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from control_api.agent_store import DatabaseAgentSource
from control_api.clock import iso
from control_api.compile import compile_draft
from control_api.db.tables import skills
from control_api.ids import new_id
from control_api.repositories import agents as agents_repo
from control_api.repositories import skills as skills_repo
from control_api.services import Services
from tests.conftest import Tenant, TenantFactory

SPEC_KEYS = {
    "name", "description", "skillType", "executionConfig", "parametersSchema", "enabled",
    "requiresVerifiedIdentity", "verificationLevel", "allowedFields", "requiresConfirmation", "stakes",
}
NO_ARGUMENTS = {"type": "object", "properties": {}, "required": []}

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

# docs/integrations/custom.md, "Create the skill" (the curl and Python bodies are the same document).
WARRANTY_SKILL: dict[str, Any] = {
    "name": "Check warranty status",
    "description": "Look up a warranty by serial number.",
    "skillType": "http_webhook",
    "parametersSchema": {
        "type": "object",
        "properties": {
            "serial_number": {"type": "string", "description": "Product serial number"}
        },
        "required": ["serial_number"],
    },
    "requiredParams": ["serial_number"],
    "executionConfig": {
        "url": "https://api.yourco.com/warranty/lookup",
        "method": "POST",
        "headers": {"X-Api-Key": "…"},
        "timeout_ms": 4000,
    },
}
WARRANTY_ARGUMENTS = {
    "type": "object",
    "properties": {"serial_number": {"type": "string", "description": "Product serial number"}},
    "required": ["serial_number"],
}
ORDER_ARGUMENTS = {
    "type": "object",
    "properties": {
        "items": {"type": "string", "description": "The ordered items with size and quantity"},
        "fulfillment": {"type": "string", "description": "delivery or pickup"},
        "address": {"type": "string", "description": "Delivery address, if delivery"},
        "phone": {"type": "string", "description": "Callback number"},
    },
    "required": ["items", "fulfillment", "address", "phone"],
}


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
    assert set(geo["parametersSchema"]["properties"]) == {"address", "latitude", "longitude"}
    order = await add_skill(tenant, agent_id, SUBMIT_ORDER_SKILL)
    # The parameters list becomes the skill's parametersSchema: the arguments are stored once.
    assert order["executionConfig"] == {
        "url": "https://tonyspizza.com/api/orders", "method": "POST", "timeoutMs": 10000, "headers": None,
    }
    assert order["parametersSchema"] == ORDER_ARGUMENTS
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


async def test_custom_integration_guide_skill(tenant: Tenant, services: Services) -> None:
    """docs/integrations/custom.md: top-level parametersSchema and requiredParams, timeout_ms in the config."""
    agent = await tenant.create_agent()
    skill = await add_skill(tenant, agent["id"], WARRANTY_SKILL)
    assert skill["parametersSchema"] == WARRANTY_ARGUMENTS
    assert "requiredParams" not in skill  # merged into parametersSchema.required
    # One spelling of the timeout is stored and returned: whole milliseconds.
    assert skill["executionConfig"] == {
        "url": "https://api.yourco.com/warranty/lookup", "method": "POST", "timeoutMs": 4000,
        "headers": {"X-Api-Key": "…"},
    }
    assert set(skill) == SPEC_KEYS | {"id", "agentId", "createdAt", "updatedAt"}
    got = (await tenant.get(f"/agents/{agent['id']}/skills/{skill['id']}")).json()["data"]
    assert got == skill
    # What comes back can be sent again (a GET-edit-POST round trip) and means the same.
    again = await add_skill(tenant, agent["id"], {
        k: v for k, v in skill.items() if k in SPEC_KEYS and k != "name"
    } | {"name": "Check warranty again"})
    assert again["parametersSchema"] == skill["parametersSchema"]
    assert again["executionConfig"] == skill["executionConfig"]
    # The compiled draft gives the runtime the arguments as a tool schema.
    draft = await DatabaseAgentSource(services.engine).draft(tenant.org_id, agent["id"])
    assert draft is not None
    assert draft.skills[0].parameters_schema == WARRANTY_ARGUMENTS
    report = (await tenant.get(f"/agents/{agent['id']}/prepublish-report")).json()["data"]
    assert report["dataFlows"][0]["fields"] == ["serial_number"]


async def test_required_params_are_merged_into_required(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    schema = {
        "type": "object",
        "properties": {
            "serial_number": {"type": "string"},
            "purchased_on": {"type": "string", "format": "date", "description": "Date of purchase"},
            "channel": {"type": "string", "enum": ["store", "online"]},
            "quantity": {"type": "integer", "enum": [1, 2, 3]},
            "photos": {"type": "array", "items": {"type": "string", "format": "uri"}},
            "extra": {"type": "object"},
        },
        "required": ["channel", "channel"],
    }
    skill = await add_skill(tenant, agent["id"], {
        **WARRANTY_SKILL, "parametersSchema": schema, "requiredParams": ["quantity", "serial_number"],
    })
    # Every keyword given is kept; `required` is the union, in the order of `properties`.
    assert skill["parametersSchema"] == {**schema, "required": ["serial_number", "channel", "quantity"]}
    # requiredParams alone applies to the derived arguments.
    message = await add_skill(tenant, agent["id"], {
        "name": "Msg", "description": "Take a message", "skillType": "take_message", "requiredParams": ["phone"],
    })
    assert message["parametersSchema"]["required"] == ["phone"]


async def test_timeout_spellings_normalize_to_milliseconds(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    for i, (config, stored) in enumerate([
        ({}, 10000), ({"timeout_ms": 100}, 100), ({"timeoutMs": 30000}, 30000),
        ({"timeoutSeconds": 2.5}, 2500), ({"timeoutSeconds": 0.5}, 500), ({"timeoutSeconds": 30}, 30000),
    ]):
        skill = await add_skill(tenant, agent["id"], {**_hook(**config), "name": f"Hook {i}"})
        assert skill["executionConfig"]["timeoutMs"] == stored, config
        assert not {"timeout_ms", "timeoutSeconds"} & set(skill["executionConfig"])


async def test_parameters_list_and_schema(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    typed = await add_skill(tenant, agent["id"], _hook(parameters=[
        {"name": "order_number", "description": "The order", "type": "integer"},
        {"name": "note", "description": "Anything else", "required": False},
    ]))
    assert typed["parametersSchema"] == {
        "type": "object",
        "properties": {"order_number": {"type": "integer", "description": "The order"},
                       "note": {"type": "string", "description": "Anything else"}},
        "required": ["order_number"],
    }
    assert "parameters" not in typed["executionConfig"]
    # Both forms may be sent when they say the same thing.
    both = await add_skill(tenant, agent["id"], {
        **WARRANTY_SKILL, "name": "Both",
        "executionConfig": {"url": "https://x.example", "parameters": [
            {"name": "serial_number", "description": "Product serial number"}]},
    })
    assert both["parametersSchema"] == WARRANTY_ARGUMENTS
    # A webhook with neither takes no arguments.
    bare = await add_skill(tenant, agent["id"], {**_hook(), "name": "Bare"})
    assert bare["parametersSchema"] == NO_ARGUMENTS


async def test_every_skill_type_has_arguments(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    transfer = await add_skill(tenant, agent["id"], WARM_TRANSFER_SKILL)
    assert list(transfer["parametersSchema"]["properties"]) == ["reason"]
    assert transfer["parametersSchema"]["properties"]["reason"]["type"] == "string"
    assert transfer["parametersSchema"]["required"] == []
    hang_up = await add_skill(tenant, agent["id"], HANG_UP)
    assert list(hang_up["parametersSchema"]["properties"]) == ["reason"]
    geo = await add_skill(tenant, agent["id"], DELIVERY_AREA_SKILL)
    assert {k: v["type"] for k, v in geo["parametersSchema"]["properties"].items()} == {
        "address": "string", "latitude": "number", "longitude": "number",
    }
    message = await add_skill(tenant, agent["id"], {
        "name": "Msg", "description": "Take a message", "skillType": "take_message",
        "executionConfig": {"fields": ["name", "callback_number", "message"]},
    })
    assert {k: v["type"] for k, v in message["parametersSchema"]["properties"].items()} == {
        "name": "string", "callback_number": "string", "message": "string",
    }
    # A schema may be given on any type: a transfer that takes a department, a geo check reworded.
    routed = await add_skill(tenant, agent["id"], {
        **WARM_TRANSFER_SKILL, "name": "Routed",
        "parametersSchema": {"type": "object", "properties": {
            "department": {"type": "string", "enum": ["billing", "support"]}}, "required": ["department"]},
    })
    assert routed["parametersSchema"]["required"] == ["department"]
    reworded = {"type": "object", "properties": {"address": {"type": "string", "description": "Delivery address"},
                                                 "latitude": {"type": "number"}, "longitude": {"type": "number"}},
                "required": ["address"]}
    checked = await add_skill(tenant, agent["id"], {**DELIVERY_AREA_SKILL, "name": "Geo 2",
                                                     "parametersSchema": reworded})
    assert checked["parametersSchema"] == reworded


async def test_patch_keeps_written_arguments_and_rederives_derived_ones(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    written = await add_skill(tenant, agent["id"], WARRANTY_SKILL)
    path = f"/agents/{agent['id']}/skills/{written['id']}"
    # A schema the client wrote survives a new executionConfig...
    moved = await tenant.patch(path, json={"executionConfig": {"url": "https://v2.yourco.com/warranty"}})
    assert moved.status_code == 200, moved.text
    assert moved.json()["data"]["parametersSchema"] == WARRANTY_ARGUMENTS
    assert moved.json()["data"]["executionConfig"]["timeoutMs"] == 10000
    # ...and requiredParams alone adds to it.
    optional = {**WARRANTY_ARGUMENTS, "required": []}
    loosened = await tenant.patch(path, json={"parametersSchema": optional})
    assert loosened.json()["data"]["parametersSchema"] == optional
    required = await tenant.patch(path, json={"requiredParams": ["serial_number"]})
    assert required.json()["data"]["parametersSchema"] == WARRANTY_ARGUMENTS
    # A parameters list replaces it; null returns the skill to the derived arguments.
    relisted = await tenant.patch(path, json={"executionConfig": {
        "url": "https://x.example", "parameters": [{"name": "sku", "description": "SKU"}]}})
    assert list(relisted.json()["data"]["parametersSchema"]["properties"]) == ["sku"]
    reset = await tenant.patch(path, json={"parametersSchema": None})
    assert reset.json()["data"]["parametersSchema"] == NO_ARGUMENTS
    assert_invalid(await tenant.patch(path, json={"parametersSchema": {"type": "object", "properties": {
        "serial_number": {"type": "uuid"}}}}), "parametersSchema.properties.serial_number.type")
    assert_invalid(await tenant.patch(path, json={"requiredParams": ["nope"]}), "requiredParams[0]")

    # Derived arguments follow the config and the type.
    message = await add_skill(tenant, agent["id"], {"name": "Msg", "description": "x", "skillType": "take_message"})
    message_path = f"/agents/{agent['id']}/skills/{message['id']}"
    refielded = await tenant.patch(message_path, json={"executionConfig": {"fields": ["name", "reason"]}})
    assert list(refielded.json()["data"]["parametersSchema"]["properties"]) == ["name", "reason"]
    retyped = await tenant.patch(message_path, json={"skillType": "end_call", "executionConfig": {}})
    assert retyped.status_code == 200, retyped.text
    assert list(retyped.json()["data"]["parametersSchema"]["properties"]) == ["reason"]


async def test_skills_stored_before_arguments_existed_are_read_in_todays_form(
    tenant: Tenant, services: Services
) -> None:
    agent = await tenant.create_agent()
    legacy = {  # a row as the previous release stored it
        "name": "Order lookup", "description": "Look up an order", "skillType": "http_webhook",
        "executionConfig": {
            "url": "https://api.example.com/orders", "method": "POST", "timeoutSeconds": 4, "headers": None,
            "parameters": [{"name": "order_number", "description": "the order", "type": "string", "required": True}],
        },
        "enabled": True, "requiresVerifiedIdentity": False, "verificationLevel": "basic", "allowedFields": None,
        "requiresConfirmation": False, "stakes": "low",
    }
    old_message = {**legacy, "name": "Old message", "skillType": "take_message",
                   "executionConfig": {"fields": ["order.status"], "recipientEmail": None, "webhookUrl": None}}
    ids = [new_id("skl"), new_id("skl")]
    async with services.engine.begin() as conn:
        for skill_id, spec in zip(ids, (legacy, old_message), strict=True):
            await skills_repo.insert(conn, org_id=tenant.org_id, agent_id=agent["id"], skill_id=skill_id,
                                     spec=spec, now=services.clock.now())
    expected_arguments = {"type": "object", "properties": {
        "order_number": {"type": "string", "description": "the order"}}, "required": ["order_number"]}
    got = (await tenant.get(f"/agents/{agent['id']}/skills/{ids[0]}")).json()["data"]
    assert got["parametersSchema"] == expected_arguments
    assert got["executionConfig"] == {"url": "https://api.example.com/orders", "method": "POST",
                                      "timeoutMs": 4000, "headers": None}
    listed = (await tenant.get(f"/agents/{agent['id']}/skills")).json()["data"]
    assert listed[0] == got
    # A row today's rules reject still reads, with no arguments.
    assert listed[1]["parametersSchema"] == NO_ARGUMENTS
    draft = await DatabaseAgentSource(services.engine).draft(tenant.org_id, agent["id"])
    assert draft is not None and draft.skills[0].parameters_schema == expected_arguments
    # An edit stores the upgraded form.
    patched = await tenant.patch(f"/agents/{agent['id']}/skills/{ids[0]}", json={"stakes": "medium"})
    assert patched.json()["data"]["parametersSchema"] == expected_arguments
    async with services.engine.connect() as conn:
        row = await skills_repo.get(conn, tenant.org_id, agent["id"], ids[0])
    assert set(row.spec) == SPEC_KEYS and row.spec["executionConfig"]["timeoutMs"] == 4000


def _geo(**config: Any) -> dict[str, Any]:
    return {**DELIVERY_AREA_SKILL, "executionConfig": {"action": "check_service_area", **config}}


def _hook(**config: Any) -> dict[str, Any]:
    return {**SUBMIT_ORDER_SKILL, "executionConfig": {"url": "https://example.com/hook", **config}}


def _args(schema: Any) -> dict[str, Any]:
    return {**WARRANTY_SKILL, "parametersSchema": schema, "requiredParams": []}


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
    ("slow in ms", _hook(timeout_ms=30_001), "executionConfig.timeout_ms"),
    ("too fast in ms", _hook(timeout_ms=99), "executionConfig.timeout_ms"),
    ("fractional ms", _hook(timeoutMs=1500.5), "executionConfig.timeoutMs"),
    ("two timeouts", _hook(timeout_ms=4000, timeoutSeconds=4), "executionConfig.timeoutSeconds"),
    ("two spellings of one timeout", _hook(timeoutMs=4000, timeout_ms=4000), "executionConfig.timeout_ms"),
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
    ("unknown field", {**HANG_UP, "parameterSchema": {}}, "parameterSchema"),
    ("message field not an identifier", {"name": "Msg", "description": "x", "skillType": "take_message",
                                         "executionConfig": {"fields": ["order.status"]}},
     "executionConfig.fields[0]"),
    *[(f"parametersSchema: {name}", _args(schema), field) for name, schema, field in [
        ("not an object", ["serial_number"], "parametersSchema"),
        ("empty", {}, "parametersSchema.type"),
        ("not of type object", {"type": "array", "items": {"type": "string"}}, "parametersSchema.type"),
        ("flat map of properties", {"serial_number": {"type": "string"}}, "parametersSchema.serial_number"),
        ("unknown type", {"type": "object", "properties": {"serial_number": {"type": "date"}}},
         "parametersSchema.properties.serial_number.type"),
        ("untyped property", {"type": "object", "properties": {"serial_number": {"description": "x"}}},
         "parametersSchema.properties.serial_number.type"),
        ("property name with a space", {"type": "object", "properties": {"serial number": {"type": "string"}}},
         "parametersSchema.properties.serial number"),
        ("property name with a digit first", {"type": "object", "properties": {"1st": {"type": "string"}}},
         "parametersSchema.properties.1st"),
        ("property name too long", {"type": "object", "properties": {"a" * 65: {"type": "string"}}},
         "parametersSchema.properties." + "a" * 65),
        ("array without items", {"type": "object", "properties": {"items": {"type": "array"}}},
         "parametersSchema.properties.items.items"),
        ("items on a string", {"type": "object", "properties": {"s": {"type": "string", "items": {"type": "string"}}}},
         "parametersSchema.properties.s.items"),
        ("bad items", {"type": "object", "properties": {"l": {"type": "array", "items": {"type": "date"}}}},
         "parametersSchema.properties.l.items.type"),
        ("enum of the wrong type", {"type": "object", "properties": {"n": {"type": "integer", "enum": [1, "2"]}}},
         "parametersSchema.properties.n.enum[1]"),
        ("boolean enum on an integer", {"type": "object", "properties": {"n": {"type": "integer", "enum": [True]}}},
         "parametersSchema.properties.n.enum[0]"),
        ("empty enum", {"type": "object", "properties": {"s": {"type": "string", "enum": []}}},
         "parametersSchema.properties.s.enum"),
        ("enum on an object", {"type": "object", "properties": {"o": {"type": "object", "enum": ["x"]}}},
         "parametersSchema.properties.o.enum"),
        ("format on a number", {"type": "object", "properties": {"n": {"type": "number", "format": "date"}}},
         "parametersSchema.properties.n.format"),
        ("unsupported keyword", {"type": "object", "properties": {"s": {"type": "string", "minLength": 3}}},
         "parametersSchema.properties.s.minLength"),
        ("unsupported top-level keyword", {"type": "object", "properties": {}, "additionalProperties": True},
         "parametersSchema.additionalProperties"),
        ("required names a missing property", {"type": "object", "properties": {"a": {"type": "string"}},
                                               "required": ["a", "b"]}, "parametersSchema.required[1]"),
        ("too many properties", {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(51)}},
         "parametersSchema.properties"),
    ]],
    ("requiredParams names a missing property", {**WARRANTY_SKILL, "requiredParams": ["serial_number", "sku"]},
     "requiredParams[1]"),
    ("requiredParams without arguments", {**HANG_UP, "requiredParams": ["sku"]}, "requiredParams[0]"),
    ("requiredParams not a list", {**WARRANTY_SKILL, "requiredParams": "serial_number"}, "requiredParams"),
    ("parameters list disagrees with parametersSchema",
     {**WARRANTY_SKILL, "executionConfig": {"url": "https://x.example",
                                            "parameters": [{"name": "sku", "description": "SKU"}]}},
     "parametersSchema"),
    ("geo arguments renamed", {**DELIVERY_AREA_SKILL, "parametersSchema": {
        "type": "object", "properties": {"zip": {"type": "string"}}}}, "parametersSchema.properties"),
    ("message arguments not the fields", {"name": "Msg", "description": "x", "skillType": "take_message",
                                          "parametersSchema": {"type": "object",
                                                               "properties": {"name": {"type": "string"}}}},
     "parametersSchema.properties"),
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
    # executionConfig is replaced whole, not merged, and revalidated; the arguments are not part of it.
    replaced = await tenant.patch(path, json={"executionConfig": {"url": "http://pos.local/orders"}})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["data"]["executionConfig"] == {
        "url": "http://pos.local/orders", "method": "POST", "timeoutMs": 10000, "headers": None,
    }
    assert replaced.json()["data"]["parametersSchema"] == ORDER_ARGUMENTS
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
    assert hook["properties"]["timeoutMs"]["default"] == 10000
    assert hook["properties"]["timeoutMs"]["minimum"] == 100 and hook["properties"]["timeoutMs"]["maximum"] == 30000
    assert "timeoutSeconds" in hook["properties"] and "parameters" in hook["properties"]
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
    created = [
        await add_skill(tenant, agent["id"], body)
        for body in (WARM_TRANSFER_SKILL, DELIVERY_AREA_SKILL, SUBMIT_ORDER_SKILL, HANG_UP)
    ]
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
    # Every skill reaches the runtime with its arguments, as the API returned them.
    draft = await DatabaseAgentSource(services.engine).draft(tenant.org_id, agent["id"])
    assert draft is not None
    assert [s.parameters_schema for s in draft.skills] == [s["parametersSchema"] for s in created]
    assert by_name["Submit order"].parameters_schema == ORDER_ARGUMENTS


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
