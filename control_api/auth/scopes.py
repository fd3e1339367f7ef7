"""The scope vocabulary, copied from the `Scope` enum of the API contract (the OpenAPI security scheme)."""

from __future__ import annotations

ALL_SCOPES: tuple[str, ...] = (
    "agents:read",
    "agents:write",
    "knowledge:read",
    "knowledge:write",
    "skills:read",
    "skills:write",
    "playbooks:read",
    "playbooks:write",
    "guardrails:read",
    "guardrails:write",
    "numbers:read",
    "numbers:write",
    "sms:read",
    "sms:write",
    "outbound:read",
    "outbound:write",
    "integrations:read",
    "integrations:write",
    "integrations:connect",
    "calls:read",
    "analytics:read",
    "analytics:write",
    "billing:read",
    "billing:write",
    "audit:read",
    "webhooks:write",
    "keys:write",
    "chat:read",
    "chat:write",
    "widgets:read",
    "widgets:write",
    "pubkeys:read",
    "pubkeys:write",
)

_KNOWN = frozenset(ALL_SCOPES)


def parse_scopes(text: str) -> tuple[str, ...]:
    """Split a space- or comma-separated scope list; raise ValueError naming any unknown scope."""
    scopes = [s for s in text.replace(",", " ").split() if s]
    unknown = [s for s in scopes if s not in _KNOWN]
    if unknown:
        raise ValueError(f"unknown scope(s): {', '.join(unknown)}")
    return tuple(dict.fromkeys(scopes))
