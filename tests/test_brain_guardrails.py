"""The guardrail rules and the verification state machine, without any I/O."""

from __future__ import annotations

import itertools
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime.agent_config import CompiledAgent, Skill, VerificationMethod
from runtime.brain import guardrails as g
from runtime.brain.text import is_affirmative, keywords, looks_like_question, snake_case
from runtime.brain.verification import TRANSITIONS, VEffect, Verification, VInput, VState
from tests.test_brain_support import WEDNESDAY_10AM_DENVER, agent, method, policy, skill

NOW = WEDNESDAY_10AM_DENVER


def the_skill(a: CompiledAgent, skill_id: str) -> Skill:
    return next(s for s in a.skills if s.id == skill_id)


def methods(**over: Any) -> list[VerificationMethod]:
    return list(agent(callerVerification=[method(**over)]).caller_verification)


# --- coverage --------------------------------------------------------------------------------------


def coverage_agent(*policies: dict[str, Any]) -> CompiledAgent:
    return agent(
        skills=[
            skill("sk_get", "Order lookup", "http_webhook", {"url": "https://x.example", "method": "GET"}),
            skill("sk_post", "Submit order", "http_webhook", {"url": "https://x.example", "method": "POST"}),
            skill("sk_msg", "Take a message", "take_message", {"fields": ["name"]}),
            skill("sk_end", "Hang up", "end_call", {}),
            skill("sk_geo", "Delivery area", "geo", {"action": "check_service_area"}),
        ],
        guardrails=list(policies),
    )


@pytest.mark.parametrize(
    ("policy_type", "covered"),
    [
        ("verify_before_disclose", set()),
        ("field_allowlist", {"sk_get", "sk_post", "sk_msg", "sk_end", "sk_geo"}),
        ("confirm_before_write", {"sk_post", "sk_msg"}),
        ("rate_limit", {"sk_get", "sk_post", "sk_msg", "sk_end", "sk_geo"}),
        ("business_hours", {"sk_get", "sk_post", "sk_geo"}),
    ],
)
def test_untargeted_policies_cover_by_type(policy_type: str, covered: set[str]) -> None:
    a = coverage_agent(policy(policy_type))
    assert {s.id for s in a.skills if g.covering(a, s, policy_type)} == covered


def test_targeted_and_disabled_policies() -> None:
    a = coverage_agent(
        policy("verify_before_disclose", skill_id="sk_get"),
        policy("verify_before_disclose", skill_type="geo"),
        policy("verify_before_disclose", skill_id="sk_post", enabled=False),
    )
    assert {s.id for s in a.skills if g.covering(a, s, "verify_before_disclose")} == {"sk_get", "sk_geo"}
    assert g.required_level(a, the_skill(a, "sk_get")) == "basic"
    assert g.required_level(a, the_skill(a, "sk_post")) is None


def test_required_level_from_flags_and_step_up_actions() -> None:
    a = agent(
        skills=[
            skill("sk_a", "Account balance", "http_webhook", {}, requiresVerifiedIdentity=True),
            skill("sk_b", "Change address", "http_webhook", {}, verificationLevel="step_up"),
            skill("sk_c", "Issue refunds", "http_webhook", {}),
            skill("sk_d", "Menu", "http_webhook", {}),
        ],
        callerVerification=[method(stepUpFor=["refund"])],
    )
    assert [g.required_level(a, s) for s in a.skills] == ["basic", "step_up", "step_up", None]


def test_step_up_matches_by_type_tool_name_or_keywords() -> None:
    refund = agent(skills=[skill("sk", "Issue refund", "shopify_refund", {})]).skills[0]
    assert g.step_up_matches("refund", refund)
    assert g.step_up_matches("shopify_refund", refund)
    assert g.step_up_matches("issue_refund", refund)
    assert g.step_up_matches("Refunds", refund)
    assert not g.step_up_matches("cancel order", refund)
    assert not g.step_up_matches("the", refund)  # only stopwords: matches nothing


