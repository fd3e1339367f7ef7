"""A client that disconnects mid-stream cancels generation (the ScriptedLLM sees the cancellation), what was
said is kept, and the conversation stays usable. Real server on 127.0.0.1, real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from control_api.services import Services
from pipeline.llm.scripted import ScriptedLLM
from tests import test_chat_support as support
from tests.conftest import Tenant
from tests.test_chat_support import LiveServer, fund, published_agent, session

live = support.live

STALL = 1.0  # ScriptedLLM's pause between chunks: the fake sleep below never returns from it


class StallingLLM:
    """A ScriptedLLM that answers its first chunk at once and then hangs until it is cancelled."""

    def __init__(self, services: Services, *turns: Any) -> None:
        self.cancelled = asyncio.Event()
        self.llm = ScriptedLLM(list(turns), ttft_s=0.0, chunk_interval_s=STALL, sleep=self.sleep)
        services.llm = self.llm

    async def sleep(self, seconds: float) -> None:
        if seconds < STALL:
            await asyncio.sleep(0)
            return
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def read_until(url: str, key: str, body: dict[str, Any], marker: str) -> None:
    """POST, read the stream until a line containing `marker`, then drop the connection."""
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
        "POST", url, json=body, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if marker in line:
                return
    pytest.fail(f"the stream ended before {marker!r}")


async def test_disconnecting_from_a_session_stream_cancels_generation(
    services: Services, tenant: Tenant, live: LiveServer
) -> None:
    stalling = StallingLLM(services, "Hello there, let me check that for you.", ["Second answer."])
    agent = await tenant.create_agent()
    created = await session(tenant, agent["id"], draftMode=True)
    url = f"{live.api}/chat/sessions/{created['id']}/messages"
    await read_until(url, tenant.key, {"content": "Are you there?", "stream": True}, "event: agent_delta")
    await asyncio.wait_for(stalling.cancelled.wait(), timeout=10)
    await live.settled()
    assert stalling.llm.cancelled == 1 and stalling.llm.completed == 0

    # The session is free again and remembers what was said; the next message is answered normally.
    async with httpx.AsyncClient(base_url=live.api, headers=tenant.headers, timeout=10) as client:
        after = await client.post(f"/chat/sessions/{created['id']}/messages", json={"content": "Hello?"})
        assert after.status_code == 200, after.text
        assert after.json()["data"]["messages"][-1]["content"] == "Second answer."  # one chunk: no stall
        turns = (await client.get(f"/conversations/{created['conversationId']}/transcript")).json()["data"]["turns"]
    assert [t["content"] for t in turns if t["role"] == "user"] == ["Are you there?", "Hello?"]
    assert [m.content for m in stalling.llm.calls[1].messages if m.role == "user"] == ["Are you there?", "Hello?"]


async def test_disconnecting_from_a_streamed_completion_abandons_it(
    services: Services, tenant: Tenant, live: LiveServer
) -> None:
    await fund(services, tenant)
    stalling = StallingLLM(services, "We are open from nine until five on weekdays.")
    agent = await published_agent(tenant)
    body = {"model": agent["id"], "stream": True, "messages": [{"role": "user", "content": "Hours?"}]}
    # The first words, or part of them: the brain holds back a letter that may begin a phrase no reply says
    await read_until(f"{live.api}/chat/completions", tenant.key, body, '"content":"W')
    await asyncio.wait_for(stalling.cancelled.wait(), timeout=10)
    await live.settled()
    assert stalling.llm.cancelled == 1
    conversation = (await tenant.get("/conversations", params={"channel": "api"})).json()["data"][0]
    assert conversation["status"] == "ended" and conversation["outcome"] == "abandoned"


async def test_disconnecting_from_a_simulation_abandons_it(
    services: Services, tenant: Tenant, live: LiveServer
) -> None:
    stalling = StallingLLM(services, "Let me think about that one.")
    agent = await tenant.create_agent()
    body = {"mode": "text", "transcript": ["One", "Two"]}
    await read_until(f"{live.api}/agents/{agent['id']}/simulate", tenant.key, body, "event: agent_delta")
    await asyncio.wait_for(stalling.cancelled.wait(), timeout=10)
    await live.settled()
    conversation = (await tenant.get("/conversations", params={"channel": "simulate"})).json()["data"][0]
    assert conversation["outcome"] == "abandoned" and conversation["summary"] == 'Asked "One" - abandoned.'
