"""Time comes from an injected clock so tests move it instead of sleeping or patching."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Naive UTC wall time (what the database stores)."""
        ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)

    def monotonic(self) -> float:
        return time.monotonic()


def iso(ts: datetime | None) -> str | None:
    """Render a stored naive-UTC timestamp as RFC 3339 with a `Z`."""
    if ts is None:
        return None
    return ts.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
