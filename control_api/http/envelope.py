"""The ApiResponse envelope `{success, data}` and cursor-paginated lists.

A cursor is opaque to clients: base64url of the sort key of the last row returned. Lists sort on a
unique key (a timestamp plus the id, or a sequence number), so pages never repeat or skip rows even
when rows are added between requests.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from fastapi import Query

from control_api.errors import field_error

MAX_LIMIT = 100
DEFAULT_LIMIT = 20


def ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


def page(items: Sequence[Any], next_cursor: str | None, limit: int) -> dict[str, Any]:
    return {
        "success": True,
        "data": list(items),
        "pagination": {"nextCursor": next_cursor, "hasMore": next_cursor is not None, "limit": limit},
    }


def encode_cursor(values: Sequence[Any]) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise field_error("cursor", "is not a cursor returned by this endpoint") from None
    if not isinstance(values, list) or len(values) != arity:
        raise field_error("cursor", "is not a cursor returned by this endpoint")
    return values


class PageParams:
    """`?limit=&cursor=` as a FastAPI dependency; limit is bounded so one request stays cheap."""

    def __init__(
        self,
        limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size (1-100)."),
        cursor: str | None = Query(None, max_length=512, description="`nextCursor` of the previous page."),
    ) -> None:
        self.limit = limit
        self.cursor = cursor
