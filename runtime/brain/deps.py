"""What the brain is given: the model, knowledge search, gap recorder, HTTP client factory and the clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from pipeline.llm.provider import LLMProvider
from pipeline.llm.types import GenerationSettings
from runtime.knowledge import GapRecorder, KnowledgeSearch


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class BrainDeps:
    """Everything outside the brain, injected.

    `http_client` makes the client for http_webhook skills, verifiers and message delivery; the caller
    guards it (control_api.net_guard.guarded_client refuses private and metadata addresses). Without it,
    those tools report an error to the model. `now` is the wall clock (business hours, verification TTL).

    `llm_timeout_s` bounds the wait for each event of a model stream (the first one included);
    `max_steps` bounds the model calls of one turn (the last is made with tool_choice "none").
    """

    llm: LLMProvider
    knowledge: KnowledgeSearch | None = None
    gaps: GapRecorder | None = None
    http_client: Callable[[], httpx.AsyncClient] | None = None
    tool_timeout_s: float = 8.0
    now: Callable[[], datetime] = utc_now
    llm_timeout_s: float = 20.0
    max_steps: int = 4
    generation: GenerationSettings = field(default_factory=GenerationSettings)
