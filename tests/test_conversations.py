"""Conversation records: the history list (newest first, `q` over transcripts and summaries, filters, cursor),
one conversation, its transcript, and its receipt of audit events in order with timings."""

from __future__ import annotations

from datetime import timedelta

from control_api.knowledge.service import KnowledgeService
from control_api.services import Services
from pipeline.llm.types import ToolCall
from tests import test_chat_support as chat_support
from tests import test_knowledge_support as knowledge_support
from tests.conftest import Tenant, TenantFactory
from tests.test_chat_support import Script, fund, published_agent, say, session
from tests.test_knowledge_support import MovableClock, indexed

script = chat_support.script
clock, embedder, knowledge = knowledge_support.clock, knowledge_support.embedder, knowledge_support.knowledge


def iso(clock: MovableClock, delta: timedelta = timedelta(0)) -> str:
    return (clock.now() + delta).isoformat() + "Z"


async def test_history_is_newest_first_searchable_and_filterable(
    services: Services, tenants: TenantFactory, script: Script, clock: MovableClock
) -> None:
    tenant = await tenants()
    await fund(services, tenant)
    pizza = await published_agent(tenant, name="Pizza")
    plumbing = await tenant.create_agent(name="Plumbing")
    script("Yes, we deliver pepperoni until midnight.", "A plumber can come tomorrow morning.", "Sorry.")
    first = await session(tenant, pizza["id"])
    await say(tenant, first["id"], "Do you deliver pizza late?")
    await tenant.post(f"/chat/sessions/{first['id']}/end")
    clock.advance(minutes=5)
    middle = iso(clock)
    second = await session(tenant, plumbing["id"], draftMode=True)
    await say(tenant, second["id"], "My sink is leaking")
    clock.advance(minutes=5)
    third = await session(tenant, plumbing["id"], draftMode=True)
    await tenant.post(f"/chat/sessions/{third['id']}/end")

    listed = (await tenant.get("/conversations")).json()
    ids = [c["id"] for c in listed["data"]]
    assert ids == [third["conversationId"], second["conversationId"], first["conversationId"]]
    row = listed["data"][2]
    assert row["outcome"] == "completed" and row["agentId"] == pizza["id"] and row["draft"] is False
    assert row["summary"] == 'Asked "Do you deliver pizza late?" - completed.' and row["messageCount"] == 2
    assert listed["data"][1]["status"] == "active" and listed["data"][1]["outcome"] is None
    assert listed["data"][1]["summary"] == 'Asked "My sink is leaking" - in progress.'

    async def search(**params: str) -> list[str]:
        response = await tenant.get("/conversations", params=params)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["data"]]

    assert await search(q="PEPPERONI") == [first["conversationId"]]  # the agent's words count too
    assert await search(q="sink is") == [second["conversationId"]]
    assert await search(q="abandoned") == [third["conversationId"]]  # the summary
    assert await search(q="100%_") == []
    assert await search(agentId=plumbing["id"]) == [third["conversationId"], second["conversationId"]]
    assert await search(outcome="completed") == [first["conversationId"]]
    assert await search(channel="chat", **{"from": middle}) == [third["conversationId"], second["conversationId"]]
    assert await search(to=middle) == [first["conversationId"]]
    assert await search(channel="voice") == []

    page_one = (await tenant.get("/conversations", params={"limit": 2})).json()
    assert len(page_one["data"]) == 2 and page_one["pagination"]["hasMore"] is True
    page_two = (await tenant.get("/conversations", params={"limit": 2,
                                                           "cursor": page_one["pagination"]["nextCursor"]})).json()
    assert [c["id"] for c in page_two["data"]] == [first["conversationId"]]
    assert (await tenant.get("/conversations", params={"outcome": "exploded"})).status_code == 400
    assert (await tenant.get("/conversations", params={"from": middle, "to": middle})).status_code == 400

    stranger = await tenants()
    assert (await stranger.get("/conversations")).json()["data"] == []
    assert (await stranger.get(f"/conversations/{first['conversationId']}")).status_code == 404


