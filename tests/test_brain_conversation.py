"""`AgentBrain.respond` end to end with ScriptedLLM: event order, failures, cancellation, effects, knowledge."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from pipeline.llm.errors import LLMBadResponse, LLMUnavailable
from pipeline.llm.types import ChatMessage, ToolCall
from runtime.brain.retrieval import VOICE_KNOWLEDGE_CHARS
from runtime.events import ConversationEvent
from runtime.knowledge import KnowledgeSnapshot, RetrievedChunk
from tests.test_brain_support import (
    GEO_SCHEMA,
    KNOWLEDGE,
    OPEN_HOURS,
    REASON_SCHEMA,
    SUNDAY_10AM_DENVER,
    Clock,
    FakeKnowledge,
    GapLog,
    Loopback,
    Reply,
    agent,
    brain,
    chunk,
    deps,
    message,
    of_type,
    scripted,
    seen_by_model,
    skill,
    string_schema,
    turn,
)


@pytest.fixture
async def server() -> AsyncIterator[Loopback]:
    async with Loopback().running() as lb:
        yield lb


async def test_a_plain_turn_streams_then_gives_the_whole_reply() -> None:
    llm = scripted("Hi! We are open until nine tonight.", ttft_s=0.01)
    b = brain(agent(), deps(llm))
    events = await turn(b, "Hello")
    assert events[0].type == "user_utterance" and events[0].data == {"text": "Hello", "source": "text"}
    assert {e.type for e in events[1:-1]} == {"agent_delta"}
    assert "".join(e.data["text"] for e in events[1:-1]) == message(events)
    assert events[-1].data["ttftMs"] >= 10 and events[-1].data["ttftMs"] <= events[-1].t_ms
    assert [m.role for m in b.history] == ["user", "assistant"]
    assert llm.calls[0].settings.tool_choice == "auto"
    assert [t.name for t in llm.calls[0].tools] == ["transfer_to_human", "end_conversation"]


async def test_the_reply_carries_the_token_usage_of_all_the_turns_model_calls() -> None:
    a = agent(skills=[skill("sk_geo", "Check delivery area", "geo",
                            {"action": "check_service_area", "originAddress": "120 Main St, Boulder, CO 80302",
                             "radiusMiles": 5}, schema=GEO_SCHEMA)])
    llm = scripted([ToolCall("g", "check_delivery_area", {"address": "200 Pearl St, Boulder, CO 80302"})],
                   "Yes, we deliver there.")
    events = await turn(brain(a, deps(llm)), "Do you deliver to 200 Pearl St?")
    # ScriptedLLM reports the words of the messages it was given as prompt tokens, and 8 per tool call
    prompts = [sum(len(m.content.split()) for m in call.messages) for call in llm.calls]
    assert len(prompts) == 2 and prompts[1] > prompts[0]
    assert events[-1].data["usage"] == {"promptTokens": sum(prompts), "cachedPromptTokens": 0,
                                        "completionTokens": 8 + 4}
    plain = await turn(brain(agent(), deps(scripted("Hi there."))), "Hello")
    assert plain[-1].data["usage"]["completionTokens"] == 2
    silent = await turn(brain(agent(), deps(scripted(LLMUnavailable("down")))), "Hello")
    assert "usage" not in silent[-1].data, "no model call finished: nothing to report"


async def test_llm_failure_gives_an_error_and_an_apology_and_the_next_turn_works() -> None:
    llm = scripted(LLMUnavailable("upstream down"), "Hello again!")
    b = brain(agent(), deps(llm))
    events = await turn(b, "Hi")
    [error] = of_type(events, "error")
    assert error.data["code"] == "llm_unavailable" and "upstream down" in error.data["message"]
    assert "trouble" in message(events)
    assert message(await turn(b, "Hi?")) == "Hello again!"
    assert [m.role for m in b.history] == ["user", "assistant", "user", "assistant"]


async def test_a_failure_mid_reply_replaces_the_partial_text() -> None:
    llm = scripted(["We deliver ", "to ", LLMBadResponse("garbled")], chunk_interval_s=0.0)
    b = brain(agent(), deps(llm))
    events = await turn(b, "Do you deliver?")
    assert of_type(events, "error")[0].data["code"] == "llm_error"
    assert "trouble" in message(events) and b.history[-1].content == message(events)


async def test_a_slow_model_times_out_and_is_cancelled() -> None:
    llm = scripted("Too late.", ttft_s=5.0)
    b = brain(agent(), deps(llm, llm_timeout_s=0.1))
    started = time.perf_counter()
    events = await turn(b, "Hello?")
    assert time.perf_counter() - started < 2
    assert of_type(events, "error")[0].data["code"] == "llm_timeout"
    assert llm.cancelled == 1
    assert "trouble" in message(events)


async def test_closing_the_stream_cancels_generation_and_keeps_the_conversation_usable() -> None:
    llm = scripted("one two three four five six seven eight", "Fine.", chunk_interval_s=0.02)
    b = brain(agent(), deps(llm))
    stream = b.respond("Count for me")
    seen: list[ConversationEvent] = []
    async for event in stream:
        seen.append(event)
        if len(of_type(seen, "agent_delta")) == 2:
            break
    await stream.aclose()
    assert llm.cancelled == 1
    assert b.history == (ChatMessage("user", "Count for me"), ChatMessage("assistant", "one two"))
    assert message(await turn(b, "Stop")) == "Fine."


async def test_cancelling_the_consumer_cancels_a_running_tool(server: Loopback) -> None:
    server.routes["/slow"] = Reply(200, {"late": True}, delay_s=10)
    a = agent(skills=[skill("sk_slow", "Slow lookup", "http_webhook", {"url": server.url("/slow")})])
    llm = scripted([ToolCall("s1", "slow_lookup", {})], "Never said.", "Next.")
    b = brain(a, deps(llm, tool_timeout_s=20))

    async def consume() -> list[ConversationEvent]:
        return await turn(b, "Look it up")

    task = asyncio.create_task(consume())
    await server.arrived.wait()
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - started < 1
    call, result = b.history[1], b.history[2]
    assert call.tool_calls[0].name == "slow_lookup"
    assert result.role == "tool" and "cancelled" in result.content and result.tool_call_id == "s1"
    assert message(await turn(b, "Never mind")) == "Never said."  # the script's next turn


async def test_a_second_respond_while_one_runs_is_refused() -> None:
    llm = scripted("slow reply here", chunk_interval_s=0.05)
    b = brain(agent(), deps(llm))
    first = b.respond("one")
    await anext(first)
    assert [e.data["code"] for e in await turn(b, "two")] == ["busy"]
    await first.aclose()


async def test_tool_steps_are_bounded_and_the_last_must_answer_in_words(server: Loopback) -> None:
    server.routes["/menu"] = Reply(200, {"pizzas": ["supreme"]})
    a = agent(skills=[skill("sk_menu", "Menu", "http_webhook", {"url": server.url("/menu"), "method": "GET"})])
    menu = [ToolCall("m", "menu", {})]
    llm = scripted(menu, menu, "We have the supreme.")
    b = brain(a, deps(llm, max_steps=3))
    events = await turn(b, "menu?")
    assert [c.settings.tool_choice for c in llm.calls] == ["auto", "auto", "none"]
    assert message(events) == "We have the supreme."
    roles = [m.role for m in b.history]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]


async def test_an_unsupported_skill_type_is_reported_to_the_model() -> None:
    a = agent(skills=[skill("sk_x", "Shopify orders", "shopify", {})])
    llm = scripted([ToolCall("x", "shopify_orders", {})], "That is not available.")
    events = await turn(brain(a, deps(llm)), "orders?")
    [call] = of_type(events, "tool_call")
    assert call.data["status"] == "error" and "not supported" in call.data["result"]["error"]
    assert message(events) == "That is not available."


# --- effects: end, transfer, take_message, geo ---------------------------------------------------------


async def test_end_call_says_goodbye_and_ends_the_conversation() -> None:
    a = agent(skills=[skill("sk_end", "Hang up", "end_call", {"goodbyeMessage": "Thanks for calling Tony's!"},
                            schema=REASON_SCHEMA)])
    llm = scripted([ToolCall("e", "hang_up", {"reason": "caller is done"})])
    b = brain(a, deps(llm))
    events = await turn(b, "That's all, bye")
    [end] = of_type(events, "end")
    assert end.data["reason"] == "caller is done"
    assert message(events) == "Thanks for calling Tony's!"
    assert b.ended
    after = await turn(b, "Hello?")
    assert [(e.type, e.data["code"]) for e in after] == [("error", "conversation_ended")]
    assert llm.remaining == 0 and len(llm.calls) == 1


async def test_built_in_end_conversation_uses_the_model_goodbye_or_a_default() -> None:
    llm = scripted(["Bye now!", ToolCall("e", "end_conversation", {"reason": "done"})])
    b = brain(agent(), deps(llm))
    assert message(await turn(b, "bye")) == "Bye now!" and b.ended
    silent = brain(agent(), deps(scripted([ToolCall("e", "end_conversation", {"reason": "done"})])))
    assert message(await turn(silent, "bye")) == "Thank you for reaching out. Goodbye!"


async def test_warm_transfer_by_rule_announces_who_and_why() -> None:
    reason = "question about a charge on my invoice"
    llm = scripted([ToolCall("t", "transfer_to_human", {"reason": reason})])
    b = brain(agent(), deps(llm))
    events = await turn(b, "I was charged twice on my invoice, get me a person")
    [handoff] = of_type(events, "handoff")
    assert handoff.data == {"destination": "+14155550111", "reason": reason, "warm": True, "label": "Billing",
                            "afterHours": False, "skillId": None}
    assert message(events).startswith("I'm connecting you with our Billing team now (reason: question about a charge")
    assert not b.ended


async def test_transfer_to_the_default_destination() -> None:
    llm = scripted([ToolCall("t", "transfer_to_human", {"reason": "wants the manager"})])
    events = await turn(brain(agent(), deps(llm)), "manager please")
    assert of_type(events, "handoff")[0].data["destination"] == "+14155550100"


async def test_transfer_after_hours_is_refused_by_default() -> None:
    a = agent(businessHours=OPEN_HOURS)
    llm = scripted([ToolCall("t", "transfer_to_human", {"reason": "wants a person"})],
                   "We're closed now; can I take a message?")
    events = await turn(brain(a, deps(llm, Clock(SUNDAY_10AM_DENVER))), "person please")
    assert of_type(events, "handoff") == []
    [guard] = of_type(events, "guardrail")
    assert (guard.data["policy"], guard.data["decision"]) == ("after_hours", "deny")
    assert "take a message" in seen_by_model(llm)
    assert message(events) == "We're closed now; can I take a message?"


async def test_transfer_after_hours_goes_to_the_on_call_number_when_allowed() -> None:
    a = agent(businessHours=OPEN_HOURS, afterHours={"allowHumanTransfer": True, "number": "+14155550199"})
    llm = scripted([ToolCall("t", "transfer_to_human", {"reason": "no heat, emergency"})])
    events = await turn(brain(a, deps(llm, Clock(SUNDAY_10AM_DENVER))), "Emergency!")
    [handoff] = of_type(events, "handoff")
    assert (handoff.data["destination"], handoff.data["afterHours"]) == ("+14155550199", True)
    assert "our on-call team" in message(events)


async def test_transfer_skill_uses_its_destination_and_announcement() -> None:
    a = agent(handoffConfig={"warm": False, "transferDestination": None, "transferRules": []},
              skills=[skill("sk_t", "Transfer to kitchen", "transfer",
                            {"destination": "+14155550177", "announce": "Connecting you to the kitchen."},
                            schema=REASON_SCHEMA)])
    llm = scripted(["Sure. ", ToolCall("t", "transfer_to_kitchen", {"reason": "order change"})])
    events = await turn(brain(a, deps(llm)), "talk to the kitchen")
    [handoff] = of_type(events, "handoff")
    assert (handoff.data["destination"], handoff.data["warm"], handoff.data["skillId"]) == (
        "+14155550177", False, "sk_t")
    assert message(events) == "Sure. Connecting you to the kitchen."
    assert "".join(e.data["text"] for e in of_type(events, "agent_delta")) == message(events)


async def test_take_message_is_delivered_and_recorded(server: Loopback) -> None:
    server.routes["/messages"] = Reply(200, {})
    a = agent(skills=[skill("sk_msg", "Take a message", "take_message",
                            {"fields": ["name", "phone", "message"], "webhookUrl": server.url("/messages")},
                            schema=string_schema("name", "phone", "message", required=False))])
    args = {"name": "Ann", "phone": "+14155550123", "message": "Please call back about catering"}
    llm = scripted([ToolCall("m", "take_a_message", args)], "Got it, Ann. We'll call you back.")
    events = await turn(brain(a, deps(llm)), "Can you take a message?")
    [call] = of_type(events, "tool_call")
    assert call.data["status"] == "ok" and call.data["result"]["fields"] == args
    assert server.seen[0].json["fields"] == args and server.seen[0].json["conversationId"] == "cnv_1"
    assert server.seen[0].json["callerId"] == "+14155559999"


async def test_geo_skill_through_the_brain() -> None:
    a = agent(skills=[skill("sk_geo", "Check delivery area", "geo",
                            {"action": "check_service_area", "originAddress": "120 Main St, Boulder, CO 80302",
                             "radiusMiles": 5}, schema=GEO_SCHEMA)])
    llm = scripted([ToolCall("g", "check_delivery_area", {"address": "200 Pearl St"})],
                   [ToolCall("g2", "check_delivery_area", {"address": "200 Pearl St, Boulder, CO 80302"})],
                   "Yes, we deliver there.")
    events = await turn(brain(a, deps(llm)), "Do you deliver to 200 Pearl St?")
    first, second = of_type(events, "tool_call")
    assert first.data["status"] == "error" and "ZIP" in first.data["result"]["error"]
    assert second.data["result"]["withinServiceArea"] is True


# --- knowledge -----------------------------------------------------------------------------------------


async def test_each_turn_retrieves_knowledge_for_the_model() -> None:
    search = FakeKnowledge([chunk("A large supreme is $18.50.", 0.82), chunk("We open at 11.", 0.2)])
    llm = scripted("A large supreme is $18.50.")
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search, gaps=GapLog()))
    events = await turn(b, "How much is a large supreme?")
    [kb] = of_type(events, "kb_retrieval")
    assert kb.data["query"] == "How much is a large supreme?" and kb.data["topScore"] == 0.82
    assert [p["used"] for p in kb.data["passages"]] == [True, False]
    sent = llm.calls[0].messages
    assert sent[-2].role == "system" and "$18.50" in sent[-2].content and "We open at 11" not in sent[-2].content
    assert sent[-1] == ChatMessage("user", "How much is a large supreme?")
    assert all("$18.50" not in m.content for m in b.history if m.role != "assistant")  # for that turn only


async def test_on_a_call_the_model_gets_the_passages_sentences_the_search_kept_in_chat_whole_passages() -> None:
    """The local model reads its prompt a token at a time before a caller hears a word: a call asks the search
    for the sentences nearest the question (`VOICE_KNOWLEDGE_CHARS`), chat keeps the passages whole."""
    passage = "A large supreme is $18.50. It has peppers, onions and olives. We bake it for nine minutes."
    sent: dict[str, str] = {}
    for channel in ("chat", "voice"):
        search = FakeKnowledge([chunk(passage, 0.82)])
        llm = scripted("A large supreme is $18.50.")
        b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search), channel=channel)
        await turn(b, "How much is a large supreme?")
        assert search.focus_asked == [VOICE_KNOWLEDGE_CHARS if channel == "voice" else 0]
        sent[channel] = llm.calls[0].messages[-2].content
    assert passage in sent["chat"]
    assert "A large supreme is $18.50." in sent["voice"] and "nine minutes" not in sent["voice"]


async def test_on_a_call_each_turns_passages_stay_before_its_message_so_each_prompt_extends_the_last() -> None:
    """A model that keeps state evaluates only what is new: the next prompt is the last one, its reply, then
    the new turn. Passages given for one turn only made the next prompt differ from there (~1.2 s of prompt
    evaluation before the first word on a call instead of ~0.3 s)."""
    search = FakeKnowledge([chunk("A large supreme is $18.50. It has olives.", 0.82)])
    llm = scripted("It's $18.50.", "Yes, olives.", "Bye!")
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search), channel="voice")
    await turn(b, "How much is a large supreme?")
    await turn(b, "Does it have olives?")
    search.chunks = []  # nothing found for this one
    await turn(b, "Okay, thanks.")
    first, second, third = (list(call.messages) for call in llm.calls)
    assert second[: len(first)] == first and second[len(first)] == ChatMessage("assistant", "It's $18.50.")
    assert third[: len(second)] == second and third[len(second)] == ChatMessage("assistant", "Yes, olives.")
    assert [m.role for m in third[len(second) + 1 :]] == ["user"]
    assert sum("A large supreme is $18.50." in m.content for m in third if m.role == "system") == 2
    assert all(m.role != "system" for m in b.history)  # the transcript never holds them


async def test_on_a_call_small_knowledge_is_in_the_system_prompt_and_searched_only_after_the_reply() -> None:
    """Knowledge this small rides whole in the call's system prompt (a prefix the model caches once), so a
    turn's prompt is the conversation alone; the search still runs, after the reply, for the receipt and
    the gaps. Chat keeps searching before the model is asked."""
    facts = "We open at noon on Saturday. A pepperoni pizza is 14 dollars."
    search = FakeKnowledge([chunk(facts, 0.8)], whole=True)
    gaps = GapLog()
    llm = scripted("We open at noon.", "It's fourteen dollars.", "Sorry, I don't know.")
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search, gaps=gaps), channel="voice")
    await b.warm_up()
    assert facts in b.system_prompt() and search.queries == [], "loaded whole, not searched"
    events = await turn(b, "When do you open on Saturday?")
    assert [e.type for e in events][-2:] == ["agent_message", "kb_retrieval"], "searched after the reply"
    assert of_type(events, "kb_retrieval")[0].data["query"] == "When do you open on Saturday?"
    await turn(b, "How much is a pepperoni?")
    search.chunks = [chunk(facts, 0.1)]  # the search finds nothing like it: a gap, as before
    await turn(b, "Do you sell burgers?")
    first, second, third = (list(call.messages) for call in llm.calls)
    assert first[0].content == b.system_prompt() and [m.role for m in first] == ["system", "user"]
    assert second[: len(first)] == first and [m.role for m in second[len(first) :]] == ["assistant", "user"]
    assert third[: len(second)] == second, "each prompt extends the last"
    assert [g[2] for g in gaps.gaps] == ["Do you sell burgers?"]
    chat_search = FakeKnowledge([chunk(facts, 0.8)], whole=True)
    chat_llm = scripted("We open at noon.")
    chat = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(chat_llm, knowledge=chat_search))
    events = await turn(chat, "When do you open on Saturday?")
    assert facts not in chat.system_prompt() and [e.type for e in events][1] == "kb_retrieval"
    assert facts in chat_llm.calls[0].messages[-2].content


async def test_on_a_call_knowledge_too_big_or_unloadable_for_the_prompt_is_searched_per_turn() -> None:
    facts = "We open at noon on Saturday."
    for search in (FakeKnowledge([chunk(facts, 0.8)]), FakeKnowledge([chunk(facts * 100, 0.8)], whole=True)):
        llm = scripted("We open at noon.")
        b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search), channel="voice")
        events = await turn(b, "When do you open on Saturday?")
        assert facts not in b.system_prompt() and [e.type for e in events][1] == "kb_retrieval"
        assert facts in llm.calls[0].messages[-2].content
    broken = FakeKnowledge([chunk(facts, 0.8)], whole=True, fail=True)
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(scripted("Sorry."), knowledge=broken), channel="voice")
    await b.warm_up()
    assert facts not in b.system_prompt(), "a failed load leaves the prompt as it was; turns search as before"


async def test_a_turns_passages_leave_the_prompt_with_its_message() -> None:
    """A channel that rewrites the history (a cut-short turn taken back, `load_history`) takes the passages
    of the turns it removed with them; a reply replaced by what the caller heard keeps its turn's."""
    search = FakeKnowledge([chunk("We open at 11.", 0.8)])
    llm = scripted("We open at eleven and close late.", "Sure.", "Okay.")
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search), channel="voice")
    await turn(b, "When do you open?")
    asked = ChatMessage("user", "When do you open?")
    b.load_history([asked, ChatMessage("assistant", "We open at eleven")])  # the words the caller heard
    search.chunks = []
    await turn(b, "And on Sunday?")
    assert [m.role for m in llm.calls[1].messages[1:]] == ["system", "user", "assistant", "user"]
    b.load_history([])  # the turns taken back
    await turn(b, "Hello?")
    assert [m.role for m in llm.calls[2].messages[1:]] == ["user"]


