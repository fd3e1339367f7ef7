"""Shared fixtures: every API test runs against SQLite and against PostgreSQL.

Each backend gets one database per test session, migrated once; tests isolate themselves by creating
their own organizations (tenant isolation is the product's, so tests lean on it). The API is driven
through `httpx.ASGITransport`, the real app with its real middleware.

FLOWYTE_TEST_BACKENDS=sqlite limits a local run to SQLite; CI runs both.
FLOWYTE_TEST_POSTGRES_URL points at the server (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, settings

from control_api.auth.keys import create_key
from control_api.auth.scopes import ALL_SCOPES
from control_api.clock import SystemClock
from control_api.db.engine import create_engine, migrate
from control_api.http.app import create_app
from control_api.numbers.inventory import ensure_seeded
from control_api.services import Services
from control_api.settings import Settings

# CI machines are shared and slow at times: judge properties by their results, not generation speed.
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")

POSTGRES_URL = os.environ.get("FLOWYTE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = [b for b in os.environ.get("FLOWYTE_TEST_BACKENDS", "sqlite,postgres").split(",") if b]


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await ensure_seeded(conn)
    finally:
        await engine.dispose()


def _pg_admin_dsn() -> str:
    return POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")


async def _create_pg_database(name: str) -> None:
    conn = await asyncpg.connect(_pg_admin_dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_pg_database(name: str) -> None:
    conn = await asyncpg.connect(_pg_admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def pg_database_url(name: str) -> str:
    base = _pg_admin_dsn().rsplit("/", 1)[0]
    return f"postgresql+asyncpg://{base.split('://', 1)[1]}/{name}"


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    urls: dict[str, str] = {}
    pg_name = None
    if "sqlite" in BACKENDS:
        path = tmp_path_factory.mktemp("sqlite") / "flowyte.db"
        urls["sqlite"] = f"sqlite+aiosqlite:///{path}"
        asyncio.run(_migrate(urls["sqlite"]))
    if "postgres" in BACKENDS:
        pg_name = f"flowyte_test_{os.getpid()}_{secrets.token_hex(3)}"
        asyncio.run(_create_pg_database(pg_name))
        urls["postgres"] = pg_database_url(pg_name)
        asyncio.run(_migrate(urls["postgres"]))
    yield urls
    if pg_name is not None:
        asyncio.run(_drop_pg_database(pg_name))


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, database_urls: dict[str, str]) -> str:
    return database_urls[request.param]


def make_settings(database_url: str, **overrides: Any) -> Settings:
    return Settings(data_dir=Path(".flowyte-test"), database_url=database_url, **overrides)


@pytest.fixture
async def services(database_url: str) -> AsyncIterator[Services]:
    engine = create_engine(database_url)
    yield Services(settings=make_settings(database_url), engine=engine, clock=SystemClock())
    await engine.dispose()


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass
class Tenant:
    """One organization and one key for it, with helpers that send that key."""

    org_name: str
    org_id: str
    key: str
    http: httpx.AsyncClient

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.http.request(method, "/api/v1" + path, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def create_agent(self, **fields: Any) -> dict[str, Any]:
        response = await self.post("/agents", json={"name": "Acme Support", **fields})
        assert response.status_code == 201, response.text
        agent: dict[str, Any] = response.json()["data"]
        return agent


class TenantFactory:
    def __init__(self, services: Services, http: httpx.AsyncClient) -> None:
        self.services = services
        self.http = http

    async def __call__(self, scopes: tuple[str, ...] = ALL_SCOPES, org_name: str | None = None) -> Tenant:
        name = org_name or f"org-{secrets.token_hex(6)}"
        async with self.services.engine.begin() as conn:
            record, secret = await create_key(
                conn, org_name=name, scopes=scopes, label="test", clock=self.services.clock
            )
        return Tenant(name, record.org_id, secret, self.http)


@pytest.fixture
def tenants(services: Services, client: httpx.AsyncClient) -> TenantFactory:
    return TenantFactory(services, client)


@pytest.fixture
async def tenant(tenants: TenantFactory) -> Tenant:
    return await tenants()


# The real-peer fixtures (sipp, kamailio, baresip, linphonec) for every test module.
from tests.peers.fixtures import baresip, kamailio, linphonec, sipp  # noqa: E402, F401