# --- business hours, rate limit, confirmation ------------------------------------------------------


def test_business_hours_blocks_covered_skills_only_while_closed() -> None:
    a = coverage_agent(policy("business_hours", {"restrictSkillsAfterHours": True}))
    get, msg = the_skill(a, "sk_get"), the_skill(a, "sk_msg")
    closed = g.hours_decision(a, get, open_now=False)
    assert closed is not None and closed.verdict == "deny" and "closed" in closed.reason
    opened = g.hours_decision(a, get, open_now=True)
    assert opened is not None and opened.verdict == "allow"
    assert g.hours_decision(a, msg, open_now=False) is None  # take_message stays available
    off = coverage_agent(policy("business_hours", {"restrictSkillsAfterHours": False}))
    assert g.hours_decision(off, the_skill(off, "sk_get"), open_now=False) is None


def test_rate_limit_counts_per_skill_and_takes_the_tightest() -> None:
    a = coverage_agent(policy("rate_limit", {"maxPerCall": 3}), policy("rate_limit", {"maxPerCall": 2},
                                                                         skill_id="sk_get"),
                       policy("rate_limit", {"maxPerHour": 1}, skill_id="sk_post"))
    get, post = the_skill(a, "sk_get"), the_skill(a, "sk_post")
    assert [d.verdict for d in (g.rate_decision(a, get, runs=n) for n in range(4)) if d] == [
        "allow", "allow", "deny", "deny"]
    decision = g.rate_decision(a, post, runs=3)
    assert decision is not None and decision.verdict == "deny" and decision.detail["limit"] == 3
    assert g.rate_decision(agent(), get, runs=100) is None


def test_confirmation_needed_by_flag_or_policy() -> None:
    a = coverage_agent(policy("confirm_before_write"))
    assert g.needs_confirmation(a, the_skill(a, "sk_post"))
    assert not g.needs_confirmation(a, the_skill(a, "sk_get"))
    flagged = agent(skills=[skill("sk", "Book", "http_webhook", {}, requiresConfirmation=True)])
    denied = g.confirmation_decision(flagged, flagged.skills[0], confirmed=False)
    assert denied is not None and denied.verdict == "deny" and "Confirm with the user first" in denied.instruction
    allowed = g.confirmation_decision(flagged, flagged.skills[0], confirmed=True)
    assert allowed is not None and allowed.verdict == "allow"
    plain = agent(skills=[skill("sk", "Menu", "geo", {})])
    assert g.confirmation_decision(plain, plain.skills[0], confirmed=False) is None


@pytest.mark.parametrize(
    ("text", "yes"),
    [("yes", True), ("Yes please!", True), ("yeah go ahead", True), ("sure", True), ("ok", True),
     ("Correct.", True), ("sí", True), ("no", False), ("yes but make it a large", False),
     ("wait", False), ("yes, don't", False), ("I want a pizza", False), ("", False), ("not yet", False)],
)
def test_affirmative(text: str, yes: bool) -> None:
    assert is_affirmative(text) is yes


# --- identity gate ---------------------------------------------------------------------------------


def gated_agent(**method_over: Any) -> CompiledAgent:
    return agent(
        skills=[
            skill("sk_verify", "Verify", "http_webhook", {}),
            skill("sk_orders", "Order lookup", "http_webhook", {}, requiresVerifiedIdentity=True),
            skill("sk_refund", "Issue refund", "http_webhook", {}, requiresVerifiedIdentity=True),
        ],
        callerVerification=[method(stepUpFor=["refund"], **method_over)],
    )


def gate(a: CompiledAgent, v: Verification, skill_id: str, delta: timedelta = timedelta(0)) -> list[g.Decision]:
    return g.identity_decisions(a, the_skill(a, skill_id), v, NOW + delta, how_to_verify="Call verify_identity.")


