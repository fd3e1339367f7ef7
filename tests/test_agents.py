"""Agents: the draft document, validation with field-named errors, If-Match, listing and deletion."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Tenant, TenantFactory

PROBLEM = "application/problem+json"


async def test_create_defaults_and_envelope(tenant: Tenant) -> None:
    response = await tenant.post("/agents", json={"name": "Acme Support"})
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True
    agent = body["data"]
    assert agent["id"].startswith("agt_")
    assert agent["status"] == "draft" and agent["version"] == 1
    assert agent["primaryLanguage"] == "en" and agent["languages"] == ["en"]
    assert agent["callControl"]["onNoResponseAction"] == "end"
    assert agent["afterHours"] == {"allowHumanTransfer": False, "number": None}
    assert response.headers["ETag"] == '"1"'


async def test_full_draft_is_stored_and_normalized(tenant: Tenant) -> None:
    agent = await tenant.create_agent(
        name="Tony's Pizza",
        persona={"role": "order taker", "goals": ["take orders"], "neverDo": ["promise delivery times"]},
        primaryLanguage="en-us",
        languages=["es", "en-US"],
        greeting="Tony's Pizza, what can I get you?",
        handoffConfig={
            "warm": True,
            "transferDestination": "(415) 555-0100",
            "transferRules": [
                {"label": "Billing", "when": "caller asks about a charge", "destination": "415-555-0111"},
                {"label": "PBX", "when": "caller wants the office", "destination": "sip:office@pbx.example.com"},
            ],
        },
        callControl={"maxCallSeconds": 600, "idleReminderSeconds": 8, "idleReminderCount": 1,
                     "onNoResponseAction": "transfer"},
        businessHours={"timezone": "America/Denver",
                       "weekly": {"monday": [{"open": "11:00", "close": "22:00"}]},
                       "holidays": [{"date": "2026-12-25", "name": "Christmas"}]},
        afterHours={"allowHumanTransfer": True, "number": "+14155550199"},
    )
    assert agent["primaryLanguage"] == "en-US"
    assert agent["languages"] == ["en-US", "es"]
    assert agent["handoffConfig"]["transferDestination"] == "+14155550100"
    assert agent["handoffConfig"]["transferRules"][0]["destination"] == "+14155550111"
    assert agent["handoffConfig"]["transferRules"][1]["destination"] == "sip:office@pbx.example.com"
    assert agent["businessHours"]["holidays"] == [{"date": "2026-12-25", "name": "Christmas"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x", "primaryLanguage": "klingonese"}, "primaryLanguage"),
        ({"name": "x", "languages": ["en", "zz-99-bad"]}, "languages[1]"),
        ({"name": "x", "handoffConfig": {"transferDestination": "12345"}}, "handoffConfig.transferDestination"),
        ({"name": "x", "handoffConfig": {"transferRules": [{"label": "a", "when": "b", "destination": "+1"}]}},
         "handoffConfig.transferRules[0].destination"),
        ({"name": "x", "businessHours": {"timezone": "Mars/Olympus"}}, "businessHours.timezone"),
        ({"name": "x", "businessHours": {"timezone": "UTC", "weekly": {"monday": [{"open": "9", "close": "17:00"}]}}},
         "businessHours.weekly.monday[0].open"),
        ({"name": "x", "callControl": {"onNoResponseAction": "explode"}}, "callControl.onNoResponseAction"),
        ({"name": "x", "callControl": {"maxCallSeconds": 5}}, "callControl.maxCallSeconds"),
        ({"name": "x", "afterHours": {"allowHumanTransfer": True}}, "afterHours.number"),
        ({"name": "x", "voiceMap": {"fr": "v"}}, "voiceMap"),
        ({"name": "x", "colour": "blue"}, "colour"),
        ({"name": 42}, "name"),
    ],
)
async def test_bad_bodies_name_the_field(tenant: Tenant, body: dict[str, object], field: str) -> None:
    response = await tenant.post("/agents", json=body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == 400 and problem["code"] == "validation_error"
    assert field in [e["field"] for e in problem["errors"]], problem
    assert problem["detail"] and problem["title"]


async def test_patch_replaces_top_level_fields_and_bumps_version(tenant: Tenant) -> None:
    agent = await tenant.create_agent(greeting="Hi")
    response = await tenant.patch(
        f"/agents/{agent['id']}",
        json={"greeting": None, "persona": {"role": "support"}},
        headers={"If-Match": '"1"'},
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["greeting"] is None and data["persona"]["role"] == "support"
    assert data["version"] == 2 and response.headers["ETag"] == '"2"'
    assert data["name"] == "Acme Support"


async def test_patch_validates_the_merged_draft(tenant: Tenant) -> None:
    agent = await tenant.create_agent(languages=["es"], voiceMap={"es": "v-es"})
    response = await tenant.patch(f"/agents/{agent['id']}", json={"languages": []})
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["voiceMap"]
    unchanged = (await tenant.get(f"/agents/{agent['id']}")).json()["data"]
    assert unchanged["version"] == 1 and unchanged["languages"] == ["en", "es"]


async def test_stale_if_match_gets_409_with_current_agent(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    await tenant.patch(f"/agents/{agent['id']}", json={"greeting": "a"}, headers={"If-Match": "1"})
    response = await tenant.patch(f"/agents/{agent['id']}", json={"greeting": "b"}, headers={"If-Match": '"1"'})
    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["code"] == "version_conflict"
    assert problem["currentVersion"] == 2
    assert problem["agent"]["greeting"] == "a" and problem["agent"]["version"] == 2


async def test_malformed_if_match_is_400(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    response = await tenant.patch(f"/agents/{agent['id']}", json={"greeting": "a"}, headers={"If-Match": "abc"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "If-Match"


async def test_concurrent_patches_with_same_if_match_exactly_one_wins(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    responses = await asyncio.gather(
        *[
            tenant.patch(f"/agents/{agent['id']}", json={"greeting": f"g{i}"}, headers={"If-Match": '"1"'})
            for i in range(8)
        ]
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 7, statuses
    winner = next(r for r in responses if r.status_code == 200).json()["data"]
    final = (await tenant.get(f"/agents/{agent['id']}")).json()["data"]
    assert final["version"] == 2 and final["greeting"] == winner["greeting"]


async def test_list_filters_searches_and_paginates(tenant: Tenant) -> None:
    names = ["Alpha Dental", "Beta Plumbing", "Gamma Dental", "Delta HVAC", "Epsilon 100%_Dental"]
    ids = [(await tenant.create_agent(name=n))["id"] for n in names]
    await tenant.post(f"/agents/{ids[1]}/publish")
    listed = (await tenant.get("/agents", params={"limit": 100})).json()
    assert [a["id"] for a in listed["data"]] == list(reversed(ids))
    published = (await tenant.get("/agents", params={"status": "published"})).json()["data"]
    assert [a["id"] for a in published] == [ids[1]]
    drafts = (await tenant.get("/agents", params={"status": "draft"})).json()["data"]
    assert ids[1] not in [a["id"] for a in drafts] and len(drafts) == 4
    dental = (await tenant.get("/agents", params={"search": "dental"})).json()["data"]
    assert {a["name"] for a in dental} == {"Alpha Dental", "Gamma Dental", "Epsilon 100%_Dental"}
    literal = (await tenant.get("/agents", params={"search": "100%_"})).json()["data"]
    assert [a["name"] for a in literal] == ["Epsilon 100%_Dental"]
    seen, cursor = [], None
    while True:
        params: dict[str, object] = {"limit": 2}
        if cursor:
            params["cursor"] = cursor
        body = (await tenant.get("/agents", params=params)).json()
        seen += [a["id"] for a in body["data"]]
        cursor = body["pagination"]["nextCursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"limit": 1000}, "limit"), ({"cursor": "%%%"}, "cursor"),
     ({"cursor": "WzFd"}, "cursor"), ({"status": "archived"}, "status")],
)
async def test_list_rejects_bad_paging(tenant: Tenant, params: dict[str, object], field: str) -> None:
    response = await tenant.get("/agents", params=params)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == field


async def test_delete_hides_the_agent(tenant: Tenant) -> None:
    agent = await tenant.create_agent()
    assert (await tenant.delete(f"/agents/{agent['id']}")).status_code == 200
    assert (await tenant.get(f"/agents/{agent['id']}")).status_code == 404
    assert (await tenant.delete(f"/agents/{agent['id']}")).status_code == 404
    listed = (await tenant.get("/agents")).json()["data"]
    assert agent["id"] not in [a["id"] for a in listed]


async def test_set_voice_for_primary_and_other_language(tenant: Tenant) -> None:
    agent = await tenant.create_agent(languages=["es"])
    response = await tenant.put(f"/agents/{agent['id']}/voice", json={"voiceId": "en_US-joe-medium"})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["defaultVoiceId"] == "en_US-joe-medium" and data["voiceMap"] == {"en": "en_US-joe-medium"}
    data = (await tenant.put(f"/agents/{agent['id']}/voice",
                             json={"voiceId": "es_ES-x", "language": "es"})).json()["data"]
    assert data["voiceMap"] == {"en": "en_US-joe-medium", "es": "es_ES-x"}
    assert data["defaultVoiceId"] == "en_US-joe-medium"
    bad = await tenant.put(f"/agents/{agent['id']}/voice", json={"voiceId": "x", "language": "fr"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "language"


async def test_other_organization_sees_404_everywhere(tenants: TenantFactory) -> None:
    owner, stranger = await tenants(), await tenants()
    agent = await owner.create_agent()
    for method, path, body in [
        ("GET", f"/agents/{agent['id']}", None),
        ("PATCH", f"/agents/{agent['id']}", {"greeting": "pwned"}),
        ("DELETE", f"/agents/{agent['id']}", None),
        ("PUT", f"/agents/{agent['id']}/voice", {"voiceId": "v"}),
        ("POST", f"/agents/{agent['id']}/publish", None),
    ]:
        response = await stranger.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
    assert agent["id"] not in [a["id"] for a in (await stranger.get("/agents")).json()["data"]]
    untouched = (await owner.get(f"/agents/{agent['id']}")).json()["data"]
    assert untouched["greeting"] is None and untouched["status"] == "draft"
