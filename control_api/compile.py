"""Compiles an agent's draft (agent fields, skills, guardrails, caller verification, the snapshot of its
indexed knowledge) into the runtime's `CompiledAgent`. Publishing stores the result; draft mode compiles on
demand and stores nothing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.knowledge import repository as knowledge_repo
from control_api.repositories import agents as agents_repo
from control_api.repositories import skills as skills_repo
from runtime.agent_config import CONFIG_SCHEMA_VERSION, CompiledAgent
from runtime.knowledge import EMPTY_SNAPSHOT, KnowledgeSnapshot


def build_config(
    agent: sa.Row[Any], skill_specs: list[dict[str, Any]], knowledge: KnowledgeSnapshot = EMPTY_SNAPSHOT
) -> dict[str, Any]:
    raw = {
        **agent.draft,
        "schemaVersion": CONFIG_SCHEMA_VERSION,
        "agentId": agent.id,
        "skills": skill_specs,
        "guardrails": agent.guardrails,
        "callerVerification": agent.caller_verification,
        "knowledge": knowledge.to_config(),
    }
    # Round-trip through the typed form: the stored config is exactly what the runtime will read.
    return CompiledAgent.from_config(raw).to_config()


async def compile_draft(conn: AsyncConnection, org_id: str, agent: sa.Row[Any]) -> CompiledAgent:
    # Skill rows written before skills carried parametersSchema are upgraded as they are read.
    specs = [
        {**skills_repo.current_spec({k: v for k, v in spec.items() if k != "id"}), "id": spec["id"]}
        for spec in await agents_repo.skill_specs(conn, org_id, agent.id)
    ]
    knowledge = await knowledge_repo.snapshot(conn, org_id, agent.id)
    config = build_config(agent, specs, knowledge)
    return CompiledAgent.from_config(config, is_draft=True)
