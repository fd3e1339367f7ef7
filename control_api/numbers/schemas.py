"""Request bodies and query parsing for the numbers API, and how an available number is rendered."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from control_api.billing.ledger import usd
from control_api.errors import field_error
from control_api.numbers.carrier import FEATURES, AvailableNumber
from control_api.schemas.common import E164, ApiModel, normalize_e164

_KEYPAD = {letter: digit for digit, letters in {
    "2": "ABC", "3": "DEF", "4": "GHI", "5": "JKL", "6": "MNO", "7": "PQRS", "8": "TUV", "9": "WXYZ",
}.items() for letter in letters}


class ReserveRequest(ApiModel):
    e164: E164


class PurchaseRequest(ApiModel):
    e164: E164
    reservation_id: str | None = Field(None, min_length=1, max_length=40, description="The id of your hold.")


class ImportRequest(ApiModel):
    e164: E164
    agent_id: str | None = Field(None, min_length=1, max_length=40, description="Assign it at once.")


class AssignRequest(ApiModel):
    agent_id: str = Field(min_length=1, max_length=40)


def keypad_digits(value: str | None, field: str) -> str | None:
    """Vanity letters to the digits that spell them on a phone keypad (CALL -> 2255); digits stay."""
    if value is None or value == "":
        return None
    text = value.replace("-", "").upper()
    if not text.isascii() or not text.isalnum():
        raise field_error(field, "may hold only digits and letters (letters map to keypad digits)")
    return "".join(_KEYPAD.get(c, c) for c in text)


def parse_features(value: str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    wanted = tuple(sorted({f.strip().lower() for f in value.split(",") if f.strip()}))
    unknown = [f for f in wanted if f not in FEATURES]
    if unknown:
        raise field_error("features", f"has unknown {unknown[0]!r}; choose from {', '.join(FEATURES)}")
    return wanted


def parse_e164(value: str) -> str:
    try:
        return normalize_e164(value)
    except ValueError as error:
        raise field_error("e164", str(error)) from None


def offer_resource(number: AvailableNumber) -> dict[str, Any]:
    return {
        "e164": number.e164,
        "locality": number.locality,
        "region": number.region,
        "numberType": number.number_type,
        "features": list(number.features),
        "monthlyCost": usd(number.monthly_cost_credits),
        "monthlyCostCredits": number.monthly_cost_credits,
        "setupCost": usd(number.setup_cost_credits),
        "setupCostCredits": number.setup_cost_credits,
        "provider": number.provider,
        "widened": number.widened is not None,
        "widenedBy": number.widened,
    }
