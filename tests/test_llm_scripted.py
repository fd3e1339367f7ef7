"""`ScriptedLLM`, the fake other packages test against: it keeps the `LLMProvider` contract."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.llm import LLMProvider
from pipeline.llm.errors import LLMBadResponse, LLMRequestError, LLMUnavailable
from pipeline.llm.scripted import ScriptedLLM, word_chunks
from pipeline.llm.types import ChatMessage, Finished, GenerationSettings, TextDelta, ToolCall, ToolSpec, Usage

TOOL = ToolSpec("end_call", "Hang up.", {"type": "object", "properties": {"reason": {"type": "string"}}})
MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there")]


def test_is_an_llm_provider() -> None:
    provider: LLMProvider = ScriptedLLM([])
    assert provider is not None


async def test_plays_turns_in_order_and_records_what_it_received() -> None:
    call = ToolCall("c1", "end_call", {"reason": "goodbye"})
    llm = ScriptedLLM(["Hi, how can I help?", [call]], ttft_s=0.05)
    first = [e async for e in llm.stream(MESSAGES, [TOOL], GenerationSettings(max_tokens=20))]
    assert [e.text for e in first if isinstance(e, TextDelta)] == ["Hi,", " how", " can", " I", " help?"]
    assert isinstance(first[-2], Usage)
    done = first[-1]
    assert isinstance(done, Finished) and done.finish_reason == "stop"
    assert done.ttft_s is not None and done.ttft_s >= 0.05
    second = [e async for e in llm.stream(MESSAGES, [TOOL], GenerationSettings())]
    assert second[0] == call and isinstance(second[-1], Finished) and second[-1].finish_reason == "tool_calls"
    assert [c.settings.max_tokens for c in llm.calls] == [20, 256]
    assert llm.calls[0].messages == tuple(MESSAGES) and llm.calls[0].tools == (TOOL,)
    assert llm.remaining == 0 and llm.completed == 2
    with pytest.raises(LLMRequestError, match="no turn left"):
        [e async for e in llm.stream(MESSAGES, [], GenerationSettings())]


async def test_honours_cancellation() -> None:
    llm = ScriptedLLM([["one", " two", " three"]], ttft_s=0.0, chunk_interval_s=0.01)
    stream = llm.stream(MESSAGES, [], GenerationSettings())
    assert await anext(stream) == TextDelta("one")
    await stream.aclose()
    assert llm.cancelled == 1 and llm.completed == 0

    slow = ScriptedLLM(["never heard"], ttft_s=10.0)

    async def consume() -> None:
        async for _ in slow.stream(MESSAGES, [], GenerationSettings()):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert slow.cancelled == 1


async def test_scripted_failures_and_contract_checks() -> None:
    llm = ScriptedLLM([["partial", LLMUnavailable("dropped")], [ToolCall("c", "transfer", {})]], ttft_s=0.0)
    seen = []
    with pytest.raises(LLMUnavailable) as caught:
        async for event in llm.stream(MESSAGES, [TOOL], GenerationSettings()):
            seen.append(event)
    assert seen == [TextDelta("partial")] and caught.value.partial
    with pytest.raises(LLMBadResponse, match="not among the tools"):
        [e async for e in llm.stream(MESSAGES, [TOOL], GenerationSettings())]
    with pytest.raises(LLMBadResponse, match="schema"):
        [e async for e in ScriptedLLM([[ToolCall("c", "end_call", {"reason": 5})]]).stream(MESSAGES, [TOOL])]
    with pytest.raises(LLMBadResponse):  # tool_choice="none" forbids tool calls
        fake = ScriptedLLM([[ToolCall("c", "end_call", {})]], ttft_s=0.0)
        [e async for e in fake.stream(MESSAGES, [TOOL], GenerationSettings(tool_choice="none"))]


def test_word_chunks_keep_every_character() -> None:
    text = "  Hello,  world!\nBye "
    assert "".join(word_chunks(text)) == text.rstrip()
    assert word_chunks("") == []
