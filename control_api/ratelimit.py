"""Per-organization request rate limiting: a token bucket per org, sans-I/O (time is passed in).

The bucket holds `limit` tokens and refills continuously at `limit` per `window_s`, so a burst up to the
limit is allowed and the long-run rate is bounded. Headers follow the IETF RateLimit fields draft:
RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset (seconds until the bucket is full again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


class RateLimiter:
    def __init__(self, limit: int, window_s: float = 60.0, max_tracked: int = 100_000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window_s = window_s
        self._rate = limit / window_s
        self._buckets: dict[str, _Bucket] = {}
        self._max_tracked = max_tracked

    def check(self, key: str, now: float) -> Decision:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_tracked:
                self._evict_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.limit), now)
        elapsed = max(0.0, now - bucket.updated)
        bucket.tokens = min(float(self.limit), bucket.tokens + elapsed * self._rate)
        bucket.updated = now
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        remaining = int(bucket.tokens)
        reset_s = math.ceil((self.limit - bucket.tokens) / self._rate)
        retry_after_s = 0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / self._rate))
        return Decision(allowed, self.limit, remaining, reset_s, retry_after_s)

    def _evict_full(self, now: float) -> None:
        """Forget buckets that have refilled completely: they hold no state worth keeping."""
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self._rate >= self.limit
        ]
        for k in full:
            del self._buckets[k]
