"""The read side the runtime uses: current published version, a given version, or the draft compiled
on demand. Implements `runtime.agent_config.AgentConfigSource` over the database."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from control_api.compile import compile_draft
from control_api.db.tables import agent_versions, agents
from control_api.errors import NotFound
from control_api.repositories import agents as agents_repo
from runtime.agent_config import CompiledAgent


class DatabaseAgentSource:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def published(self, org_id: str, agent_id: str) -> CompiledAgent | None:
        query = (
            sa.select(agent_versions.c.id, agent_versions.c.version_number, agent_versions.c.config_json)
            .select_from(agents.join(agent_versions, agent_versions.c.id == agents.c.published_version_id))
            .where(agents.c.org_id == org_id, agents.c.id == agent_id, agents.c.deleted_at.is_(None))
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return CompiledAgent.from_config(
            json.loads(row.config_json), version_id=row.id, version_number=row.version_number
        )

    async def version(self, org_id: str, agent_id: str, version_id: str) -> CompiledAgent | None:
        query = sa.select(
            agent_versions.c.id, agent_versions.c.version_number, agent_versions.c.config_json
        ).where(
            agent_versions.c.org_id == org_id,
            agent_versions.c.agent_id == agent_id,
            agent_versions.c.id == version_id,
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return None
        return CompiledAgent.from_config(
            json.loads(row.config_json), version_id=row.id, version_number=row.version_number
        )

    async def draft(self, org_id: str, agent_id: str) -> CompiledAgent | None:
        async with self._engine.connect() as conn:
            try:
                agent = await agents_repo.get(conn, org_id, agent_id)
            except NotFound:
                return None
            return await compile_draft(conn, org_id, agent)
