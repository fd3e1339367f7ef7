"""Guardrails enforced in code: which skill call may run, what of its result the model may see, what the
agent may say. Pure functions over the compiled agent (plus `Verification`, the per-conversation state);
the brain turns each `Decision` into a `guardrail` receipt event.

Which skills a policy covers (`covers`): an enabled policy with `appliesToSkillId` covers that skill, one
with `appliesToSkillType` covers skills of that type; an untargeted policy covers, by type:

    verify_before_disclose  nothing beyond the skills flagged requiresVerifiedIdentity (the flag is the gate)
    field_allowlist         every skill
    confirm_before_write    skills that write: http_webhook with POST/PUT/PATCH/DELETE, take_message
    rate_limit              every skill, each counted on its own
    business_hours          every skill except take_message and end_call (the after-hours staples)

A skill call is checked in this order, and the first deny wins (the skill does not run, the model gets
the decision's instruction instead of data):

1. business_hours  restrictSkillsAfterHours (default true) and the agent is closed now -> deny.
2. rate_limit      maxPerCall: the skill already ran that many times in this conversation -> deny.
                   (maxPerHour spans conversations; it is the control plane's to enforce.)
3. identity        required when the skill has requiresVerifiedIdentity, is covered by a
                   verify_before_disclose policy, has verificationLevel step_up, or matches a method's
                   stepUpFor (an entry equal to the skill's type or tool name, or whose keywords all occur
                   in the skill's name). Not verified within tokenTtlSeconds -> deny; every method locked
                   after maxAttempts -> deny (locked); step-up -> deny until a check newer than the
                   request (see verification.py).
4. confirmation    requiresConfirmation or a covering confirm_before_write policy: allowed only when the
                   user's message in this turn is a plain yes (`text.is_affirmative`) and the agent's
                   previous message asked a question; one yes allows one run of the skill. Otherwise deny
                   with "confirm with the user first".

After a run, the result is filtered (`filter_fields`) by every cap that applies: the skill's
allowedFields and each covering field_allowlist policy's fields (so the caps intersect).

Content rules (every enabled content_rule): a user message whose text holds all the keywords of a
blockedTopics entry gets the rule's `response` (else a polite refusal) without calling the model; an agent
reply containing a blockedPhrases entry (case-insensitive) is replaced by that response. `PhraseGuard`
does the latter while the reply streams, holding back only text that could begin a blocked phrase, so
none is ever emitted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from runtime.agent_config import CompiledAgent, GuardrailPolicy, Skill
from runtime.brain.text import contains_all_keywords, keywords, snake_case
from runtime.brain.verification import Verification

Verdict = Literal["allow", "deny", "filter"]
DEFAULT_REFUSAL = "I'm sorry, but I can't help with that."
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Decision:
    policy: str
    verdict: Verdict
    reason: str
    instruction: str = ""  # what the model is told instead of a result, on deny
    detail: dict[str, Any] = field(default_factory=dict)


def _writes(skill: Skill) -> bool:
    if skill.skill_type == "take_message":
        return True
    return skill.skill_type == "http_webhook" and str(skill.execution_config.get("method", "POST")) in WRITE_METHODS


def _none(skill: Skill) -> bool:
    return False


def _every(skill: Skill) -> bool:
    return True


def _not_after_hours_staple(skill: Skill) -> bool:
    return skill.skill_type not in ("take_message", "end_call")


UNTARGETED: dict[str, Callable[[Skill], bool]] = {
    "verify_before_disclose": _none,
    "field_allowlist": _every,
    "confirm_before_write": _writes,
    "rate_limit": _every,
    "business_hours": _not_after_hours_staple,
}


def enabled(agent: CompiledAgent, policy_type: str) -> list[GuardrailPolicy]:
    return [p for p in agent.guardrails if p.is_enabled and p.policy_type == policy_type]


def covers(policy: GuardrailPolicy, skill: Skill) -> bool:
    if policy.applies_to_skill_id is not None or policy.applies_to_skill_type is not None:
        by_id = policy.applies_to_skill_id is None or policy.applies_to_skill_id == skill.id
        by_type = policy.applies_to_skill_type is None or policy.applies_to_skill_type == skill.skill_type
        return by_id and by_type
    return UNTARGETED.get(policy.policy_type, _none)(skill)


def covering(agent: CompiledAgent, skill: Skill, policy_type: str) -> list[GuardrailPolicy]:
    return [p for p in enabled(agent, policy_type) if covers(p, skill)]


# --- 1. business hours -----------------------------------------------------------------------------


def hours_decision(agent: CompiledAgent, skill: Skill, *, open_now: bool) -> Decision | None:
    policies = [p for p in covering(agent, skill, "business_hours") if p.config.get("restrictSkillsAfterHours", True)]
    if not policies:
        return None
    if open_now:
        return Decision("business_hours", "allow", "open now", detail={"skillId": skill.id})
    return Decision(
        "business_hours", "deny", "the business is closed and this skill is restricted after hours",
        "This is not available while the business is closed. Tell the caller when it reopens or offer to "
        "take a message.",
        {"skillId": skill.id},
    )


# --- 2. rate limit ---------------------------------------------------------------------------------


def rate_decision(agent: CompiledAgent, skill: Skill, *, runs: int) -> Decision | None:
    limits = [int(p.config["maxPerCall"]) for p in covering(agent, skill, "rate_limit") if p.config.get("maxPerCall")]
    if not limits:
        return None
    limit = min(limits)
    detail = {"skillId": skill.id, "limit": limit, "used": runs}
    if runs < limit:
        return Decision("rate_limit", "allow", f"{runs} of {limit} uses so far", detail=detail)
    return Decision(
        "rate_limit", "deny", f"used {runs} of {limit} times in this conversation",
        "This cannot be done again in this conversation. Offer another way to help.", detail,
    )


# --- 3. identity -----------------------------------------------------------------------------------


def step_up_matches(action: str, skill: Skill) -> bool:
    action_key = " ".join(action.lower().split())
    if action_key in (skill.skill_type.lower(), snake_case(skill.name), skill.name.lower()):
        return True
    wanted = keywords(action)
    return bool(wanted) and wanted <= keywords(skill.name)


def required_level(agent: CompiledAgent, skill: Skill) -> Literal["basic", "step_up"] | None:
    step_up = skill.verification_level == "step_up" or any(
        step_up_matches(action, skill) for m in agent.caller_verification for action in m.step_up_for
    )
    if step_up:
        return "step_up"
    if skill.requires_verified_identity or covering(agent, skill, "verify_before_disclose"):
        return "basic"
    return None


def identity_decisions(
    agent: CompiledAgent, skill: Skill, verification: Verification, now: datetime, *, how_to_verify: str
) -> list[Decision]:
    """The identity checks for one call, in order; the last one is the deny, if any. Refusing a step-up
    action records the request in `verification` (so the next check can satisfy it)."""
    level = required_level(agent, skill)
    if level is None:
        return []
    detail: dict[str, Any] = {"skillId": skill.id, "level": level}
    policy = "verify_before_disclose"
    if not verification.usable:
        return [Decision(policy, "deny", "no caller-verification method is configured",
                         "This needs a verified caller, and verification is not available. Offer another way "
                         "to help.", detail)]
    if level == "step_up" and not verification.step_up_satisfied(skill.id, now):
        verification.request_step_up(skill.id)
    if verification.all_locked():
        return [Decision(policy, "deny", "verification is locked after too many failed attempts",
                         "Verification is locked for this conversation: do not ask again. Offer to take a "
                         "message or to transfer the caller.", detail)]
    if not verification.is_verified(now):
        why = "the verification expired" if verification.expired(now) else "the caller is not verified"
        return [Decision(policy, "deny", why, f"The caller must be verified first. {how_to_verify}", detail)]
    decisions = [Decision(policy, "allow", "the caller is verified", detail=detail)]
    if level == "step_up":
        if not verification.step_up_satisfied(skill.id, now):
            decisions.append(Decision(
                "step_up", "deny", "this action needs a fresh verification",
                f"This action needs the caller to verify again, even though they did before. {how_to_verify}",
                detail,
            ))
        else:
            decisions.append(Decision("step_up", "allow", "verified again for this action", detail=detail))
    return decisions


# --- 4. confirmation --------------------------------------------------------------------------------


def needs_confirmation(agent: CompiledAgent, skill: Skill) -> bool:
    return skill.requires_confirmation or bool(covering(agent, skill, "confirm_before_write"))


def confirmation_decision(agent: CompiledAgent, skill: Skill, *, confirmed: bool) -> Decision | None:
    if not needs_confirmation(agent, skill):
        return None
    policy = "confirm_before_write"
    if confirmed:
        return Decision(policy, "allow", "the user confirmed", detail={"skillId": skill.id})
    return Decision(
        policy, "deny", "not confirmed by the user",
        "Confirm with the user first: say exactly what you are about to do and ask them to say yes. Call "
        "this again only after they agree.",
        {"skillId": skill.id},
    )


# --- after a run: field caps ---------------------------------------------------------------------------


def field_caps(agent: CompiledAgent, skill: Skill) -> list[frozenset[str]]:
    caps = [frozenset(skill.allowed_fields)] if skill.allowed_fields is not None else []
    caps += [frozenset(p.config.get("fields", [])) for p in covering(agent, skill, "field_allowlist")]
    return caps


def _allowed(path: str, allowed: frozenset[str]) -> bool:
    return any(path == name or path.endswith("." + name) for name in allowed)


def filter_fields(value: Any, allowed: frozenset[str]) -> tuple[Any, list[str]]:
    """`value` with only the allowed fields, and the dotted paths removed (list indices are not part of
    paths). A field name matches a key whose path equals it or ends with "." + it, so `status` keeps
    every `status` at any depth and `order.status` only that one; a kept key keeps its whole value. A
    container survives only with some allowed field inside. A bare scalar at the top is withheld."""
    removed: list[str] = []

    def walk(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, item in node.items():
                path = f"{prefix}.{key}" if prefix else str(key)
                if _allowed(path, allowed):
                    out[key] = item
                    continue
                kept = walk(item, path) if isinstance(item, dict | list) else None
                if kept:
                    out[key] = kept
                else:
                    removed.append(path)
            return out
        if isinstance(node, list):
            items = [walk(item, prefix) for item in node if isinstance(item, dict | list)]
            return [item for item in items if item]
        return None

    if not isinstance(value, dict | list):
        return None, ["$"]
    return walk(value, ""), list(dict.fromkeys(removed))


def apply_caps(value: Any, caps: Sequence[frozenset[str]]) -> tuple[Any, list[str]]:
    removed: list[str] = []
    for cap in caps:
        value, gone = filter_fields(value, cap)
        removed += gone
    return value, list(dict.fromkeys(removed))


# --- content rules ---------------------------------------------------------------------------------


def blocked_topic(agent: CompiledAgent, text: str) -> tuple[str, str] | None:
    """(topic, response) when the user's message is on a blocked topic."""
    for policy in enabled(agent, "content_rule"):
        for topic in policy.config.get("blockedTopics", []):
            if contains_all_keywords(text, topic):
                return topic, policy.config.get("response") or DEFAULT_REFUSAL
    return None


