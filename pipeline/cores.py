"""Who gets the CPU cores first: speech a caller is waiting for, before the LLM's next token.

Every model here runs its own intra-op threads over all the cores (two on the reference machine). When two
run at once they do not share the cores, they fight over them: measured here, Piper took 304 ms instead of
168 ms for "We open at nine on Saturday." while llama.cpp decoded on the side, and llama.cpp itself fell
from 29 to ~8 tokens a second meanwhile. Both lose.

The case that matters is a reply's first chunk: the LLM goes on writing the rest of the reply while Piper
synthesizes its first clause, and the caller hears nothing until that clause is done. The rest of the reply
is not urgent: it is written at full speed once the clause is, long before the clause has finished playing.
So the work a caller is waiting on holds `urgent()` (a reply's first chunk in Piper, a turn's transcription
in Whisper), and the LLM calls `yield_to_urgent()` before each token (and each prefill chunk), which waits
while urgent work runs. Urgent work never waits for the LLM: at most one token (~35 ms) overlaps it.

The wait is bounded (`max_wait_s` a call), so that the LLM of one call cannot starve while many other
calls keep the speech models busy; it then takes turns with them, one token per wait.

A prompt batch is the exception the other way. A call evaluates the turn's prompt while the caller's pause
lasts (`AgentBrain.prepare`): ~20 tokens in one llama.cpp decode, ~0.2 s that cannot be interrupted, and the
turn's first token waits for it. Smart Turn, deciding in the same pause whether the turn has ended, took
~55 ms of one core in the middle of it and cost the batch ~100 ms (measured: 21 tokens in 205-244 ms alone,
267-341 with Smart Turn beside it). Its verdict is of no use before the batch ends (the turn starts on the
prepared prompt), so it holds `urgent(after_batch=True)`: it waits (bounded) for a running batch, which
holds `batch()`; a batch that finds it running waits for it, as for any urgent work. One runs after the
other instead of both at half speed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Cores:
    """A process's priority rule between urgent speech work and the LLM (thread-safe)."""

    def __init__(self, max_wait_s: float = 0.5) -> None:
        self.max_wait_s = max_wait_s
        self._idle = threading.Condition()
        self._urgent = 0  # urgent jobs running now
        self._batches = 0  # LLM prompt batches running now (one decode each, not interruptible)
        self.yielded_s = 0.0  # time the LLM spent waiting, in all (for benchmarks)

    @property
    def urgent_jobs(self) -> int:
        return self._urgent

    @contextmanager
    def urgent(self, *, after_batch: bool = False) -> Iterator[None]:
        """Run the block as urgent work: the LLM holds back until it ends. `after_batch`: first wait (up to
        `max_wait_s`) for an LLM prompt batch running now to end (work that is of no use before it does)."""
        with self._idle:
            if after_batch:
                self._idle.wait_for(lambda: self._batches == 0, timeout=self.max_wait_s)
            self._urgent += 1
        try:
            yield
        finally:
            with self._idle:
                self._urgent -= 1
                if self._urgent == 0:
                    self._idle.notify_all()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Run the block as an LLM prompt batch: after urgent work running now (up to `max_wait_s`, counted in
        `yielded_s`), and ahead of urgent work that asks to come after it."""
        start = time.perf_counter()
        with self._idle:
            self._idle.wait_for(lambda: self._urgent == 0, timeout=self.max_wait_s)
            self._batches += 1
        self.yielded_s += time.perf_counter() - start
        try:
            yield
        finally:
            with self._idle:
                self._batches -= 1
                if self._batches == 0:
                    self._idle.notify_all()

    def yield_to_urgent(self) -> float:
        """Wait (up to `max_wait_s`) while urgent work runs; returns the seconds waited."""
        if self._urgent == 0:  # unlocked read: the common case costs nothing; a race only skips one wait
            return 0.0
        start = time.perf_counter()
        with self._idle:
            self._idle.wait_for(lambda: self._urgent == 0, timeout=self.max_wait_s)
        waited = time.perf_counter() - start
        self.yielded_s += waited
        return waited


CORES = Cores()  # the process's one rule: every model in the process shares the same cores
