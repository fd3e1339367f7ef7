"""Routes that declare their scope once; the route class authenticates, authorizes and rate-limits.

Checks happen in this order, before the body is read, so an unauthenticated request gets 401 and an
under-scoped one 403 whatever its body looks like:

    no/invalid key -> 401 (WWW-Authenticate)   missing scope -> 403   over the org's rate -> 429

The scope lives in the operation's OpenAPI `security` requirement, so the published document and the
enforcement can never disagree. The few operations whose credential is in the request itself (a signed
recording URL) declare `public()`: an empty `security`, and the route class checks nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from control_api.auth.keys import Principal, authenticate
from control_api.errors import Forbidden, RateLimited, Unauthorized
from control_api.services import Services

SECURITY_SCHEME = "apiKey"
API_PREFIX = "/api/v1"


def scope(required: str) -> dict[str, Any]:
    """`openapi_extra` for an operation that needs `required`."""
    return {"security": [{SECURITY_SCHEME: [required]}]}


def public() -> dict[str, Any]:
    """`openapi_extra` for an operation that takes no API key because the request carries its own credential
    (the signature of a signed URL). The handler must check that credential itself."""
    return {"security": []}


def required_scope(route: APIRoute) -> str | None:
    extra = route.openapi_extra or {}
    for requirement in extra.get("security", []):
        for scopes in requirement.values():
            if scopes:
                return str(scopes[0])
    return None


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def principal_of(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # only reachable if a route forgot its scope; fail closed
        raise Unauthorized("authentication required", error="invalid_request")
    return principal


def _bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


class ApiRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        needed = required_scope(self)
        if needed is None:
            return handler

        async def guarded(request: Request) -> Response:
            services = services_of(request)
            token = _bearer_token(request)
            if token is None:
                raise Unauthorized(
                    "missing API key: send Authorization: Bearer flowyte_sk_…", error="invalid_request"
                )
            async with services.engine.connect() as conn:
                principal = await authenticate(conn, token) if token else None
            if principal is None:
                raise Unauthorized("the API key is invalid or has been revoked")
            request.state.principal = principal
            if needed not in principal.scopes:
                raise Forbidden(
                    f"this key lacks the {needed} scope", code="insufficient_scope", extra={"scope": needed}
                )
            limiter = services.rate_limiter
            assert limiter is not None
            decision = limiter.check(principal.org_id, services.clock.monotonic())
            if not decision.allowed:
                raise RateLimited(
                    f"rate limit of {decision.limit} requests per minute exceeded; retry after "
                    f"{decision.retry_after_s}s",
                    headers=decision.headers(),
                )
            response = await handler(request)
            response.headers.update(decision.headers())
            return response

        return guarded