def test_identity_gate_denies_until_verified_then_allows_within_ttl() -> None:
    a = gated_agent(tokenTtlSeconds=60)
    v = Verification(a.caller_verification)
    denied = gate(a, v, "sk_orders")
    assert [(d.policy, d.verdict) for d in denied] == [("verify_before_disclose", "deny")]
    assert denied[0].reason == "the caller is not verified" and "verify_identity" in denied[0].instruction
    v.record("dob_postcode", True, NOW)
    assert [d.verdict for d in gate(a, v, "sk_orders", timedelta(seconds=60))] == ["allow"]
    expired = gate(a, v, "sk_orders", timedelta(seconds=61))
    assert [d.verdict for d in expired] == ["deny"] and expired[0].reason == "the verification expired"


def test_identity_gate_without_methods_fails_closed() -> None:
    a = agent(skills=[skill("sk", "Orders", "http_webhook", {}, requiresVerifiedIdentity=True)])
    decisions = g.identity_decisions(a, a.skills[0], Verification([]), NOW, how_to_verify="")
    assert [d.verdict for d in decisions] == ["deny"] and "no caller-verification" in decisions[0].reason


def test_identity_gate_when_locked() -> None:
    a = gated_agent(maxAttempts=2)
    v = Verification(a.caller_verification)
    v.record("dob_postcode", False, NOW)
    v.record("dob_postcode", False, NOW)
    decisions = gate(a, v, "sk_orders")
    assert decisions[-1].verdict == "deny" and "locked" in decisions[-1].reason


def test_step_up_needs_a_check_newer_than_the_request_and_is_consumed() -> None:
    a = gated_agent()
    v = Verification(a.caller_verification)
    v.record("dob_postcode", True, NOW)  # basic verification
    assert [d.verdict for d in gate(a, v, "sk_orders")] == ["allow"]
    first = gate(a, v, "sk_refund")
    assert [(d.policy, d.verdict) for d in first] == [("verify_before_disclose", "allow"), ("step_up", "deny")]
    assert [(d.policy, d.verdict) for d in gate(a, v, "sk_refund")] == [
        ("verify_before_disclose", "allow"), ("step_up", "deny")]  # asking again does not help
    v.record("dob_postcode", True, NOW)  # the fresh check (same instant: order, not time, decides)
    assert [(d.policy, d.verdict) for d in gate(a, v, "sk_refund")] == [
        ("verify_before_disclose", "allow"), ("step_up", "allow")]
    v.consume_step_up("sk_refund")  # the action ran
    assert gate(a, v, "sk_refund")[-1].verdict == "deny"


def test_a_verification_made_after_a_refused_step_up_serves_it() -> None:
    a = gated_agent()
    v = Verification(a.caller_verification)
    assert gate(a, v, "sk_refund")[-1].verdict == "deny"  # not verified at all: request recorded
    v.record("dob_postcode", True, NOW)
    assert [d.verdict for d in gate(a, v, "sk_refund")] == ["allow", "allow"]


# --- the verification state machine ------------------------------------------------------------------


def test_transition_table_is_complete() -> None:
    assert set(TRANSITIONS) == set(itertools.product(VState, VInput))
    assert all(effect is VEffect.REFUSE for (state, _), (effect, _) in TRANSITIONS.items() if state is VState.LOCKED)


def test_failures_count_lock_and_a_success_resets_them() -> None:
    v = Verification(methods(maxAttempts=3))
    r1 = v.record("dob_postcode", False, NOW)
    assert (r1.outcome, r1.attempt, r1.attempts_left) == ("failed", 1, 2)
    ok = v.record("dob_postcode", True, NOW)
    assert (ok.outcome, ok.attempts_left) == ("verified", 3)
    outcomes = [v.record("dob_postcode", False, NOW).outcome for _ in range(3)]
    assert outcomes == ["failed", "failed", "locked"]  # the first failure revoked the verification
    assert v.is_locked("dob_postcode") and v.all_locked() and not v.is_verified(NOW)
    refused = v.record("dob_postcode", True, NOW)
    assert (refused.outcome, refused.effect) == ("locked", VEffect.REFUSE)


