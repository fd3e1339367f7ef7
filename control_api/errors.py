"""Errors the API answers with, each rendered as RFC 9457 problem+json.

The tree::

    ApiError                      status, code, title, detail, errors[], headers, extra body members
    ├── ValidationFailed          400 validation_error (errors[] names each field)
    ├── Unauthorized              401 unauthorized (+ WWW-Authenticate)
    ├── Forbidden                 403 insufficient_scope / forbidden
    ├── PaymentRequired           402 insufficient_funds (the wallet cannot pay)
    ├── NotFound                  404 not_found (also: another organization's resource)
    ├── MethodNotAllowed          405 method_not_allowed (+ Allow)
    ├── Conflict                  409 conflict, version_conflict, duplicate_name, idempotency_in_flight, ...
    ├── PayloadTooLarge           413 payload_too_large
    ├── Unprocessable             422 idempotency_key_reused, ...
    └── RateLimited               429 rate_limited (+ Retry-After)

Anything else that escapes a handler becomes a 500 `internal_error` whose body says nothing about the
cause; the cause goes to the server log.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://docs.flowyte.com/errors/"


@dataclass(frozen=True)
class FieldError:
    """One offending field: a JSON path like `handoffConfig.transferRules[0].destination`."""

    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class ApiError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        title: str | None = None,
        errors: Sequence[FieldError] = (),
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if title is not None:
            self.title = title
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance is not None:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [e.to_json() for e in self.errors]
        body.update(self.extra)
        return body


class ValidationFailed(ApiError):
    status = 400
    code = "validation_error"
    title = "Validation failure"

    def __init__(self, errors: Sequence[FieldError], detail: str | None = None) -> None:
        if detail is None:
            first = errors[0] if errors else FieldError("body", "is invalid")
            detail = f"{first.field} {first.message}"
        super().__init__(detail, errors=errors)


def field_error(field: str, message: str) -> ValidationFailed:
    return ValidationFailed([FieldError(field, message)])


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"

    def __init__(self, detail: str, *, error: str = "invalid_token") -> None:
        super().__init__(
            detail,
            headers={"WWW-Authenticate": f'Bearer realm="flowyte", error="{error}"'},
        )


class PaymentRequired(ApiError):
    status = 402
    code = "insufficient_funds"
    title = "Payment required"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"
    title = "Not found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


class Conflict(ApiError):
    status = 409
    code = "conflict"
    title = "Conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class Unprocessable(ApiError):
    status = 422
    code = "unprocessable"
    title = "Unprocessable content"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"
