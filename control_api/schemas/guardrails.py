"""Guardrail policies and caller-verification methods: the two lists `PUT` replaces whole.

Each policy type is declared once in `POLICY_CONFIGS` with the model of its `config`; a policy's config is
checked against it and errors carry paths under `[i].config.`. Each verification method has its default
`requiredFields` in `DEFAULT_REQUIRED_FIELDS`. Whether `appliesToSkillId` and `verifierSkillId` name a
skill of the agent is a database question, answered by the route.

Both lists are stored in exactly their wire form (`runtime.agent_config` reads them):
policies as {policyType, isEnabled, appliesToSkillType, appliesToSkillId, config}, methods as
{method, requiredFields, verifierSkillId, tokenTtlSeconds, maxAttempts, stepUpFor}.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, ValidationInfo, field_validator, model_validator

from control_api.schemas.common import ApiModel
from control_api.schemas.skills import FieldList, invalid, with_default_object

MAX_POLICIES = 50
MAX_VERIFICATION_METHODS = 10

Phrase = Annotated[str, Field(min_length=1, max_length=500)]
SkillId = Annotated[str, Field(min_length=1, max_length=40)]
SkillTypeRef = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,39}$",
        description="A skill type, including integration types such as `shopify`.",
    ),
]


# --- policy configs, one model per policy type -------------------------------------------------------


class NoConfig(ApiModel):
    """The policy needs no settings."""


class FieldAllowlistConfig(ApiModel):
    fields: FieldList = Field(
        min_length=1, max_length=100, description="The only fields that may be read back."
    )


class RateLimitConfig(ApiModel):
    max_per_call: int | None = Field(None, ge=1, le=1_000_000)
    max_per_hour: int | None = Field(None, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitConfig:
        if self.max_per_call is None and self.max_per_hour is None:
            raise invalid("maxPerHour", "is required unless maxPerCall is set")
        return self


class BusinessHoursConfig(ApiModel):
    restrict_skills_after_hours: bool = Field(
        True, description="Outside the agent's business hours, its skills are unavailable."
    )


class ContentRuleConfig(ApiModel):
    blocked_topics: list[Phrase] = Field(default_factory=list, max_length=100)
    blocked_phrases: list[Phrase] = Field(default_factory=list, max_length=100)
    response: Annotated[str, Field(min_length=1, max_length=1000)] | None = Field(
        None, description="What the agent says instead; a polite refusal when omitted."
    )

    @model_validator(mode="after")
    def _something_blocked(self) -> ContentRuleConfig:
        if not self.blocked_topics and not self.blocked_phrases:
            raise invalid("blockedPhrases", "must not be empty unless blockedTopics names a topic", [])
        return self


PolicyType = Literal[
    "verify_before_disclose", "field_allowlist", "confirm_before_write", "rate_limit", "business_hours",
    "content_rule",
]

POLICY_CONFIGS: Mapping[str, type[ApiModel]] = {
    "verify_before_disclose": NoConfig,
    "field_allowlist": FieldAllowlistConfig,
    "confirm_before_write": NoConfig,
    "rate_limit": RateLimitConfig,
    "business_hours": BusinessHoursConfig,
    "content_rule": ContentRuleConfig,
}
assert set(POLICY_CONFIGS) == set(get_args(PolicyType))


class GuardrailPolicy(ApiModel):
    policy_type: PolicyType
    applies_to_skill_type: SkillTypeRef | None = Field(None, description="Only skills of this type.")
    applies_to_skill_id: SkillId | None = Field(None, description="Only this skill of the agent.")
    is_enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict, description="Settings of the policy type.")

    @model_validator(mode="before")
    @classmethod
    def _config_present(cls, data: Any) -> Any:
        return with_default_object(data, "config", "config")

    @field_validator("config")
    @classmethod
    def _config_of_type(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        model = POLICY_CONFIGS.get(info.data.get("policy_type", ""))
        if model is None:
            return value
        # A ValidationError raised here is reported with paths under config.
        config: dict[str, Any] = model.model_validate(value).model_dump(by_alias=True, mode="json")
        return config

    def stored(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


# --- caller verification -----------------------------------------------------------------------------

VerificationMethodName = Literal["dob_postcode", "account_pin", "otp_sms", "knowledge_based"]

DEFAULT_REQUIRED_FIELDS: Mapping[str, tuple[str, ...]] = {
    "dob_postcode": ("date_of_birth", "postcode"),
    "account_pin": ("account_pin",),
    "otp_sms": ("phone",),
    "knowledge_based": (),  # the questions are the operator's: they must name the fields
}
assert set(DEFAULT_REQUIRED_FIELDS) == set(get_args(VerificationMethodName))

NEEDS_NO_VERIFIER = frozenset({"otp_sms"})  # the platform sends and checks the code itself


class VerificationMethod(ApiModel):
    method: VerificationMethodName
    required_fields: FieldList | None = Field(None, max_length=20, description="Defaults by method.")
    verifier_skill_id: SkillId | None = Field(
        None, description="The agent's skill that checks the answers; required except for otp_sms."
    )
    token_ttl_seconds: int = Field(600, ge=30, le=86400)
    max_attempts: int = Field(3, ge=1, le=10)
    step_up_for: list[Phrase] = Field(
        default_factory=list, max_length=50, description="Actions that need a fresh check."
    )

    @model_validator(mode="after")
    def _method_rules(self) -> VerificationMethod:
        if self.required_fields is None:
            self.required_fields = list(DEFAULT_REQUIRED_FIELDS[self.method])
        if not self.required_fields:
            raise invalid("requiredFields", f"must name at least one field for {self.method}", [])
        if self.verifier_skill_id is None and self.method not in NEEDS_NO_VERIFIER:
            raise invalid("verifierSkillId", f"is required for {self.method}")
        return self

    def stored(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")
