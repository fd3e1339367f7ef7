"""Skills: the tools an agent calls mid-conversation, and the catalog of skill types.

Each skill type is declared once, as data, in `SKILL_TYPES`: its wire name, the pydantic model of its
`executionConfig`, the tool arguments that config implies, and the title and description `GET /skill-types`
shows. Validating a skill checks the common fields, then its `executionConfig` against the model of its
type, then its arguments; errors carry the wire path of the field to fix (`executionConfig.radiusMiles`,
`parametersSchema.properties.serial_number.type`, `requiredParams[0]`).

Arguments. Every skill carries `parametersSchema`, the JSON Schema of what the agent fills in when it calls
the skill (docs/integrations/custom.md). It is a small subset of JSON Schema, see `ParametersSchema`: an
object whose properties are named like identifiers and typed string, number, integer, boolean, array (with
`items`) or object. A client may send it; when it does not, the skill type derives it from the config:

    skillType     derived arguments                          a parametersSchema the client sends
    transfer      reason?                                    replaces them
    end_call      reason?                                    replaces them
    http_webhook  executionConfig.parameters (else none)     replaces them; if parameters is sent too,
                                                             the two must be identical
    geo           address?, latitude?, longitude?            must declare exactly these, with these types
    take_message  one string per executionConfig.fields      (it may reword descriptions and `required`)

`requiredParams` (a list of property names) is shorthand merged into `required`; it is not stored. The
stored `required` lists names in the order of `properties`.

Normalized forms: each value is stored, and returned, in one spelling.
- The http_webhook timeout is `executionConfig.timeoutMs`, whole milliseconds (100..30000, default 10000).
  The documented `timeout_ms` is the same field under its other name. `timeoutSeconds` (0.5..30, the earlier
  form) is accepted and converted. Sending more than one of them is an error.
- http_webhook `executionConfig.parameters`, the list form take-orders.md uses, is another way to write
  `parametersSchema`; it is accepted, turned into the schema and not stored.

Editing (`merge_patch`, for PATCH): each field sent replaces the stored one. A derived `parametersSchema`
follows the config: a PATCH that changes skillType or executionConfig derives it again. A schema the client
wrote is kept (and checked against the new config), unless the PATCH sends `executionConfig.parameters`,
which replaces it, or `parametersSchema: null`, which returns the skill to the derived arguments.

The stored spec (the `skills.spec` column, read by `runtime.agent_config`) is exactly the keys of
`SPEC_KEYS`: the fields of `SkillSpec` by wire name, with `executionConfig` normalized (defaults filled in,
numbers in E.164) and `parametersSchema` always present.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    SerializerFunctionWrapHandler,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from control_api.schemas.common import ApiModel, Destination, ShortText

NAME_KEY_MAX = 200  # width of skills.name_key
MAX_PARAMETERS = 50  # properties of one parametersSchema
DEFAULT_TIMEOUT_MS = 10_000

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


def invalid(field: str | tuple[str | int, ...], message: str, value: Any = None) -> ValidationError:
    """An error located at `field` (a wire name), for rules that span fields.

    Raised from a model validator it is reported under the model's own path, e.g.
    `executionConfig.originAddress`: pydantic turns a ValidationError raised inside a validator into its
    line errors, prefixed with the location being validated (the same mechanism puts config errors under
    `executionConfig.`). A plain ValueError there would name only the model, and one from a validator of
    a defaulted field would name the Python attribute rather than the wire field. A tuple is a path
    below the model, e.g. ("required", 2).
    """
    loc = field if isinstance(field, tuple) else (field,)
    detail = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
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
IdentifierList = Annotated[list[Identifier], AfterValidator(unique_fields)]


# --- parametersSchema: the JSON Schema of a skill's arguments ----------------------------------------

JsonType = Literal["string", "number", "integer", "boolean", "array", "object"]
EnumValue = StrictBool | StrictInt | StrictFloat | StrictStr
_ENUM_TYPES: Mapping[str, tuple[type, ...]] = {
    "string": (str,), "number": (int, float), "integer": (int,), "boolean": (bool,),
}


def _enum_value_fits(kind: str, value: Any) -> bool:
    if isinstance(value, bool) and kind != "boolean":  # bool is an int to Python, not to JSON Schema
        return False
    return isinstance(value, _ENUM_TYPES.get(kind, ()))


class PropertySchema(ApiModel):
    """One argument. Nothing beyond these keys is accepted, so every schema means the same thing to every
    model provider the agent may run on."""

    type: JsonType
    description: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    enum: list[EnumValue] | None = Field(None, min_length=1, max_length=100, description="Allowed values.")
    format: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9\-]{0,39}$")] | None = Field(
        None, description="A JSON Schema format such as `date` or `email`; strings only."
    )
    items: PropertySchema | None = Field(None, description="The schema of each element; arrays only.")

    @model_validator(mode="after")
    def _fits_type(self) -> PropertySchema:
        if self.type == "array" and self.items is None:
            raise invalid("items", "is required when type is array")
        if self.type != "array" and self.items is not None:
            raise invalid("items", f"is only allowed when type is array, not {self.type}")
        if self.format is not None and self.type != "string":
            raise invalid("format", f"is only allowed when type is string, not {self.type}")
        if self.enum is not None:
            if self.type not in _ENUM_TYPES:
                raise invalid("enum", f"is not allowed when type is {self.type}")
            for i, value in enumerate(self.enum):
                if not _enum_value_fits(self.type, value):
                    raise invalid(("enum", i), f"must be a {self.type}, like the property", value)
        return self

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Optional keywords that were not given are left out, as a JSON Schema author would.
        return {key: value for key, value in handler(self).items() if value is not None}


def in_order(properties: Iterable[str], names: Iterable[str]) -> list[str]:
    """`names` that are properties, in the order of `properties`, once each."""
    wanted = set(names)
    return [name for name in properties if name in wanted]


class ParametersSchema(ApiModel):
    """A JSON Schema object: `{"type": "object", "properties": {name: schema}, "required": [names]}`."""

    type: Literal["object"]
    properties: dict[Identifier, PropertySchema] = Field(default_factory=dict, max_length=MAX_PARAMETERS)
    required: list[str] = Field(default_factory=list, max_length=MAX_PARAMETERS)

    @model_validator(mode="after")
    def _required_are_properties(self) -> ParametersSchema:
        for i, name in enumerate(self.required):
            if name not in self.properties:
                raise invalid(("required", i), f"names {name!r}, which is not in properties", name)
        self.required = in_order(self.properties, self.required)
        return self

    def wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = self.model_dump(by_alias=True, mode="json")
        return wire


def object_schema(properties: Mapping[str, Mapping[str, Any]], required: Iterable[str] = ()) -> dict[str, Any]:
    """A parametersSchema in its stored form."""
    return {
        "type": "object",
        "properties": {name: dict(schema) for name, schema in properties.items()},
        "required": in_order(properties, required),
    }


def with_required(schema: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """`schema` with `names` (those that are properties) added to `required`."""
    properties: Mapping[str, Any] = schema["properties"]
    return object_schema(properties, [*schema["required"], *names])


@dataclass(frozen=True)
class Arguments:
    """The arguments a skill's config implies, and how a parametersSchema the client sends must relate.

    rule "default": used only when the client sends none. "fixed": the skill's executor reads exactly
    these arguments, so a sent schema must declare the same properties with the same types. "equal": the
    config spells the arguments out too (`source`), so a sent schema must be identical.
    """

    schema: dict[str, Any]
    rule: Literal["default", "fixed", "equal"] = "default"
    source: str = ""

    def check(self, given: Mapping[str, Any], required_params: Iterable[str]) -> None:
        """Raise if `given`, the client's schema, breaks the rule (requiredParams apply to both)."""
        if self.rule == "equal":
            names = list(required_params)
            if with_required(given, names) != with_required(self.schema, names):
                raise invalid(
                    "parametersSchema",
                    f"does not match {self.source}; send the arguments once (parametersSchema is preferred)",
                )
        elif self.rule == "fixed":
            expected = _property_types(self.schema)
            if _property_types(given) != expected:
                listed = ", ".join(f"{name} ({kind})" for name, kind in expected.items())
                raise invalid(
                    ("parametersSchema", "properties"),
                    f"must declare exactly the arguments {self.source} implies: {listed}",
                )


