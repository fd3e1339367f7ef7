"""Skills: the tools an agent calls mid-conversation, and the catalog of skill types.

Each skill type is declared once, as data, in `SKILL_TYPES`: its wire name, the pydantic model of its
`executionConfig`, and the title and description `GET /skill-types` shows. Validating a skill checks the
common fields, then its `executionConfig` against the model of its type; errors inside the config carry
paths under `executionConfig.` (`executionConfig.radiusMiles`).

The stored spec (the `skills.spec` column, read by `runtime.agent_config`) is exactly the fields of
`SkillSpec`, by wire name, with `executionConfig` normalized (defaults filled in, numbers in E.164).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from control_api.schemas.common import ApiModel, Destination, ShortText

NAME_KEY_MAX = 200  # width of skills.name_key

FieldName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$",
        description="A data field name such as `postcode` or `order.status`.",
    ),
]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
Message = Annotated[str, Field(min_length=1, max_length=1000)]

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z\-]{1,100}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")


def name_key(name: str) -> str:
    """The uniqueness key of a skill name: case and runs of whitespace do not make two names differ."""
    return " ".join(name.split()).lower()


def invalid(field: str, message: str, value: Any = None) -> ValidationError:
    """An error located at `field` (a wire name), for rules that span fields.

    Raised from a model validator it is reported under the model's own path, e.g.
    `executionConfig.originAddress`: pydantic turns a ValidationError raised inside a validator into its
    line errors, prefixed with the location being validated (the same mechanism puts config errors under
    `executionConfig.`). A plain ValueError there would name only the model, and one from a validator of
    a defaulted field would name the Python attribute rather than the wire field.
    """
    detail = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=(field,), input=value)
    return ValidationError.from_exception_data("invalid", [detail])


def with_default_object(data: Any, alias: str, name: str) -> Any:
    """Input with `alias` set to {} when neither it nor `name` was given."""
    if isinstance(data, dict) and alias not in data and name not in data:
        return {**data, alias: {}}
    return data


def check_http_url(value: str) -> str:
    if any(c.isspace() for c in value):
        raise ValueError("must be an http:// or https:// URL without spaces")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError on a malformed port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL")
    return value


def check_email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("is not an email address")
    return value


def unique_fields(values: list[str]) -> list[str]:
    """Field lists are sets that keep the caller's order."""
    return list(dict.fromkeys(values))


HttpUrl = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(check_http_url)]
Email = Annotated[str, Field(min_length=3, max_length=254), AfterValidator(check_email)]
FieldList = Annotated[list[FieldName], AfterValidator(unique_fields)]


# --- executionConfig, one model per skill type -------------------------------------------------------


class TransferConfig(ApiModel):
    destination: Destination | None = Field(
        None,
        description="E.164 number (a 10-digit US number is normalized) or sip: URI. Omit only when a "
        "data-lookup skill supplies the destination at call time.",
    )
    announce: Message | None = Field(None, description="Said to the caller before the transfer.")


class EndCallConfig(ApiModel):
    goodbye_message: Message | None = Field(None, description="Said before hanging up.")


class WebhookParameter(ApiModel):
    name: Identifier
    description: Annotated[str, Field(min_length=1, max_length=500)]
    type: Literal["string", "number", "integer", "boolean"] = "string"
    required: bool = True


class HttpWebhookConfig(ApiModel):
    url: HttpUrl
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    parameters: list[WebhookParameter] = Field(
        default_factory=list, max_length=50, description="What the agent collects from the caller."
    )
    timeout_seconds: float = Field(10, ge=0.5, le=30)
    headers: dict[str, Annotated[str, Field(max_length=2000)]] | None = Field(None, max_length=20)

    @field_validator("parameters")
    @classmethod
    def _unique_names(cls, value: list[WebhookParameter]) -> list[WebhookParameter]:
        seen: set[str] = set()
        for parameter in value:
            if parameter.name in seen:
                raise ValueError(f"has two parameters named {parameter.name}")
            seen.add(parameter.name)
        return value

    @field_validator("headers")
    @classmethod
    def _header_syntax(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, text in (value or {}).items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"has an invalid header name {name!r}")
            if any(ord(c) < 32 and c != "\t" for c in text):
                raise ValueError(f"header {name} has a control character in its value")
        return value


class LatLng(ApiModel):
    lat: float = Field(ge=-90, le=90)
    lng: float = Field(ge=-180, le=180)


class GeoConfig(ApiModel):
    action: Literal["check_service_area"]
    origin: LatLng | None = Field(None, description="The shop's coordinates.")
    origin_address: Annotated[str, Field(min_length=1, max_length=500)] | None = Field(
        None, description="The shop's street address (geocoded once). This or origin is required."
    )
    radius_miles: float = Field(gt=0, le=500)

    @model_validator(mode="after")
    def _some_origin(self) -> GeoConfig:
        if self.origin is None and self.origin_address is None:
            raise invalid("originAddress", "is required unless origin (lat, lng) is given")
        return self