def test_expiry_is_a_reading_of_now() -> None:
    v = Verification(methods(tokenTtlSeconds=30))
    v.record("dob_postcode", True, NOW)
    assert v.state("dob_postcode", NOW + timedelta(seconds=30)) is VState.VERIFIED
    assert v.state("dob_postcode", NOW + timedelta(seconds=31)) is VState.UNVERIFIED
    assert v.expired(NOW + timedelta(seconds=31))
    snap = v.snapshot(NOW)
    assert snap["verified"] is True and snap["methods"]["dob_postcode"]["expiresAt"].endswith("16:00:30+00:00")


@given(st.lists(st.booleans(), max_size=12), st.integers(min_value=1, max_value=5))
def test_never_more_failures_than_max_attempts(results: list[bool], max_attempts: int) -> None:
    v = Verification(methods(maxAttempts=max_attempts))
    streak = 0
    for success in results:
        outcome = v.record("dob_postcode", success, NOW).outcome
        if v.is_locked("dob_postcode"):
            assert outcome == "locked"
            break
        streak = 0 if success else streak + 1
        assert streak < max_attempts
        assert v.is_verified(NOW) is success


# --- field filtering ----------------------------------------------------------------------------------


ORDER = {
    "order_id": "A1",
    "status": "shipped",
    "customer": {"name": "Ann", "dob": "1990-01-01", "address": {"street": "1 Secret St", "zip": "80302"}},
    "items": [{"sku": "PZ", "status": "packed", "price": 18}, {"sku": "DR", "price": 2}],
    "tags": ["vip", "late"],
}


@pytest.mark.parametrize(
    ("allowed", "expected", "removed"),
    [
        ({"order_id", "status"}, {"order_id": "A1", "status": "shipped", "items": [{"status": "packed"}]},
         ["customer.name", "customer.dob", "customer.address.street", "customer.address.zip", "customer.address",
          "customer", "items.sku", "items.price", "tags"]),
        ({"customer.name"}, {"customer": {"name": "Ann"}},
         ["order_id", "status", "customer.dob", "customer.address.street", "customer.address.zip",
          "customer.address", "items.sku", "items.status", "items.price", "items", "tags"]),
        ({"customer.address", "tags"}, {"customer": {"address": {"street": "1 Secret St", "zip": "80302"}},
                                         "tags": ["vip", "late"]}, None),
        ({"sku"}, {"items": [{"sku": "PZ"}, {"sku": "DR"}]}, None),
        (set(), {}, None),
    ],
)
def test_filter_fields(allowed: set[str], expected: Any, removed: list[str] | None) -> None:
    kept, gone = g.filter_fields(ORDER, frozenset(allowed))
    assert kept == expected
    if removed is not None:
        assert gone == removed


def test_filter_fields_on_lists_and_scalars() -> None:
    assert g.filter_fields([{"a": 1, "b": 2}, {"b": 3}], frozenset({"a"})) == ([{"a": 1}], ["b"])
    assert g.filter_fields("a secret", frozenset({"a"})) == (None, ["$"])
    assert g.filter_fields({"text": "raw body"}, frozenset({"status"})) == ({}, ["text"])


def test_caps_intersect() -> None:
    a = agent(
        skills=[skill("sk", "Orders", "http_webhook", {}, allowedFields=["status", "order_id"])],
        guardrails=[policy("field_allowlist", {"fields": ["status"]}, skill_id="sk")],
    )
    caps = g.field_caps(a, a.skills[0])
    assert g.apply_caps(ORDER, caps)[0] == {"status": "shipped", "items": [{"status": "packed"}]}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abcde"), inner, max_size=4),
    max_leaves=20,
)


def leaf_paths(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaf_paths(v, f"{prefix}.{k}" if prefix else k)] or [prefix]
    if isinstance(value, list):
        return [p for v in value for p in leaf_paths(v, prefix)] or [prefix]
    return [prefix]