async def test_on_a_call_knowledge_lookup_is_never_offered_so_the_tools_stay_the_same_all_call() -> None:
    """The tool list is in the prompt's cached prefix: a list that changed between turns with and without
    passages made the local model evaluate the whole conversation again. On a call every message is
    searched before the model is asked; in chat the model may still look up with its own words."""
    search = FakeKnowledge([chunk("We open at 11.", 0.8)])
    llm = scripted("We open at eleven.", "Bye!")
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search), channel="voice")
    await turn(b, "When do you open?")
    search.chunks = []
    await turn(b, "Thanks, bye.")
    offered = [[spec.name for spec in call.tools] for call in llm.calls]
    assert offered[0] == offered[1] and "knowledge_lookup" not in offered[0]
    chat = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(scripted("Hi"), knowledge=search))
    assert "knowledge_lookup" in [spec.name for spec in chat.tools.specs]


async def test_on_a_call_a_reply_reading_out_the_passages_heading_says_just_their_sentences() -> None:
    """The 0.5B model has answered a caller with its prompt: the knowledge heading, then the passage. The
    caller hears the sentences the search kept, and no guardrail event blames the operator's rules."""
    search = FakeKnowledge([chunk("We open at 11 on Saturdays. We deliver everywhere.", 0.8)])
    echo = "Knowledge passages for the customer's next message (use them if they answer it): [1] (Menu) We open"
    llm = scripted(echo)
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search), channel="voice")
    events = await turn(b, "When do you open on Saturday?")
    assert message(events) == "We open at 11 on Saturdays."
    assert "".join(e.data["text"] for e in of_type(events, "agent_delta")) == "We open at 11 on Saturdays."
    assert not of_type(events, "guardrail")
    assert b.history[-1] == ChatMessage("assistant", "We open at 11 on Saturdays.")


