"""Builds the FastAPI application: routers, error handlers, middleware, and the OpenAPI document."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from control_api.auth.scopes import ALL_SCOPES
from control_api.errors import ApiError, MethodNotAllowed, NotFound
from control_api.http.middleware import ApiGuardMiddleware
from control_api.http.problem import problem_response, validation_failure
from control_api.http.routing import API_PREFIX, SECURITY_SCHEME
from control_api.routes import (
    agents,
    audit,
    billing,
    chat,
    completions,
    conversations,
    guardrails,
    knowledge,
    numbers,
    recordings,
    simulate,
    skills,
    talk,
    uploads,
    versions,
)
from control_api.services import Services

_SCOPE_DESCRIPTIONS = {s: s for s in ALL_SCOPES}

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem+json.",
    "properties": {
        "type": {"type": "string", "format": "uri", "default": "about:blank"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

_COMMON_PROBLEMS = {
    "400": "Validation failure; `errors[]` names each field.",
    "401": "Missing or invalid API key.",
    "403": "The key lacks the operation's scope.",
    "413": "Request body too large.",
    "429": "Rate limited; honour Retry-After.",
}

TALK_PAGE = files("control_api.talk").joinpath("talk.html").read_text(encoding="utf-8")


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="Flowyte Control-Plane REST API",
        version="1.0.0",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.services = services
    modules = (
        agents, skills, guardrails, versions, audit, numbers, billing, knowledge, uploads,
        chat, completions, simulate, conversations, recordings, talk,
    )
    for module in modules:
        app.include_router(module.router)
    # Every API operation, flat: for the 405 Allow header and for tests that walk all routes.
    app.state.api_routes = [r for m in modules for r in m.router.routes if isinstance(r, APIRoute)]

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/talk", include_in_schema=False)
    async def talk_page() -> HTMLResponse:
        """The in-browser voice tester (control_api/talk/talk.html), opened as /talk#url=...&token=..."""
        return HTMLResponse(TALK_PAGE, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, error: ApiError) -> JSONResponse:
        return problem_response(error, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return problem_response(validation_failure(error.errors()), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 404:
            return problem_response(NotFound(f"no route for {request.url.path}"), request.url.path)
        if error.status_code == 405:
            allow = ", ".join(sorted(_allowed_methods(request)))
            return problem_response(
                MethodNotAllowed(
                    f"{request.method} is not allowed on {request.url.path}; allowed: {allow}",
                    headers={"Allow": allow},
                ),
                request.url.path,
            )
        generic = ApiError(str(error.detail), code="http_error", title="HTTP error")
        generic.status = error.status_code
        return problem_response(generic, request.url.path)

    app.add_middleware(ApiGuardMiddleware, services=services)  # type: ignore[arg-type]
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _allowed_methods(request: Request) -> set[str]:
    methods: set[str] = set()
    for route in request.app.state.api_routes:
        if route.path_regex.match(request.url.path):
            methods |= route.methods
    return methods


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, corrected to what the server really answers (400 not 422, problem+json)."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    doc["servers"] = [{"url": "/"}]
    components = doc.setdefault("components", {})
    components.setdefault("schemas", {})["ProblemDetails"] = _PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    components["securitySchemes"] = {
        SECURITY_SCHEME: {
            "type": "oauth2",
            "description": "Flowyte secret API key (`Authorization: Bearer flowyte_sk_…`), scoped to "
            "one organization. Each operation lists the scope the key must hold.",
            "flows": {
                "clientCredentials": {"tokenUrl": f"{API_PREFIX}/api-keys", "scopes": _SCOPE_DESCRIPTIONS}
            },
        }
    }
    problem_ref = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}
    for path, path_item in doc.get("paths", {}).items():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status, description in _COMMON_PROBLEMS.items():
                if status == "401" and operation.get("security") == []:
                    continue  # public: the request carries its own credential, there is no key to check
                responses.setdefault(status, {"description": description, "content": problem_ref})
            if "{" in path:
                responses.setdefault(
                    "404", {"description": "Not found in your organization.", "content": problem_ref}
                )
    app.openapi_schema = doc
    return doc