@given(st.dictionaries(st.sampled_from("abcde"), json_values, max_size=5),
       st.frozensets(st.sampled_from(["a", "b", "c.d", "e.a", "d"]), max_size=3))
def test_nothing_outside_the_allowlist_survives(value: dict[str, Any], allowed: frozenset[str]) -> None:
    kept, _ = g.filter_fields(value, allowed)
    for path in leaf_paths(kept):
        if not path:
            continue
        parts = path.split(".")
        prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
        assert any(any(p == f or p.endswith("." + f) for f in allowed) for p in prefixes), (path, kept)


# --- content rules -----------------------------------------------------------------------------------


def content_agent() -> CompiledAgent:
    return agent(guardrails=[
        policy("content_rule", {"blockedTopics": ["politics", "medical advice"], "response": "I can't discuss that."}),
        policy("content_rule", {"blockedPhrases": ["Free Pizza"]}),
        policy("content_rule", {"blockedTopics": ["competitors"]}, enabled=False),
    ])


@pytest.mark.parametrize(
    ("text", "topic"),
    [("What do you think about politics?", "politics"), ("can you give me some medical advice", "medical advice"),
     ("I need advice on a medical thing", "medical advice"), ("Do you have medical discounts?", None),
     ("Who are your competitors?", None), ("Politics!", "politics")],
)
def test_blocked_topics(text: str, topic: str | None) -> None:
    found = g.blocked_topic(content_agent(), text)
    assert (found[0] if found else None) == topic
    if found:
        assert found[1] == "I can't discuss that."


def test_blocked_phrases_default_response() -> None:
    phrases = g.blocked_phrases(content_agent())
    assert phrases == [("Free Pizza", g.DEFAULT_REFUSAL)]
    assert g.phrase_in("you get FREE pizza today", phrases) == ("Free Pizza", g.DEFAULT_REFUSAL)
    assert g.phrase_in("pizza for free", phrases) is None


def test_phrase_guard_holds_back_only_what_could_start_a_phrase() -> None:
    guard = g.PhraseGuard([("free pizza", "no")])
    assert guard.feed("Hello there, ") == "Hello there, "
    assert guard.feed("you get fr") == "you get "
    assert guard.feed("ee") == ""  # "free" could still become "free pizza"
    assert guard.feed(" Pizza!") == ""
    assert guard.hit == ("free pizza", "no")
    assert guard.feed("more") == "" and guard.flush() == ""
    other = g.PhraseGuard([("free pizza", "no")])
    assert other.feed("It's free") == "It's "
    assert other.feed(" delivery") == "free delivery"
    assert other.flush() == "" and other.hit is None


@given(st.text(alphabet="abc fre piz", max_size=40), st.lists(st.integers(min_value=1, max_value=6), max_size=20))
def test_phrase_guard_never_emits_a_phrase_and_loses_nothing_else(text: str, cuts: list[int]) -> None:
    guard = g.PhraseGuard([("free pizza", "no"), ("ab", "no")])
    pieces, rest = [], text
    for n in cuts:
        pieces.append(rest[:n])
        rest = rest[n:]
    pieces.append(rest)
    emitted = "".join(guard.feed(p) for p in pieces) + guard.flush()
    assert "free pizza" not in emitted and "ab" not in emitted
    if "free pizza" not in text and "ab" not in text:
        assert emitted == text and guard.hit is None
    else:
        assert guard.hit is not None


# --- words ---------------------------------------------------------------------------------------------


def test_word_rules() -> None:
    assert snake_case("Look up order #2") == "look_up_order_2"
    assert snake_case("2nd opinion") == "skill_2nd_opinion"
    assert snake_case("¿¡!?") == "skill"
    assert keywords("The caller asks about refunds and invoices") == {"refund", "invoice"}
    assert looks_like_question("how much is a large pizza")
    assert looks_like_question("Large pizza price?")
    assert not looks_like_question("thanks!")
    assert not looks_like_question("I want a pizza")