class TakeMessageConfig(ApiModel):
    fields: FieldList = Field(
        default_factory=lambda: ["name", "phone", "message"], min_length=1, max_length=20
    )
    recipient_email: Email | None = None
    webhook_url: HttpUrl | None = None


@dataclass(frozen=True)
class SkillType:
    key: str  # the wire name: `skillType` of a skill, `type` in the catalog
    config: type[ApiModel]
    title: str
    description: str

    def catalog_entry(self) -> dict[str, Any]:
        return {
            "type": self.key,
            "name": self.title,
            "description": self.description,
            "executionConfigSchema": self.config.model_json_schema(by_alias=True),
        }


SKILL_TYPES: Mapping[str, SkillType] = {
    t.key: t
    for t in (
        SkillType(
            "transfer", TransferConfig, "Transfer the call",
            "Move the caller to a person at a phone number or SIP URI (a blind SIP REFER).",
        ),
        SkillType("end_call", EndCallConfig, "End the call", "Say goodbye and hang up."),
        SkillType(
            "http_webhook", HttpWebhookConfig, "Call a webhook",
            "Send the parameters the agent collected to your HTTP endpoint and read back its reply.",
        ),
        SkillType(
            "geo", GeoConfig, "Check a service area",
            "Check whether the caller's address is within a radius of your location.",
        ),
        SkillType(
            "take_message", TakeMessageConfig, "Take a message",
            "Collect the caller's details and message, and deliver them by email or webhook.",
        ),
    )
}


# --- the skill ---------------------------------------------------------------------------------------

VerificationLevel = Literal["basic", "step_up"]
Stakes = Literal["low", "medium", "high"]
SkillDescription = Annotated[str, Field(min_length=1, max_length=2000)]


def check_skill_type(value: str) -> str:
    if value not in SKILL_TYPES:
        raise ValueError(f"must be one of {', '.join(SKILL_TYPES)}")
    return value


def check_name(value: str) -> str:
    if len(name_key(value)) > NAME_KEY_MAX:
        raise ValueError(f"must be at most {NAME_KEY_MAX} characters")
    return value


SkillName = Annotated[ShortText, AfterValidator(check_name)]
SkillTypeName = Annotated[
    str,
    Field(max_length=40, description="One of the types `GET /skill-types` lists."),
    AfterValidator(check_skill_type),
]


class SkillSpec(ApiModel):
    """A whole skill; also the body of `POST /agents/{id}/skills` (name, description, skillType required)."""

    name: SkillName
    description: SkillDescription = Field(description="When the agent should use the skill; it reads this.")
    skill_type: SkillTypeName
    execution_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the skill type: see `executionConfigSchema` in `GET /skill-types`.",
    )
    enabled: bool = True
    requires_verified_identity: bool = False
    verification_level: VerificationLevel = "basic"
    allowed_fields: FieldList | None = Field(
        None, max_length=100, description="Fields the agent may read back; null means no cap."
    )
    requires_confirmation: bool = False
    stakes: Stakes = "low"

    @model_validator(mode="before")
    @classmethod
    def _config_present(cls, data: Any) -> Any:
        # An omitted executionConfig is checked as {} (a default would be reported by its Python name).
        return with_default_object(data, "executionConfig", "execution_config")

    @field_validator("execution_config")
    @classmethod
    def _config_of_type(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = SKILL_TYPES.get(info.data.get("skill_type", ""))
        if kind is None:  # the type itself is wrong; that error is reported on skillType
            return value
        # A ValidationError raised here is reported with paths under executionConfig.
        config: dict[str, Any] = kind.config.model_validate(value).model_dump(by_alias=True, mode="json")
        return config

    def stored(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


class SkillPatch(ApiModel):
    """Body of `PATCH /agents/{id}/skills/{skillId}`: each field sent replaces the stored one whole."""

    name: SkillName | None = None
    description: SkillDescription | None = None
    skill_type: SkillTypeName | None = None
    execution_config: dict[str, Any] | None = None
    enabled: bool | None = None
    requires_verified_identity: bool | None = None
    verification_level: VerificationLevel | None = None
    allowed_fields: FieldList | None = Field(None, max_length=100)
    requires_confirmation: bool | None = None
    stakes: Stakes | None = None

    def changes(self) -> dict[str, Any]:
        """Only the fields the client sent, by their wire names (explicit nulls included)."""
        dumped = self.model_dump(by_alias=True, mode="json")
        fields = type(self).model_fields
        wire = [fields[name].alias or name for name in self.model_fields_set]
        return {key: dumped[key] for key in wire}
