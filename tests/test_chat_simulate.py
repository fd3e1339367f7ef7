"""`POST /agents/{id}/simulate`: a scripted text conversation streamed as audit events, ending with
`event: done`; draft by default and never billed; recorded as a `simulate` conversation."""

from __future__ import annotations

from typing import Any

from control_api.services import Services
from pipeline.llm.types import ToolCall
from tests import test_chat_support as support
from tests.conftest import Tenant
from tests.test_chat_support import CHAT_CREDITS, Script, balance, chat_usage, fund, parse_sse, published_agent

script = support.script


async def simulate(tenant: Tenant, agent_id: str, **body: Any) -> Any:
    return await tenant.post(f"/agents/{agent_id}/simulate", json=body)


async def test_simulating_the_draft_streams_every_turn_and_ends_with_done(
    services: Services, tenant: Tenant, script: Script
) -> None:
    agent = await tenant.create_agent()
    llm = script(["We open ", "at 9."], "We close at 5.")
    response = await simulate(tenant, agent["id"], mode="text", transcript=["When do you open?", "And close?"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = parse_sse(response.text)
    assert [f.event for f in frames if f.event != "agent_delta"] == [
        "user_utterance", "agent_message", "user_utterance", "agent_message", "done"
    ]
    done = frames[-1].data
    conversation = done["conversation"]
    assert conversation["channel"] == "simulate" and conversation["draft"] is True
    assert conversation["status"] == "ended" and conversation["outcome"] == "completed"
    assert [t["messages"][1]["content"] for t in done["turns"]] == ["We open at 9.", "We close at 5."]
    # The second turn saw the first: one conversation, not two.
    assert [m.content for m in llm.calls[1].messages if m.role == "user"] == ["When do you open?", "And close?"]
    assert await chat_usage(services, tenant) == []
    receipt = (await tenant.get(f"/conversations/{conversation['id']}/receipt")).json()["data"]["events"]
    assert [e["type"] for e in receipt] == ["user_utterance", "agent_message", "user_utterance", "agent_message"]


async def test_one_message_and_an_agent_that_ends_the_conversation(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    script([ToolCall("c1", "end_conversation", {"reason": "done"})], "never used")
    response = await simulate(tenant, agent["id"], message="Bye")
    frames = parse_sse(response.text)
    assert {"tool_call", "end"} <= {f.event for f in frames} and frames[-1].event == "done"
    assert frames[-1].data["conversation"]["outcome"] == "ended_by_agent"


async def test_published_mode_runs_the_live_version_and_is_billed(
    services: Services, tenant: Tenant, script: Script
) -> None:
    unpublished = await tenant.create_agent()
    refused = await simulate(tenant, unpublished["id"], draftMode=False, message="Hi")
    assert refused.status_code == 409 and refused.json()["code"] == "no_published_version"
    agent = await published_agent(tenant)
    assert (await simulate(tenant, agent["id"], draftMode=False, message="Hi")).status_code == 402
    await fund(services, tenant)
    before = await balance(services, tenant)
    script("Hello.", "Goodbye.")
    response = await simulate(tenant, agent["id"], draftMode=False, transcript=["Hi", "Bye"])
    done = parse_sse(response.text)[-1]
    assert done.event == "done" and done.data["conversation"]["draft"] is False
    assert done.data["conversation"]["agentVersionId"] == agent["publishedVersionId"]
    assert await balance(services, tenant) == before - 2 * CHAT_CREDITS


async def test_simulate_validation(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    for body in ({}, {"message": "a", "transcript": ["b"]}, {"transcript": []}, {"transcript": ["  "]},
                 {"mode": "video", "message": "x"}):
        response = await simulate(tenant, agent["id"], **body)
        assert response.status_code == 400, (body, response.text)
    voice = await simulate(tenant, agent["id"], mode="voice", message="Hi")
    assert voice.status_code == 400 and voice.json()["errors"][0]["field"] == "mode"
    assert (await simulate(tenant, "agt_missing", message="Hi")).status_code == 404
