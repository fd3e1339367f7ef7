"""Agents: create, read, list, edit the draft (If-Match), delete, and set the voice."""

from __future__ import annotations

import re
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import ValidationError

from control_api.clock import iso
from control_api.compile import compile_draft
from control_api.errors import Conflict, field_error
from control_api.http.envelope import PageParams, ok, page
from control_api.http.problem import validation_failure
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.ids import new_id
from control_api.repositories import agents as agents_repo
from control_api.schemas.agent import AgentDraft, AgentPatch, VoiceAssignment

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Agents"])


def agent_resource(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "recordCalls": False,  # drafts stored before the field existed
        **row.draft,
        "status": "published" if row.published_version_id else "draft",
        "version": row.draft_version,
        "publishedVersionId": row.published_version_id,
        "publishedVersion": row.published_number,
        "createdAt": iso(row.created_at),
        "updatedAt": iso(row.updated_at),
    }


def etag(version: int) -> str:
    return f'"{version}"'


_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d+)"?\s*$')


def parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    match = _IF_MATCH.match(value)
    if match is None:
        raise field_error("If-Match", 'must be the agent version you last read, for example "3"')
    return int(match.group(1))


def validate_draft(document: dict[str, Any]) -> AgentDraft:
    try:
        return AgentDraft.model_validate(document)
    except ValidationError as error:
        raise validation_failure(error.errors()) from None


@router.post("/agents", status_code=201, openapi_extra=scope("agents:write"), summary="Create an agent")
async def create_agent(body: AgentDraft, request: Request, response: Response) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    agent_id = new_id("agt")
    async with services.engine.begin() as conn:
        await agents_repo.insert(
            conn, org_id=principal.org_id, agent_id=agent_id, draft=body.stored(), now=services.clock.now()
        )
        row = await agents_repo.get(conn, principal.org_id, agent_id)
    response.headers["ETag"] = etag(row.draft_version)
    response.headers["Location"] = f"/api/v1/agents/{agent_id}"
    return ok(agent_resource(row))


@router.get("/agents", openapi_extra=scope("agents:read"), summary="List agents")
async def list_agents(
    request: Request,
    paging: PageParams = Depends(),
    status: Literal["draft", "published"] | None = Query(None, description="Filter by status."),
    search: str | None = Query(None, max_length=200, description="Case-insensitive name search."),
) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        rows, cursor = await agents_repo.list_page(
            conn, principal.org_id, status=status, search=search, limit=paging.limit, cursor=paging.cursor
        )
    return page([agent_resource(r) for r in rows], cursor, paging.limit)


@router.get("/agents/{agent_id}", openapi_extra=scope("agents:read"), summary="Get an agent")
async def get_agent(agent_id: str, request: Request, response: Response) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        row = await agents_repo.get(conn, principal.org_id, agent_id)
        compiled = await compile_draft(conn, principal.org_id, row)
        published_hash = await _published_hash(conn, row)
    response.headers["ETag"] = etag(row.draft_version)
    resource = agent_resource(row)
    resource["hasUnpublishedChanges"] = published_hash != compiled.config_hash
    return ok(resource)


async def _published_hash(conn: Any, row: sa.Row[Any]) -> str | None:
    from control_api.db.tables import agent_versions

    if row.published_version_id is None:
        return None
    value = await conn.scalar(
        sa.select(agent_versions.c.config_hash).where(agent_versions.c.id == row.published_version_id)
    )
    return None if value is None else str(value)


@router.patch("/agents/{agent_id}", openapi_extra=scope("agents:write"), summary="Update an agent's draft")
async def update_agent(
    agent_id: str,
    body: AgentPatch,
    request: Request,
    response: Response,
    if_match: str | None = Header(None, description="The draft version you last read (ETag)."),
) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    expected = parse_if_match(if_match)
    async with services.engine.begin() as conn:
        row = await agents_repo.get(conn, principal.org_id, agent_id)
        if expected is not None and expected != row.draft_version:
            raise _stale(row, expected)
        draft = validate_draft({**row.draft, **body.changes()}).stored()
        written = await agents_repo.update_draft(
            conn, principal.org_id, agent_id, expected_version=row.draft_version, draft=draft,
            now=services.clock.now(),
        )
        if not written:  # someone else wrote between our read and our write
            current = await agents_repo.get(conn, principal.org_id, agent_id)
            raise _stale(current, expected if expected is not None else row.draft_version)
        row = await agents_repo.get(conn, principal.org_id, agent_id)
    response.headers["ETag"] = etag(row.draft_version)
    return ok(agent_resource(row))


def _stale(current: sa.Row[Any], sent: int) -> Conflict:
    return Conflict(
        f"the draft is at version {current.draft_version}, not {sent}; refetch, re-apply your edits and "
        "retry with the new version",
        code="version_conflict",
        headers={"ETag": etag(current.draft_version)},
        extra={"currentVersion": current.draft_version, "agent": agent_resource(current)},
    )


@router.delete("/agents/{agent_id}", openapi_extra=scope("agents:write"), summary="Delete an agent")
async def delete_agent(agent_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.begin() as conn:
        await agents_repo.soft_delete(conn, principal.org_id, agent_id, services.clock.now())
    return ok({"id": agent_id, "deleted": True})


@router.put("/agents/{agent_id}/voice", openapi_extra=scope("agents:write"), summary="Set the agent's voice")
async def set_voice(
    agent_id: str, body: VoiceAssignment, request: Request, response: Response
) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.begin() as conn:
        row = await agents_repo.get(conn, principal.org_id, agent_id)
        draft = dict(row.draft)
        language = body.language or draft["primaryLanguage"]
        if language not in draft["languages"]:
            raise field_error("language", f"the agent does not speak {language}; add it to languages first")
        draft["voiceMap"] = {**draft["voiceMap"], language: body.voice_id}
        if language == draft["primaryLanguage"]:
            draft["defaultVoiceId"] = body.voice_id
        stored = validate_draft(draft).stored()
        written = await agents_repo.update_draft(
            conn, principal.org_id, agent_id, expected_version=row.draft_version, draft=stored,
            now=services.clock.now(),
        )
        if not written:
            raise _stale(await agents_repo.get(conn, principal.org_id, agent_id), row.draft_version)
        row = await agents_repo.get(conn, principal.org_id, agent_id)
    response.headers["ETag"] = etag(row.draft_version)
    return ok(agent_resource(row))
