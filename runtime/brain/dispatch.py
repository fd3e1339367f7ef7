"""Carrying out one tool call the model proposed: guardrails, the executor, and the receipt events.

`ToolRunner.run(call, ctx)` never raises for a tool's failure: whatever happens becomes a `tool` message
the model reads (status and result as JSON) and a `tool_call` event, preceded by the `guardrail`,
`verification`, `kb_retrieval`, `handoff` or `end` events of the call. A backstop timeout (the tool
timeout plus a second) bounds every call; cancelling the turn cancels the call.

The verifier's own answer never reaches the model: `verify_identity` returns only {"verified": ...}. The
verifier counts as a success when it answers 2xx with a JSON object whose `verified`, `match` or `success`
field is true (a JSON true, a non-zero number, or the string "true"/"yes"). A verifier that cannot be
reached, is slow or answers 5xx is reported and does not count as an attempt; any other answer (a 4xx, or
a 2xx without a true field) is a failed attempt. The caller's answers are redacted in the
receipt's tool_call event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from pipeline.llm.types import ChatMessage, ToolCall
from runtime import events as ev
from runtime.agent_config import CompiledAgent, Skill, VerificationMethod
from runtime.brain import executors, guardrails, retrieval
from runtime.brain.deps import BrainDeps
from runtime.brain.executors import ToolOutcome, failed
from runtime.brain.guardrails import Decision
from runtime.brain.text import is_affirmative
from runtime.brain.tools import (
    Toolset,
    TransferDenied,
    announcement,
    how_to_verify,
    plan_transfer,
    transfer_result,
    verifier_skill,
)
from runtime.brain.verification import Verification
from runtime.events import ConversationEvent

log = logging.getLogger(__name__)
MAX_TOOL_CONTENT = 4000
DEFAULT_GOODBYE = "Thank you for reaching out. Goodbye!"
TRUE_STRINGS = frozenset({"true", "yes"})


@dataclass
class TurnContext:
    user_text: str
    asked: bool  # the agent's previous message asked the user a question
    now: datetime
    open_now: bool
    elapsed_ms: Callable[[], float]
    confirmations_used: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Effect:
    kind: Literal["handoff", "end"]
    say: str  # what the agent says to close the turn


@dataclass(frozen=True)
class ToolRun:
    events: list[ConversationEvent]
    message: ChatMessage  # the tool result, as the model reads it
    effect: Effect | None = None


def tool_content(outcome: ToolOutcome) -> str:
    body = {"status": outcome.status, "result": outcome.result}
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= MAX_TOOL_CONTENT else text[:MAX_TOOL_CONTENT] + "…(truncated)"


def verifier_passed(result: Any) -> bool:
    if not isinstance(result, dict):
        return False
    for key in ("verified", "match", "success"):
        value = result.get(key)
        if isinstance(value, str):
            if value.strip().lower() in TRUE_STRINGS:
                return True
        elif value:
            return True
    return False


def refused(decision: Decision) -> ToolOutcome:
    return ToolOutcome("refused", {"refused": decision.reason, "instruction": decision.instruction})


class ToolRunner:
    def __init__(
        self, agent: CompiledAgent, deps: BrainDeps, toolset: Toolset, verification: Verification,
        *, ids: Mapping[str, Any],
    ) -> None:
        self.agent = agent
        self.deps = deps
        self.toolset = toolset
        self.verification = verification
        self.ids = dict(ids)
        self.runs: Counter[str] = Counter()  # skill id -> times it ran in this conversation
        self.how_to_verify = how_to_verify(toolset)

    async def run(self, call: ToolCall, ctx: TurnContext) -> ToolRun:
        started = ctx.elapsed_ms()
        events: list[ConversationEvent] = []
        binding = self.toolset.get(call.name)
        arguments = dict(call.arguments)
        effect: Effect | None = None
        try:
            async with asyncio.timeout(self.deps.tool_timeout_s + 1.0):
                if binding is None:
                    outcome = failed(f"there is no tool named {call.name}")
                elif binding.kind == "skill" and binding.skill is not None:
                    outcome, effect = await self._skill(binding.skill, arguments, ctx, events)
                elif binding.kind == "verify" and binding.method is not None:
                    outcome = await self._verify(binding.method, arguments, ctx, events)
                elif binding.kind == "knowledge":
                    outcome = await self._knowledge(str(arguments.get("query", "")), ctx, events)
                elif binding.kind == "transfer":
                    outcome, effect = self._transfer(str(arguments.get("reason", "")), ctx, events, None)
                else:
                    outcome, effect = self._end(str(arguments.get("reason", "")), None, ctx, events)
        except TimeoutError:
            outcome = failed("the tool did not finish in time", "timeout")
        except Exception as exc:  # a broken tool is the model's to hear about, not the turn's end
            log.exception("tool %s failed", call.name)
            outcome = failed(f"the tool failed: {type(exc).__name__}")
        shown = {k: "[redacted]" for k in arguments} if binding is not None and binding.kind == "verify" else arguments
        skill_id = binding.skill.id if binding is not None and binding.skill is not None else None
        if binding is not None and binding.method is not None:
            skill_id = binding.method.verifier_skill_id
        events.append(ev.tool_call(
            call.name, shown, status=outcome.status, result=outcome.result,
            duration_ms=ctx.elapsed_ms() - started, t_ms=ctx.elapsed_ms(), skill_id=skill_id,
        ))
        message = ChatMessage("tool", tool_content(outcome), tool_call_id=call.id, name=call.name)
        return ToolRun(events, message, effect)

    # --- skills ------------------------------------------------------------------------------------

    def _gate(self, skill: Skill, ctx: TurnContext, events: list[ConversationEvent]) -> Decision | None:
        """Run the checks in order, recording each decision; the first deny, or None to go ahead."""
        checks: list[Callable[[], list[Decision]]] = [
            lambda: _one(guardrails.hours_decision(self.agent, skill, open_now=ctx.open_now)),
            lambda: _one(guardrails.rate_decision(self.agent, skill, runs=self.runs[skill.id])),
            lambda: guardrails.identity_decisions(
                self.agent, skill, self.verification, ctx.now, how_to_verify=self.how_to_verify
            ),
            lambda: _one(guardrails.confirmation_decision(
                self.agent, skill,
                confirmed=ctx.asked and is_affirmative(ctx.user_text) and skill.id not in ctx.confirmations_used,
            )),
        ]
        for check in checks:
            for decision in check():
                events.append(_event(decision, ctx))
                if decision.verdict == "deny":
                    return decision
        return None

    async def _skill(
        self, skill: Skill, arguments: dict[str, Any], ctx: TurnContext, events: list[ConversationEvent]
    ) -> tuple[ToolOutcome, Effect | None]:
        denied = self._gate(skill, ctx, events)
        if denied is not None:
            return refused(denied), None
        self.runs[skill.id] += 1
        if guardrails.needs_confirmation(self.agent, skill):
            ctx.confirmations_used.add(skill.id)
        if guardrails.required_level(self.agent, skill) == "step_up":
            self.verification.consume_step_up(skill.id)
        outcome, effect = await self._execute(skill, arguments, ctx, events)
        caps = guardrails.field_caps(self.agent, skill)
        if caps and outcome.ok:
            filtered, removed = guardrails.apply_caps(outcome.result, caps)
            events.append(ev.guardrail(
                "field_allowlist", "filter", f"removed {len(removed)} field(s) the agent may not read back",
                ctx.elapsed_ms(), skillId=skill.id, removed=removed,
            ))
            outcome = replace(outcome, result=filtered)
        return outcome, effect

    async def _execute(
        self, skill: Skill, arguments: dict[str, Any], ctx: TurnContext, events: list[ConversationEvent]
    ) -> tuple[ToolOutcome, Effect | None]:
        config = skill.execution_config
        kind = skill.skill_type
        if kind == "http_webhook":
            return await executors.call_webhook(
                config, arguments, client_factory=self.deps.http_client, max_timeout_s=self.deps.tool_timeout_s
            ), None
        if kind == "geo":
            return await asyncio.to_thread(executors.check_service_area, config, arguments), None
        if kind == "take_message":
            return await executors.take_message(
                config, arguments, client_factory=self.deps.http_client, max_timeout_s=self.deps.tool_timeout_s,
                context={**self.ids, "skillId": skill.id},
            ), None
        reason = str(arguments.get("reason") or skill.name)
        if kind == "transfer":
            destination = config.get("destination")
            fixed = (skill.name, str(destination)) if destination else None
            return self._transfer(reason, ctx, events, fixed, announce=config.get("announce"), skill_id=skill.id)
        if kind == "end_call":
            return self._end(reason, config.get("goodbyeMessage"), ctx, events)
        return failed(f"skills of type {kind} are not supported by this runtime"), None

    # --- built-ins ---------------------------------------------------------------------------------

    def _transfer(
        self, reason: str, ctx: TurnContext, events: list[ConversationEvent], fixed: tuple[str | None, str] | None,
        *, announce: str | None = None, skill_id: str | None = None,
    ) -> tuple[ToolOutcome, Effect | None]:
        plan = plan_transfer(self.agent, reason, open_now=ctx.open_now, fixed=fixed)
        if isinstance(plan, TransferDenied):
            policy = "after_hours" if not ctx.open_now else "handoff"
            events.append(ev.guardrail(policy, "deny", plan.reason, ctx.elapsed_ms(), skillId=skill_id))
            return ToolOutcome("refused", {"refused": plan.reason, "instruction": plan.instruction}), None
        if plan.after_hours:
            events.append(ev.guardrail("after_hours", "allow", "after-hours transfer is on", ctx.elapsed_ms(),
                                       skillId=skill_id))
        events.append(ev.handoff(
            plan.destination, reason, plan.warm, ctx.elapsed_ms(), label=plan.label, afterHours=plan.after_hours,
            skillId=skill_id,
        ))
        return ToolOutcome("ok", dict(transfer_result(plan))), Effect("handoff", announcement(plan, announce))

    def _end(
        self, reason: str, goodbye: str | None, ctx: TurnContext, events: list[ConversationEvent]
    ) -> tuple[ToolOutcome, Effect | None]:
        events.append(ev.end(reason or "conversation finished", ctx.elapsed_ms()))
        return ToolOutcome("ok", {"ended": True}), Effect("end", goodbye or "")

    async def _knowledge(self, query: str, ctx: TurnContext, events: list[ConversationEvent]) -> ToolOutcome:
        if self.deps.knowledge is None:
            return failed("knowledge search is not available")
        found = await retrieval.retrieve(
            self.deps.knowledge, self.agent.knowledge, query, timeout_s=self.deps.tool_timeout_s
        )
        if found.error is not None:
            events.append(ev.error(found.error, ctx.elapsed_ms(), code="knowledge_unavailable"))
            return failed(found.error)
        events.append(ev.kb_retrieval(query, retrieval.passages_json(found), found.top_score, ctx.elapsed_ms()))
        return ToolOutcome("ok", retrieval.tool_result(found))

    async def _verify(
        self, method: VerificationMethod, arguments: dict[str, Any], ctx: TurnContext,
        events: list[ConversationEvent],
    ) -> ToolOutcome:
        name = method.method
        locked = {"verified": False, "locked": True,
                  "instruction": "Verification is locked after too many failed attempts: do not ask again. "
                                 "Offer to take a message or to transfer the caller."}
        if self.verification.is_locked(name):
            events.append(ev.verification(name, "locked", ctx.elapsed_ms(), attemptsLeft=0, refused=True))
            return ToolOutcome("refused", locked)
        skill = verifier_skill(self.agent, method)
        if skill is None or skill.skill_type != "http_webhook":
            return failed("this verification method has no usable verifier")
        answers = {f: arguments.get(f) for f in method.required_fields}
        checked = await executors.call_webhook(
            skill.execution_config, answers, client_factory=self.deps.http_client,
            max_timeout_s=self.deps.tool_timeout_s,
        )
        if not checked.ok and (checked.http_status is None or checked.http_status >= 500):
            # unreachable, slow or broken: not the caller's fault, so not an attempt
            events.append(ev.verification(name, "failed", ctx.elapsed_ms(), counted=False,
                                          error=checked.result.get("error")))
            return ToolOutcome(checked.status, {"verified": False, "error": "the check could not be made right "
                                                "now; try again in a moment or offer a transfer"})
        result = self.verification.record(name, checked.ok and verifier_passed(checked.result), ctx.now)
        events.append(ev.verification(name, result.outcome, ctx.elapsed_ms(), attempt=result.attempt,
                                      attemptsLeft=result.attempts_left))
        if result.outcome == "verified":
            return ToolOutcome("ok", {"verified": True})
        if result.outcome == "locked":
            return ToolOutcome("ok", locked)
        return ToolOutcome("ok", {"verified": False, "attemptsLeft": result.attempts_left,
                                  "instruction": "The answers did not match. Ask the caller to check them."})


def _one(decision: Decision | None) -> list[Decision]:
    return [] if decision is None else [decision]


def _event(decision: Decision, ctx: TurnContext) -> ConversationEvent:
    return ev.guardrail(decision.policy, decision.verdict, decision.reason, ctx.elapsed_ms(), **decision.detail)