def _property_types(schema: Mapping[str, Any]) -> dict[str, str]:
    return {name: str(prop["type"]) for name, prop in schema["properties"].items()}


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


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


_TIMEOUT_KEYS = ("timeoutMs", "timeout_ms", "timeoutSeconds", "timeout_seconds")


class HttpWebhookConfig(ApiModel):
    url: HttpUrl
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    parameters: list[WebhookParameter] | None = Field(
        None,
        max_length=MAX_PARAMETERS,
        description="What the agent collects from the caller, as a list: another way to write the skill's "
        "parametersSchema, which it becomes (it is not stored).",
    )
    timeout_ms: int = Field(
        DEFAULT_TIMEOUT_MS,
        ge=100,
        le=30_000,
        description="How long to wait for the endpoint, in milliseconds. Also accepted as `timeout_ms`.",
    )
    timeout_seconds: float | None = Field(
        None,
        ge=0.5,
        le=30,
        exclude=True,
        description="The timeout in seconds: accepted instead of timeoutMs and stored as timeoutMs.",
    )
    headers: dict[str, Annotated[str, Field(max_length=2000)]] | None = Field(None, max_length=20)

    @model_validator(mode="before")
    @classmethod
    def _one_timeout(cls, data: Any) -> Any:
        if isinstance(data, dict):
            sent = [key for key in _TIMEOUT_KEYS if data.get(key) is not None]
            if len(sent) > 1:
                raise invalid(sent[-1], f"cannot be sent with {sent[0]}; give the timeout once", data[sent[-1]])
        return data

    @model_validator(mode="after")
    def _timeout_in_ms(self) -> HttpWebhookConfig:
        if self.timeout_seconds is not None:
            self.timeout_ms = round(self.timeout_seconds * 1000)
            self.timeout_seconds = None
        return self

    @field_validator("parameters")
    @classmethod
    def _unique_names(cls, value: list[WebhookParameter] | None) -> list[WebhookParameter] | None:
        seen: set[str] = set()
        for parameter in value or []:
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
    fields: IdentifierList = Field(
        default_factory=lambda: ["name", "phone", "message"],
        min_length=1,
        max_length=20,
        description="What the agent collects; each becomes a string argument of the skill.",
    )
    recipient_email: Email | None = None
    webhook_url: HttpUrl | None = None


