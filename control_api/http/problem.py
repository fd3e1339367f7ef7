"""Rendering errors as problem+json, including FastAPI's request-validation errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse

from control_api.errors import PROBLEM_CONTENT_TYPE, ApiError, FieldError, ValidationFailed


def problem_response(error: ApiError, instance: str | None = None) -> JSONResponse:
    return JSONResponse(
        error.problem(instance),
        status_code=error.status,
        headers=error.headers,
        media_type=PROBLEM_CONTENT_TYPE,
    )


def field_path(loc: Sequence[Any]) -> str:
    """("body", "handoffConfig", "transferRules", 0, "destination") -> handoffConfig.transferRules[0].destination"""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":  # pydantic marks a bad dict key this way; the path already names it
            continue
        else:
            path += ("." if path else "") + str(part)
    return path or "body"


def _message(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind == "missing":
        return "is required"
    if kind == "json_invalid":
        return "is not valid JSON"
    if kind == "extra_forbidden":
        return "is not a recognized field"
    message = str(error.get("msg", "is invalid"))
    # Pydantic prefixes custom errors with "Value error, "; the rest is ours and already reads well.
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    return message[:1].lower() + message[1:] if message else "is invalid"


def validation_failure(errors: Iterable[Mapping[str, Any]]) -> ValidationFailed:
    seen: set[tuple[str, str]] = set()
    field_errors: list[FieldError] = []
    for error in errors:
        # A JSON syntax error's loc is ("body", <character offset>): the field is the body itself.
        loc = ("body",) if error.get("type") == "json_invalid" else error.get("loc", ())
        item = (field_path(loc), _message(error))
        if item not in seen:
            seen.add(item)
            field_errors.append(FieldError(*item))
    return ValidationFailed(field_errors)
