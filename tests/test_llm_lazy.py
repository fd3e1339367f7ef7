"""`LazyLLM` (control_api/llm.py): the provider is built on first use, and a stateful one is told about calls
(warm-up while the greeting plays, release at hang-up) through the wrapper, as `flowyte serve` wires it."""

from __future__ import annotations

from collections.abc import Sequence

from control_api.llm import LazyLLM
from pipeline.llm.provider import StatefulLLM
from pipeline.llm.scripted import ScriptedLLM
from pipeline.llm.types import ChatMessage, GenerationSettings, ToolSpec
from tests.test_brain_support import agent, brain, deps, turn


class StatefulScriptedLLM(ScriptedLLM):
    """A scripted model that also keeps state, as the local engine does (`StatefulLLM`), and records what it
    was told."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.warmed: list[tuple[tuple[ChatMessage, ...], tuple[str, ...]]] = []
        self.released: list[str] = []
        self.prepared: list[tuple[ChatMessage, ...]] = []

    async def warm_up(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec]) -> None:
        self.warmed.append((tuple(messages), tuple(tool.name for tool in tools)))

    async def prepare(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], settings: GenerationSettings
    ) -> None:
        self.prepared.append(tuple(messages))

    async def release(self, prompt_cache_key: str) -> None:
        self.released.append(prompt_cache_key)


async def test_a_call_warms_and_releases_the_stateful_model_behind_the_lazy_wrapper() -> None:
    built: list[StatefulScriptedLLM] = []

    def build() -> StatefulScriptedLLM:
        built.append(StatefulScriptedLLM(["Yes, we are open."], ttft_s=0.0))
        return built[0]

    lazy = LazyLLM(build)
    assert isinstance(lazy, StatefulLLM)
    b = brain(agent(), deps(lazy), channel="voice")  # type: ignore[arg-type]
    await b.warm_up()  # while the greeting plays: the model is built and warmed now, not on the first turn
    assert len(built) == 1
    ((messages, tools),) = built[0].warmed
    assert [m.role for m in messages] == ["system"] and messages[0].content == b.system_prompt()
    assert "end_conversation" in tools
    await b.prepare("Are you open?")  # the caller paused with these words: the turn's prompt, ahead
    events = await turn(b, "Are you open?")
    assert any(event.type == "agent_message" for event in events)
    assert built[0].prepared == [built[0].calls[0].messages]
    await b.release()
    assert built[0].released == ["cnv_1"]


async def test_release_before_any_use_builds_nothing_and_a_stateless_model_is_left_alone() -> None:
    built: list[ScriptedLLM] = []

    def build() -> ScriptedLLM:
        built.append(ScriptedLLM(["Hi."], ttft_s=0.0))
        return built[-1]

    lazy = LazyLLM(build)
    await lazy.release("cnv_never")
    await lazy.prepare([ChatMessage("system", "You are helpful."), ChatMessage("user", "Hi")], [], GenerationSettings())
    assert built == []  # a turn that may come is no reason to load a model
    await lazy.warm_up([ChatMessage("system", "You are helpful.")], [])
    assert len(built) == 1  # built (cheap for a remote endpoint), nothing else to do
    await lazy.release("cnv_1")
