"""Group commit: batches form under load, failures stay with their items, cancelled waiters pass the turn.

The apply function is a fake with a gate the test opens, so the interleavings are exact (no sleeping)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from control_api.billing.batching import GroupCommit


class GatedApply:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self, key: str, items: list[str]) -> Sequence[str | Exception]:
        self.batches.append(list(items))
        self.entered.set()
        await self.gate.wait()
        if "boom" in items:
            raise RuntimeError("the batch failed")
        return [ValueError(item) if item.startswith("bad") else f"{key}:{item}" for item in items]


async def _start(batcher: GroupCommit[str, str], key: str, items: list[str]) -> list[asyncio.Task[str]]:
    tasks = [asyncio.create_task(batcher.submit(key, item)) for item in items]
    for _ in range(3):
        await asyncio.sleep(0)  # let every task reach its queue
    return tasks


async def test_items_that_arrive_during_a_batch_form_the_next_one() -> None:
    apply = GatedApply()
    batcher: GroupCommit[str, str] = GroupCommit(apply, max_batch=3)
    tasks = await _start(batcher, "org", [f"e{n}" for n in range(6)])
    await _start(batcher, "other", ["x"])  # another key leads its own batch at once
    assert apply.batches == [["e0"], ["x"]]
    apply.gate.set()
    results = await asyncio.gather(*tasks)
    assert results == [f"org:e{n}" for n in range(6)]
    assert apply.batches[2:] == [["e1", "e2", "e3"], ["e4", "e5"]]
    assert batcher._queues == {}


async def test_an_item_error_fails_that_item_only() -> None:
    apply = GatedApply()
    apply.gate.set()
    batcher: GroupCommit[str, str] = GroupCommit(apply)
    tasks = await _start(batcher, "org", ["a", "bad1", "b", "bad2"])
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert outcomes[0] == "org:a" and outcomes[2] == "org:b"
    assert isinstance(outcomes[1], ValueError) and isinstance(outcomes[3], ValueError)


async def test_a_failed_batch_fails_its_items_and_the_next_batch_still_runs() -> None:
    apply = GatedApply()
    batcher: GroupCommit[str, str] = GroupCommit(apply, max_batch=2)
    tasks = await _start(batcher, "org", ["first", "boom", "c", "d"])
    apply.gate.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert outcomes[0] == "org:first"
    assert isinstance(outcomes[1], RuntimeError) and isinstance(outcomes[2], RuntimeError)  # one batch
    assert outcomes[3] == "org:d"
    assert batcher._queues == {}


async def test_a_cancelled_waiter_leaves_the_queue_and_the_turn_passes_on() -> None:
    apply = GatedApply()
    batcher: GroupCommit[str, str] = GroupCommit(apply, max_batch=1)
    leader, waiter, last = await _start(batcher, "org", ["a", "b", "c"])
    waiter.cancel()
    await asyncio.sleep(0)
    apply.gate.set()
    assert await leader == "org:a" and await last == "org:c"
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert apply.batches == [["a"], ["c"]] and batcher._queues == {}


async def test_a_cancelled_leader_still_finishes_the_batch_it_started() -> None:
    gates = [asyncio.Event(), asyncio.Event()]
    applied: list[list[str]] = []

    async def apply(key: str, items: list[str]) -> list[str | Exception]:
        gate = gates[len(applied)]
        applied.append(list(items))
        await gate.wait()
        return [f"done:{item}" for item in items]

    batcher: GroupCommit[str, str] = GroupCommit(apply)
    first, leader, follower = await _start(batcher, "org", ["a", "b", "c"])
    gates[0].set()
    assert await first == "done:a"
    await asyncio.sleep(0)  # b has taken the turn and started the batch [b, c]
    assert applied == [["a"], ["b", "c"]]
    leader.cancel()  # b's caller hangs up mid-batch
    await asyncio.sleep(0)
    gates[1].set()
    assert await follower == "done:c"
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert batcher._queues == {} and not batcher._running
