"""A call recording, fetched through the signed URL `GET /conversations/{id}/audio` hands out.

This is the one API operation without an API key: the signature in the path is the credential (it names one
recording and expires after a few minutes), so the URL works in a browser's audio element or a download
tool. A bad signature is 403, an expired one 410; see `control_api.conversations.recordings`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse

from control_api.conversations import recordings
from control_api.conversations import repository as conversations_repo
from control_api.http.routing import API_PREFIX, ApiRoute, public, services_of

router = APIRouter(prefix=API_PREFIX, route_class=ApiRoute, tags=["Observe"])

_PROBLEM: dict[str, Any] = {
    "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}
}


@router.get(
    "/recordings/{token}",
    name="download_recording",
    openapi_extra=public(),
    response_class=FileResponse,
    summary="Download a call recording (signed URL)",
    description="The WAV behind a URL from `GET /conversations/{id}/audio`. No API key: the signed token in the "
    "path is the credential.",
    responses={
        200: {"description": "Stereo 16-bit WAV, the caller left and the agent right.", "content": {"audio/wav": {}}},
        403: {"description": "The token's signature does not match.", "content": _PROBLEM},
        410: {"description": "The URL has expired; ask for a new one.", "content": _PROBLEM},
    },
)
async def download_recording(request: Request, token: str = Path(max_length=512)) -> FileResponse:
    services = services_of(request)
    data_dir = services.settings.resolved().data_dir
    org_id, conversation_id = recordings.verify(recordings.existing_key(data_dir), token, now=services.clock.now())
    async with services.engine.connect() as conn:
        row = await conversations_repo.get(conn, org_id, conversation_id)
    path = recordings.stored_file(data_dir, row.recording_path, conversation_id)
    return FileResponse(
        path, media_type="audio/wav", filename=f"{conversation_id}.wav", headers={"Cache-Control": "private, no-store"}
    )
