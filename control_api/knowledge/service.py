"""`KnowledgeService`: the one object the API, `run_server` and the runtime hold for knowledge.

It implements the runtime's `KnowledgeSearch` (search a compiled agent's snapshot) and `GapRecorder`
(keep an unanswered question), and owns the ingestion worker the API hands new work to.

    service.search(agent.knowledge, utterance, top_k=4)        -> list[RetrievedChunk], best first
    service.record_gap(org_id, agent_id, question, top_score)   -> kept for GET /agents/{id}/knowledge-gaps
    service.worker.run(shutdown.requested)                      -> inside run_server's TaskGroup
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncEngine

from control_api import jobs
from control_api.clock import Clock
from control_api.knowledge import gaps
from control_api.knowledge.search import KnowledgeIndex
from control_api.knowledge.worker import IngestionWorker
from control_api.net_guard import allow_hosts_from_env, normalize_hosts
from pipeline.knowledge.embedder import Embedder
from runtime.knowledge import KnowledgeSnapshot, KnowledgeText, RetrievedChunk

TICK_INTERVAL_S = 15 * 60.0


class KnowledgeService:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        embedder: Embedder | None = None,
        allow_hosts: frozenset[str] | set[str] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.embedder = embedder or Embedder()
        # Hosts URL sources may reach even though they resolve to private addresses (FLOWYTE_FETCH_ALLOW_HOSTS).
        self.allow_hosts = allow_hosts_from_env() if allow_hosts is None else normalize_hosts(allow_hosts)
        self.index = KnowledgeIndex(engine, self.embedder)
        self.worker = IngestionWorker(engine, clock, self.embedder, self.allow_hosts)

    async def search(
        self, snapshot: KnowledgeSnapshot, query: str, top_k: int, *, focus_chars: int = 0
    ) -> list[RetrievedChunk]:
        return await self.index.search(snapshot, query, top_k, focus_chars=focus_chars)

    async def contents(self, snapshot: KnowledgeSnapshot, max_chars: int) -> list[KnowledgeText] | None:
        return await self.index.contents(snapshot, max_chars)

    async def record_gap(
        self,
        org_id: str,
        agent_id: str,
        question: str,
        top_score: float | None,
        conversation_id: str | None = None,
    ) -> None:
        await gaps.record_gap(self.engine, self.clock, org_id, agent_id, question, top_score, conversation_id)

    async def run(self, stop: asyncio.Event, tick_interval_s: float = TICK_INTERVAL_S) -> None:
        """The worker and its periodic tick (auto-refresh, garbage collection) until `stop` is set."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.worker.run(stop))
            group.create_task(
                jobs.run_periodically([jobs.Job("knowledge-tick", self.worker.tick)], stop, tick_interval_s)
            )
