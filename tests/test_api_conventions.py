"""Conventions every endpoint shares: problem+json errors, auth, body limits, rate limits, audit, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from control_api.auth.keys import revoke_key
from control_api.clock import SystemClock
from control_api.db.engine import create_engine
from control_api.http.app import create_app
from control_api.ratelimit import RateLimiter
from control_api.services import Services
from tests.conftest import Tenant, TenantFactory, make_settings

PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["status"] == status and body["code"] == code
    assert isinstance(body["title"], str) and isinstance(body["detail"], str)
    assert str(body["type"]).endswith(code)
    return body


async def test_unknown_route_is_problem_404(tenant: Tenant) -> None:
    assert_problem(await tenant.get("/no-such-thing"), 404, "not_found")
    assert_problem(await tenant.http.get("/nowhere"), 404, "not_found")


async def test_wrong_method_is_problem_405_with_allow(tenant: Tenant) -> None:
    response = await tenant.request("PUT", "/agents")
    assert_problem(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"] and "POST" in response.headers["Allow"]


async def test_malformed_json_is_400_naming_the_body(tenant: Tenant) -> None:
    response = await tenant.post(
        "/agents", content=b'{"name": "x",', headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 400, "validation_error")
    assert body["errors"] == [{"field": "body", "message": "is not valid JSON"}]


async def test_json_of_the_wrong_shape_is_400(tenant: Tenant) -> None:
    response = await tenant.post("/agents", json=["not", "an", "object"])
    assert_problem(response, 400, "validation_error")


async def test_oversize_body_is_413_by_header_and_by_stream(tenant: Tenant) -> None:
    huge = b'{"name": "' + b"x" * 2_000_000 + b'"}'
    response = await tenant.post("/agents", content=huge, headers={"Content-Type": "application/json"})
    assert_problem(response, 413, "payload_too_large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    streamed = await tenant.post("/agents", content=chunks(), headers={"Content-Type": "application/json"})
    assert_problem(streamed, 413, "payload_too_large")


async def test_unexpected_exception_is_500_without_internals(services: Services, tenants: TenantFactory) -> None:
    app = create_app(services)

    async def explode() -> None:
        raise RuntimeError("secret database password is hunter2")

    app.add_api_route("/api/v1/explode", explode)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        response = await http.get("/api/v1/explode")
    body = assert_problem(response, 500, "internal_error")
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert response.headers["x-request-id"] in str(body["detail"])


async def test_missing_and_invalid_keys_are_401_with_www_authenticate(
    tenant: Tenant, services: Services
) -> None:
    http = tenant.http
    for headers in ({}, {"Authorization": "Bearer flowyte_sk_nope"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer "}):
        response = await http.get("/api/v1/agents", headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # A revoked key stops working at once.
    assert (await tenant.get("/agents")).status_code == 200
    async with services.engine.begin() as conn:
        from control_api.db.tables import api_keys

        key_id = (await conn.execute(api_keys.select().where(api_keys.c.org_id == tenant.org_id))).first()
        assert key_id is not None
        await revoke_key(conn, key_id.id, services.clock)
    assert_problem(await tenant.get("/agents"), 401, "unauthorized")


async def test_auth_comes_before_body_validation(tenants: TenantFactory) -> None:
    reader = await tenants(scopes=("agents:read",))
    response = await reader.post("/agents", content=b"{bad json", headers={"Content-Type": "application/json"})
    body = assert_problem(response, 403, "insufficient_scope")
    assert body["scope"] == "agents:write"
    anonymous = await reader.http.post("/api/v1/agents", content=b"{bad json")
    assert_problem(anonymous, 401, "unauthorized")


class SteppingClock(SystemClock):
    """Wall time from the system; monotonic time only moves when the test says so."""

    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t


@pytest.fixture
async def limited(database_url: str) -> AsyncIterator[tuple[Services, httpx.AsyncClient, SteppingClock]]:
    engine = create_engine(database_url)
    clock = SteppingClock()
    services = Services(
        settings=make_settings(database_url, rate_limit_per_minute=3),
        engine=engine,
        clock=clock,
        rate_limiter=RateLimiter(3),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services)), base_url="http://testserver"
    ) as http:
        yield services, http, clock
    await engine.dispose()


async def test_rate_limit_is_per_organization_with_headers(
    limited: tuple[Services, httpx.AsyncClient, SteppingClock],
) -> None:
    from tests.conftest import TenantFactory

    services, http, clock = limited
    factory = TenantFactory(services, http)
    busy, quiet = await factory(), await factory()
    remaining = [int((await busy.get("/agents")).headers["RateLimit-Remaining"]) for _ in range(3)]
    assert remaining == [2, 1, 0]
    blocked = await busy.get("/agents")
    assert_problem(blocked, 429, "rate_limited")
    assert int(blocked.headers["Retry-After"]) >= 1
    assert blocked.headers["RateLimit-Limit"] == "3" and blocked.headers["RateLimit-Remaining"] == "0"
    assert (await quiet.get("/agents")).status_code == 200
    clock.t += 20.0  # one token refills every 20 s at 3/minute
    assert (await busy.get("/agents")).status_code == 200
    assert (await busy.get("/agents")).status_code == 429


async def test_audit_log_records_requests_with_filters(tenants: TenantFactory) -> None:
    tenant = await tenants()
    other = await tenants()
    before = datetime.now(UTC) - timedelta(seconds=5)
    agent = await tenant.create_agent()
    await tenant.get(f"/agents/{agent['id']}")
    await tenant.get("/agents/agt_missing")
    await other.get("/agents")
    body = (await tenant.get("/audit-logs", params={"limit": 100})).json()
    entries = body["data"]
    endpoints = [(e["method"], e["endpoint"], e["status"]) for e in entries]
    assert endpoints[:3] == [
        ("GET", "/api/v1/agents/{agent_id}", 404),
        ("GET", "/api/v1/agents/{agent_id}", 200),
        ("POST", "/api/v1/agents", 201),
    ]
    assert all(e["actor"]["type"] == "api_key" for e in entries)
    key_id = entries[0]["actor"]["id"]
    assert key_id.startswith("key_")
    # Another organization's requests never show up.
    assert all(e["path"] != "/api/v1/agents" or e["method"] != "GET" for e in entries)
    by_actor = (await tenant.get("/audit-logs", params={"actorId": key_id, "actorType": "api_key"})).json()
    assert len(by_actor["data"]) == len(entries) + 1  # plus the first /audit-logs call
    none_yet = (await tenant.get("/audit-logs", params={"to": before.isoformat()})).json()
    assert none_yet["data"] == []
    recent = (await tenant.get("/audit-logs", params={"from": before.isoformat(), "limit": 2})).json()
    assert len(recent["data"]) == 2 and recent["pagination"]["hasMore"] is True
    page2 = (await tenant.get("/audit-logs", params={"from": before.isoformat(), "limit": 2,
                                                      "cursor": recent["pagination"]["nextCursor"]})).json()
    assert {e["id"] for e in page2["data"]}.isdisjoint({e["id"] for e in recent["data"]})
    bad = await tenant.get("/audit-logs", params={"from": "yesterday"})
    assert_problem(bad, 400, "validation_error")


async def test_openapi_document_matches_the_routes(tenant: Tenant) -> None:
    from fastapi.routing import APIRoute

    from control_api.http.routing import required_scope

    response = await tenant.http.get("/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["components"]["securitySchemes"]["apiKey"]["type"] == "oauth2"
    app = tenant.http._transport.app  # type: ignore[attr-defined]
    routes = app.state.api_routes
    assert len(routes) >= 10
    for route in routes:
        assert isinstance(route, APIRoute)
        needed = required_scope(route)
        for method in route.methods:
            operation = doc["paths"][route.path][method.lower()]
            assert "422" not in operation["responses"] and "403" in operation["responses"]
            if needed is None:  # public (a signed URL): the document says so, and promises no 401
                assert operation["security"] == [] and "401" not in operation["responses"]
                continue
            assert operation["security"] == [{"apiKey": [needed]}]
            assert "401" in operation["responses"]
    assert "/api/v1/agents/{agent_id}/publish" in doc["paths"]
