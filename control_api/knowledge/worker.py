"""The ingestion worker: source ids in a bounded queue, a few consumers, and a periodic tick.

Work is recorded in the database first (`knowledge_sources.queued_at`, and `status = pending` until a
first ingestion finishes), then the id is offered to the in-memory queue, so nothing is lost when the
queue is full or the process stops: `rescan()` (at start, and whenever the queue overflowed) re-queues
every row still owed work. A consumer claims a row by clearing `queued_at`; a source is processed by one
consumer at a time, and a request that arrives while it is in progress runs again right after.

    enqueue(id)   offer a source whose row is already marked queued (never blocks; overflow -> rescan)
    run(stop)     rescan, then consume until `stop` is set (owned by run_server's TaskGroup)
    drain()       wait until every queued source has been processed (tests, shutdown)
    tick()        queue due auto-refreshes, collect superseded generations and expired uploads

CPU work (extraction, embedding) runs in threads; the event loop only awaits it.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncEngine

from control_api.clock import Clock
from control_api.knowledge import repository as repo
from control_api.knowledge import uploads as uploads_repo
from control_api.knowledge.ingest import IngestionFailed, ingest, mark_failed
from pipeline.knowledge.embedder import Embedder, EmbedderUnavailable

log = logging.getLogger("flowyte.knowledge")

QUEUE_SIZE = 1000
CONSUMERS = 2


class IngestionWorker:
    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        embedder: Embedder,
        allow_hosts: frozenset[str],
        *,
        queue_size: int = QUEUE_SIZE,
        consumers: int = CONSUMERS,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._embedder = embedder
        self._allow_hosts = allow_hosts
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=queue_size)
        self._consumers = consumers
        self._queued: set[str] = set()
        self._in_progress: set[str] = set()
        self._again: set[str] = set()
        self._overflowed = False
        self.processed = 0  # sources processed since start, for tests and logs

    def enqueue(self, source_id: str) -> None:
        if source_id in self._in_progress:
            self._again.add(source_id)
            return
        if source_id in self._queued:
            return
        try:
            self._queue.put_nowait(source_id)
            self._queued.add(source_id)
        except asyncio.QueueFull:
            self._overflowed = True  # the row stays queued in the database; the next rescan picks it up

    async def rescan(self) -> int:
        self._overflowed = False
        async with self._engine.connect() as conn:
            ids = await repo.pending_ids(conn, self._queue.maxsize)
        for source_id in ids:
            self.enqueue(source_id)
        return len(ids)

    async def run(self, stop: asyncio.Event) -> None:
        await self.rescan()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._consume()) for _ in range(self._consumers)]
            await stop.wait()
            for task in tasks:
                task.cancel()

    async def drain(self) -> None:
        while True:
            await self._queue.join()
            if not self._overflowed:
                return
            await self.rescan()

    async def _consume(self) -> None:
        while True:
            source_id = await self._queue.get()
            self._queued.discard(source_id)
            try:
                if source_id in self._in_progress:
                    self._again.add(source_id)
                    continue
                self._in_progress.add(source_id)
                try:
                    await self.process(source_id)
                    while source_id in self._again:
                        self._again.discard(source_id)
                        await self.process(source_id)
                finally:
                    self._in_progress.discard(source_id)
                if self._overflowed and self._queue.empty():
                    await self.rescan()
            finally:
                self._queue.task_done()

    async def process(self, source_id: str) -> None:
        """Ingest one source; every failure ends as the source's error, never as a crashed worker."""
        async with self._engine.begin() as conn:
            row = await repo.get_by_id(conn, source_id)
            if row is None or (row.queued_at is None and row.status != "pending"):
                return  # deleted, or its work was already done
            # Claim the request; one that arrives while we work queues the source again (see _again).
            await repo.update(conn, source_id, queued_at=None)
        try:
            outcome = await ingest(self._engine, self._clock, self._embedder, row, self._allow_hosts)
            log.info("knowledge source %s: %s", source_id, outcome)
        except (IngestionFailed, EmbedderUnavailable) as error:
            await mark_failed(self._engine, self._clock, row, str(error))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("ingesting knowledge source %s failed", source_id)
            await mark_failed(self._engine, self._clock, row, "indexing failed because of an internal error")
        self.processed += 1

    async def tick(self) -> int:
        """Queue the auto-refreshes that are due and collect garbage; returns how many refreshes it queued."""
        now = self._clock.now()
        async with self._engine.begin() as conn:
            due = await repo.queue_due_refreshes(conn, now)
            collected = await repo.collect_garbage(conn, now)
            expired = await uploads_repo.delete_expired(conn, now)
        for source_id in due:
            self.enqueue(source_id)
        if collected or expired:
            log.info("knowledge: collected %d generations and %d expired uploads", collected, expired)
        if self._overflowed:
            await self.rescan()
        return len(due)
