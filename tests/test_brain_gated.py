"""Guardrails end to end through `AgentBrain.respond`, with ScriptedLLM and a loopback verifier and API.

What the model was sent is read back from `ScriptedLLM.calls`: a refused skill's data must never be in it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pipeline.llm.types import ToolCall
from runtime.agent_config import CompiledAgent
from runtime.brain import AgentBrain
from runtime.brain.brain import FALLBACK
from runtime.brain.prompt import echoes
from tests.test_brain_support import (
    OPEN_HOURS,
    REASON_SCHEMA,
    SUNDAY_10AM_DENVER,
    Clock,
    Loopback,
    Reply,
    agent,
    brain,
    deps,
    message,
    method,
    of_type,
    policy,
    scripted,
    seen_by_model,
    skill,
    string_schema,
    turn,
)

GOOD = {"date_of_birth": "1990-01-01", "postcode": "80302"}
BAD = {"date_of_birth": "1999-09-09", "postcode": "80302"}
ORDER = {"order_id": "A1", "status": "shipped", "eta": "Friday", "address": "1 Secret St"}


@pytest.fixture
async def server() -> AsyncIterator[Loopback]:
    async with Loopback().running() as lb:
        lb.routes["/verify"] = lambda seen: Reply(200, {"verified": seen.json == GOOD})
        lb.routes["/orders"] = Reply(200, ORDER)
        lb.routes["/refund"] = Reply(200, {"refunded": True, "amount": 18.5})
        yield lb


def shop(server: Loopback, *, allowed: list[str] | None = None, guardrails: list[dict[str, Any]] | None = None,
         **method_over: Any) -> CompiledAgent:
    return agent(
        skills=[
            skill("sk_verify", "Verify identity", "http_webhook", {"url": server.url("/verify"), "method": "POST"}),
            skill("sk_orders", "Order lookup", "http_webhook", {"url": server.url("/orders"), "method": "GET"},
                  schema=string_schema("order_id"), requiresVerifiedIdentity=True, allowedFields=allowed),
            skill("sk_refund", "Issue refund", "http_webhook", {"url": server.url("/refund"), "method": "POST"},
                  schema=string_schema("order_id"), requiresVerifiedIdentity=True),
        ],
        callerVerification=[method(stepUpFor=["refund"], **method_over)],
        guardrails=guardrails or [],
    )


def lookup(n: int = 1) -> list[ToolCall]:
    return [ToolCall(f"look_{n}", "order_lookup", {"order_id": "A1"})]


def verify(answers: dict[str, str], n: int = 1) -> list[ToolCall]:
    return [ToolCall(f"ver_{n}", "verify_identity", answers)]


def refund(n: int = 1) -> list[ToolCall]:
    return [ToolCall(f"ref_{n}", "issue_refund", {"order_id": "A1"})]


async def test_gated_skill_refuses_until_verified_then_works(server: Loopback) -> None:
    llm = scripted(
        lookup(1), "I need to verify you first. What are your date of birth and postcode?",
        verify(GOOD), lookup(2), "Your order shipped and arrives Friday.",
    )
    b = brain(shop(server), deps(llm))
    first = await turn(b, "Where is my order A1?")
    [deny] = of_type(first, "guardrail")
    assert (deny.data["policy"], deny.data["decision"], deny.data["skillId"]) == (
        "verify_before_disclose", "deny", "sk_orders")
    [refused] = of_type(first, "tool_call")
    assert refused.data["status"] == "refused"
    assert "/orders" not in server.paths()  # the skill never ran
    after_refusal = seen_by_model(llm, 1)
    assert "must be verified first" in after_refusal and "shipped" not in after_refusal
    assert "Secret" not in str(first) and "shipped" not in str(first[:-1])

    second = await turn(b, "1990-01-01 and 80302")
    [check] = of_type(second, "verification")
    assert (check.data["method"], check.data["outcome"], check.data["attempt"]) == ("dob_postcode", "verified", 1)
    calls = of_type(second, "tool_call")
    assert [c.data["name"] for c in calls] == ["verify_identity", "order_lookup"]
    assert calls[0].data["arguments"] == {"date_of_birth": "[redacted]", "postcode": "[redacted]"}
    assert calls[0].data["result"] == {"verified": True} and calls[0].data["skillId"] == "sk_verify"
    assert calls[1].data["status"] == "ok" and calls[1].data["result"]["status"] == "shipped"
    assert [g.data["decision"] for g in of_type(second, "guardrail")] == ["allow"]
    assert "shipped" in seen_by_model(llm, 4)
    assert message(second) == "Your order shipped and arrives Friday."
    assert server.paths() == ["/verify", "/orders"]
    assert server.seen[1].query == {"order_id": ["A1"]}
    assert b.verified["verified"] is True


async def test_verification_expires_after_the_ttl(server: Loopback) -> None:
    clock = Clock()
    llm = scripted(verify(GOOD), lookup(1), "Shipped.", lookup(2), "Please verify again.")
    b = brain(shop(server, tokenTtlSeconds=60), deps(llm, clock))
    await turn(b, "1990-01-01, 80302, where is A1?")
    clock.advance(seconds=61)
    assert b.verified["verified"] is False
    events = await turn(b, "And where is it now?")
    [deny] = of_type(events, "guardrail")
    assert deny.data["decision"] == "deny" and deny.data["reason"] == "the verification expired"
    assert server.paths() == ["/verify", "/orders"]


async def test_max_attempts_locks_verification(server: Loopback) -> None:
    llm = scripted(
        verify(BAD, 1), "That didn't match. Try again?",
        verify(BAD, 2), "Sorry, verification is locked.",
        verify(GOOD, 3), lookup(1), "I can't look that up.",
    )
    b = brain(shop(server, maxAttempts=2), deps(llm))
    first = await turn(b, "1999-09-09 80302")
    assert [(v.data["outcome"], v.data["attemptsLeft"]) for v in of_type(first, "verification")] == [("failed", 1)]
    assert of_type(first, "tool_call")[0].data["result"]["attemptsLeft"] == 1
    second = await turn(b, "1999-09-09 80302 again")
    assert [v.data["outcome"] for v in of_type(second, "verification")] == ["locked"]
    third = await turn(b, "ok 1990-01-01 80302")  # right answers, too late
    outcomes = [(v.data["outcome"], v.data.get("refused")) for v in of_type(third, "verification")]
    assert outcomes == [("locked", True)]
    [deny] = of_type(third, "guardrail")
    assert "locked" in deny.data["reason"]
    assert server.paths() == ["/verify", "/verify"]  # the third answer never reached the verifier
    assert b.verified["locked"] is True


async def test_step_up_reverifies_even_after_basic_verification(server: Loopback) -> None:
    llm = scripted(
        verify(GOOD, 1), lookup(1), "Shipped. Anything else?",
        refund(1), "For a refund I must verify you again: date of birth and postcode?",
        verify(GOOD, 2), refund(2), "Refunded 18.50.",
        refund(3), "Another refund needs another check.",
    )
    b = brain(shop(server), deps(llm))
    await turn(b, "1990-01-01 80302, where is A1?")
    asked = await turn(b, "Please refund it")
    assert [(g.data["policy"], g.data["decision"]) for g in of_type(asked, "guardrail")] == [
        ("verify_before_disclose", "allow"), ("step_up", "deny")]
    assert "/refund" not in server.paths()
    done = await turn(b, "1990-01-01 80302")
    assert [(g.data["policy"], g.data["decision"]) for g in of_type(done, "guardrail")] == [
        ("verify_before_disclose", "allow"), ("step_up", "allow")]
    assert of_type(done, "tool_call")[-1].data["result"] == {"refunded": True, "amount": 18.5}
    again = await turn(b, "Refund it again")
    assert of_type(again, "guardrail")[-1].data["decision"] == "deny"
    assert server.paths().count("/refund") == 1


async def test_a_failing_verifier_is_not_an_attempt(server: Loopback) -> None:
    server.routes["/verify"] = Reply(503, {})
    llm = scripted(verify(GOOD), "Our system is busy, one moment.")
    b = brain(shop(server, maxAttempts=1), deps(llm))
    events = await turn(b, "1990-01-01 80302")
    [check] = of_type(events, "verification")
    assert check.data["outcome"] == "failed" and check.data["counted"] is False
    assert b.verified["locked"] is False


async def test_allowed_fields_filter_what_the_model_sees(server: Loopback) -> None:
    llm = scripted(verify(GOOD), lookup(), "It shipped.")
    b = brain(shop(server, allowed=["status", "eta"]), deps(llm))
    events = await turn(b, "1990-01-01 80302 where is A1")
    [allow, filtered] = of_type(events, "guardrail")
    assert allow.data["decision"] == "allow"
    assert (filtered.data["policy"], filtered.data["decision"]) == ("field_allowlist", "filter")
    assert filtered.data["removed"] == ["order_id", "address"]
    assert of_type(events, "tool_call")[-1].data["result"] == {"status": "shipped", "eta": "Friday"}
    assert "Secret" not in seen_by_model(llm) and "Friday" in seen_by_model(llm)


async def test_field_allowlist_policy_by_skill_type(server: Loopback) -> None:
    llm = scripted(verify(GOOD), lookup(), "It shipped.")
    guard = [policy("field_allowlist", {"fields": ["status"]}, skill_type="http_webhook")]
    b = brain(shop(server, guardrails=guard), deps(llm))
    events = await turn(b, "1990-01-01 80302 where is A1")
    assert of_type(events, "tool_call")[-1].data["result"] == {"status": "shipped"}


async def test_verify_before_disclose_policy_gates_an_unflagged_skill(server: Loopback) -> None:
    a = agent(
        skills=[skill("sk_verify", "Verify identity", "http_webhook", {"url": server.url("/verify")}),
                skill("sk_bal", "Balance", "http_webhook", {"url": server.url("/orders"), "method": "GET"})],
        callerVerification=[method()],
        guardrails=[policy("verify_before_disclose", skill_id="sk_bal")],
    )
    llm = scripted([ToolCall("b1", "balance", {})], "Please verify first.")
    events = await turn(brain(a, deps(llm)), "What's my balance?")
    assert of_type(events, "guardrail")[0].data["decision"] == "deny"
    assert server.paths() == []


# --- content rules ---------------------------------------------------------------------------------


def ruled() -> CompiledAgent:
    return agent(guardrails=[
        policy("content_rule", {"blockedTopics": ["politics"], "response": "I can only help with pizza."}),
        policy("content_rule", {"blockedPhrases": ["free pizza"], "response": "Let me check our current offers."}),
    ])


async def test_a_blocked_topic_is_answered_without_the_model() -> None:
    llm = scripted("Hello!")
    b = brain(ruled(), deps(llm))
    events = await turn(b, "What do you think about politics?")
    assert [e.type for e in events] == ["user_utterance", "guardrail", "agent_delta", "agent_message"]
    assert events[1].data["policy"] == "content_rule" and events[1].data["topic"] == "politics"
    assert message(events) == "I can only help with pizza."
    assert llm.calls == []
    assert message(await turn(b, "Hi")) == "Hello!"  # the next turn goes to the model as usual


async def test_a_reply_with_a_blocked_phrase_is_replaced_and_never_streamed() -> None:
    llm = scripted(["Great news: you get ", "a FREE ", "pizza with every order!"], chunk_interval_s=0.0)
    b = brain(ruled(), deps(llm))
    events = await turn(b, "Any deals?")
    streamed = "".join(e.data["text"] for e in of_type(events, "agent_delta"))
    assert "free pizza" not in streamed.lower()
    [guard] = of_type(events, "guardrail")
    assert (guard.data["decision"], guard.data["phrase"]) == ("deny", "free pizza")
    assert message(events) == "Let me check our current offers."
    assert b.history[-1].content == "Let me check our current offers."
    assert llm.cancelled == 1  # generation stopped at the phrase


async def test_a_reply_reading_out_an_instruction_is_never_streamed_and_becomes_the_fallback() -> None:
    """Heard on a call: the 0.5B model answered a question with a rule of its prompt, tool name and all."""
    llm = scripted(["When the customer ", "says goodbye or has nothing else, ", "call end_conversation."],
                   chunk_interval_s=0.0)  # fmt: skip
    b = brain(agent(), deps(llm))
    events = await turn(b, "How much is the cake?")
    assert of_type(events, "guardrail") == []  # the model's slip, not the operator's rule
    assert [e.data["text"] for e in of_type(events, "agent_delta")] == [FALLBACK]
    assert message(events) == FALLBACK and b.history[-1].content == FALLBACK


async def test_a_reply_naming_a_tool_stops_before_the_name() -> None:
    llm = scripted(["Sure, I will ", "use transfer_to", "_human now."], chunk_interval_s=0.0)
    b = brain(agent(), deps(llm))
    events = await turn(b, "Can I talk to someone?")
    streamed = "".join(e.data["text"] for e in of_type(events, "agent_delta"))
    assert streamed == "Sure, I will use " and message(events) == FALLBACK
    assert llm.cancelled == 1
    # A skill named as one word is a word a reply may say; underscores make a name.
    skills = [skill("sk_w", "Weather", "http_webhook", {"url": "https://x.example/w"}),
              skill("sk_o", "Order status", "http_webhook", {"url": "https://x.example/o"})]  # fmt: skip
    named = echoes(brain(agent(skills=skills), deps(scripted())).tools)
    assert {"transfer_to_human", "order_status"} <= set(named) and "weather" not in named


# --- business hours and rate limits ---------------------------------------------------------------


async def test_business_hours_policy_blocks_skills_while_closed(server: Loopback) -> None:
    a = agent(
        businessHours=OPEN_HOURS,
        skills=[skill("sk_menu", "Menu", "http_webhook", {"url": server.url("/orders"), "method": "GET"}),
                skill("sk_msg", "Take message", "take_message", {"fields": ["name"]}, schema=string_schema("name"))],
        guardrails=[policy("business_hours", {"restrictSkillsAfterHours": True})],
    )
    llm = scripted([ToolCall("m1", "menu", {})], [ToolCall("t1", "take_message", {"name": "Ann"})], "Noted.")
    events = await turn(brain(a, deps(llm, Clock(SUNDAY_10AM_DENVER))), "Menu? Also take a message from Ann")
    [closed] = of_type(events, "guardrail")
    assert (closed.data["policy"], closed.data["decision"], closed.data["skillId"]) == (
        "business_hours", "deny", "sk_menu")
    assert [c.data["status"] for c in of_type(events, "tool_call")] == ["refused", "ok"]
    assert server.paths() == []


async def test_rate_limit_per_conversation(server: Loopback) -> None:
    a = agent(skills=[skill("sk_menu", "Menu", "http_webhook", {"url": server.url("/orders"), "method": "GET"})],
              guardrails=[policy("rate_limit", {"maxPerCall": 2}, skill_id="sk_menu")])
    menu = [ToolCall("m", "menu", {})]
    llm = scripted(menu, menu, menu, "Done.")
    events = await turn(brain(a, deps(llm, max_steps=4)), "menu x3")
    assert [g.data["decision"] for g in of_type(events, "guardrail")] == ["allow", "allow", "deny"]
    assert server.paths() == ["/orders", "/orders"]


async def test_confirmation_needs_a_yes_after_the_agent_asked(server: Loopback) -> None:
    server.routes["/submit"] = lambda seen: Reply(200, {"orderId": "o_9"})
    a = agent(skills=[skill("sk_sub", "Submit order", "http_webhook", {"url": server.url("/submit")},
                            schema=string_schema("items"), requiresConfirmation=True)])
    submit = [ToolCall("s", "submit_order", {"items": "large supreme"})]
    llm = scripted(submit, "Shall I place an order for a large supreme?", submit, "Placed! Order o_9.",
                   submit, "Please confirm first.")
    b = brain(a, deps(llm))
    first = await turn(b, "A large supreme please")
    assert of_type(first, "guardrail")[0].data["decision"] == "deny"
    assert "Confirm with the user first" in seen_by_model(llm, 1)
    second = await turn(b, "Yes please")
    assert of_type(second, "guardrail")[0].data["decision"] == "allow"
    assert message(second) == "Placed! Order o_9."
    third = await turn(b, "yes")  # the last reply asked nothing: no confirmation
    assert of_type(third, "guardrail")[0].data["decision"] == "deny"
    assert server.paths() == ["/submit"]


# --- a channel that rebuilds the brain every turn -------------------------------------------------------


async def test_state_carries_verification_and_lockout_across_rebuilt_brains(server: Loopback) -> None:
    """The chat channel builds a fresh brain per turn from stored history; `state` must travel with it."""
    clock = Clock()
    a = shop(server, maxAttempts=2, tokenTtlSeconds=60)
    llm = scripted(verify(GOOD), "Verified.", lookup(), "Shipped.", lookup(2), "Verify again please.")

    def rebuilt(previous: AgentBrain | None) -> AgentBrain:
        b = brain(a, deps(llm, clock))
        if previous is not None:
            b.load_history(previous.history)
            b.load_state(json.loads(json.dumps(previous.state)))  # stored as JSON in between
        return b

    first = rebuilt(None)
    await turn(first, "1990-01-01 80302")
    second = rebuilt(first)
    assert second.verified["verified"] is True
    assert of_type(await turn(second, "where is A1?"), "tool_call")[0].data["status"] == "ok"
    clock.advance(seconds=61)
    third = rebuilt(second)
    assert of_type(await turn(third, "and now?"), "guardrail")[0].data["reason"] == "the verification expired"

    locker = scripted(verify(BAD, 1), "No match.", verify(BAD, 2), "Locked.", verify(GOOD, 3), "Still locked.")
    b1 = brain(a, deps(locker, clock))
    await turn(b1, "1999-09-09 80302")
    b2 = brain(a, deps(locker, clock))
    b2.load_state(b1.state)
    await turn(b2, "1999-09-09 80302")
    b3 = brain(a, deps(locker, clock))
    b3.load_state(b2.state)
    events = await turn(b3, "1990-01-01 80302")
    assert [v.data["outcome"] for v in of_type(events, "verification")] == ["locked"]
    assert server.paths().count("/verify") == 3  # one good check above, two bad here; the third never sent


async def test_state_carries_the_end_and_skill_runs() -> None:
    a = agent(skills=[skill("sk_end", "Hang up", "end_call", {}, schema=REASON_SCHEMA)],
              guardrails=[policy("rate_limit", {"maxPerCall": 1})])
    b1 = brain(a, deps(scripted([ToolCall("e", "hang_up", {"reason": "done"})])))
    await turn(b1, "bye")
    assert b1.state["ended"] is True and b1.state["skillRuns"] == {"sk_end": 1}
    b2 = brain(a, deps(scripted("never")))
    b2.load_state(b1.state)
    assert b2.ended and [e.data["code"] for e in await turn(b2, "hello?")] == ["conversation_ended"]
    with pytest.raises(ValueError, match="version"):
        b2.load_state({"version": 99})
