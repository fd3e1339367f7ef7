"""The tools the model is offered, compiled from the agent, and where a transfer goes. Pure.

One `ToolSpec` per enabled skill, named by `snake_case(skill.name)` (made unique with _2, _3, ...; never
a built-in's name), described by the skill's description, with the skill's parametersSchema. Verifier
skills are the exception: they are reached only through `verify_identity`, so their raw answer never
reaches the model. Built-ins, in this order after the skills:

    knowledge_lookup(query)      when the agent has knowledge (and the runtime a search)
    transfer_to_human(reason)    when the handoff config has a destination or rules, or after-hours
                                 transfer is on with a number
    end_conversation(reason)     always
    verify_identity(<fields>)    one per caller-verification method whose verifierSkillId names an
                                 enabled skill (otp_sms without one is not offered); the first is
                                 `verify_identity`, others `verify_identity_<method>`; its arguments are
                                 the method's requiredFields, all required strings

The tool list depends only on the agent, so it is byte-identical across turns (the local model caches
the system prompt and tools as one prefix).

Transfers (`plan_transfer`): a rule whose `when` (or label) shares the most keywords with the reason wins
(ties: the first rule); with no overlap, the default transferDestination. When closed, a transfer happens
only if afterHours.allowHumanTransfer, and goes to afterHours.number when one is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pipeline.llm.types import ToolSpec
from runtime.agent_config import CompiledAgent, Skill, VerificationMethod
from runtime.brain.guardrails import needs_confirmation, required_level
from runtime.brain.text import keyword_overlap, snake_case

KNOWLEDGE_TOOL = "knowledge_lookup"
TRANSFER_TOOL = "transfer_to_human"
END_TOOL = "end_conversation"
VERIFY_TOOL = "verify_identity"
BUILTIN_NAMES = frozenset({KNOWLEDGE_TOOL, TRANSFER_TOOL, END_TOOL})

ToolKind = Literal["skill", "knowledge", "transfer", "end", "verify"]


def _reason_schema(description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"reason": {"type": "string", "description": description}},
        "required": ["reason"],
    }


@dataclass(frozen=True)
class ToolBinding:
    spec: ToolSpec
    kind: ToolKind
    skill: Skill | None = None
    method: VerificationMethod | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def deferred(self) -> bool:
        """Its effect is the channel's to carry out after the turn (a transfer, the end of the conversation):
        until the channel does, running it changed nothing but the brain's own state."""
        if self.skill is not None:
            return self.skill.skill_type in ("transfer", "end_call")
        return self.kind in ("transfer", "end")


@dataclass(frozen=True)
class Toolset:
    bindings: tuple[ToolBinding, ...]

    @property
    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(b.spec for b in self.bindings)

    def get(self, name: str) -> ToolBinding | None:
        return next((b for b in self.bindings if b.name == name), None)

    def verify_tools(self) -> list[ToolBinding]:
        return [b for b in self.bindings if b.kind == "verify"]


def verifier_skill(agent: CompiledAgent, method: VerificationMethod) -> Skill | None:
    """The enabled skill that checks this method's answers (None: the method cannot be used here)."""
    if method.verifier_skill_id is None:
        return None  # otp_sms: the platform's own code check, which needs a phone line
    return next((s for s in agent.skills if s.id == method.verifier_skill_id and s.enabled), None)


def usable_methods(agent: CompiledAgent) -> list[tuple[VerificationMethod, Skill]]:
    pairs = [(m, verifier_skill(agent, m)) for m in agent.caller_verification]
    return [(m, s) for m, s in pairs if s is not None]


def verify_tool_name(index: int, method: VerificationMethod) -> str:
    return VERIFY_TOOL if index == 0 else f"{VERIFY_TOOL}_{snake_case(method.method)}"


def has_transfer(agent: CompiledAgent) -> bool:
    handoff = agent.handoff
    after = agent.after_hours
    return bool(handoff.transfer_destination or handoff.transfer_rules or (after.allow_human_transfer and after.number))


def _skill_description(agent: CompiledAgent, skill: Skill) -> str:
    description = " ".join(skill.description.split())
    notes = []
    if required_level(agent, skill) is not None:
        notes.append(f"Needs a verified caller: call {VERIFY_TOOL} first.")
    if needs_confirmation(agent, skill):
        notes.append("Ask the user to confirm before calling.")
    return " ".join([description, *notes])


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name[:60]}_{n}"
    taken.add(candidate)
    return candidate


def build_toolset(agent: CompiledAgent, *, knowledge: bool) -> Toolset:
    verifiers = {s.id for _, s in usable_methods(agent)}
    taken = set(BUILTIN_NAMES) | {verify_tool_name(i, m) for i, (m, _) in enumerate(usable_methods(agent))}
    bindings: list[ToolBinding] = []
    for skill in agent.enabled_skills():
        if skill.id in verifiers:
            continue
        name = _unique(snake_case(skill.name), taken)
        spec = ToolSpec(name, _skill_description(agent, skill), skill.parameters_schema,
                        examples=skill_examples(skill))
        bindings.append(ToolBinding(spec, "skill", skill=skill))
    if knowledge and agent.knowledge:
        schema = {"type": "object", "properties": {"query": {"type": "string", "description": "What to look up."}},
                  "required": ["query"]}
        bindings.append(ToolBinding(ToolSpec(
            KNOWLEDGE_TOOL, "Search the business's knowledge (menu, prices, policies, FAQs) for facts.", schema,
            examples=KNOWLEDGE_EXAMPLES,
        ), "knowledge"))
    if has_transfer(agent):
        bindings.append(ToolBinding(ToolSpec(
            TRANSFER_TOOL, "Transfer the user to a human when they ask for a person or you cannot help.",
            _reason_schema("Why the user needs a person, in a few words."),
            examples=TRANSFER_EXAMPLES,
        ), "transfer"))
    bindings.append(ToolBinding(ToolSpec(
        END_TOOL, "End the conversation when the user says goodbye or has nothing else.",
        _reason_schema("Why the conversation is ending, in a few words."),
        examples=END_EXAMPLES,
    ), "end"))
    for index, (method, _) in enumerate(usable_methods(agent)):
        fields = list(method.required_fields)
        properties = {f: {"type": "string", "description": f"The caller's {f.replace('_', ' ')}."} for f in fields}
        schema = {"type": "object", "properties": properties, "required": fields}
        description = f"Verify the caller's identity ({method.method.replace('_', ' ')}) with: {', '.join(fields)}."
        bindings.append(ToolBinding(ToolSpec(verify_tool_name(index, method), description, schema,
                                             examples=verify_examples(fields)), "verify", method=method))
    return Toolset(tuple(bindings))


