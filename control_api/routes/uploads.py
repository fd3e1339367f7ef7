"""File uploads: `POST /uploads` (multipart, one `file` part, at most 25 MB) returns a `fileId` that a
knowledge `file` source attaches. Unattached uploads expire (see control_api.knowledge.uploads)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Request, UploadFile

from control_api.clock import iso
from control_api.errors import PayloadTooLarge, field_error
from control_api.http.envelope import ok
from control_api.http.routing import API_PREFIX, ApiRoute, principal_of, scope, services_of
from control_api.knowledge import uploads as uploads_repo

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Uploads"])

_UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary", "description": "At most 25 MB."}},
                }
            }
        },
    }
}


@router.post(
    "/uploads",
    status_code=201,
    openapi_extra={**scope("knowledge:write"), **_UPLOAD_SCHEMA},
    summary="Upload a file",
    description="Upload a file (max 25 MB) and get back a fileId to pass to a knowledge file source. "
    "A file not attached within 24 hours expires; attaching it then answers 404 file_expired.",
    responses={413: {"description": "The file exceeds 25 MB (code file_too_large)."}},
)
async def upload_file(request: Request, file: UploadFile = File(...)) -> dict[str, Any]:
    services, principal = services_of(request), principal_of(request)
    data = await file.read(uploads_repo.MAX_UPLOAD_BYTES + 1)
    if len(data) > uploads_repo.MAX_UPLOAD_BYTES:
        raise PayloadTooLarge("the upload exceeds the 25 MB limit", code="file_too_large", title="File too large")
    if not data:
        raise field_error("file", "is empty")
    filename = (file.filename or "upload").rsplit("/", 1)[-1].rsplit("\\", 1)[-1] or "upload"
    content_type = file.content_type or "application/octet-stream"
    async with services.engine.begin() as conn:
        row = await uploads_repo.insert(
            conn, org_id=principal.org_id, filename=filename, content_type=content_type, data=data,
            now=services.clock.now(),
        )
    return ok({
        "fileId": row.id,
        "filename": row.filename,
        "contentType": row.content_type,
        "size": int(row.size),
        "sha256": row.sha256,
        "createdAt": iso(row.created_at),
        "expiresAt": iso(row.expires_at),
    })
