"""The async shell over the local engine (`local_llama.LlamaEngine`): `LocalLlamaProvider.stream()` submits a
turn to the engine and relays what the worker emits through a bounded asyncio queue (the worker blocks while
the queue is full, so a slow consumer slows generation instead of growing memory). Closing the stream early
sets the cancel event, drains the queue and waits for the worker to stop, so after `aclose()` returns no more
tokens are made. A turn that ran to its end returns at once: what the worker does after (keep the
conversation's state, read the next message's header ahead) runs on, and the next turn queues behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.llm.errors import LLMBadResponse, LLMError
from pipeline.llm.local_llama import LlamaEngine, LocalModelConfig, Stopped, TurnEnd, TurnRequest
from pipeline.llm.model_assets import ensure_runtime_model
from pipeline.llm.types import ChatMessage, Finished, GenerationSettings, LLMEvent, TextDelta, ToolCall, ToolSpec


class _Relay:
    """The worker → event loop channel of one stream: a bounded asyncio queue and a cancel event."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[LLMEvent | TurnEnd | BaseException] = asyncio.Queue(size)
        self.cancel = threading.Event()

    def emit(self, item: LLMEvent | TurnEnd | BaseException) -> None:
        """Worker side: block until the consumer has room; raise `Stopped` once it has gone."""
        if self.cancel.is_set():
            raise Stopped
        try:
            put = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
        except RuntimeError as exc:  # the loop is closed
            raise Stopped from exc
        while True:
            try:
                put.result(timeout=1.0)
                return
            except concurrent.futures.TimeoutError:
                # Closing the stream drains the queue, which frees the put; this covers a consumer
                # that vanished without closing (its loop stopped).
                if self.cancel.is_set() or self.loop.is_closed():
                    put.cancel()
                    raise Stopped from None
            except concurrent.futures.CancelledError:
                raise Stopped from None

    def drain(self) -> None:
        while not self.queue.empty():
            self.queue.get_nowait()


class LocalLlamaProvider:
    """`LLMProvider` over the shared in-process engine for one model file."""

    def __init__(
        self,
        config: LocalModelConfig,
        *,
        queue_size: int = 32,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config
        self.queue_size = queue_size
        self.clock = clock

    @classmethod
    def from_data_dir(cls, data_dir: Path, **kwargs: Any) -> LocalLlamaProvider:
        """Assemble the bundled model under `data_dir` and requantize it if needed (blocking, once) and use it."""
        return cls(LocalModelConfig(model_path=ensure_runtime_model(data_dir)), **kwargs)

    @property
    def engine(self) -> LlamaEngine:
        return LlamaEngine.shared(self.config)

    async def warm_up(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> None:
        """Load the model and compute the states of this system prompt with its tools, and of the tools'
        routing table, so that a first turn only evaluates its own messages (`StatefulLLM`)."""
        system = tuple(m for m in messages if m.role == "system")[:1]
        request = TurnRequest(system, tuple(tools), GenerationSettings(max_tokens=1), warm_only=True)
        async with contextlib.aclosing(self._run(request)) as events:
            async for _ in events:
                pass

    async def prepare(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], settings: GenerationSettings
    ) -> None:
        """Evaluate the prompt of a turn that may come with these messages, ahead (`StatefulLLM`,
        `local_llama._Turn.prepare`); returns once it is done. A failure here only means the turn evaluates
        its prompt itself, so it is not raised."""
        request = TurnRequest(tuple(messages), tuple(tools), settings, prepare_only=True)
        await asyncio.wrap_future(self.engine.submit(request, lambda _: None, threading.Event()))

    async def settled(self) -> None:
        """Until the engine has done everything handed to it so far (a finished turn's state kept, its
        read-ahead): a stream returns at its turn's end, before that."""
        await asyncio.wrap_future(self.engine.executor.submit(lambda: None))

    async def release(self, prompt_cache_key: str) -> None:
        """Forget the states kept for the conversation `prompt_cache_key` (`StatefulLLM`)."""
        engine = self.engine
        await asyncio.wrap_future(engine.executor.submit(engine.forget, prompt_cache_key))

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        settings: GenerationSettings = GenerationSettings(),
    ) -> AsyncGenerator[LLMEvent, None]:
        # aclosing: closing this stream early closes the relay at once (cancelling the turn), not at GC time.
        async with contextlib.aclosing(self._run(TurnRequest(tuple(messages), tuple(tools), settings))) as events:
            async for event in events:
                yield event

    async def _run(self, request: TurnRequest) -> AsyncGenerator[LLMEvent, None]:
        started = self.clock()
        relay = _Relay(asyncio.get_running_loop(), self.queue_size)
        job = self.engine.submit(request, relay.emit, relay.cancel)
        ttft: float | None = None
        yielded = ended = False
        try:
            while True:
                item = await relay.queue.get()
                if isinstance(item, TurnEnd):
                    ended = True
                    yield Finished(item.finish_reason, ttft, self.clock() - started)
                    return
                if isinstance(item, LLMError):
                    item.partial = yielded
                    raise item
                if isinstance(item, BaseException):
                    raise LLMBadResponse(f"local model failed: {item!r}", partial=yielded) from item
                if ttft is None and isinstance(item, TextDelta | ToolCall):
                    ttft = self.clock() - started
                yielded = True
                yield item
        finally:
            # A turn that has ended emits nothing more: what the worker still does (keep the conversation's
            # state, `_Turn.read_ahead`) is off the reply's path, which ends now (a one-sentence reply is only
            # spoken at its end). A turn closed early is cancelled, and waited for.
            if not ended:
                relay.cancel.set()
                if not job.cancel():  # not queued behind another turn any more: wait for it to stop
                    relay.drain()
                    await asyncio.wait([asyncio.wrap_future(job)])
