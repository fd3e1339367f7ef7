"""Keyset pagination over a (timestamp, id) or (number, id) sort key, newest or oldest first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from control_api.errors import field_error
from control_api.http.envelope import decode_cursor, encode_cursor


def after_cursor_desc(primary: sa.ColumnElement[Any], tiebreak: sa.ColumnElement[Any], cursor: str | None,
                      parse: Callable[[Any], Any]) -> sa.ColumnElement[bool] | None:
    """WHERE clause selecting rows strictly after the cursor in (primary DESC, tiebreak DESC) order."""
    return _after_cursor(primary, tiebreak, cursor, parse, descending=True)


def after_cursor_asc(primary: sa.ColumnElement[Any], tiebreak: sa.ColumnElement[Any], cursor: str | None,
                     parse: Callable[[Any], Any]) -> sa.ColumnElement[bool] | None:
    """WHERE clause selecting rows strictly after the cursor in (primary ASC, tiebreak ASC) order."""
    return _after_cursor(primary, tiebreak, cursor, parse, descending=False)


def _after_cursor(primary: sa.ColumnElement[Any], tiebreak: sa.ColumnElement[Any], cursor: str | None,
                  parse: Callable[[Any], Any], *, descending: bool) -> sa.ColumnElement[bool] | None:
    if cursor is None:
        return None
    first, second = decode_cursor(cursor, 2)
    try:
        value = parse(first)
    except (TypeError, ValueError):
        raise field_error("cursor", "is not a cursor returned by this endpoint") from None
    if descending:
        return sa.or_(primary < value, sa.and_(primary == value, tiebreak < str(second)))
    return sa.or_(primary > value, sa.and_(primary == value, tiebreak > str(second)))


def next_cursor(rows: Sequence[Any], limit: int, key: Callable[[Any], tuple[Any, str]]) -> str | None:
    """Callers fetch limit + 1 rows; a surplus row means there is another page."""
    if len(rows) <= limit:
        return None
    first, second = key(rows[limit - 1])
    if isinstance(first, datetime):
        first = first.isoformat()
    return encode_cursor([first, second])
