"""Everything a request handler needs, built once per process and passed in (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from control_api.clock import Clock, SystemClock
from control_api.ratelimit import RateLimiter
from control_api.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    clock: Clock = field(default_factory=SystemClock)
    rate_limiter: RateLimiter | None = None
    # Where phone numbers come from (control_api.numbers.carrier.Carrier); the sandbox carrier by default.
    carrier: Any = None
    # How card payments are taken (control_api.billing.payments.PaymentProvider); settles locally by default.
    payments: Any = None

    def __post_init__(self) -> None:
        if self.rate_limiter is None:
            self.rate_limiter = RateLimiter(self.settings.rate_limit_per_minute)
