"""The LLM this process answers chats (and later calls) with: chosen once, at start, from the environment.

    FLOWYTE_LLM_BASE_URL set   -> pipeline.llm.openai_compat.OpenAICompatProvider (FLOWYTE_LLM_MODEL and
                                  FLOWYTE_LLM_API_KEY beside it), any OpenAI-compatible endpoint
    otherwise                  -> pipeline.llm.local_llama.LocalLlamaProvider, the bundled model in-process

The local provider is wrapped in `LazyLLM`: the model file is assembled (if `./dev` has not done it
already) and loaded on the first turn, in a worker thread, so building `Services` stays instant and a
process that never chats never loads a model. Tests pass a `ScriptedLLM` as `Services(llm=...)` instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path

from pipeline.llm.errors import LLMError, LLMUnavailable
from pipeline.llm.openai_compat import OpenAICompatConfig, OpenAICompatProvider
from pipeline.llm.provider import LLMProvider, StatefulLLM
from pipeline.llm.types import ChatMessage, GenerationSettings, LLMEvent, ToolSpec

ProviderFactory = Callable[[], LLMProvider]


# How long the brain waits for each event of a model stream, the first one included. A remote endpoint
# slower than this counts as failing (the user gets an apology). The in-process model is never "down",
# but on a small CPU its first token after a cold load and prefill can take most of a minute.
REMOTE_EVENT_TIMEOUT_S = 20.0
LOCAL_EVENT_TIMEOUT_S = 180.0


class LazyLLM:
    """An `LLMProvider` that builds the real one (a blocking factory) on first use, once."""

    def __init__(self, factory: ProviderFactory, *, event_timeout_s: float = REMOTE_EVENT_TIMEOUT_S) -> None:
        self.event_timeout_s = event_timeout_s
        self._factory = factory
        self._provider: LLMProvider | None = None
        self._lock = asyncio.Lock()

    async def provider(self) -> LLMProvider:
        async with self._lock:
            if self._provider is None:
                try:
                    self._provider = await asyncio.to_thread(self._factory)
                except LLMError:
                    raise
                except Exception as error:  # a model that cannot load is an unavailable LLM to the runtime
                    raise LLMUnavailable(f"the LLM could not be started: {error}") from error
            return self._provider

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        settings: GenerationSettings = GenerationSettings(),
    ) -> AsyncGenerator[LLMEvent, None]:
        provider = await self.provider()
        async with aclosing(provider.stream(messages, tools, settings)) as events:
            async for event in events:
                yield event

    # `StatefulLLM`, passed on to the provider when it keeps state (the local engine): without these a call
    # never warmed the model while its greeting played, and a finished call's KV states stayed in the
    # engine's cache until evicted (hundreds of MB of RSS over back-to-back calls).
    async def warm_up(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> None:
        """Build the provider now (a call's greeting is playing: better than on its first turn) and warm it."""
        provider = await self.provider()
        if isinstance(provider, StatefulLLM):
            await provider.warm_up(messages, tools)

    async def prepare(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], settings: GenerationSettings
    ) -> None:
        provider = self._provider  # never built for this: a turn that may not come is no reason to load a model
        if isinstance(provider, StatefulLLM):
            await provider.prepare(messages, tools, settings)

    async def release(self, prompt_cache_key: str) -> None:
        provider = self._provider
        if isinstance(provider, StatefulLLM):
            await provider.release(prompt_cache_key)


def local_llm(data_dir: Path) -> LazyLLM:
    """The bundled model under `data_dir/models`, built on the first turn."""

    def build() -> LLMProvider:
        from pipeline.llm.local_provider import LocalLlamaProvider  # loads llama.cpp: only when needed

        return LocalLlamaProvider.from_data_dir(data_dir)

    return LazyLLM(build, event_timeout_s=LOCAL_EVENT_TIMEOUT_S)


def event_timeout_s(llm: LLMProvider) -> float:
    """The brain's per-event wait for this provider (see REMOTE_EVENT_TIMEOUT_S)."""
    return llm.event_timeout_s if isinstance(llm, LazyLLM) else REMOTE_EVENT_TIMEOUT_S


def process_llm(data_dir: Path, env: Mapping[str, str] | None = None) -> LLMProvider:
    """The provider for this process: the OpenAI-compatible endpoint when configured, else the local model."""
    config = OpenAICompatConfig.from_env(env)
    if config is not None:
        return OpenAICompatProvider(config)
    return local_llm(data_dir)
