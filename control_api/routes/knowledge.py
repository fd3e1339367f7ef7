"""Knowledge sources (add, list, get, update auto-refresh, delete, refresh now), retrieval preview, and
knowledge gaps (list, curate). Ingestion runs in the background: a new source answers `pending` and the
worker (control_api.knowledge.worker) moves it to `indexed` or `error`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from control_api.errors import Unprocessable, field_error
from control_api.http.envelope import PageParams, ok, page
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.ids import new_id
from control_api.knowledge import gaps
from control_api.knowledge import repository as repo
from control_api.knowledge import uploads as uploads_repo
from control_api.knowledge.schemas import (
    GapUpdate,
    PreviewRequest,
    SourceCreate,
    SourceUpdate,
    source_resource,
)
from control_api.knowledge.service import KnowledgeService
from control_api.repositories import agents as agents_repo
from control_api.services import Services

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Knowledge"])

SOURCES = "/agents/{agent_id}/knowledge/sources"
SOURCE = SOURCES + "/{source_id}"


def knowledge_of(services: Services) -> KnowledgeService:
    assert services.knowledge is not None  # Services builds one when none is given
    return services.knowledge


@router.post(
    SOURCES,
    status_code=201,
    openapi_extra=scope("knowledge:write"),
    summary="Add a knowledge source",
    description="Attaches a source from raw text (`text`), questions and answers (`items`), a web page "
    "(`url`) or an upload (`fileId`). Ingestion runs in the background: the source is returned `pending`; "
    "poll it until it is `indexed` (or `error`).",
)
async def add_source(agent_id: str, body: SourceCreate, request: Request, response: Response) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    knowledge = knowledge_of(services)
    body.check(knowledge.allow_hosts)
    source_id = new_id("ks")
    now = services.clock.now()
    async with services.engine.begin() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        spec = body.spec()
        if body.kind == "file":
            upload = await uploads_repo.attach(conn, principal.org_id, str(body.file_id), now)
            spec.update(filename=upload.filename, contentType=upload.content_type, size=int(upload.size))
        await repo.insert(
            conn, source_id=source_id, org_id=principal.org_id, agent_id=agent_id, kind=body.kind,
            label=body.label, spec=spec, auto_refresh=bool(body.auto_refresh),
            refresh_interval_hours=body.refresh_interval_hours or repo.DEFAULT_REFRESH_HOURS, now=now,
        )
        row = await repo.get(conn, principal.org_id, agent_id, source_id)
    knowledge.worker.enqueue(source_id)
    response.headers["Location"] = f"{API_PREFIX}/agents/{agent_id}/knowledge/sources/{source_id}"
    return ok(source_resource(row, with_content=True))


@router.get(SOURCES, openapi_extra=scope("knowledge:read"), summary="List knowledge sources")
async def list_sources(agent_id: str, request: Request, paging: PageParams = Depends()) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        rows, cursor = await repo.list_page(conn, principal.org_id, agent_id, limit=paging.limit, cursor=paging.cursor)
    return page([source_resource(r, with_content=False) for r in rows], cursor, paging.limit)


@router.get(SOURCE, openapi_extra=scope("knowledge:read"), summary="Get a knowledge source")
async def get_source(agent_id: str, source_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        row = await repo.get(conn, principal.org_id, agent_id, source_id)
    return ok(source_resource(row, with_content=True))


@router.patch(
    SOURCE,
    openapi_extra=scope("knowledge:write"),
    summary="Set a knowledge source's auto-refresh",
    description="Opts a URL source into automatic re-crawl (`autoRefresh`) or changes its cadence "
    "(`refreshIntervalHours`, at least 24, default 168). Re-indexing happens only when the content changed.",
)
async def update_source(agent_id: str, source_id: str, body: SourceUpdate, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise field_error("body", "must set autoRefresh, refreshIntervalHours or label")
    now = services.clock.now()
    async with services.engine.begin() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        row = await repo.get(conn, principal.org_id, agent_id, source_id)
        values: dict[str, Any] = {"updated_at": now}
        if body.label is not None:
            values["label"] = body.label
        if "auto_refresh" in changes or "refresh_interval_hours" in changes:
            if row.kind != "url":
                raise field_error("autoRefresh", "applies to url sources only")
            enabled = row.auto_refresh if body.auto_refresh is None else body.auto_refresh
            hours = body.refresh_interval_hours or int(row.refresh_interval_hours)
            since = row.last_checked_at or now
            values.update(
                auto_refresh=enabled, refresh_interval_hours=hours,
                next_refresh_at=since + timedelta(hours=hours) if enabled else None,
            )
        await repo.update(conn, source_id, **values)
        row = await repo.get(conn, principal.org_id, agent_id, source_id)
    return ok(source_resource(row, with_content=False))


@router.delete(
    SOURCE,
    openapi_extra=scope("knowledge:write"),
    summary="Delete a knowledge source",
    description="Removes the source from the draft; its indexed content is deleted once no published version "
    "uses it (a published version keeps answering from the knowledge it was published with).",
)
async def delete_source(agent_id: str, source_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.begin() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        row = await repo.get(conn, principal.org_id, agent_id, source_id)
        await repo.soft_delete(conn, row, services.clock.now())
    return ok({"id": source_id, "deleted": True})


@router.post(
    SOURCE + "/refresh",
    status_code=202,
    openapi_extra=scope("knowledge:write"),
    summary="Refresh a knowledge source now",
    description="Re-crawls a URL source in the background; it is re-indexed only if its content changed. "
    "Poll the source to watch lastCheckedAt and lastChangedAt.",
)
async def refresh_source(agent_id: str, source_id: str, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    now = services.clock.now()
    async with services.engine.begin() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        row = await repo.get(conn, principal.org_id, agent_id, source_id)
        if row.kind != "url":
            raise Unprocessable(
                f"only url sources can be re-crawled; this is a {row.kind} source (add a new source instead)",
                code="source_not_refreshable",
            )
        await repo.update(conn, source_id, queued_at=now, updated_at=now)
        row = await repo.get(conn, principal.org_id, agent_id, source_id)
    knowledge_of(services).worker.enqueue(source_id)
    return ok(source_resource(row, with_content=False))


@router.post(
    "/agents/{agent_id}/knowledge/preview",
    openapi_extra=scope("knowledge:read"),
    summary="Preview knowledge search",
    description="Searches the draft's indexed knowledge and returns the best-matching passages with their "
    "similarity scores (cosine, -1..1) and `topScore`; pass `sourceIds` to search only some sources.",
)
async def preview(agent_id: str, body: PreviewRequest, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        snapshot = await repo.snapshot(conn, principal.org_id, agent_id)
    if body.source_ids is not None:
        known = {s.source_id for s in snapshot.sources}
        for i, source_id in enumerate(body.source_ids):
            if source_id not in known:
                raise field_error(f"sourceIds[{i}]", "is not an indexed knowledge source of this agent")
        snapshot = snapshot.only(body.source_ids)
    chunks = await knowledge_of(services).search(snapshot, body.query, body.top_k)
    return ok({
        "query": body.query,
        "chunks": [
            {"sourceId": c.source_id, "sourceLabel": c.source_label, "text": c.text, "score": c.score}
            for c in chunks
        ],
        "topScore": chunks[0].score if chunks else None,
    })


@router.get(
    "/agents/{agent_id}/knowledge-gaps",
    openapi_extra=scope("analytics:read"),
    summary="List knowledge gaps",
    description="Questions callers asked that the agent could not answer, grouped by question. `dataState` is "
    "`collecting` until enough questions land, then `ready`; when `ranked`, each gap carries `gapId`, "
    "`rankScore` and `classification`.",
)
async def list_gaps(
    agent_id: str,
    request: Request,
    status: Literal["open", "in_progress", "covered", "dismissed"] | None = Query(None),
    limit: int = Query(50, ge=1, le=100),
) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.connect() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        data = await gaps.list_gaps(
            conn, principal.org_id, agent_id, status=status, limit=limit, now=services.clock.now()
        )
    return ok(data)


@router.patch(
    "/agents/{agent_id}/knowledge-gaps/{gap_id}",
    openapi_extra=scope("analytics:write"),
    summary="Update a knowledge gap",
    description="Sets a gap to open, in_progress or dismissed; covered is set by the platform only.",
)
async def update_gap(agent_id: str, gap_id: str, body: GapUpdate, request: Request) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    async with services.engine.begin() as conn:
        await agents_repo.get(conn, principal.org_id, agent_id)
        gap = await gaps.set_status(conn, principal.org_id, agent_id, gap_id, body.status, services.clock.now())
    return ok(gap)
