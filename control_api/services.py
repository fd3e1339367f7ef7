"""Everything a request handler needs, built once per process and passed in (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from control_api.billing.metering import Meter
from control_api.billing.payments import LocalPaymentProvider, PaymentProvider
from control_api.clock import Clock, SystemClock
from control_api.knowledge.service import KnowledgeService
from control_api.llm import process_llm
from control_api.numbers.carrier import Carrier, SandboxCarrier
from control_api.ratelimit import RateLimiter
from control_api.settings import Settings
from pipeline.llm.provider import LLMProvider

if TYPE_CHECKING:  # the voice stack loads only where sessions are served
    from control_api.talk.rooms import TalkRooms


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    clock: Clock = field(default_factory=SystemClock)
    rate_limiter: RateLimiter | None = None
    # Where phone numbers come from (control_api.numbers.carrier.Carrier); the sandbox carrier by default.
    carrier: Carrier = field(default_factory=SandboxCarrier)
    # How card payments are taken (control_api.billing.payments.PaymentProvider); settles locally by default.
    payments: PaymentProvider = field(default_factory=LocalPaymentProvider)
    # Knowledge ingestion, retrieval and gaps (control_api.knowledge.service); built on the engine by default.
    knowledge: KnowledgeService | None = None
    # The metering API the runtime bills calls and chats through (record_usage, can_serve).
    meter: Meter | None = None
    # The LLM chats are answered with (control_api.llm.process_llm: the local model unless
    # FLOWYTE_LLM_BASE_URL names an OpenAI-compatible endpoint); tests pass a ScriptedLLM.
    llm: LLMProvider | None = None
    # The in-browser voice sessions (control_api.talk.rooms); None where this server runs no voice stack.
    talk: TalkRooms | None = None

    def __post_init__(self) -> None:
        if self.rate_limiter is None:
            self.rate_limiter = RateLimiter(self.settings.rate_limit_per_minute)
        if self.meter is None:
            self.meter = Meter(self.engine, self.clock, self.payments)
        if self.knowledge is None:
            self.knowledge = KnowledgeService(self.engine, self.clock)
        if self.llm is None:
            self.llm = process_llm(self.settings.resolved().data_dir)