async def test_unanswerable_questions_are_recorded_as_gaps() -> None:
    search = FakeKnowledge([chunk("We open at 11.", 0.1)])
    gaps = GapLog()
    llm = scripted("I'm not sure, can I take a message?", "You're welcome!")
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search, gaps=gaps))
    await turn(b, "Do you have gluten-free crust?")
    await turn(b, "thanks!")  # not a question: not a gap
    assert gaps.gaps == [("org_1", "agt_tony", "Do you have gluten-free crust?", 0.1, "cnv_1")]


async def test_a_failing_knowledge_search_does_not_end_the_turn() -> None:
    llm = scripted("Let me help anyway.")
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=FakeKnowledge(fail=True)))
    events = await turn(b, "What's on the menu?")
    assert of_type(events, "error")[0].data["code"] == "knowledge_unavailable"
    assert message(events) == "Let me help anyway."


@dataclass
class FindsOnlyFor(FakeKnowledge):
    """Finds its chunks only for one query (the model's own), nothing for the caller's words."""

    query: str = ""

    async def search(
        self, snapshot: KnowledgeSnapshot, query: str, top_k: int, *, focus_chars: int = 0
    ) -> list[RetrievedChunk]:
        found = await super().search(snapshot, query, top_k, focus_chars=focus_chars)
        return found if query == self.query else []


