"""Group commit per key: callers that submit for the same key while a batch is being applied wait, then
the next of them applies everything that queued up meanwhile in one go. No background task: a caller
does the work, then hands the turn to the next waiter.

Why: every money movement of one organization serializes on its wallet row, so one transaction per
event caps an organization at (1 / transaction latency) events a second. Applying the events that
arrived together in one transaction pays the lock, the subscription read and the commit once.

The turn passes like this (per key):

    idle    --submit-->                   leading  (the submitter applies a batch headed by its own item)
    leading --submit-->                   leading  (the item queues; its submitter waits for its turn)
    leading --batch done, queue empty-->  idle
    leading --batch done, items queued--> leading  (the oldest waiter is told to lead; it takes the batch)

A waiter cancelled before its turn leaves the queue (if it was just told to lead, it passes the turn
on). A batch, once started, runs to the end even if its leader is cancelled: an item already in a batch
is applied regardless, and a cancelled caller simply never sees its result.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Applies a batch; returns one outcome per item, in order: a result, or the exception for that item.
Apply = Callable[[str, list[T]], Awaitable[Sequence[R | Exception]]]


class _Slot(Generic[T, R]):
    __slots__ = ("item", "turn")

    def __init__(self, item: T) -> None:
        self.item = item
        # (True, None): lead now. (False, result): done. An exception: this item failed.
        self.turn: asyncio.Future[tuple[bool, R | None]] = asyncio.get_running_loop().create_future()


class GroupCommit(Generic[T, R]):
    def __init__(self, apply: Apply[T, R], *, max_batch: int = 200) -> None:
        self._apply = apply
        self._max_batch = max_batch
        self._queues: dict[str, deque[_Slot[T, R]]] = {}
        self._running: set[asyncio.Future[R | Exception]] = set()  # batches in flight (kept referenced)

    async def submit(self, key: str, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        queue = self._queues.get(key)
        if queue is None:  # idle: lead at once
            self._queues[key] = deque([slot])
            return await self._lead(key, slot)
        queue.append(slot)
        try:
            lead, result = await slot.turn
        except asyncio.CancelledError:
            self._abandon(key, slot)
            raise
        if not lead:
            return result  # type: ignore[return-value]
        return await self._lead(key, slot)

    async def _lead(self, key: str, slot: _Slot[T, R]) -> R:
        queue = self._queues[key]
        batch = [queue.popleft() for _ in range(min(self._max_batch, len(queue)))]
        assert batch and batch[0] is slot
        # The batch runs to the end even if the leading caller is cancelled (it hung up): the other
        # callers' events are in it, and a write cut off halfway would only be rolled back and retried.
        runner = asyncio.ensure_future(self._run(key, batch))
        self._running.add(runner)
        runner.add_done_callback(self._running.discard)
        own = await asyncio.shield(runner)
        if isinstance(own, Exception):
            raise own
        return own

    async def _run(self, key: str, batch: list[_Slot[T, R]]) -> R | Exception:
        """Apply the batch, resolve every follower, pass the turn on; return the leader's own outcome."""
        try:
            outcomes: Sequence[R | Exception] = await self._apply(key, [s.item for s in batch])
        except Exception as error:
            outcomes = [error] * len(batch)
        finally:
            self._hand_off(key)
        for other, outcome in zip(batch[1:], outcomes[1:], strict=True):
            if other.turn.done():
                continue
            if isinstance(outcome, Exception):
                other.turn.set_exception(outcome)
            else:
                other.turn.set_result((False, outcome))
        return outcomes[0]

    def _hand_off(self, key: str) -> None:
        queue = self._queues[key]
        while queue and queue[0].turn.done():  # abandoned by a cancelled waiter
            queue.popleft()
        if queue:
            queue[0].turn.set_result((True, None))
        else:
            del self._queues[key]

    def _abandon(self, key: str, slot: _Slot[T, R]) -> None:
        queue = self._queues.get(key)
        if queue is not None and slot in queue:
            queue.remove(slot)
        told_to_lead = slot.turn.done() and not slot.turn.cancelled() and slot.turn.exception() is None \
            and slot.turn.result()[0]
        if told_to_lead:
            self._hand_off(key)
