"""The periodic job loop: runs at start, survives a failing job, stops at once when asked."""

from __future__ import annotations

import asyncio

from control_api.jobs import Job, run_jobs_once, run_periodically


async def test_failing_job_does_not_stop_the_others() -> None:
    ran: list[str] = []

    async def good() -> int:
        ran.append("good")
        return 2

    async def bad() -> int:
        raise RuntimeError("carrier API down")

    results = await run_jobs_once([Job("bad", bad), Job("good", good)])
    assert results == {"bad": None, "good": 2}
    assert ran == ["good"]


async def test_loop_runs_immediately_and_stops_on_request() -> None:
    stop = asyncio.Event()
    first_run = asyncio.Event()
    runs = 0

    async def count() -> int:
        nonlocal runs
        runs += 1
        first_run.set()
        return 0

    loop = asyncio.create_task(run_periodically([Job("count", count)], stop, interval_s=3600))
    await first_run.wait()
    stop.set()
    await asyncio.wait_for(loop, timeout=5)
    assert runs == 1
