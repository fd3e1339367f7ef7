"""Idempotency keys: a retried request replays the first result instead of acting twice.

The machine for one (organization, key):

    (none)      --first request-->            in_flight   (row inserted and committed at once)
    in_flight   --same key, any body-->       409 idempotency_in_flight
    in_flight   --action commits-->           done        (in the SAME transaction as the action)
    in_flight   --action fails-->             (none)      (row deleted; a retry runs afresh)
    in_flight   --older than the timeout-->   taken over by the next request (the first one died)
    done        --same key, same request-->   replay the stored status and body
    done/any    --same key, other request-->  422 idempotency_key_reused

Finishing the key inside the action's own transaction is what makes this exact: the effect and the
record of it commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from control_api.db.tables import idempotency_keys
from control_api.errors import Conflict, Unprocessable, field_error
from control_api.services import Services
from runtime.agent_config import canonical_json

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

Action = Callable[[AsyncConnection], Awaitable[tuple[int, dict[str, Any]]]]


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool


def validate_key(key: str) -> str:
    if not 1 <= len(key) <= 255 or not key.isprintable() or not key.isascii():
        raise field_error(HEADER, "must be 1-255 printable ASCII characters")
    return key


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests 'the same': method, path and the JSON body (whitespace-insensitive)."""
    try:
        normalized = canonical_json(json.loads(body)) if body.strip() else ""
    except ValueError:
        normalized = body.decode("utf-8", "replace")
    return hashlib.sha256(f"{method} {path}\n{normalized}".encode()).hexdigest()


async def run(
    services: Services, org_id: str, key: str | None, request_fingerprint: str, action: Action
) -> Outcome:
    """Run `action` in a transaction, at most once per key; without a key it simply runs."""
    if key is None:
        async with services.engine.begin() as conn:
            status, body = await action(conn)
        return Outcome(status, body, replayed=False)

    key = validate_key(key)
    replay = await _claim(services, org_id, key, request_fingerprint)
    if replay is not None:
        return replay
    try:
        async with services.engine.begin() as conn:
            status, body = await action(conn)
            await conn.execute(
                idempotency_keys.update()
                .where(idempotency_keys.c.org_id == org_id, idempotency_keys.c.key == key)
                .values(state="done", response_status=status, response_body=json.dumps(body))
            )
    except BaseException:
        async with services.engine.begin() as conn:
            await conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.org_id == org_id,
                    idempotency_keys.c.key == key,
                    idempotency_keys.c.state == "in_flight",
                )
            )
        raise
    return Outcome(status, body, replayed=False)


async def _claim(services: Services, org_id: str, key: str, request_fingerprint: str) -> Outcome | None:
    """Insert the in-flight row; or explain why we may not (returning a replay, or raising)."""
    now = services.clock.now()
    try:
        async with services.engine.begin() as conn:
            await conn.execute(
                idempotency_keys.insert().values(
                    org_id=org_id, key=key, fingerprint=request_fingerprint, state="in_flight", created_at=now
                )
            )
        return None
    except IntegrityError:
        pass
    async with services.engine.begin() as conn:
        row = (
            await conn.execute(
                sa.select(idempotency_keys).where(
                    idempotency_keys.c.org_id == org_id, idempotency_keys.c.key == key
                )
            )
        ).first()
        if row is None:  # the first request failed and released the key meanwhile: claim it again
            return await _claim(services, org_id, key, request_fingerprint)
        if row.fingerprint != request_fingerprint:
            raise Unprocessable(
                "this Idempotency-Key was already used with a different request; use a new key",
                code="idempotency_key_reused",
            )
        if row.state == "done":
            return Outcome(int(row.response_status), json.loads(row.response_body), replayed=True)
        timeout = timedelta(seconds=services.settings.idempotency_in_flight_timeout_s)
        if row.created_at + timeout > now:
            raise Conflict(
                "a request with this Idempotency-Key is still in progress; retry shortly",
                code="idempotency_in_flight",
                headers={"Retry-After": "1"},
            )
        # The first request died without finishing: take the key over, if nobody beat us to it.
        taken = await conn.execute(
            idempotency_keys.update()
            .where(
                idempotency_keys.c.org_id == org_id,
                idempotency_keys.c.key == key,
                idempotency_keys.c.created_at == row.created_at,
            )
            .values(created_at=now)
        )
        if taken.rowcount != 1:
            raise Conflict(
                "a request with this Idempotency-Key is still in progress; retry shortly",
                code="idempotency_in_flight",
                headers={"Retry-After": "1"},
            )
    return None