async def test_receipt_is_the_ordered_audit_trail(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent(greeting="Welcome to Acme!")
    script("Let me see.", [ToolCall("c1", "end_conversation", {"reason": "the customer said goodbye"})])
    created = await session(tenant, agent["id"], draftMode=True)
    await say(tenant, created["id"], "Hello")
    await say(tenant, created["id"], "Bye now")
    conversation_id = created["conversationId"]

    receipt = (await tenant.get(f"/conversations/{conversation_id}/receipt")).json()["data"]
    assert receipt["outcome"] == "ended_by_agent"
    events = receipt["events"]
    assert [(e["turn"], e["type"]) for e in events[:4]] == [
        (0, "agent_message"), (1, "user_utterance"), (1, "agent_message"), (2, "user_utterance")
    ]
    assert sorted(e["type"] for e in events[4:6]) == ["end", "tool_call"] and events[6]["type"] == "agent_message"
    assert [e["index"] for e in events] == list(range(len(events))) and len(events) == 7
    tool = next(e for e in events if e["type"] == "tool_call")
    assert tool["name"] == "end_conversation" and tool["arguments"] == {"reason": "the customer said goodbye"}
    assert events[3]["text"] == "Bye now" and all(e["tMs"] >= 0 and e["at"].endswith("Z") for e in events)
    assert events[6]["ttftMs"] is not None and events[6]["tMs"] >= events[3]["tMs"]

    transcript = (await tenant.get(f"/conversations/{conversation_id}/transcript")).json()["data"]
    assert [(t["role"], t["turn"]) for t in transcript["turns"]] == [
        ("assistant", 0), ("user", 1), ("assistant", 1), ("user", 2), ("assistant", 2)
    ]
    one = (await tenant.get(f"/conversations/{conversation_id}")).json()["data"]
    assert one["outcome"] == "ended_by_agent" and one["turnCount"] == 2 and one["durationMs"] >= 0
    assert one["summary"] == 'Asked "Hello" - ended by the agent.'


async def test_receipt_shows_the_knowledge_the_agent_used(
    services: Services, tenant: Tenant, script: Script, knowledge: KnowledgeService
) -> None:
    agent = await tenant.create_agent()
    await indexed(tenant, knowledge, agent["id"], kind="text", label="Parking",
                  text="Free parking is available behind the building on Elm Street.")
    await fund(services, tenant)
    assert (await tenant.post(f"/agents/{agent['id']}/publish")).status_code == 201
    llm = script("Park behind the building.")
    created = await session(tenant, agent["id"])
    await say(tenant, created["id"], "Where can I park?")
    assert any("Elm Street" in m.content for m in llm.calls[0].messages)
    events = (await tenant.get(f"/conversations/{created['conversationId']}/receipt")).json()["data"]["events"]
    retrieval = next(e for e in events if e["type"] == "kb_retrieval")
    assert retrieval["query"] == "Where can I park?" and retrieval["topScore"] > 0.3
    assert "Elm Street" in retrieval["passages"][0]["text"]


async def test_a_handoff_ends_the_chat_as_transferred(tenant: Tenant, script: Script) -> None:
    agent = await tenant.create_agent(handoffConfig={"transferDestination": "+14155550100"})
    script([ToolCall("c1", "transfer_to_human", {"reason": "the customer wants a refund"})])
    created = await session(tenant, agent["id"], draftMode=True)
    data = (await say(tenant, created["id"], "I want a refund, get me a person")).json()["data"]
    assert data["ended"] is True and data["session"]["outcome"] == "transferred"
    handoff = next(e for e in data["events"] if e["type"] == "handoff")
    assert handoff["destination"] == "+14155550100"
    listed = (await tenant.get("/conversations", params={"outcome": "transferred"})).json()["data"]
    assert [c["id"] for c in listed] == [created["conversationId"]]
    assert listed[0]["summary"] == 'Asked "I want a refund, get me a person" - transferred to a person.'