# --- the arguments each skill type implies, from its normalized executionConfig (wire names) -------------


def _transfer_arguments(config: Mapping[str, Any]) -> Arguments:
    return Arguments(object_schema({"reason": _string("Why the caller is being transferred, in a few words.")}))


def _end_call_arguments(config: Mapping[str, Any]) -> Arguments:
    return Arguments(object_schema({"reason": _string("Why the call is ending, in a few words.")}))


def _webhook_arguments(config: Mapping[str, Any]) -> Arguments:
    parameters: list[Mapping[str, Any]] | None = config.get("parameters")
    if parameters is None:
        return Arguments(object_schema({}))
    properties = {p["name"]: {"type": p["type"], "description": p["description"]} for p in parameters}
    required = [p["name"] for p in parameters if p["required"]]
    return Arguments(object_schema(properties, required), "equal", "executionConfig.parameters")


def _geo_arguments(config: Mapping[str, Any]) -> Arguments:
    properties = {
        "address": _string("The caller's street address. Give this, or latitude and longitude."),
        "latitude": {"type": "number", "description": "Latitude of the caller's location, if known."},
        "longitude": {"type": "number", "description": "Longitude of the caller's location, if known."},
    }
    return Arguments(object_schema(properties), "fixed", f"the {config.get('action')} action")


def _take_message_arguments(config: Mapping[str, Any]) -> Arguments:
    fields: list[str] = list(config.get("fields", []))
    properties = {field: _string(f"The caller's {field.replace('_', ' ')}.") for field in fields}
    return Arguments(object_schema(properties), "fixed", "executionConfig.fields")


