"""Chat sessions through the API: draft vs published (409), JSON and SSE answers, history rebuilt from the
stored transcript, the pinned agent, ending, paging, one turn at a time, and metering (402, draft free)."""

from __future__ import annotations

import asyncio

from control_api.services import Services
from pipeline.llm.types import ToolCall
from tests import test_chat_support as support
from tests.conftest import Tenant
from tests.test_chat_support import (
    CHAT_CREDITS,
    Script,
    balance,
    chat_usage,
    fund,
    parse_sse,
    published_agent,
    say,
    session,
)

script = support.script


async def test_never_published_agent_needs_draft_mode(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    response = await tenant.post("/chat/sessions", json={"agentId": agent["id"]})
    assert response.status_code == 409, response.text
    problem = response.json()
    assert problem["code"] == "no_published_version" and problem["status"] == 409
    assert response.headers["content-type"].startswith("application/problem+json")
    draft = await session(tenant, agent["id"], draftMode=True)
    assert draft["draftMode"] is True and draft["status"] == "active" and draft["agentVersionId"] is None
    missing = await tenant.post("/chat/sessions", json={"agentId": "agt_nope", "draftMode": True})
    assert missing.status_code == 404


async def test_published_session_answers_in_json_and_bills_each_reply(
    services: Services, tenant: Tenant, script: Script
) -> None:
    await fund(services, tenant)
    agent = await published_agent(tenant, greeting="Hi! I'm the Acme assistant.")
    llm = script("We deliver to 80202 on weekdays.", "Anything else?")
    created = await session(tenant, agent["id"])
    assert created["draftMode"] is False and created["agentVersionId"] == agent["publishedVersionId"]
    assert created["greeting"] == "Hi! I'm the Acme assistant." and created["messageCount"] == 1
    before = await balance(services, tenant)

    response = await say(tenant, created["id"], "Do you deliver to 80202?")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [(m["role"], m["content"]) for m in data["messages"]] == [
        ("user", "Do you deliver to 80202?"), ("assistant", "We deliver to 80202 on weekdays.")
    ]
    assert [e["type"] for e in data["events"]] == ["user_utterance", "agent_message"]
    assert data["error"] is None and data["session"]["messageCount"] == 3

    await say(tenant, created["id"], "Thanks")
    # The second turn's context is the stored transcript: greeting, first exchange, then the new message.
    context = [(m.role, m.content) for m in llm.calls[1].messages if m.role != "system"]
    assert context == [
        ("assistant", "Hi! I'm the Acme assistant."), ("user", "Do you deliver to 80202?"),
        ("assistant", "We deliver to 80202 on weekdays."), ("user", "Thanks"),
    ]
    usage = await chat_usage(services, tenant)
    assert len(usage) == 2 and {u.agent_id for u in usage} == {agent["id"]}
    assert data["messages"][1]["id"] in {u.event_id for u in usage}
    assert await balance(services, tenant) == before - 2 * CHAT_CREDITS

    listed = (await tenant.get(f"/chat/sessions/{created['id']}/messages", params={"limit": 2})).json()
    assert [m["role"] for m in listed["data"]] == ["assistant", "user"] and listed["pagination"]["hasMore"]
    rest = (await tenant.get(f"/chat/sessions/{created['id']}/messages",
                             params={"limit": 10, "cursor": listed["pagination"]["nextCursor"]})).json()
    assert [m["content"] for m in rest["data"]] == ["We deliver to 80202 on weekdays.", "Thanks", "Anything else?"]
    assert rest["pagination"] == {"nextCursor": None, "hasMore": False, "limit": 10}


async def test_streamed_message_is_sse_ending_with_done(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    script(["We ", "deliver ", "on ", "weekdays."])
    created = await session(tenant, agent["id"], draftMode=True)
    response = await say(tenant, created["id"], "When do you deliver?", stream=True)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = parse_sse(response.text)
    kinds = [f.event for f in frames]
    assert kinds[0] == "user_utterance" and kinds[-2:] == ["agent_message", "done"]
    deltas = [f.data["text"] for f in frames if f.event == "agent_delta"]
    assert "".join(deltas) == "We deliver on weekdays." and len(deltas) == 4
    assert all(f.data["type"] == f.event for f in frames[:-1])
    done = frames[-1].data
    assert [m["content"] for m in done["messages"]] == ["When do you deliver?", "We deliver on weekdays."]
    assert done["session"]["messageCount"] == 2


async def test_draft_session_is_pinned_and_never_billed(services: Services, tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent(persona={"role": "You answer for Acme Plumbing."})
    llm = script("One.", "Two.")
    created = await session(tenant, agent["id"], draftMode=True)
    await say(tenant, created["id"], "Hello")
    edited = await tenant.patch(f"/agents/{agent['id']}", json={"persona": {"role": "You answer for Zeta Bakery."}})
    assert edited.status_code == 200, edited.text
    await say(tenant, created["id"], "Who are you?")
    prompts = [call.messages[0].content for call in llm.calls]
    assert all("Acme Plumbing" in p and "Zeta Bakery" not in p for p in prompts)
    assert await chat_usage(services, tenant) == []  # the wallet is empty and draft mode never asks it


async def test_published_session_keeps_its_version_after_a_new_publish(
    services: Services, tenant: Tenant, script: Script
) -> None:
    await fund(services, tenant)
    agent = await published_agent(tenant, persona={"role": "You answer for Acme Plumbing."})
    llm = script("One.", "Two.")
    created = await session(tenant, agent["id"])
    await tenant.patch(f"/agents/{agent['id']}", json={"persona": {"role": "You answer for Zeta Bakery."}})
    assert (await tenant.post(f"/agents/{agent['id']}/publish")).status_code == 201
    await say(tenant, created["id"], "Hello")
    assert "Acme Plumbing" in llm.calls[0].messages[0].content
    fresh = await session(tenant, agent["id"])
    assert fresh["agentVersion"] == 2 and fresh["agentVersionId"] != created["agentVersionId"]


async def test_ending_a_session_closes_its_conversation(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    script("Sure.")
    created = await session(tenant, agent["id"], draftMode=True)
    await say(tenant, created["id"], "Can you help me with my order?")
    ended = await tenant.post(f"/chat/sessions/{created['id']}/end")
    assert ended.status_code == 200 and ended.json()["data"]["status"] == "ended"
    assert ended.json()["data"]["outcome"] == "completed"
    assert (await tenant.post(f"/chat/sessions/{created['id']}/end")).json()["data"]["status"] == "ended"
    refused = await say(tenant, created["id"], "Hello?")
    assert refused.status_code == 409 and refused.json()["code"] == "session_ended"
    conversation = (await tenant.get(f"/conversations/{created['conversationId']}")).json()["data"]
    assert conversation["status"] == "ended" and conversation["outcome"] == "completed"
    assert conversation["summary"] == 'Asked "Can you help me with my order?" - completed.'
    assert conversation["draft"] is True and conversation["channel"] == "chat"


async def test_session_with_no_message_ends_abandoned(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    created = await session(tenant, agent["id"], draftMode=True)
    ended = (await tenant.post(f"/chat/sessions/{created['id']}/end")).json()["data"]
    assert ended["outcome"] == "abandoned"


async def test_agent_ending_the_chat_ends_the_session(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    script([ToolCall("call_1", "end_conversation", {"reason": "the customer is done"})])
    created = await session(tenant, agent["id"], draftMode=True)
    data = (await say(tenant, created["id"], "That's all, bye!")).json()["data"]
    assert data["ended"] is True and data["outcome"] == "ended_by_agent"
    assert data["session"]["status"] == "ended" and data["session"]["outcome"] == "ended_by_agent"
    assert "end" in [e["type"] for e in data["events"]] and "tool_call" in [e["type"] for e in data["events"]]
    assert (await say(tenant, created["id"], "wait")).status_code == 409


async def test_wallet_that_cannot_pay_gets_402(services: Services, tenant: Tenant, script: Script) -> None:
    agent = await published_agent(tenant)
    refused = await tenant.post("/chat/sessions", json={"agentId": agent["id"]})
    assert refused.status_code == 402 and refused.json()["code"] == "insufficient_funds"
    await fund(services, tenant, CHAT_CREDITS)  # exactly one message
    script("First answer.")
    created = await session(tenant, agent["id"])
    assert (await say(tenant, created["id"], "One")).status_code == 200
    second = await say(tenant, created["id"], "Two")
    assert second.status_code == 402, second.text
    assert (await session(tenant, agent["id"], draftMode=True))["draftMode"] is True  # drafts stay free


async def test_one_message_at_a_time(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    script("Slow answer.", "Next answer.", ttft_s=0.3)
    created = await session(tenant, agent["id"], draftMode=True)
    first, second = await asyncio.gather(say(tenant, created["id"], "One"), say(tenant, created["id"], "Two"))
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 409]
    busy = first if first.status_code == 409 else second
    assert busy.json()["code"] == "turn_in_progress"
    assert (await say(tenant, created["id"], "Three")).status_code == 200  # released afterwards


async def test_message_validation(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent()
    created = await session(tenant, agent["id"], draftMode=True)
    empty = await say(tenant, created["id"], "")
    assert empty.status_code == 400 and empty.json()["errors"][0]["field"] == "content"
    unknown = await tenant.post(f"/chat/sessions/{created['id']}/messages", json={"content": "x", "bogus": 1})
    assert unknown.status_code == 400
    assert (await tenant.get("/chat/sessions/chs_missing")).status_code == 404