# Sample phrasings per tool: the local model routes by analogy with these (pipeline/llm/chat_template.py),
# and routed far worse from descriptions alone. Skills lead with their own description, which the
# operator writes as the condition for using them.
KNOWLEDGE_EXAMPLES = ("What's on the supreme pizza?", "What is your refund policy?")
TRANSFER_EXAMPLES = ("Can I talk to a real person?", "Put me through to a manager, please.")
END_EXAMPLES = ("That's all, thanks. Bye!", "No, nothing else. Goodbye.", "I have to go now, bye.")
_TYPE_EXAMPLES: dict[str, tuple[str, ...]] = {
    "geo": ("Do you deliver to 200 Pearl St, 80302?", "Is 12 Oak Avenue in your delivery area?"),
    "take_message": ("Can I leave a message for the owner?", "Please have someone call me back."),
    "transfer": ("I need to speak with someone about this.",),
    "end_call": ("Okay, that's everything. Bye.",),
}
_SAMPLE_VALUES = {"date_of_birth": "March 3, 1985", "dob": "March 3, 1985", "postcode": "80202", "zip": "80202",
                  "account_pin": "4821", "pin": "4821", "phone": "303 555 0142"}


def skill_examples(skill: Skill) -> tuple[str, ...]:
    return (skill.description, *_TYPE_EXAMPLES.get(skill.skill_type, ()))


def verify_examples(fields: list[str]) -> tuple[str, ...]:
    parts = [f"my {f.replace('_', ' ')} is {_SAMPLE_VALUES.get(f, 'ABC123')}" for f in fields]
    return ((" and ".join(parts) or "verify me").capitalize() + ".",)


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def how_to_verify(toolset: Toolset) -> str:
    """One sentence telling the model how to verify the caller with the tools it has."""
    options = [
        f"ask for their {_and([f.replace('_', ' ') for f in b.method.required_fields])}, then call {b.name}"
        for b in toolset.verify_tools()
        if b.method is not None
    ]
    return ("To verify: " + "; or ".join(options) + ".") if options else "Verification is not available."


# --- transfers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransferPlan:
    destination: str
    label: str | None  # the rule's label, None for the default or after-hours line
    reason: str
    warm: bool
    after_hours: bool


@dataclass(frozen=True)
class TransferDenied:
    reason: str  # for the guardrail event
    instruction: str  # for the model


def best_rule(agent: CompiledAgent, reason: str) -> tuple[str, str] | None:
    """(label, destination) of the rule that matches `reason` best, by keyword overlap."""
    best: tuple[int, str, str] | None = None
    for rule in agent.handoff.transfer_rules:
        score = keyword_overlap(reason, f"{rule.when} {rule.label}")
        if score > 0 and (best is None or score > best[0]):
            best = (score, rule.label, rule.destination)
    return None if best is None else (best[1], best[2])


def plan_transfer(
    agent: CompiledAgent, reason: str, *, open_now: bool, fixed: tuple[str | None, str] | None = None
) -> TransferPlan | TransferDenied:
    """Where to transfer for `reason`. `fixed` is (label, destination) of a transfer skill's number."""
    warm = agent.handoff.warm
    if not open_now:
        after = agent.after_hours
        if not after.allow_human_transfer:
            return TransferDenied(
                "closed, and after-hours transfer to a person is off",
                "No one is available to take a transfer while the business is closed. Do not offer a "
                "transfer; offer to take a message instead.",
            )
        if after.number:
            return TransferPlan(after.number, "our on-call team", reason, warm, True)
    if fixed is not None:
        return TransferPlan(fixed[1], fixed[0], reason, warm, not open_now)
    rule = best_rule(agent, reason)
    if rule is not None:
        return TransferPlan(rule[1], rule[0], reason, warm, not open_now)
    if agent.handoff.transfer_destination:
        return TransferPlan(agent.handoff.transfer_destination, None, reason, warm, not open_now)
    return TransferDenied(
        "no transfer destination fits the reason",
        "There is no one to transfer this to. Offer to take a message instead.",
    )


def announcement(plan: TransferPlan, announce: str | None = None) -> str:
    """What the user hears before the transfer: who and why when warm, a short notice when not."""
    if announce:
        return announce
    who = plan.label or "a member of our team"
    if plan.label and not plan.label.lower().startswith(("our ", "the ")):
        who = f"our {plan.label} team"
    if plan.warm:
        why = plan.reason.strip().rstrip(".")
        return f"I'm connecting you with {who} now (reason: {why}). I'll pass along what you've told me."
    return f"I'm transferring you to {who} now."


def transfer_result(plan: TransferPlan) -> Mapping[str, Any]:
    return {"transferred": True, "to": plan.label or "default", "warm": plan.warm}
