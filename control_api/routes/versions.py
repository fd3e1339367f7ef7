"""Publish, version history, diff against the draft, the pre-publish report, and rollback."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from control_api import idempotency
from control_api.clock import iso
from control_api.compile import compile_draft
from control_api.diff import diff
from control_api.http.envelope import PageParams, ok, page
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.ids import new_id
from control_api.prepublish import report
from control_api.repositories import agents as agents_repo
from control_api.repositories import versions as versions_repo
from control_api.schemas.common import ApiModel
from runtime.agent_config import CompiledAgent

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Agents"])


class PublishRequest(ApiModel):
    note: str | None = Field(None, max_length=1000, description="What changed, for whoever rolls back.")


class RollbackRequest(ApiModel):
    version_id: str = Field(min_length=1, max_length=40)


def version_resource(row: sa.Row[Any], live_version_id: str | None, *, with_config: bool) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "id": row.id,
        "agentId": row.agent_id,
        "version": row.version_number,
        "note": row.note,
        "publishedBy": row.published_by,
        "publishedAt": iso(row.created_at),
        "configHash": row.config_hash,
        "isLive": row.id == live_version_id,
    }
    if with_config:
        resource["config"] = json.loads(row.config_json)
    return resource


@router.post(
    "/agents/{agent_id}/publish",
    status_code=201,
    openapi_extra=scope("agents:write"),
    summary="Publish an agent",
    description="Freezes the current draft as a new immutable version that live calls and chats use. "
    "Send an Idempotency-Key so a retried request never publishes twice.",
)
async def publish(
    agent_id: str,
    request: Request,
    body: PublishRequest | None = None,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> JSONResponse:
    services, principal = services_of(request), principal_of(request)
    note = body.note if body is not None else None

    async def action(conn: Any) -> tuple[int, dict[str, Any]]:
        agent = await agents_repo.get(conn, principal.org_id, agent_id)
        compiled = await compile_draft(conn, principal.org_id, agent)
        version_id = new_id("ver")
        now = services.clock.now()
        await versions_repo.insert_next(
            conn, org_id=principal.org_id, agent_id=agent_id, version_id=version_id,
            config=compiled.to_config(), note=note, published_by=principal.key_id, now=now,
        )
        await agents_repo.set_published(conn, principal.org_id, agent_id, version_id, now)
        row = await versions_repo.get(conn, principal.org_id, agent_id, version_id)
        return 201, ok(version_resource(row, version_id, with_config=True))

    fingerprint = idempotency.fingerprint("POST", request.url.path, await request.body())
    outcome = await idempotency.run(services, principal.org_id, idempotency_key, fingerprint, action)
    headers = {idempotency.REPLAYED_HEADER: "true"} if outcome.replayed else {}
    return JSONResponse(outcome.body, status_code=outcome.status, headers=headers)


@router.get("/agents/{agent_id}/versions", openapi_extra=scope("agents:read"), summary="List agent versions")
async def list_versions(agent_id: str, request: Request, paging: PageParams = Depends()) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        agent = await agents_repo.get(conn, principal.org_id, agent_id)
        rows, cursor = await versions_repo.list_page(
            conn, principal.org_id, agent_id, limit=paging.limit, cursor=paging.cursor
        )
    live = agent.published_version_id
    return page([version_resource(r, live, with_config=False) for r in rows], cursor, paging.limit)


@router.get(
    "/agents/{agent_id}/versions/{version_id}", openapi_extra=scope("agents:read"), summary="Get a version"
)
async def get_version(agent_id: str, version_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        agent = await agents_repo.get(conn, principal.org_id, agent_id)
        row = await versions_repo.get(conn, principal.org_id, agent_id, version_id)
    return ok(version_resource(row, agent.published_version_id, with_config=True))


@router.get(
    "/agents/{agent_id}/versions/{version_id}/diff",
    openapi_extra=scope("agents:read"),
    summary="Compare a version with the draft",
)
async def diff_version(agent_id: str, version_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        agent = await agents_repo.get(conn, principal.org_id, agent_id)
        row = await versions_repo.get(conn, principal.org_id, agent_id, version_id)
        draft = await compile_draft(conn, principal.org_id, agent)
    changes = diff(json.loads(row.config_json), draft.to_config())
    return ok({
        "versionId": row.id,
        "version": row.version_number,
        "versionHash": row.config_hash,
        "draftHash": draft.config_hash,
        "changes": [c.to_json() for c in changes],
    })


@router.get(
    "/agents/{agent_id}/prepublish-report",
    openapi_extra=scope("agents:read"),
    summary="Get the pre-publish report",
)
async def prepublish_report(agent_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        agent = await agents_repo.get(conn, principal.org_id, agent_id)
        draft = await compile_draft(conn, principal.org_id, agent)
        published = published_config = None
        if agent.published_version_id is not None:
            row = await versions_repo.get(conn, principal.org_id, agent_id, agent.published_version_id)
            published_config = json.loads(row.config_json)
            published = CompiledAgent.from_config(
                published_config, version_id=row.id, version_number=row.version_number
            )
    return ok(report(draft, published, draft.to_config(), published_config))


@router.post(
    "/agents/{agent_id}/rollback",
    openapi_extra=scope("agents:write"),
    summary="Roll back to a previous version",
    description="Re-points the live agent at an earlier frozen version at once; the draft is unchanged.",
)
async def rollback(agent_id: str, body: RollbackRequest, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.begin() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        row = await versions_repo.get(conn, principal.org_id, agent_id, body.version_id)
        await agents_repo.set_published(conn, principal.org_id, agent_id, row.id, services.clock.now())
    return ok({"agentId": agent_id, "publishedVersion": version_resource(row, row.id, with_config=False)})
