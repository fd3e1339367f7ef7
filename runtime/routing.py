"""Inbound routing: which organization and agent answer a call to a dialled number.

The SIP edge asks one question per INVITE, `route_inbound(e164)`, and gets either a `RouteDecision` (ring
this organization's agent) or a `NoRoute` naming why not, so the edge can answer with the right status and
log the reason:

    unknown        no organization owns the number (never bought, imported, or already released)
    unassigned     an organization owns it, but it points at no agent (parked in the pool)
    agent_deleted  it points at an agent that has since been deleted

The control plane implements `NumberRouter` over its database; this package never imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

NoRouteReason = Literal["unknown", "unassigned", "agent_deleted"]
NumberType = Literal["local", "toll_free"]


@dataclass(frozen=True)
class RouteDecision:
    org_id: str
    agent_id: str
    number_id: str
    e164: str
    number_type: NumberType


@dataclass(frozen=True)
class NoRoute:
    reason: NoRouteReason


class NumberRouter(Protocol):
    async def route_inbound(self, e164: str) -> RouteDecision | NoRoute:
        """Where a call to `e164` (E.164, for example +14155551234) should go."""
        ...
