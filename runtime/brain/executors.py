"""Running a skill: the I/O of each skill type, reduced to a `ToolOutcome` (status + what the model sees).

Nothing here raises for a failing tool: a refused address, a connect error, a non-2xx answer or a timeout
all come back as an outcome with status "error" or "timeout" and a short `error` text the model can act
on. The brain adds guardrails before (may it run?) and after (which fields may the model see?).

    http_webhook   the skill's method, URL and headers through the injected (address-guarded) client;
                   arguments as a JSON body for POST/PUT/PATCH, as query parameters for GET/DELETE; the
                   timeout is the skill's timeoutMs capped by the brain's tool timeout. A 2xx JSON body is
                   the result; other bodies come back as {"text": ...}; an empty one as {"ok": true}.
    geo            check_service_area: haversine distance from the origin to the caller (see geo.py)
    take_message   every configured field must be filled (else: ask for the missing ones); delivered as
                   JSON to webhookUrl when set; always recorded in the receipt's tool_call event, which is
                   also what an email delivery (recipientEmail) is made from outside the runtime.

transfer and end_call are not I/O: the brain carries them out as `handoff` / `end` events.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from runtime.brain import geo

Status = Literal["ok", "error", "timeout", "refused"]
ClientFactory = Callable[[], httpx.AsyncClient]
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_TEXT = 2000
DEFAULT_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class ToolOutcome:
    status: Status
    result: Any  # JSON-able: what the model sees (before field filtering)
    http_status: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def failed(message: str, status: Status = "error", **detail: Any) -> ToolOutcome:
    return ToolOutcome(status, {"error": message, **detail})


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def query_params(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    for key, value in arguments.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        params += [(key, _query_value(item)) for item in items]
    return params


def parse_body(response: httpx.Response) -> Any:
    text = response.text
    if not text.strip():
        return {"ok": True}
    try:
        return json.loads(text)
    except ValueError:
        return {"text": text[:MAX_TEXT]}


async def http_request(
    client_factory: ClientFactory | None,
    method: str,
    url: str,
    *,
    timeout_s: float,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    params: list[tuple[str, str]] | None = None,
) -> ToolOutcome:
    """One request; the outcome carries the parsed body (2xx) or the failure."""
    if client_factory is None:
        return failed("this runtime has no HTTP client for webhooks")
    try:
        async with asyncio.timeout(timeout_s), client_factory() as client:
            response = await client.request(
                method, url, json=body, params=None if params is None else httpx.QueryParams(tuple(params)),
                headers=dict(headers or {}), timeout=timeout_s,
            )
    except (TimeoutError, httpx.TimeoutException):
        return failed(f"the service did not answer within {timeout_s:g} s", "timeout")
    except (httpx.HTTPError, OSError, ValueError) as exc:  # ValueError: net_guard's BlockedAddress
        return failed("could not reach the service", detail=str(exc)[:200])
    if not 200 <= response.status_code < 300:
        return ToolOutcome(
            "error", {"error": f"the service answered HTTP {response.status_code}"}, response.status_code
        )
    return ToolOutcome("ok", parse_body(response), response.status_code)


async def call_webhook(
    config: Mapping[str, Any], arguments: Mapping[str, Any], *, client_factory: ClientFactory | None,
    max_timeout_s: float,
) -> ToolOutcome:
    method = str(config.get("method") or "POST").upper()
    timeout_s = min(float(config.get("timeoutMs") or DEFAULT_TIMEOUT_MS) / 1000, max_timeout_s)
    url = str(config.get("url") or "")
    if not url:
        return failed("the skill has no URL")
    body = dict(arguments) if method in BODY_METHODS else None
    params = None if method in BODY_METHODS else query_params(arguments)
    return await http_request(
        client_factory, method, url, timeout_s=timeout_s, headers=config.get("headers"), body=body, params=params
    )


def check_service_area(config: Mapping[str, Any], arguments: Mapping[str, Any]) -> ToolOutcome:
    if config.get("action", "check_service_area") != "check_service_area":
        return failed(f"the geo action {config.get('action')!r} is not supported")
    try:
        origin = geo.origin_of(config)
        caller = geo.locate(arguments)
    except geo.LocationError as exc:
        return failed(str(exc))
    radius = float(config.get("radiusMiles") or 0)
    distance = geo.haversine_miles(origin, caller)
    return ToolOutcome("ok", {
        "withinServiceArea": distance <= radius,
        "distanceMiles": round(distance, 1),
        "radiusMiles": radius,
        "locatedBy": caller.source,
    })


DEFAULT_MESSAGE_FIELDS = ("name", "phone", "message")


async def take_message(
    config: Mapping[str, Any], arguments: Mapping[str, Any], *, client_factory: ClientFactory | None,
    max_timeout_s: float, context: Mapping[str, Any],
) -> ToolOutcome:
    fields = list(config.get("fields") or DEFAULT_MESSAGE_FIELDS)
    values = {f: str(arguments.get(f) or "").strip() for f in fields}
    missing = [f for f in fields if not values[f]]
    if missing:
        return failed(f"ask the user for: {', '.join(m.replace('_', ' ') for m in missing)}", missing=missing)
    result: dict[str, Any] = {"taken": True, "fields": values}
    if config.get("recipientEmail"):
        result["recipientEmail"] = config["recipientEmail"]
    url = config.get("webhookUrl")
    if url:
        sent = await http_request(
            client_factory, "POST", str(url), timeout_s=max_timeout_s,
            body={"type": "message", **context, "fields": values},
        )
        result["webhook"] = "delivered" if sent.ok else f"failed: {sent.result.get('error')}"
    return ToolOutcome("ok", result)
