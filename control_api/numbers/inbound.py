"""`runtime.routing.NumberRouter` over the database: which organization and agent answer a dialled number."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from control_api.db.tables import agents, phone_numbers
from control_api.schemas.common import normalize_e164
from runtime.routing import NoRoute, NumberType, RouteDecision


class DatabaseNumberRouter:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def route_inbound(self, e164: str) -> RouteDecision | NoRoute:
        """`e164` as the SIP edge got it; a national form (4155551234) is normalized like the API does."""
        try:
            e164 = normalize_e164(e164)
        except ValueError:
            return NoRoute("unknown")
        query = (
            sa.select(
                phone_numbers.c.id, phone_numbers.c.org_id, phone_numbers.c.agent_id,
                phone_numbers.c.number_type, agents.c.id.label("live_agent_id"),
            )
            .select_from(
                phone_numbers.outerjoin(
                    agents,
                    sa.and_(
                        agents.c.id == phone_numbers.c.agent_id,
                        agents.c.org_id == phone_numbers.c.org_id,
                        agents.c.deleted_at.is_(None),
                    ),
                )
            )
            .where(phone_numbers.c.e164 == e164, phone_numbers.c.released_at.is_(None))
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return NoRoute("unknown")
        if row.agent_id is None:
            return NoRoute("unassigned")
        if row.live_agent_id is None:
            return NoRoute("agent_deleted")
        number_type: NumberType = "toll_free" if row.number_type == "toll_free" else "local"
        return RouteDecision(
            org_id=row.org_id, agent_id=row.agent_id, number_id=row.id, e164=e164, number_type=number_type
        )