async def test_knowledge_lookup_tool() -> None:
    search = FindsOnlyFor([chunk("Gluten-free crust costs $2 extra.", 0.7)], query="gluten-free crust price")
    llm = scripted([ToolCall("k", "knowledge_lookup", {"query": "gluten-free crust price"})], "It's $2 extra.")
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search))
    events = await turn(b, "hmm")
    assert len(of_type(events, "kb_retrieval")) == 2  # the automatic one (nothing found), then the tool's
    [call] = of_type(events, "tool_call")
    assert call.data["result"] == {"passages": [{"source": "Menu", "text": "Gluten-free crust costs $2 extra."}]}
    assert search.queries == ["hmm", "gluten-free crust price"]


async def test_knowledge_lookup_is_not_offered_when_the_passages_are_already_in_the_prompt() -> None:
    search = FakeKnowledge([chunk("Gluten-free crust costs $2 extra.", 0.7)])
    llm = scripted("It's $2 extra.")
    b = brain(agent(knowledge=KNOWLEDGE.to_config()), deps(llm, knowledge=search))
    assert "knowledge_lookup" in [spec.name for spec in b.tools.specs]
    events = await turn(b, "How much is the gluten-free crust?")
    assert message(events) == "It's $2 extra." and len(of_type(events, "kb_retrieval")) == 1
    assert "knowledge_lookup" not in [spec.name for spec in llm.calls[0].tools]
    assert "Gluten-free crust costs $2 extra." in seen_by_model(llm)
