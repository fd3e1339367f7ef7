"""Each executor against a real loopback HTTP server; geo with coordinates and ZIPs; transfer planning."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from control_api.net_guard import guarded_client
from runtime.brain import executors, geo
from runtime.brain.tools import TransferDenied, TransferPlan, announcement, plan_transfer
from tests.test_brain_support import Loopback, Reply, agent, loopback_client


@pytest.fixture
async def server() -> AsyncIterator[Loopback]:
    async with Loopback().running() as lb:
        yield lb


# --- http_webhook ------------------------------------------------------------------------------------


async def test_post_sends_json_body_and_headers(server: Loopback) -> None:
    server.routes["/orders"] = Reply(201, {"orderId": "o_1", "eta": 30})
    config = {"url": server.url("/orders"), "method": "POST", "headers": {"X-Api-Key": "k1"}, "timeoutMs": 5000}
    outcome = await executors.call_webhook(config, {"items": "large supreme", "qty": 2},
                                           client_factory=loopback_client, max_timeout_s=5)
    assert outcome == executors.ToolOutcome("ok", {"orderId": "o_1", "eta": 30}, 201)
    [seen] = server.seen
    assert (seen.method, seen.json, seen.headers["x-api-key"]) == ("POST", {"items": "large supreme", "qty": 2}, "k1")
    assert seen.query == {}


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_get_and_delete_send_query_parameters(server: Loopback, method: str) -> None:
    server.routes["/orders"] = Reply(200, {"status": "shipped"})
    outcome = await executors.call_webhook(
        {"url": server.url("/orders"), "method": method}, {"order_id": "A1", "rush": True, "tags": ["a", "b"]},
        client_factory=loopback_client, max_timeout_s=5,
    )
    assert outcome.ok and outcome.result == {"status": "shipped"}
    [seen] = server.seen
    assert seen.method == method and seen.json is None
    assert seen.query == {"order_id": ["A1"], "rush": ["true"], "tags": ["a", "b"]}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
async def test_put_and_patch_send_a_body(server: Loopback, method: str) -> None:
    server.routes["/x"] = Reply(200, None, text="")
    outcome = await executors.call_webhook({"url": server.url("/x"), "method": method}, {"a": 1},
                                           client_factory=loopback_client, max_timeout_s=5)
    assert outcome.result == {"ok": True}  # an empty 2xx body
    assert server.seen[0].json == {"a": 1}


async def test_text_bodies_come_back_as_text(server: Loopback) -> None:
    server.routes["/t"] = Reply(200, text="We open at nine.")
    outcome = await executors.call_webhook({"url": server.url("/t"), "method": "GET"}, {},
                                           client_factory=loopback_client, max_timeout_s=5)
    assert outcome.result == {"text": "We open at nine."}


@pytest.mark.parametrize("status", [400, 404, 500, 503])
async def test_non_2xx_is_an_error_without_the_body(server: Loopback, status: int) -> None:
    server.routes["/orders"] = Reply(status, {"secret": "stack trace"})
    outcome = await executors.call_webhook({"url": server.url("/orders")}, {}, client_factory=loopback_client,
                                           max_timeout_s=5)
    assert (outcome.status, outcome.http_status) == ("error", status)
    assert outcome.result == {"error": f"the service answered HTTP {status}"}


async def test_slow_service_times_out_at_the_skill_timeout(server: Loopback) -> None:
    server.routes["/slow"] = Reply(200, {"late": True}, delay_s=5)
    started = time.perf_counter()
    outcome = await executors.call_webhook({"url": server.url("/slow"), "timeoutMs": 300}, {},
                                           client_factory=loopback_client, max_timeout_s=5)
    assert outcome.status == "timeout" and "0.3 s" in outcome.result["error"]
    assert time.perf_counter() - started < 2


async def test_the_brain_tool_timeout_caps_the_skill_timeout(server: Loopback) -> None:
    server.routes["/slow"] = Reply(200, {}, delay_s=5)
    outcome = await executors.call_webhook({"url": server.url("/slow"), "timeoutMs": 30000}, {},
                                           client_factory=loopback_client, max_timeout_s=0.2)
    assert outcome.status == "timeout" and "0.2 s" in outcome.result["error"]


async def test_the_guarded_client_refuses_loopback_unless_allow_listed(server: Loopback) -> None:
    server.routes["/orders"] = Reply(200, {"status": "shipped"})
    outcome = await executors.call_webhook({"url": server.url("/orders")}, {},
                                           client_factory=lambda: guarded_client(frozenset()), max_timeout_s=5)
    assert outcome.status == "error" and outcome.result["error"] == "could not reach the service"
    assert "private or reserved" in outcome.result["detail"]
    assert server.seen == []


async def test_without_a_client_the_tool_reports_it() -> None:
    outcome = await executors.call_webhook({"url": "https://example.com/x"}, {}, client_factory=None, max_timeout_s=5)
    assert outcome.status == "error" and "no HTTP client" in outcome.result["error"]


async def test_unreachable_service_is_an_error() -> None:
    outcome = await executors.call_webhook({"url": "http://127.0.0.1:9/x"}, {}, client_factory=loopback_client,
                                           max_timeout_s=2)
    assert outcome.status == "error" and outcome.result["error"] == "could not reach the service"


# --- geo -----------------------------------------------------------------------------------------------

BOULDER = {"lat": 40.0150, "lng": -105.2705}
AREA = {"action": "check_service_area", "origin": BOULDER, "radiusMiles": 5}


def test_haversine_matches_known_distances() -> None:
    nyc, la = geo.Point(40.7128, -74.0060, "c"), geo.Point(34.0522, -118.2437, "c")
    assert geo.haversine_miles(nyc, la) == pytest.approx(2445.6, abs=1.0)
    assert geo.haversine_miles(nyc, nyc) == 0
    assert geo.haversine_miles(geo.Point(0, 0, "c"), geo.Point(0, 180, "c")) == pytest.approx(12436.7, abs=1)


def test_coordinates_inside_and_outside_the_radius() -> None:
    inside = executors.check_service_area(AREA, {"latitude": 40.02, "longitude": -105.25})
    assert inside.ok and inside.result["withinServiceArea"] is True and inside.result["locatedBy"] == "coordinates"
    denver = executors.check_service_area(AREA, {"latitude": 39.7392, "longitude": -104.9903})
    assert denver.result["withinServiceArea"] is False
    assert denver.result["distanceMiles"] == pytest.approx(24.0, abs=1.0)


def test_addresses_are_placed_by_their_zip() -> None:
    near = executors.check_service_area(AREA, {"address": "1855 Pearl St, Boulder, CO 80302"})
    assert near.ok and near.result["withinServiceArea"] is True and near.result["locatedBy"] == "zip 80302"
    far = executors.check_service_area(AREA, {"address": "350 5th Ave, New York, NY 10118-0110"})
    assert far.result["withinServiceArea"] is False and far.result["distanceMiles"] > 1500
    # The street number is five digits too: the ZIP is the last group.
    assert geo.zip_in("12345 Main St, Boulder CO 80302") == "80302"


def test_origin_address_is_placed_by_its_zip() -> None:
    config = {"action": "check_service_area", "originAddress": "120 Main St, Boulder, CO 80302", "radiusMiles": 5}
    outcome = executors.check_service_area(config, {"latitude": 40.02, "longitude": -105.26})
    assert outcome.ok and outcome.result["withinServiceArea"] is True
    no_zip = {**config, "originAddress": "120 Main St, Boulder"}
    bad = executors.check_service_area(no_zip, {"latitude": 40, "longitude": -105})
    assert bad.status == "error" and "originAddress has no US ZIP" in bad.result["error"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [({"address": "200 Pearl St"}, "5-digit US ZIP code"), ({}, "ZIP code, or for the latitude"),
     ({"address": "1 Nowhere Rd 00000"}, "00000 is not a US ZIP code"),
     ({"latitude": 95, "longitude": 0}, "within -90..90")],
)
def test_unplaceable_locations_say_what_to_ask_for(arguments: dict[str, object], message: str) -> None:
    outcome = executors.check_service_area(AREA, arguments)
    assert outcome.status == "error" and message in outcome.result["error"]


def test_zip_lookup_is_offline() -> None:
    # The table ships inside the package: the lookup works with no network (this sandbox has none).
    point = geo.from_zip("10001")
    assert point.lat == pytest.approx(40.75, abs=0.1) and point.lng == pytest.approx(-74.0, abs=0.1)


# --- take_message ----------------------------------------------------------------------------------


async def test_take_message_delivers_to_the_webhook(server: Loopback) -> None:
    server.routes["/messages"] = Reply(202, {"queued": True})
    config = {"fields": ["name", "phone", "message"], "webhookUrl": server.url("/messages"),
              "recipientEmail": "team@tonys.example"}
    outcome = await executors.take_message(
        config, {"name": "Ann", "phone": "+14155550123", "message": "Call me back"},
        client_factory=loopback_client, max_timeout_s=5, context={"agentId": "agt", "conversationId": "cnv"},
    )
    fields = {"name": "Ann", "phone": "+14155550123", "message": "Call me back"}
    assert outcome.result == {"taken": True, "fields": fields, "recipientEmail": "team@tonys.example",
                              "webhook": "delivered"}
    assert server.seen[0].json == {"type": "message", "agentId": "agt", "conversationId": "cnv", "fields": fields}


async def test_take_message_asks_for_missing_fields_and_survives_a_failed_delivery(server: Loopback) -> None:
    server.routes["/messages"] = Reply(500, {})
    config = {"fields": ["name", "phone"], "webhookUrl": server.url("/messages")}
    missing = await executors.take_message(config, {"name": "Ann", "phone": " "}, client_factory=loopback_client,
                                           max_timeout_s=5, context={})
    assert missing.status == "error" and missing.result["missing"] == ["phone"]
    assert server.seen == []
    taken = await executors.take_message(config, {"name": "Ann", "phone": "555"}, client_factory=loopback_client,
                                         max_timeout_s=5, context={})
    assert taken.ok and taken.result["webhook"] == "failed: the service answered HTTP 500"


# --- transfer planning -------------------------------------------------------------------------------


def test_transfer_picks_the_rule_with_the_most_keyword_overlap() -> None:
    a = agent()
    plan = plan_transfer(a, "question about a charge on my invoice", open_now=True)
    assert plan == TransferPlan("+14155550111", "Billing", "question about a charge on my invoice", True, False)
    spanish = plan_transfer(a, "customer prefers to speak Spanish", open_now=True)
    assert isinstance(spanish, TransferPlan) and spanish.destination == "+14155550122"
    default = plan_transfer(a, "wants to talk to the manager", open_now=True)
    assert isinstance(default, TransferPlan) and (default.destination, default.label) == ("+14155550100", None)


def test_transfer_with_rules_but_no_default_and_no_match_is_denied() -> None:
    a = agent(handoffConfig={"warm": False, "transferDestination": None, "transferRules": [
        {"label": "Billing", "when": "invoice questions", "destination": "+14155550111"}]})
    assert isinstance(plan_transfer(a, "the manager please", open_now=True), TransferDenied)


def test_after_hours_transfer_is_off_by_default_and_uses_the_on_call_number() -> None:
    closed = plan_transfer(agent(), "invoice question", open_now=False)
    assert isinstance(closed, TransferDenied) and "after-hours" in closed.reason and "message" in closed.instruction
    on_call = agent(afterHours={"allowHumanTransfer": True, "number": "+14155550199"})
    plan = plan_transfer(on_call, "invoice question", open_now=False)
    assert isinstance(plan, TransferPlan) and (plan.destination, plan.after_hours) == ("+14155550199", True)
    no_number = agent(afterHours={"allowHumanTransfer": True, "number": None})
    plan = plan_transfer(no_number, "invoice question", open_now=False)
    assert isinstance(plan, TransferPlan) and plan.destination == "+14155550111" and plan.after_hours


def test_announcements() -> None:
    warm = TransferPlan("+1", "Billing", "a charge on the invoice.", True, False)
    assert announcement(warm) == ("I'm connecting you with our Billing team now (reason: a charge on the invoice). "
                                  "I'll pass along what you've told me.")
    blind = TransferPlan("+1", None, "x", False, False)
    assert announcement(blind) == "I'm transferring you to a member of our team now."
    assert announcement(blind, "Please hold while I transfer you.") == "Please hold while I transfer you."
