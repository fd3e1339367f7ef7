"""Property tests over the pure parts: diff, cursors, rate limiter, destinations, compiled configs."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from control_api.diff import diff
from control_api.http.envelope import decode_cursor, encode_cursor
from control_api.ratelimit import RateLimiter
from control_api.schemas.agent import AgentDraft
from control_api.schemas.common import normalize_destination
from runtime.agent_config import CompiledAgent, config_hash

json_leaf = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=5)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text("abc", min_size=1, max_size=2), inner,
                                                                 max_size=3),
    max_leaves=12,
)
json_object = st.dictionaries(st.text("abcdef", min_size=1, max_size=3), json_value, max_size=5)


@given(json_object, json_object)
def test_diff_is_empty_exactly_when_equal(before: dict[str, Any], after: dict[str, Any]) -> None:
    changes = diff(before, after)
    assert (changes == []) == (before == after)
    for change in changes:
        assert change.kind in ("added", "removed", "changed")
        if change.kind == "changed":
            assert change.before != change.after


@given(json_object)
def test_diff_of_identical_configs_is_empty(config: dict[str, Any]) -> None:
    assert diff(config, dict(config)) == []


@given(st.lists(st.integers() | st.text(max_size=20), min_size=2, max_size=2))
def test_cursor_round_trips(values: list[Any]) -> None:
    assert decode_cursor(encode_cursor(values), 2) == values


@settings(max_examples=200)
@given(
    limit=st.integers(1, 50),
    steps=st.lists(st.floats(0, 10, allow_nan=False), min_size=1, max_size=200),
)
def test_rate_limiter_never_admits_more_than_the_budget(limit: int, steps: list[float]) -> None:
    limiter = RateLimiter(limit, window_s=60.0)
    now = 0.0
    admitted = 0
    for step in steps:
        now += step
        decision = limiter.check("org", now)
        admitted += decision.allowed
        assert 0 <= decision.remaining <= limit
        if not decision.allowed:
            assert decision.retry_after_s >= 1
    # Tokens available over the run: the initial burst plus what refilled.
    assert admitted <= limit + now * limit / 60.0 + 1e-9


@given(st.from_regex(r"\A\(?[2-9][0-9]{2}\)?[ -]?[2-9][0-9]{2}[ -]?[0-9]{4}\Z"))
def test_ten_digit_us_numbers_normalize_to_e164(text: str) -> None:
    try:
        normalized = normalize_destination(text)
    except ValueError:
        return  # not every NANP-shaped string is an assigned area code; rejecting is fine
    digits = "".join(c for c in text if c in "0123456789")
    assert normalized == "+1" + digits


drafts = st.builds(
    dict,
    name=st.text(min_size=1, max_size=20).filter(lambda s: s.strip() != ""),
    greeting=st.none() | st.text(max_size=30),
    primaryLanguage=st.sampled_from(["en", "es", "fr-CA"]),
    languages=st.lists(st.sampled_from(["en", "es", "de", "fr-CA"]), max_size=3),
    handoffConfig=st.builds(dict, warm=st.booleans(),
                            transferDestination=st.sampled_from([None, "+14155550100", "sip:a@b.example"])),
)


property_names = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z")
property_schemas = st.builds(
    dict, type=st.sampled_from(["string", "number", "integer", "boolean", "object"]), description=st.text(max_size=10)
) | st.builds(dict, type=st.just("array"), items=st.builds(dict, type=st.sampled_from(["string", "number"])))
parameters_schemas = st.dictionaries(property_names, property_schemas, max_size=4).flatmap(
    lambda properties: st.builds(
        lambda required: {"type": "object", "properties": properties,
                          "required": [name for name in properties if name in required]},
        st.sets(st.sampled_from(sorted(properties))) if properties else st.just(set()),
    )
)
skill_configs = st.builds(
    dict,
    id=st.from_regex(r"\Askl_[a-z0-9]{4}\Z"),
    name=st.text(min_size=1, max_size=10),
    description=st.text(min_size=1, max_size=10),
    skillType=st.sampled_from(["transfer", "end_call", "http_webhook", "geo", "take_message"]),
    executionConfig=json_object,
    parametersSchema=parameters_schemas,
    enabled=st.booleans(),
    requiresVerifiedIdentity=st.booleans(),
    verificationLevel=st.sampled_from(["basic", "step_up"]),
    allowedFields=st.none() | st.lists(st.text("abc", min_size=1, max_size=3), max_size=2),
    requiresConfirmation=st.booleans(),
    stakes=st.sampled_from(["low", "medium", "high"]),
)


@given(drafts, st.lists(skill_configs, max_size=3))
def test_compiled_config_round_trips_and_hash_is_stable(raw: dict[str, Any], skills: list[dict[str, Any]]) -> None:
    draft = AgentDraft.model_validate(raw).stored()
    config = {**draft, "schemaVersion": 1, "agentId": "agt_x", "skills": skills, "guardrails": [],
              "callerVerification": []}
    compiled = CompiledAgent.from_config(config)
    assert CompiledAgent.from_config(compiled.to_config()) == compiled
    assert compiled.config_hash == config_hash(compiled.to_config())
    assert [s.parameters_schema for s in compiled.skills] == [s["parametersSchema"] for s in skills]


@given(drafts, skill_configs)
def test_configs_stored_before_skills_had_arguments_still_load(raw: dict[str, Any], skill: dict[str, Any]) -> None:
    legacy_skill = {k: v for k, v in skill.items() if k != "parametersSchema"}
    config = {**AgentDraft.model_validate(raw).stored(), "schemaVersion": 1, "agentId": "agt_x",
              "skills": [legacy_skill], "guardrails": [], "callerVerification": []}
    compiled = CompiledAgent.from_config(config)
    assert compiled.config_hash == config_hash(config)  # a stored version keeps its hash
    assert compiled.skills[0].parameters_schema == {"type": "object", "properties": {}, "required": []}
    upgraded = CompiledAgent.from_config(compiled.to_config())
    assert CompiledAgent.from_config(upgraded.to_config()) == upgraded
