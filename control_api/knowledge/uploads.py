"""Uploaded files (`POST /uploads`): kept in the database until a knowledge source consumes them.

An upload that nobody attaches within `UPLOAD_TTL` is garbage-collected; attaching an unknown, expired
or already-consumed file id answers 404 `file_expired`, as docs/resources/errors.md names it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import uploads
from control_api.errors import NotFound
from control_api.ids import new_id

MAX_UPLOAD_BYTES = 25 * 1024 * 1024
# The multipart envelope around the file (boundaries, part headers) rides on top of the file itself.
MAX_UPLOAD_BODY_BYTES = MAX_UPLOAD_BYTES + 64 * 1024
UPLOAD_TTL = timedelta(hours=24)


def file_expired(file_id: str) -> NotFound:
    return NotFound(
        f"file {file_id} was not found or expired before it was attached; upload it again",
        code="file_expired",
        title="File expired",
    )


async def insert(
    conn: AsyncConnection, *, org_id: str, filename: str, content_type: str, data: bytes, now: datetime
) -> sa.Row[Any]:
    file_id = new_id("file")
    await conn.execute(
        uploads.insert().values(
            id=file_id, org_id=org_id, filename=filename[:255], content_type=content_type[:200], size=len(data),
            sha256=hashlib.sha256(data).hexdigest(), data=data, created_at=now, expires_at=now + UPLOAD_TTL,
            attached_at=None,
        )
    )
    return await _meta(conn, file_id)


async def _meta(conn: AsyncConnection, file_id: str) -> sa.Row[Any]:
    columns = [c for c in uploads.c if c.name != "data"]
    row = (await conn.execute(sa.select(*columns).where(uploads.c.id == file_id))).one()
    return row


async def attach(conn: AsyncConnection, org_id: str, file_id: str, now: datetime) -> sa.Row[Any]:
    """Claim an unattached, unexpired upload of the organization for a source; 404 file_expired if none."""
    result = await conn.execute(
        uploads.update()
        .where(
            uploads.c.id == file_id,
            uploads.c.org_id == org_id,
            uploads.c.attached_at.is_(None),
            uploads.c.expires_at > now,
        )
        .values(attached_at=now)
    )
    if result.rowcount != 1:
        raise file_expired(file_id)
    return await _meta(conn, file_id)


async def data(conn: AsyncConnection, file_id: str) -> bytes | None:
    value = await conn.scalar(sa.select(uploads.c.data).where(uploads.c.id == file_id))
    return None if value is None else bytes(value)


async def delete(conn: AsyncConnection, file_id: str) -> None:
    await conn.execute(uploads.delete().where(uploads.c.id == file_id))


async def delete_expired(conn: AsyncConnection, now: datetime) -> int:
    result = await conn.execute(
        uploads.delete().where(uploads.c.attached_at.is_(None), uploads.c.expires_at <= now)
    )
    return int(result.rowcount or 0)
