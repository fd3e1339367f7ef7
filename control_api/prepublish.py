"""The pre-publish report: what the agent will and won't say, where data goes, and what looks wrong.

Pure: it reads a compiled draft (and the published config, for the change count) and returns JSON.
Warnings carry a stable `code`, the `field` to fix, and a sentence an operator can act on.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from control_api.diff import diff
from runtime.agent_config import CompiledAgent, Skill

# Words that mark a skill as reading back a caller's own records.
_ACCOUNT_DATA = re.compile(
    r"\b(account|order|balance|invoice|billing|appointment|booking|reservation|customer|profile|"
    r"payment|statement|address|dob|date of birth|status)\w*\b",
    re.IGNORECASE,
)


def _warning(code: str, field: str, message: str, severity: str = "warning") -> dict[str, str]:
    return {"code": code, "field": field, "message": message, "severity": severity}


def _data_flow(skill: Skill) -> dict[str, Any]:
    config = skill.execution_config
    flow: dict[str, Any] = {
        "skillId": skill.id,
        "skillName": skill.name,
        "skillType": skill.skill_type,
        "enabled": skill.enabled,
        "requiresVerifiedIdentity": skill.requires_verified_identity,
        "verificationLevel": skill.verification_level,
        "allowedFields": None if skill.allowed_fields is None else list(skill.allowed_fields),
    }
    if skill.skill_type == "http_webhook":
        url = str(config.get("url", ""))
        flow["sendsTo"] = urlsplit(url).netloc or url
        flow["method"] = config.get("method", "POST")
        flow["fields"] = list(skill.parameters_schema.get("properties", {}))
    elif skill.skill_type == "transfer":
        flow["sendsTo"] = config.get("destination")
        flow["fields"] = ["caller ID"]
    elif skill.skill_type == "take_message":
        flow["sendsTo"] = config.get("recipientEmail") or config.get("webhookUrl") or "conversation record"
        flow["fields"] = list(config.get("fields", []))
    elif skill.skill_type == "geo":
        flow["sendsTo"] = "geocoder (addresses only)"
        flow["fields"] = ["address"]
    else:
        flow["sendsTo"] = None
        flow["fields"] = []
    return flow


def _skill_warnings(agent: CompiledAgent, index: int, skill: Skill) -> list[dict[str, str]]:
    warnings: list[dict[str, str]] = []
    field = f"skills[{skill.id}]"
    config = skill.execution_config
    if skill.skill_type == "transfer" and not config.get("destination") and not (
        agent.handoff.transfer_destination
    ):
        warnings.append(_warning(
            "transfer_without_destination", f"{field}.executionConfig.destination",
            f"transfer skill '{skill.name}' has no destination and the agent has no default "
            "transferDestination; the transfer will fail unless a lookup supplies one",
        ))
    if skill.skill_type == "http_webhook":
        url = str(config.get("url", ""))
        if url.startswith("http://"):
            warnings.append(_warning(
                "insecure_webhook", f"{field}.executionConfig.url",
                f"skill '{skill.name}' sends caller data over plain http; use https",
            ))
        reads_account_data = bool(skill.allowed_fields) or bool(
            _ACCOUNT_DATA.search(f"{skill.name} {skill.description}")
        )
        if reads_account_data and not skill.requires_verified_identity:
            warnings.append(_warning(
                "unverified_account_data", f"{field}.requiresVerifiedIdentity",
                f"skill '{skill.name}' appears to return account data but does not require a verified "
                "caller; set requiresVerifiedIdentity",
            ))
    if skill.requires_verified_identity and not agent.caller_verification:
        warnings.append(_warning(
            "verification_not_configured", f"{field}.requiresVerifiedIdentity",
            f"skill '{skill.name}' requires a verified caller but no caller-verification method is "
            "configured, so it can never run",
        ))
    if not skill.enabled:
        warnings.append(_warning(
            "skill_disabled", f"{field}.enabled", f"skill '{skill.name}' is disabled", severity="info"
        ))
    return warnings


def _guardrail_warnings(agent: CompiledAgent) -> list[dict[str, str]]:
    warnings: list[dict[str, str]] = []
    for i, policy in enumerate(agent.guardrails):
        if not policy.is_enabled or policy.policy_type != "verify_before_disclose":
            continue
        for skill in agent.skills:
            applies = policy.applies_to_skill_id == skill.id or (
                policy.applies_to_skill_type is not None and policy.applies_to_skill_type == skill.skill_type
            ) or (policy.applies_to_skill_id is None and policy.applies_to_skill_type is None)
            if applies and not skill.requires_verified_identity and skill.skill_type not in (
                "end_call", "transfer"
            ):
                warnings.append(_warning(
                    "guardrail_skill_not_gated", f"guardrails[{i}]",
                    f"verify_before_disclose covers skill '{skill.name}', which is not marked "
                    "requiresVerifiedIdentity; the guardrail will still block it for unverified callers",
                    severity="info",
                ))
    skill_ids = {s.id: s for s in agent.skills}
    for i, method in enumerate(agent.caller_verification):
        verifier = skill_ids.get(method.verifier_skill_id or "")
        if method.verifier_skill_id and (verifier is None or not verifier.enabled):
            warnings.append(_warning(
                "verifier_unavailable", f"callerVerification[{i}].verifierSkillId",
                "the verifier skill is missing or disabled, so callers cannot be verified",
            ))
    return warnings


def _agent_warnings(agent: CompiledAgent) -> list[dict[str, str]]:
    warnings: list[dict[str, str]] = []
    if agent.call_control.on_no_response_action == "transfer" and not agent.handoff.transfer_destination:
        warnings.append(_warning(
            "transfer_without_destination", "callControl.onNoResponseAction",
            "onNoResponseAction is transfer but handoffConfig.transferDestination is not set",
        ))
    if agent.handoff.transfer_rules and not agent.handoff.transfer_destination:
        warnings.append(_warning(
            "no_default_destination", "handoffConfig.transferDestination",
            "transfer rules exist but no default destination covers requests no rule matches",
            severity="info",
        ))
    if agent.after_hours.allow_human_transfer and agent.business_hours is None:
        warnings.append(_warning(
            "after_hours_without_hours", "businessHours",
            "after-hours transfer is on but no business hours are set, so the agent is never closed",
        ))
    if not agent.greeting:
        warnings.append(_warning(
            "no_greeting", "greeting", "no greeting is set; callers hear a generic one", severity="info"
        ))
    if agent.record_calls and "record" not in (agent.greeting or "").lower():
        warnings.append(_warning(
            "recording_not_announced", "greeting",
            "calls are recorded but the greeting does not say so; many jurisdictions require all-party consent",
            severity="info",
        ))
    return warnings


def report(
    draft: CompiledAgent, published: CompiledAgent | None, draft_config: dict[str, Any],
    published_config: dict[str, Any] | None,
) -> dict[str, Any]:
    blocked_topics: list[str] = []
    blocked_phrases: list[str] = []
    for policy in draft.guardrails:
        if policy.is_enabled and policy.policy_type == "content_rule":
            blocked_topics += list(policy.config.get("blockedTopics", []))
            blocked_phrases += list(policy.config.get("blockedPhrases", []))
    transfers: list[dict[str, Any]] = []
    if draft.handoff.transfer_destination:
        transfers.append({"when": "default", "destination": draft.handoff.transfer_destination})
    transfers += [{"when": r.when, "label": r.label, "destination": r.destination}
                  for r in draft.handoff.transfer_rules]
    if draft.after_hours.allow_human_transfer:
        transfers.append({"when": "after hours", "destination": draft.after_hours.number})
    warnings = _agent_warnings(draft)
    for index, skill in enumerate(draft.skills):
        warnings += _skill_warnings(draft, index, skill)
    warnings += _guardrail_warnings(draft)
    changes = diff(published_config, draft_config) if published_config is not None else None
    return {
        "agentId": draft.agent_id,
        "draftHash": draft.config_hash,
        "publishedVersionId": None if published is None else published.version_id,
        "publishedVersion": None if published is None else published.version_number,
        "hasUnpublishedChanges": published is None or published.config_hash != draft.config_hash,
        "changeCount": None if changes is None else len(changes),
        "willSay": {
            "greeting": draft.greeting,
            "primaryLanguage": draft.primary_language,
            "languages": list(draft.languages),
            "role": draft.persona.role,
            "goals": list(draft.persona.goals),
            "skills": [{"name": s.name, "description": s.description} for s in draft.enabled_skills()],
        },
        "wontSay": {
            "neverDo": list(draft.persona.never_do),
            "blockedTopics": blocked_topics,
            "blockedPhrases": blocked_phrases,
        },
        "dataFlows": [_data_flow(s) for s in draft.skills],
        "transfers": transfers,
        "activeGuardrails": [
            {
                "policyType": g.policy_type,
                "appliesToSkillType": g.applies_to_skill_type,
                "appliesToSkillId": g.applies_to_skill_id,
                "config": g.config,
            }
            for g in draft.guardrails
            if g.is_enabled
        ],
        "callerVerification": [
            {"method": v.method, "requiredFields": list(v.required_fields),
             "verifierSkillId": v.verifier_skill_id}
            for v in draft.caller_verification
        ],
        "warnings": warnings,
    }