@dataclass(frozen=True)
class SkillType:
    key: str  # the wire name: `skillType` of a skill, `type` in the catalog
    config: type[ApiModel]
    title: str
    description: str
    arguments: Callable[[Mapping[str, Any]], Arguments]
    input_only: tuple[str, ...] = ()  # config keys folded into parametersSchema and not stored

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
            _transfer_arguments,
        ),
        SkillType("end_call", EndCallConfig, "End the call", "Say goodbye and hang up.", _end_call_arguments),
        SkillType(
            "http_webhook", HttpWebhookConfig, "Call a webhook",
            "Send the parameters the agent collected to your HTTP endpoint and read back its reply.",
            _webhook_arguments, input_only=("parameters",),
        ),
        SkillType(
            "geo", GeoConfig, "Check a service area",
            "Check whether the caller's address is within a radius of your location.",
            _geo_arguments,
        ),
        SkillType(
            "take_message", TakeMessageConfig, "Take a message",
            "Collect the caller's details and message, and deliver them by email or webhook.",
            _take_message_arguments,
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


PARAMETERS_SCHEMA_DOC = (
    "JSON Schema of the arguments the agent collects from the caller and passes to the skill. Derived from "
    "the skill type and executionConfig when omitted (or null); always present on a stored skill."
)
REQUIRED_PARAMS_DOC = "Property names of parametersSchema to add to its `required`; merged in, not stored."


class SkillSpec(ApiModel):
    """A whole skill; also the body of `POST /agents/{id}/skills` (name, description, skillType required)."""

    name: SkillName
    description: SkillDescription = Field(description="When the agent should use the skill; it reads this.")
    skill_type: SkillTypeName
    execution_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the skill type: see `executionConfigSchema` in `GET /skill-types`.",
    )
    parameters_schema: ParametersSchema | None = Field(None, description=PARAMETERS_SCHEMA_DOC)
    required_params: list[Identifier] | None = Field(
        None, max_length=MAX_PARAMETERS, exclude=True, description=REQUIRED_PARAMS_DOC
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

    @model_validator(mode="after")
    def _arguments(self) -> SkillSpec:
        """Settle parametersSchema: the client's (checked against the config) or the derived one, with
        requiredParams merged in; then drop the config keys it was derived from."""
        kind = SKILL_TYPES[self.skill_type]
        implied = kind.arguments(self.execution_config)
        required_params = self.required_params or []
        if self.parameters_schema is None:
            schema = implied.schema
        else:
            schema = self.parameters_schema.wire()
            implied.check(schema, required_params)
        for i, name in enumerate(required_params):
            if name not in schema["properties"]:
                raise invalid(("requiredParams", i), f"names {name!r}, which is not in parametersSchema", name)
        self.parameters_schema = ParametersSchema.model_validate(with_required(schema, required_params))
        self.required_params = None
        self.execution_config = {k: v for k, v in self.execution_config.items() if k not in kind.input_only}
        return self

    def stored(self) -> dict[str, Any]:
        """The spec as stored and returned: exactly `SPEC_KEYS`."""
        return self.model_dump(by_alias=True, mode="json")


SPEC_KEYS = frozenset(
    (field.alias or name) for name, field in SkillSpec.model_fields.items() if not field.exclude
)


class SkillPatch(ApiModel):
    """Body of `PATCH /agents/{id}/skills/{skillId}`: each field sent replaces the stored one whole."""

    name: SkillName | None = None
    description: SkillDescription | None = None
    skill_type: SkillTypeName | None = None
    execution_config: dict[str, Any] | None = None
    parameters_schema: ParametersSchema | None = Field(None, description=PARAMETERS_SCHEMA_DOC)
    required_params: list[Identifier] | None = Field(None, max_length=MAX_PARAMETERS, description=REQUIRED_PARAMS_DOC)
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


def implied_schema(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The parametersSchema a stored spec would derive from its type and config."""
    kind = SKILL_TYPES.get(str(spec.get("skillType")))
    return None if kind is None else kind.arguments(spec.get("executionConfig") or {}).schema


def merge_patch(stored: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The skill a PATCH asks for, before validation: `changes` (wire names) over the stored spec.

    A derived parametersSchema is dropped when skillType or executionConfig change, so it is derived again
    from the new config; one the client wrote (it differs from the derived one) is kept, unless the patch
    sends executionConfig.parameters, the list form that replaces it.
    """
    merged = {**stored, **changes}
    if "parametersSchema" not in changes and ("skillType" in changes or "executionConfig" in changes):
        config = changes.get("executionConfig")
        relisted = isinstance(config, Mapping) and config.get("parameters") is not None
        if relisted or stored.get("parametersSchema") == implied_schema(stored):
            merged.pop("parametersSchema", None)
    return merged
