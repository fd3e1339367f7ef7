"""The activity log: who called which endpoint, with what result, and when."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request

from control_api.clock import iso
from control_api.db.tables import audit_logs
from control_api.errors import field_error
from control_api.http.envelope import PageParams, page
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.repositories.keyset import after_cursor_desc, next_cursor

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["AuditLogs"])


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is None:
        return value
    from datetime import UTC

    return value.astimezone(UTC).replace(tzinfo=None)


def entry(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "actor": {"type": row.actor_type, "id": row.actor_id},
        "method": row.method,
        "endpoint": row.endpoint,
        "path": row.path,
        "status": row.status,
        "requestId": row.request_id,
        "createdAt": iso(row.created_at),
    }


@router.get("/audit-logs", openapi_extra=scope("audit:read"), summary="List activity logs")
async def list_audit_logs(
    request: Request,
    paging: PageParams = Depends(),
    from_: datetime | None = Query(None, alias="from", description="Earliest time (inclusive), RFC 3339."),
    to: datetime | None = Query(None, description="Latest time (exclusive), RFC 3339."),
    actor_type: Literal["api_key", "user", "visitor", "system"] | None = Query(None, alias="actorType"),
    actor_id: str | None = Query(None, alias="actorId", max_length=40),
) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    start, end = _naive_utc(from_), _naive_utc(to)
    if start is not None and end is not None and start >= end:
        raise field_error("to", "must be later than from")
    query = sa.select(audit_logs).where(audit_logs.c.org_id == principal.org_id)
    if start is not None:
        query = query.where(audit_logs.c.created_at >= start)
    if end is not None:
        query = query.where(audit_logs.c.created_at < end)
    if actor_type is not None:
        query = query.where(audit_logs.c.actor_type == actor_type)
    if actor_id is not None:
        query = query.where(audit_logs.c.actor_id == actor_id)
    after = after_cursor_desc(audit_logs.c.seq, audit_logs.c.id, paging.cursor, int)
    if after is not None:
        query = query.where(after)
    query = query.order_by(audit_logs.c.seq.desc(), audit_logs.c.id.desc()).limit(paging.limit + 1)
    async with services.engine.connect() as conn:
        rows = list((await conn.execute(query)).all())
    return page([entry(r) for r in rows[: paging.limit]],
                next_cursor(rows, paging.limit, lambda r: (r.seq, r.id)), paging.limit)
