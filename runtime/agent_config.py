"""The compiled agent: one immutable, content-hashed configuration that a call or chat runs.

Publishing compiles the draft (agent fields, skills, guardrails, caller verification) into a config
dict, stores its canonical JSON, and stamps it with a SHA-256 of that text. `CompiledAgent` is the typed,
frozen view of such a config; `from_config(to_config(x)) == x` and the hash of a stored version never
changes. Provenance (version id and number, draft or not) rides beside the config and is not hashed.

Each skill carries `parametersSchema`, the JSON Schema (an object with `properties` and `required`) of the
arguments the model fills in when it calls the skill as a tool. Configs stored before skills had it load
with `EMPTY_PARAMETERS_SCHEMA`: no arguments.

`knowledge` is the snapshot of the indexed knowledge sources (see `runtime.knowledge`). It is written only
when there is some, so an agent without knowledge hashes as before, and a config stored before knowledge
existed loads with an empty snapshot.

`record_calls` (`recordCalls`) asks for voice calls to be recorded, both directions, to a WAV the API serves
through a signed URL. Like knowledge it is written only when on, so agents that never turned it on hash as
before and versions stored before it existed load with it off.

The runtime reads agents through `AgentConfigSource`, implemented by the control plane, so this package
never imports the database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from runtime.knowledge import EMPTY_SNAPSHOT, KnowledgeSnapshot

CONFIG_SCHEMA_VERSION = 1
EMPTY_PARAMETERS_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}, "required": []}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


@dataclass(frozen=True)
class Persona:
    role: str | None
    goals: tuple[str, ...]
    never_do: tuple[str, ...]


@dataclass(frozen=True)
class TransferRule:
    label: str
    when: str
    destination: str


@dataclass(frozen=True)
class Handoff:
    warm: bool
    transfer_destination: str | None
    transfer_rules: tuple[TransferRule, ...]


@dataclass(frozen=True)
class CallControl:
    max_call_seconds: int
    idle_reminder_seconds: int
    idle_reminder_count: int
    on_no_response_action: str  # "end" | "transfer"


@dataclass(frozen=True)
class TimeRange:
    open: str  # "HH:MM", local time
    close: str  # "HH:MM" or "24:00"; after `open`

    def contains(self, t: time) -> bool:
        hhmm = t.strftime("%H:%M")
        return self.open <= hhmm < self.close


@dataclass(frozen=True)
class Holiday:
    date: str  # ISO date, local to the business
    name: str | None


@dataclass(frozen=True)
class BusinessHours:
    timezone: str
    weekly: tuple[tuple[str, tuple[TimeRange, ...]], ...]  # (weekday, ranges), every weekday present
    holidays: tuple[Holiday, ...]

    def is_open(self, at: datetime) -> bool:
        """Whether the business is open at `at` (an aware datetime), in its own timezone."""
        local = at.astimezone(ZoneInfo(self.timezone))
        if any(date.fromisoformat(h.date) == local.date() for h in self.holidays):
            return False
        ranges = dict(self.weekly).get(WEEKDAYS[local.weekday()], ())
        return any(r.contains(local.time()) for r in ranges)


@dataclass(frozen=True)
class AfterHours:
    allow_human_transfer: bool
    number: str | None


@dataclass(frozen=True)
class Voice:
    default_voice_id: str | None
    voice_map: tuple[tuple[str, str], ...]  # (language, voiceId), sorted by language

    def for_language(self, language: str) -> str | None:
        return dict(self.voice_map).get(language, self.default_voice_id)


def _freeze_json(value: Mapping[str, Any]) -> str:
    return canonical_json(dict(value))


@dataclass(frozen=True)
class Skill:
    id: str
    name: str
    description: str
    skill_type: str
    execution_config_json: str  # canonical JSON: kept as text so the dataclass stays immutable
    parameters_schema_json: str  # canonical JSON Schema of the tool's arguments
    enabled: bool
    requires_verified_identity: bool
    verification_level: str  # "basic" | "step_up"
    allowed_fields: tuple[str, ...] | None
    requires_confirmation: bool
    stakes: str  # "low" | "medium" | "high"

    @property
    def execution_config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self.execution_config_json)
        return config

    @property
    def parameters_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = json.loads(self.parameters_schema_json)
        return schema


@dataclass(frozen=True)
class GuardrailPolicy:
    policy_type: str
    is_enabled: bool
    applies_to_skill_type: str | None
    applies_to_skill_id: str | None
    config_json: str

    @property
    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self.config_json)
        return config


@dataclass(frozen=True)
class VerificationMethod:
    method: str
    required_fields: tuple[str, ...]
    verifier_skill_id: str | None
    token_ttl_seconds: int
    max_attempts: int
    step_up_for: tuple[str, ...]


@dataclass(frozen=True)
class CompiledAgent:
    agent_id: str
    name: str
    persona: Persona
    primary_language: str
    languages: tuple[str, ...]
    voice: Voice
    greeting: str | None
    handoff: Handoff
    call_control: CallControl
    business_hours: BusinessHours | None
    after_hours: AfterHours
    skills: tuple[Skill, ...]
    guardrails: tuple[GuardrailPolicy, ...]
    caller_verification: tuple[VerificationMethod, ...]
    # Provenance: not part of the hashed config.
    config_hash: str
    version_id: str | None = None
    version_number: int | None = None
    is_draft: bool = False
    # Hashed (it is part of the config) but last so it can default: the knowledge this version searches.
    knowledge: KnowledgeSnapshot = EMPTY_SNAPSHOT
    # Hashed, written only when on (see the module docstring).
    record_calls: bool = False

    def is_open(self, at: datetime) -> bool:
        """No business hours configured means always open."""
        return self.business_hours is None or self.business_hours.is_open(at)

    def enabled_skills(self) -> tuple[Skill, ...]:
        return tuple(s for s in self.skills if s.enabled)

    def to_config(self) -> dict[str, Any]:
        config = self._base_config()
        if self.knowledge:
            config["knowledge"] = self.knowledge.to_config()
        if self.record_calls:
            config["recordCalls"] = True
        return config

    def _base_config(self) -> dict[str, Any]:
        return {
            "schemaVersion": CONFIG_SCHEMA_VERSION,
            "agentId": self.agent_id,
            "name": self.name,
            "persona": {
                "role": self.persona.role,
                "goals": list(self.persona.goals),
                "neverDo": list(self.persona.never_do),
            },
            "primaryLanguage": self.primary_language,
            "languages": list(self.languages),
            "defaultVoiceId": self.voice.default_voice_id,
            "voiceMap": dict(self.voice.voice_map),
            "greeting": self.greeting,
            "handoffConfig": {
                "warm": self.handoff.warm,
                "transferDestination": self.handoff.transfer_destination,
                "transferRules": [
                    {"label": r.label, "when": r.when, "destination": r.destination}
                    for r in self.handoff.transfer_rules
                ],
            },
            "callControl": {
                "maxCallSeconds": self.call_control.max_call_seconds,
                "idleReminderSeconds": self.call_control.idle_reminder_seconds,
                "idleReminderCount": self.call_control.idle_reminder_count,
                "onNoResponseAction": self.call_control.on_no_response_action,
            },
            "businessHours": None if self.business_hours is None else _hours_to_config(self.business_hours),
            "afterHours": {
                "allowHumanTransfer": self.after_hours.allow_human_transfer,
                "number": self.after_hours.number,
            },
            "skills": [_skill_to_config(s) for s in self.skills],
            "guardrails": [
                {
                    "policyType": g.policy_type,
                    "isEnabled": g.is_enabled,
                    "appliesToSkillType": g.applies_to_skill_type,
                    "appliesToSkillId": g.applies_to_skill_id,
                    "config": g.config,
                }
                for g in self.guardrails
            ],
            "callerVerification": [
                {
                    "method": v.method,
                    "requiredFields": list(v.required_fields),
                    "verifierSkillId": v.verifier_skill_id,
                    "tokenTtlSeconds": v.token_ttl_seconds,
                    "maxAttempts": v.max_attempts,
                    "stepUpFor": list(v.step_up_for),
                }
                for v in self.caller_verification
            ],
        }

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        version_id: str | None = None,
        version_number: int | None = None,
        is_draft: bool = False,
    ) -> CompiledAgent:
        persona = config["persona"]
        handoff = config["handoffConfig"]
        control = config["callControl"]
        after = config["afterHours"]
        hours = config.get("businessHours")
        return cls(
            agent_id=config["agentId"],
            name=config["name"],
            persona=Persona(persona.get("role"), tuple(persona["goals"]), tuple(persona["neverDo"])),
            primary_language=config["primaryLanguage"],
            languages=tuple(config["languages"]),
            voice=Voice(config.get("defaultVoiceId"), tuple(sorted(config["voiceMap"].items()))),
            greeting=config.get("greeting"),
            handoff=Handoff(
                bool(handoff["warm"]),
                handoff.get("transferDestination"),
                tuple(TransferRule(r["label"], r["when"], r["destination"]) for r in handoff["transferRules"]),
            ),
            call_control=CallControl(
                int(control["maxCallSeconds"]),
                int(control["idleReminderSeconds"]),
                int(control["idleReminderCount"]),
                control["onNoResponseAction"],
            ),
            business_hours=None if hours is None else _hours_from_config(hours),
            after_hours=AfterHours(bool(after["allowHumanTransfer"]), after.get("number")),
            skills=tuple(_skill_from_config(s) for s in config["skills"]),
            guardrails=tuple(
                GuardrailPolicy(
                    g["policyType"],
                    bool(g["isEnabled"]),
                    g.get("appliesToSkillType"),
                    g.get("appliesToSkillId"),
                    _freeze_json(g.get("config") or {}),
                )
                for g in config["guardrails"]
            ),
            caller_verification=tuple(
                VerificationMethod(
                    v["method"],
                    tuple(v["requiredFields"]),
                    v.get("verifierSkillId"),
                    int(v["tokenTtlSeconds"]),
                    int(v["maxAttempts"]),
                    tuple(v["stepUpFor"]),
                )
                for v in config["callerVerification"]
            ),
            config_hash=config_hash(config),
            version_id=version_id,
            version_number=version_number,
            is_draft=is_draft,
            knowledge=KnowledgeSnapshot.from_config(config.get("knowledge")),
            record_calls=bool(config.get("recordCalls", False)),
        )


def _hours_to_config(hours: BusinessHours) -> dict[str, Any]:
    return {
        "timezone": hours.timezone,
        "weekly": {day: [{"open": r.open, "close": r.close} for r in ranges] for day, ranges in hours.weekly},
        "holidays": [{"date": h.date, "name": h.name} for h in hours.holidays],
    }


def _hours_from_config(hours: Mapping[str, Any]) -> BusinessHours:
    weekly = hours.get("weekly", {})
    return BusinessHours(
        hours["timezone"],
        tuple(
            (day, tuple(TimeRange(r["open"], r["close"]) for r in weekly.get(day, []))) for day in WEEKDAYS
        ),
        tuple(Holiday(h["date"], h.get("name")) for h in hours.get("holidays", [])),
    )


def _skill_to_config(skill: Skill) -> dict[str, Any]:
    return {
        "id": skill.id,
        "name": skill.name,
        "description": skill.description,
        "skillType": skill.skill_type,
        "executionConfig": skill.execution_config,
        "parametersSchema": skill.parameters_schema,
        "enabled": skill.enabled,
        "requiresVerifiedIdentity": skill.requires_verified_identity,
        "verificationLevel": skill.verification_level,
        "allowedFields": None if skill.allowed_fields is None else list(skill.allowed_fields),
        "requiresConfirmation": skill.requires_confirmation,
        "stakes": skill.stakes,
    }


def _skill_from_config(skill: Mapping[str, Any]) -> Skill:
    allowed: Sequence[str] | None = skill.get("allowedFields")
    return Skill(
        id=skill["id"],
        name=skill["name"],
        description=skill["description"],
        skill_type=skill["skillType"],
        execution_config_json=_freeze_json(skill.get("executionConfig") or {}),
        parameters_schema_json=_freeze_json(skill.get("parametersSchema") or EMPTY_PARAMETERS_SCHEMA),
        enabled=bool(skill["enabled"]),
        requires_verified_identity=bool(skill["requiresVerifiedIdentity"]),
        verification_level=skill["verificationLevel"],
        allowed_fields=None if allowed is None else tuple(allowed),
        requires_confirmation=bool(skill["requiresConfirmation"]),
        stakes=skill["stakes"],
    )


class AgentConfigSource(Protocol):
    """How the runtime obtains agents; implemented by the control plane over its database."""

    async def published(self, org_id: str, agent_id: str) -> CompiledAgent | None:
        """The agent's current published version, or None if it was never published (or is gone)."""
        ...

    async def version(self, org_id: str, agent_id: str, version_id: str) -> CompiledAgent | None:
        """A given frozen version of the agent."""
        ...

    async def draft(self, org_id: str, agent_id: str) -> CompiledAgent | None:
        """The draft compiled on demand, for draft-mode tests; never stored."""
        ...
