"""The agent draft: every agent-level field an operator edits, validated as one document.

PATCH semantics: each top-level field present in the body replaces the stored value whole (send the
complete `handoffConfig`, not one rule); `null` clears an optional field. The merged draft is validated
again as a whole, so cross-field rules (voice languages, after-hours number) always hold.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from control_api.schemas.common import (
    ApiModel,
    Destination,
    LanguageTag,
    LongText,
    ShortText,
    Timezone,
)

Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
VoiceId = Annotated[str, Field(min_length=1, max_length=120, pattern=r"^[A-Za-z0-9_.:\-]+$")]
ListItem = Annotated[str, Field(min_length=1, max_length=500)]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$")


class Persona(ApiModel):
    role: LongText | None = None
    goals: list[ListItem] = Field(default_factory=list, max_length=50)
    never_do: list[ListItem] = Field(default_factory=list, max_length=50)


class TransferRule(ApiModel):
    label: ShortText
    when: Annotated[str, Field(min_length=1, max_length=1000)]
    destination: Destination


class HandoffConfig(ApiModel):
    warm: bool = False
    transfer_destination: Destination | None = None
    transfer_rules: list[TransferRule] = Field(default_factory=list, max_length=50)


class CallControl(ApiModel):
    max_call_seconds: int = Field(1800, ge=30, le=14400, description="Hard cap on call length.")
    idle_reminder_seconds: int = Field(10, ge=3, le=300, description="Silence before 'are you still there?'.")
    idle_reminder_count: int = Field(2, ge=0, le=10, description="Reminders before onNoResponseAction.")
    on_no_response_action: Literal["end", "transfer"] = "end"


class TimeRange(ApiModel):
    open: str = Field(description="Local opening time, HH:MM.")
    close: str = Field(description="Local closing time, HH:MM (24:00 for midnight).")

    @field_validator("open", "close")
    @classmethod
    def _hhmm(cls, value: str, info: ValidationInfo) -> str:
        if not _HHMM.match(value):
            raise ValueError("must be a 24-hour time HH:MM")
        opened = info.data.get("open")
        if info.field_name == "close" and opened is not None and value <= opened:
            raise ValueError("must be after open (split overnight hours across two days)")
        return value


class Holiday(ApiModel):
    date: date
    name: Annotated[str, Field(max_length=200)] | None = None


class BusinessHours(ApiModel):
    timezone: Timezone
    weekly: dict[Weekday, list[TimeRange]] = Field(
        default_factory=dict, description="Open ranges per weekday; a missing day is closed."
    )
    holidays: list[Holiday] = Field(default_factory=list, max_length=366)


class AfterHours(ApiModel):
    allow_human_transfer: bool = False
    number: Destination | None = Field(None, validate_default=True)

    @field_validator("number")
    @classmethod
    def _number_when_allowed(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("allow_human_transfer"):
            raise ValueError("is required when allowHumanTransfer is true")
        return value


class AgentDraft(ApiModel):
    """The full draft; also the body of `POST /agents` (only `name` is required)."""

    name: ShortText
    persona: Persona = Field(default_factory=Persona)
    primary_language: LanguageTag = "en"
    languages: list[LanguageTag] = Field(default_factory=list, max_length=40, validate_default=True)
    default_voice_id: VoiceId | None = None
    voice_map: dict[LanguageTag, VoiceId] = Field(default_factory=dict)
    greeting: Annotated[str, Field(max_length=1000)] | None = None
    handoff_config: HandoffConfig = Field(default_factory=HandoffConfig)
    call_control: CallControl = Field(default_factory=CallControl)
    business_hours: BusinessHours | None = None
    after_hours: AfterHours = Field(default_factory=AfterHours)
    record_calls: bool = Field(
        False,
        description="Record voice calls, both directions, to a WAV served through a short-lived signed URL "
        "(`GET /conversations/{id}/audio`). Callers may have to be told: see the greeting.",
    )

    @field_validator("languages")
    @classmethod
    def _primary_first(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # The primary language is always supported, and listed first.
        primary = info.data.get("primary_language")
        head = [primary] if primary else []
        return list(dict.fromkeys(head + value))

    @field_validator("voice_map")
    @classmethod
    def _voices_for_spoken_languages(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        spoken = info.data.get("languages")
        if spoken is not None:
            stray = [lang for lang in value if lang not in spoken]
            if stray:
                raise ValueError(f"has languages the agent does not speak: {', '.join(stray)}")
        return value

    @model_validator(mode="after")
    def _default_voice(self) -> AgentDraft:
        if self.default_voice_id is None and self.primary_language in self.voice_map:
            self.default_voice_id = self.voice_map[self.primary_language]
        elif self.default_voice_id is not None:
            self.voice_map.setdefault(self.primary_language, self.default_voice_id)
        return self

    def stored(self) -> dict[str, Any]:
        document = self.model_dump(by_alias=True, mode="json")
        if not document["recordCalls"]:  # written only when on, as in the compiled config: hashes stay as they were
            del document["recordCalls"]
        return document


class AgentPatch(ApiModel):
    """Body of `PATCH /agents/{id}`: any subset of the draft's fields."""

    name: ShortText | None = None
    persona: Persona | None = None
    primary_language: LanguageTag | None = None
    languages: list[LanguageTag] | None = None
    default_voice_id: VoiceId | None = None
    voice_map: dict[LanguageTag, VoiceId] | None = None
    greeting: Annotated[str, Field(max_length=1000)] | None = None
    handoff_config: HandoffConfig | None = None
    call_control: CallControl | None = None
    business_hours: BusinessHours | None = None
    after_hours: AfterHours | None = None
    record_calls: bool | None = None

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent, by their wire names (explicit nulls included)."""
        dumped = self.model_dump(by_alias=True, mode="json")
        fields = type(self).model_fields
        return {fields[name].alias or name: dumped[fields[name].alias or name] for name in self.model_fields_set}


class VoiceAssignment(ApiModel):
    """Body of `PUT /agents/{id}/voice`."""

    voice_id: VoiceId
    language: LanguageTag | None = Field(None, description="Defaults to the agent's primary language.")
