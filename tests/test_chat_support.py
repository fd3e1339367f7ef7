"""Shared pieces of the chat and conversation tests: a ScriptedLLM put into the app's Services, wallet
funding, published agents, an SSE parser, and a real uvicorn server on 127.0.0.1 serving the test's app.
(Holds no tests of its own.)"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa

from control_api.billing import ledger
from control_api.billing.plans import PAYG
from control_api.db.tables import usage_items
from control_api.http.app import create_app
from control_api.main import _UvicornServer, http_url, listen, uvicorn_config
from control_api.services import Services
from pipeline.llm.scripted import ScriptedLLM, ScriptedTurn
from tests.conftest import Tenant

Script = Callable[..., ScriptedLLM]


@pytest.fixture
def script(services: Services) -> Script:
    """`script("Hello!", ["We ", "deliver."], ttft_s=0)`: the app now answers with a ScriptedLLM."""

    def install(*turns: ScriptedTurn, ttft_s: float = 0.0, **kwargs: Any) -> ScriptedLLM:
        fake = ScriptedLLM(list(turns), ttft_s=ttft_s, **kwargs)
        services.llm = fake
        return fake

    return install


async def fund(services: Services, tenant: Tenant, credits: int = 1_000) -> None:
    async with services.engine.begin() as conn:
        await ledger.post(conn, org_id=tenant.org_id, key=f"test-credit:{secrets.token_hex(8)}", kind="credit",
                          amount_credits=credits, description="test credit", now=services.clock.now())


CHAT_CREDITS = PAYG.chat_message_credits


async def balance(services: Services, tenant: Tenant) -> int:
    async with services.engine.connect() as conn:
        return (await ledger.read_wallet(conn, tenant.org_id, services.clock.now())).balance_credits


async def chat_usage(services: Services, tenant: Tenant) -> list[sa.Row[Any]]:
    async with services.engine.connect() as conn:
        query = sa.select(usage_items).where(usage_items.c.org_id == tenant.org_id, usage_items.c.channel == "chat")
        return list((await conn.execute(query)).all())


async def published_agent(tenant: Tenant, **fields: Any) -> dict[str, Any]:
    agent = await tenant.create_agent(**fields)
    response = await tenant.post(f"/agents/{agent['id']}/publish")
    assert response.status_code == 201, response.text
    agent["publishedVersionId"] = response.json()["data"]["id"]
    return agent


@dataclass(frozen=True)
class Frame:
    event: str | None
    data: Any


def parse_sse(text: str) -> list[Frame]:
    """SSE frames of a complete body; `data` is parsed as JSON when it is JSON."""
    frames = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        event, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                event = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].strip())
        if not data:  # a comment-only block (": keep-alive")
            continue
        raw = "\n".join(data)
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        frames.append(Frame(event, value))
    return frames


async def session(tenant: Tenant, agent_id: str, **body: Any) -> dict[str, Any]:
    response = await tenant.post("/chat/sessions", json={"agentId": agent_id, **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()["data"]
    return created


async def say(tenant: Tenant, session_id: str, content: str, **body: Any) -> Any:
    return await tenant.post(f"/chat/sessions/{session_id}/messages", json={"content": content, **body})


@dataclass
class LiveServer:
    """The test's app (its own Services) served by uvicorn on a real loopback socket, in the test's loop."""

    url: str  # http://127.0.0.1:<port>
    server: _UvicornServer
    task: asyncio.Task[None]

    @property
    def api(self) -> str:
        return self.url + "/api/v1"

    async def settled(self) -> None:
        """Wait until every request the server has started is finished (its cleanup included)."""
        tasks = set(self.server.server_state.tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=30)


@pytest.fixture
async def live(services: Services) -> AsyncIterator[LiveServer]:
    sock: socket.socket = listen("127.0.0.1", 0)  # already listening: clients may connect at once
    server = _UvicornServer(uvicorn_config(create_app(services), services.settings))
    server.config.timeout_graceful_shutdown = 2
    task = asyncio.create_task(server.serve(sockets=[sock]))
    yield LiveServer(http_url(sock), server, task)
    server.should_exit = True
    await task
    sock.close()
