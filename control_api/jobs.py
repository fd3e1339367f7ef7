"""Periodic housekeeping that must survive restarts without double effects: number rentals and
subscription renewals. Each job is idempotent by construction (its ledger keys name the month), so
running it at every start and then daily can never charge twice.

The loop waits on the shutdown event with a timeout instead of sleeping, so a stop request ends it at
once; a failing job is logged and retried at the next tick, never allowed to kill the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("flowyte.jobs")

DAY_S = 24 * 60 * 60.0


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[], Awaitable[int]]  # returns how many things it did, for the log


async def run_jobs_once(jobs: Sequence[Job]) -> dict[str, int | None]:
    """Run each job once; a failure is logged and reported as None, the others still run."""
    results: dict[str, int | None] = {}
    for job in jobs:
        try:
            results[job.name] = await job.run()
            if results[job.name]:
                log.info("%s: %d applied", job.name, results[job.name])
        except Exception:
            log.exception("job %s failed; it will run again at the next tick", job.name)
            results[job.name] = None
    return results


async def run_periodically(jobs: Sequence[Job], stop: asyncio.Event, interval_s: float = DAY_S) -> None:
    """Run the jobs now and then every `interval_s` until `stop` is set."""
    while not stop.is_set():
        await run_jobs_once(jobs)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
