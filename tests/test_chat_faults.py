"""Faults: the LLM down or too slow (scripted, and a real OpenAI-compatible endpoint that refuses or
stalls) gives the user a short apology, keeps the conversation usable, is not billed, and ends a stream
with `event: error`, never a broken response."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from control_api.services import Services
from pipeline.llm.errors import LLMUnavailable
from pipeline.llm.openai_compat import OpenAICompatConfig, OpenAICompatProvider
from runtime.brain.brain import APOLOGY
from tests import test_chat_support as support
from tests.conftest import Tenant
from tests.test_chat_support import Script, chat_usage, fund, parse_sse, published_agent, say, session

script = support.script


async def test_llm_down_gives_an_apology_and_the_session_stays_usable(
    services: Services, tenant: Tenant, script: Script
) -> None:
    await fund(services, tenant)
    agent = await published_agent(tenant)
    script(LLMUnavailable("upstream is down"), "Back now: we open at 9.")
    created = await session(tenant, agent["id"])
    failed = await say(tenant, created["id"], "When do you open?")
    assert failed.status_code == 200, failed.text
    data = failed.json()["data"]
    assert data["messages"][-1] == {**data["messages"][-1], "role": "assistant", "content": APOLOGY}
    assert data["error"]["code"] == "llm_unavailable" and data["session"]["status"] == "active"
    assert await chat_usage(services, tenant) == []  # an apology is not a billable reply
    recovered = (await say(tenant, created["id"], "When do you open?")).json()["data"]
    assert recovered["messages"][-1]["content"] == "Back now: we open at 9." and recovered["error"] is None
    assert len(await chat_usage(services, tenant)) == 1


async def test_a_failed_streamed_turn_ends_with_event_error(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    script(LLMUnavailable("upstream is down"))
    created = await session(tenant, agent["id"], draftMode=True)
    response = await say(tenant, created["id"], "Hello?", stream=True)
    assert response.status_code == 200
    frames = parse_sse(response.text)
    assert [f.event for f in frames if f.event != "agent_delta"] == ["user_utterance", "agent_message", "error"]
    assert frames[-2].data["text"] == APOLOGY
    error = frames[-1].data
    assert error["code"] == "llm_unavailable" and error["result"]["session"]["status"] == "active"
    assert "done" not in [f.event for f in frames]
    ended = (await tenant.post(f"/chat/sessions/{created['id']}/end")).json()["data"]
    assert ended["outcome"] == "error"


async def test_simulate_stops_at_a_failed_turn_with_event_error(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    script("Fine.", LLMUnavailable("down"), "never reached")
    response = await tenant.post(f"/agents/{agent['id']}/simulate", json={"transcript": ["a", "b", "c"]})
    frames = parse_sse(response.text)
    assert frames[-1].event == "error" and frames[-1].data["code"] == "llm_unavailable"
    assert [f.event for f in frames].count("user_utterance") == 2
    assert frames[-1].data["result"]["conversation"]["outcome"] == "error"


async def test_completion_with_the_llm_down_answers_the_apology(
    services: Services, tenant: Tenant, script: Script
) -> None:
    await fund(services, tenant)
    agent = await published_agent(tenant)
    script(LLMUnavailable("down"), LLMUnavailable("down"))
    messages = [{"role": "user", "content": "Hi"}]
    plain = await tenant.post("/chat/completions", json={"model": agent["id"], "messages": messages})
    assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"] == APOLOGY
    streamed = await tenant.post("/chat/completions", json={"model": agent["id"], "messages": messages,
                                                             "stream": True})
    frames = parse_sse(streamed.text)
    assert frames[-1].data == "[DONE]"
    assert "".join(f.data["choices"][0]["delta"].get("content", "") for f in frames[:-1]) == APOLOGY
    outcomes = [c["outcome"] for c in (await tenant.get("/conversations")).json()["data"]]
    assert outcomes == ["error", "error"] and await chat_usage(services, tenant) == []


@pytest.fixture
async def stalled_endpoint() -> AsyncIterator[str]:
    """An HTTP endpoint that accepts connections and requests and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read(65536)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def refused_endpoint() -> str:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.mark.parametrize("endpoint", ["refused", "stalled"])
async def test_a_real_openai_compatible_endpoint_down_or_slow(
    services: Services, tenant: Tenant, stalled_endpoint: str, endpoint: str
) -> None:
    base_url = stalled_endpoint if endpoint == "stalled" else refused_endpoint()
    provider = OpenAICompatProvider(OpenAICompatConfig(
        base_url=base_url, model="any", connect_timeout_s=0.5, first_token_timeout_s=0.3, total_timeout_s=1.0,
        max_attempts=1,
    ))
    services.llm = provider
    try:
        agent = await tenant.create_agent()
        created = await session(tenant, agent["id"], draftMode=True)
        response = await say(tenant, created["id"], "Are you there?", stream=True)
        frames = parse_sse(response.text)
        assert frames[-2].event == "agent_message" and frames[-2].data["text"] == APOLOGY
        assert frames[-1].event == "error" and frames[-1].data["code"] == "llm_unavailable"
        again = await say(tenant, created["id"], "Hello?")
        assert again.status_code == 200 and again.json()["data"]["session"]["status"] == "active"
    finally:
        await provider.aclose()
