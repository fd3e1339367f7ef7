"""The outermost ASGI layer of the API: request id, body size limit, last-resort 500, and the audit log.

Order of work for each HTTP request:
1. assign a request id (echoed as `X-Request-Id`);
2. read the body up to the limit (a bigger one gets 413 before any handler runs); the limit is
   `settings.max_body_bytes` except on the operations in `BODY_LIMITS` (file uploads: 25 MB);
3. call the app; an exception nothing else handled becomes a bare 500 problem (the cause is logged);
4. write one audit row: who (the principal the route resolved, if any), which endpoint, status, when.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import sqlalchemy as sa
from fastapi.encoders import jsonable_encoder

from control_api.auth.keys import Principal
from control_api.db.tables import audit_logs
from control_api.errors import PROBLEM_CONTENT_TYPE, ApiError, PayloadTooLarge
from control_api.ids import new_id
from control_api.knowledge.uploads import MAX_UPLOAD_BODY_BYTES, MAX_UPLOAD_BYTES
from control_api.services import Services

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("flowyte.api")

# (method, path) -> (body limit in bytes, the 413 problem's code and detail) where the default does not apply.
BODY_LIMITS: dict[tuple[str, str], tuple[int, str, str]] = {
    ("POST", "/api/v1/uploads"): (
        MAX_UPLOAD_BODY_BYTES, "file_too_large", f"the upload exceeds the {MAX_UPLOAD_BYTES // (1024 * 1024)} MB limit"
    ),
}


async def send_problem(send: Send, error: ApiError, instance: str, request_id: str) -> None:
    import json

    body = json.dumps(jsonable_encoder(error.problem(instance))).encode()
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ] + [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ApiGuardMiddleware:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req", 16)
        scope.setdefault("state", {})
        scope["state"]["request_id"] = request_id
        path = scope.get("path", "")
        status_holder = {"status": 500, "started": False}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            body_receive = await self._read_body(scope, receive)
            await self.app(scope, body_receive, send_wrapper)
        except ApiError as error:  # raised by the body limit, before the app ran
            status_holder["status"] = error.status
            await send_problem(send, error, path, request_id)
        except Exception:
            log.exception("unhandled error on %s %s (request %s)", scope.get("method"), path, request_id)
            status_holder["status"] = 500
            if not status_holder["started"]:
                await send_problem(
                    send,
                    ApiError(f"an unexpected error occurred; quote request id {request_id} when reporting it"),
                    path,
                    request_id,
                )
        await self._audit(scope, int(status_holder["status"]), request_id)

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive:
        limit = self.services.settings.max_body_bytes
        too_large = PayloadTooLarge(f"request body exceeds the {limit}-byte limit")
        special = BODY_LIMITS.get((str(scope.get("method", "")), str(scope.get("path", "")).rstrip("/")))
        if special is not None:
            limit, code, detail = special
            too_large = PayloadTooLarge(detail, code=code, title="File too large")
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        raise too_large
                except ValueError:
                    pass
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _audit(self, scope: Scope, status: int, request_id: str) -> None:
        principal: Principal | None = scope.get("state", {}).get("principal")
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "(no route)"
        try:
            async with self.services.engine.begin() as conn:
                await conn.execute(
                    sa.insert(audit_logs).values(
                        id=new_id("aud"),
                        org_id=principal.org_id if principal else None,
                        actor_type=principal.actor_type if principal else "anonymous",
                        actor_id=principal.key_id if principal else None,
                        method=str(scope.get("method", ""))[:10],
                        endpoint=endpoint[:300],
                        path=str(scope.get("path", ""))[:2000],
                        status=status,
                        request_id=request_id,
                        created_at=self.services.clock.now(),
                    )
                )
        except Exception:
            log.exception("could not write the audit row for request %s", request_id)