def blocked_phrases(agent: CompiledAgent) -> list[tuple[str, str]]:
    return [
        (phrase, policy.config.get("response") or DEFAULT_REFUSAL)
        for policy in enabled(agent, "content_rule")
        for phrase in policy.config.get("blockedPhrases", [])
        if phrase.strip()
    ]


def _fold(text: str) -> str:
    """Lowercase, one character for one (so positions in the folded text are positions in the text)."""
    return "".join(c.lower()[:1] or c for c in text)


def phrase_in(text: str, phrases: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    folded = _fold(text)
    for phrase, response in phrases:
        if _fold(phrase) in folded:
            return phrase, response
    return None


class PhraseGuard:
    """Streams reply text through, never emitting a blocked phrase (compared case-insensitively).

    Text that could be the start of a blocked phrase (the longest end of the text that is a beginning of
    one) is held back until the next piece shows whether it is; everything else flows at once. Once a
    phrase is seen, `hit` is set and nothing more is emitted.
    """

    def __init__(self, phrases: Sequence[tuple[str, str]]) -> None:
        self.phrases = [(p, r) for p, r in phrases if p]
        self._folded = [_fold(p) for p, _ in self.phrases]
        self.hit: tuple[str, str] | None = None
        self._pending = ""

    def _held(self, folded: str) -> int:
        hold = 0
        for phrase in self._folded:
            for length in range(min(len(phrase) - 1, len(folded)), hold, -1):
                if folded.endswith(phrase[:length]):
                    hold = length
                    break
        return hold

    def feed(self, piece: str) -> str:
        if self.hit is not None:
            return ""
        text = self._pending + piece
        self.hit = phrase_in(text, self.phrases)
        if self.hit is not None:
            self._pending = ""
            return ""
        cut = len(text) - self._held(_fold(text))
        emit, self._pending = text[:cut], text[cut:]
        return emit

    def flush(self) -> str:
        """The held-back text, at the end of a stretch of reply (it holds no whole phrase)."""
        if self.hit is not None:
            return ""
        text, self._pending = self._pending, ""
        return text
