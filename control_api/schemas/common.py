"""Field types shared by every schema: camelCase models, E.164/SIP destinations, BCP-47 tags, IANA zones."""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import langcodes
import phonenumbers
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", str_strip_whitespace=True
    )


_SIP_URI = re.compile(r"^sips?:[^\s@]+@[A-Za-z0-9.\-\[\]:]+(;[^\s]*)?$")


def normalize_destination(value: str) -> str:
    """A phone number becomes E.164 (a bare 10-digit US number gets +1); a sip:/sips: URI is kept."""
    text = value.strip()
    if text.lower().startswith(("sip:", "sips:")):
        if not _SIP_URI.match(text):
            raise ValueError("is not a valid SIP URI (expected sip:user@host)")
        return text
    try:
        number = phonenumbers.parse(text, "US")
    except phonenumbers.NumberParseException:
        raise ValueError("is not a phone number in E.164 (+14155550100) or a sip: URI") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("is not a valid phone number; use E.164 such as +14155550100")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_e164(value: str) -> str:
    if value.strip().lower().startswith(("sip:", "sips:")):
        raise ValueError("must be a phone number, not a SIP URI")
    return normalize_destination(value)


def normalize_language(value: str) -> str:
    if not langcodes.tag_is_valid(value):
        raise ValueError(f"'{value}' is not a valid BCP-47 language tag (for example en, es, fr-CA)")
    return str(langcodes.standardize_tag(value))


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"'{value}' is not an IANA timezone (for example America/New_York)") from None
    return value


Destination = Annotated[str, Field(min_length=1, max_length=300), AfterValidator(normalize_destination)]
E164 = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(normalize_e164)]
LanguageTag = Annotated[str, Field(min_length=1, max_length=35), AfterValidator(normalize_language)]
Timezone = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(check_timezone)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]
LongText = Annotated[str, Field(max_length=4000)]
