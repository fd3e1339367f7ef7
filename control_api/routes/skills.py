"""Skills on an agent (list, create, read, edit, delete) and the catalog of skill types.

Skill edits change the agent's draft: each one marks the agent updated, and takes effect on calls at the
next publish. A skill that a caller-verification method or a guardrail policy names cannot be deleted
(409 `skill_in_use`) until that setting is replaced.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from control_api.clock import iso
from control_api.errors import Conflict
from control_api.http.envelope import PageParams, ok, page
from control_api.http.problem import validation_failure
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.ids import new_id
from control_api.repositories import agents as agents_repo
from control_api.repositories import skills as skills_repo
from control_api.schemas.skills import SKILL_TYPES, SkillPatch, SkillSpec, merge_patch

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Skills"])


def skill_resource(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "agentId": row.agent_id,
        **skills_repo.current_spec(row.spec),
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
    }


def validate_skill(document: dict[str, Any]) -> SkillSpec:
    try:
        return SkillSpec.model_validate(document)
    except ValidationError as error:
        raise validation_failure(error.errors()) from None


def references(agent: sa.Row[Any], skill_id: str) -> list[str]:
    """The agent settings that name the skill, as JSON paths."""
    used = [
        f"callerVerification[{i}].verifierSkillId"
        for i, method in enumerate(agent.caller_verification)
        if method.get("verifierSkillId") == skill_id
    ]
    used += [
        f"guardrails[{i}].appliesToSkillId"
        for i, policy in enumerate(agent.guardrails)
        if policy.get("appliesToSkillId") == skill_id
    ]
    return used


@router.get("/skill-types", openapi_extra=scope("skills:read"), summary="List available skill types")
async def list_skill_types() -> dict[str, Any]:
    return ok([kind.catalog_entry() for kind in SKILL_TYPES.values()])


@router.get("/agents/{agent_id}/skills", openapi_extra=scope("skills:read"), summary="List an agent's skills")
async def list_skills(agent_id: str, request: Request, paging: PageParams = Depends()) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        rows, cursor = await skills_repo.list_page(
            conn, principal.org_id, agent_id, limit=paging.limit, cursor=paging.cursor
        )
    return page([skill_resource(r) for r in rows], cursor, paging.limit)


@router.post(
    "/agents/{agent_id}/skills",
    status_code=201,
    openapi_extra=scope("skills:write"),
    summary="Create a skill",
)
async def create_skill(
    agent_id: str, body: SkillSpec, request: Request, response: Response
) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    skill_id = new_id("skl")
    now = services.clock.now()
    async with services.engine.begin() as conn:
        await skills_repo.lock_agent(conn, principal.org_id, agent_id, now)
        await skills_repo.insert(
            conn, org_id=principal.org_id, agent_id=agent_id, skill_id=skill_id, spec=body.stored(), now=now
        )
        row = await skills_repo.get(conn, principal.org_id, agent_id, skill_id)
    response.headers["Location"] = f"{API_PREFIX}/agents/{agent_id}/skills/{skill_id}"
    return ok(skill_resource(row))


@router.get("/agents/{agent_id}/skills/{skill_id}", openapi_extra=scope("skills:read"), summary="Get a skill")
async def get_skill(agent_id: str, skill_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        row = await skills_repo.get(conn, principal.org_id, agent_id, skill_id)
    return ok(skill_resource(row))


@router.patch(
    "/agents/{agent_id}/skills/{skill_id}", openapi_extra=scope("skills:write"), summary="Update a skill"
)
async def update_skill(agent_id: str, skill_id: str, body: SkillPatch, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    now = services.clock.now()
    async with services.engine.begin() as conn:
        await skills_repo.lock_agent(conn, principal.org_id, agent_id, now)
        row = await skills_repo.get(conn, principal.org_id, agent_id, skill_id)
        # Each field sent replaces the stored one; the merged skill is validated as a whole, so a new
        # skillType is checked against the executionConfig it will run with, and derived arguments are
        # derived again from the new config (see `merge_patch`).
        stored = skills_repo.current_spec(row.spec)
        spec = validate_skill(merge_patch(stored, body.changes())).stored()
        await skills_repo.update(conn, principal.org_id, agent_id, skill_id, spec=spec, now=now)
        row = await skills_repo.get(conn, principal.org_id, agent_id, skill_id)
    return ok(skill_resource(row))


@router.delete(
    "/agents/{agent_id}/skills/{skill_id}", openapi_extra=scope("skills:write"), summary="Delete a skill"
)
async def delete_skill(agent_id: str, skill_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.begin() as conn:
        agent = await skills_repo.lock_agent(conn, principal.org_id, agent_id, services.clock.now())
        await skills_repo.get(conn, principal.org_id, agent_id, skill_id)
        used = references(agent, skill_id)
        if used:
            raise Conflict(
                f"skill {skill_id} is in use by {', '.join(used)}; replace that setting first",
                code="skill_in_use",
                extra={"skillId": skill_id, "usedBy": used},
            )
        await skills_repo.delete(conn, principal.org_id, agent_id, skill_id)
    return ok({"id": skill_id, "deleted": True})
