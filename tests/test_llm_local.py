"""The local provider on the REAL bundled model (Qwen2.5-Coder-0.5B, llama.cpp in-process, no fakes):
text streaming, grammar-constrained tool calls, prefix reuse, two conversations at once, cancellation.

A small agent keeps the prompt short, so the first test pays a few seconds for the prefixes and the rest
reuse them."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from llama_cpp import Llama, llama_cpp

from pipeline.llm import chat_template as ct
from pipeline.llm import local_llama
from pipeline.llm.constrained import GrammarSampler
from pipeline.llm.local_llama import LocalModelConfig
from pipeline.llm.local_provider import LocalLlamaProvider
from pipeline.llm.model_assets import ensure_runtime_model
from pipeline.llm.types import (
    ChatMessage,
    Finished,
    GenerationSettings,
    LLMEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

DATA_DIR = Path(os.environ.get("FLOWYTE_DATA_DIR", Path(__file__).resolve().parent.parent / ".flowyte"))
SYSTEM = ChatMessage(
    "system",
    "You are the phone assistant of Tony's Pizza, 12 Main Street. We are open every day from 11am to 10pm. "
    "Keep replies to one short sentence.",
)
TOOLS = [
    ToolSpec(
        "check_service_area",
        "Check whether a street address is inside our delivery area.",
        {"type": "object", "properties": {"address": {"type": "string"}}, "required": ["address"]},
        examples=("Do you deliver to 10 Spring Street?", "Is 4 Hill Road in your area?"),
    ),
    ToolSpec(
        "transfer_to_human",
        "Transfer the call to a staff member.",
        {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
        examples=("Get me a real person.", "I have a complaint about my last order."),
    ),
    ToolSpec(
        "end_call",
        "Hang up: the caller says goodbye.",
        {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
        examples=("Thanks, goodbye!", "That's it, bye."),
    ),
]


@pytest.fixture(scope="module")
def llm() -> LocalLlamaProvider:
    return LocalLlamaProvider(LocalModelConfig(model_path=ensure_runtime_model(DATA_DIR, progress=None)))


def turn(text: str) -> list[ChatMessage]:
    return [SYSTEM, ChatMessage("user", text)]


async def collect(
    llm: LocalLlamaProvider, messages: list[ChatMessage], tools: list[ToolSpec], **settings: object
) -> list[LLMEvent]:
    return [event async for event in llm.stream(messages, tools, GenerationSettings(**settings))]  # type: ignore[arg-type]


def text_of(events: list[LLMEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def finished(events: list[LLMEvent]) -> Finished:
    last = events[-1]
    assert isinstance(last, Finished)
    return last


async def test_streams_text_with_usage_and_timings(llm: LocalLlamaProvider) -> None:
    events = await collect(llm, turn("Say hello to Maria."), [], max_tokens=24)
    deltas = [event for event in events if isinstance(event, TextDelta)]
    assert len(deltas) >= 2 and text_of(events).strip()
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.prompt_tokens > 20 and 0 < usage.completion_tokens <= 24
    done = finished(events)
    assert done.finish_reason in ("stop", "length")
    assert done.ttft_s is not None and 0 < done.ttft_s <= done.total_s


@pytest.mark.parametrize(
    ("utterance", "tool"),
    [
        ("Do you deliver to 55 Oak Avenue?", "check_service_area"),
        ("Can I speak to the manager please?", "transfer_to_human"),
        ("Okay, thanks, goodbye.", "end_call"),
    ],
)
async def test_clear_requests_become_schema_valid_tool_calls(
    llm: LocalLlamaProvider, utterance: str, tool: str
) -> None:
    events = await collect(llm, turn(utterance), TOOLS)
    calls = [event for event in events if isinstance(event, ToolCall)]
    assert [call.name for call in calls] == [tool], text_of(events)
    spec = next(spec for spec in TOOLS if spec.name == tool)
    jsonschema.validate(dict(calls[0].arguments), dict(spec.parameters))
    assert finished(events).finish_reason == "tool_calls"
    if tool == "check_service_area":
        assert "Oak" in calls[0].arguments["address"]


async def test_small_talk_gets_words_and_tool_choice_is_obeyed(llm: LocalLlamaProvider) -> None:
    greeting = await collect(llm, turn("Hi there, how are you?"), TOOLS, max_tokens=24)
    assert not any(isinstance(e, ToolCall) for e in greeting) and text_of(greeting).strip()
    forbidden = await collect(llm, turn("Do you deliver to 55 Oak Avenue?"), TOOLS, max_tokens=24, tool_choice="none")
    assert not any(isinstance(e, ToolCall) for e in forbidden) and text_of(forbidden).strip()
    # Denied its tool, the model used to write the call out as JSON text instead: a reply opens with words.
    assert text_of(forbidden).lstrip()[:1] not in ("{", "[", "<", "`"), text_of(forbidden)
    required = await collect(llm, turn("Hi there, how are you?"), TOOLS, tool_choice="required")
    (call,) = [e for e in required if isinstance(e, ToolCall)]
    spec = next(spec for spec in TOOLS if spec.name == call.name)
    jsonschema.validate(dict(call.arguments), dict(spec.parameters))


async def test_after_a_tool_result_the_model_speaks(llm: LocalLlamaProvider) -> None:
    call = ToolCall("call_1", "check_service_area", {"address": "55 Oak Avenue"})
    messages = [
        *turn("Do you deliver to 55 Oak Avenue?"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", '{"inside_delivery_area": true}', tool_call_id="call_1", name="check_service_area"),
    ]
    events = await collect(llm, messages, TOOLS, max_tokens=32)
    assert text_of(events).strip() and not any(isinstance(e, ToolCall) for e in events)


async def test_the_routing_query_runs_beside_the_chat_prompt_and_decides_as_it_would_alone(
    llm: LocalLlamaProvider,
) -> None:
    """The routing table's query and the chat prompt are evaluated in one batch, as two sequences: the same
    choices (and, greedy, the same words) as evaluating them one after the other. `check_opening_hours` shares
    its first tokens with `check_service_area`, so a choice there takes more than one routing token."""
    hours = ToolSpec("check_opening_hours", "Tell the opening hours of a day.", {"type": "object", "properties": {}})
    tools = [*TOOLS, hours]
    utterances = ("Do you deliver to 55 Oak Avenue?", "Hi there, how are you?", "Okay, thanks, goodbye.",
                  "Can I speak to the manager please?", "Are you open on Sunday?")  # fmt: skip
    engine = llm.engine

    async def answers() -> list[tuple[list[str], str]]:
        out = []
        for utterance in utterances:
            events = await collect(llm, turn(utterance), tools, max_tokens=16, temperature=0.0)
            out.append(([e.name for e in events if isinstance(e, ToolCall)], text_of(events)))
        return out

    batched = engine.stats.batched_routes
    together = await answers()
    assert engine.stats.batched_routes - batched == len(utterances)
    engine.batch_routing = False
    try:
        apart = await answers()
    finally:
        engine.batch_routing = True
    assert engine.stats.batched_routes - batched == len(utterances)
    assert together == apart, (together, apart)
    assert {tuple(names) for names, _ in together} >= {("check_service_area",), ("end_call",), ()}


async def test_a_prepared_turn_begins_on_the_prepared_batch_and_answers_as_it_would_unprepared(
    llm: LocalLlamaProvider,
) -> None:
    """A call prepares the turn its caller's transcribed words would start (`StatefulLLM.prepare`) while the
    pause is not yet long enough to end it. The turn that then comes with those messages begins on the logits
    of that batch and evaluates nothing of its prompts; when another call's turn came between, it evaluates
    the last token of the chat prompt and of the routing query only. Either way it decides and answers as it
    would without."""
    engine = llm.engine
    history = [SYSTEM, ChatMessage("user", "Hello?"), ChatMessage("assistant", "Hi, this is Tony's Pizza.")]

    async def answer(text: str, key: str, *, prepared: bool, between: bool = True) -> tuple[list[str], str, int]:
        messages = [*history, ChatMessage("user", text)]
        settings = GenerationSettings(max_tokens=16, temperature=0.0, prompt_cache_key=key)
        if prepared:
            await llm.prepare(messages, TOOLS, settings)
        if between:
            await collect(llm, history, TOOLS, max_tokens=1, prompt_cache_key=f"{key}-other")  # another call's turn
        before = engine.stats.prompt_tokens_evaluated
        events = [event async for event in llm.stream(messages, TOOLS, settings)]
        evaluated = engine.stats.prompt_tokens_evaluated - before
        return [e.name for e in events if isinstance(e, ToolCall)], text_of(events), evaluated

    for n, text in enumerate(("Do you deliver to 55 Oak Avenue?", "Hi there, how are you doing today?")):
        unprepared = await answer(text, f"unprepared-{n}", prepared=False)
        await llm.release(f"unprepared-{n}")  # nothing of that turn is left to serve the next
        prepared_count, hits = engine.stats.prepared, engine.stats.prepared_hits
        prepared = await answer(text, f"prepared-{n}", prepared=True)
        await llm.release(f"prepared-{n}")
        direct = await answer(text, f"direct-{n}", prepared=True, between=False)
        await llm.release(f"direct-{n}")
        assert engine.stats.prepared == prepared_count + 2 and engine.stats.prepared_hits == hits + 1
        assert prepared[:2] == unprepared[:2] == direct[:2]
        # One token of each prompt in one batch, or none; a tool call's header is evaluated after the decision.
        header = sum(len(engine.tokenize(engine.load(), ct.tool_call_header(name))) for name in prepared[0])
        assert prepared[2] <= 2 + header < unprepared[2], (prepared, unprepared)
        assert direct[2] == header, direct
    # The caller went on after the pause: the turn's prompt shares the prepared one up to their first words.
    await llm.prepare([*history, ChatMessage("user", "Can I talk to a person,")], TOOLS, GenerationSettings())
    before = engine.stats.prompt_tokens_evaluated
    await collect(llm, [*history, ChatMessage("user", "Can I talk to a person, please?")], TOOLS, max_tokens=8)
    assert engine.stats.prompt_tokens_evaluated - before < 40


async def test_later_turns_reuse_the_cached_prefix_even_when_conversations_alternate(
    llm: LocalLlamaProvider,
) -> None:
    def usage(events: list[LLMEvent]) -> Usage:
        return next(event for event in events if isinstance(event, Usage))

    a1 = await collect(llm, turn("What time do you open?"), TOOLS, max_tokens=16)
    b1 = await collect(llm, turn("Hello, who is this?"), TOOLS, max_tokens=16)
    assert usage(b1).cached_prompt_tokens > usage(b1).prompt_tokens // 2  # the frozen prefixes were reused
    loads = llm.engine.stats.state_loads
    a_history = [*turn("What time do you open?"), ChatMessage("assistant", text_of(a1))]
    a2 = await collect(llm, [*a_history, ChatMessage("user", "And when do you close?")], TOOLS, max_tokens=16)
    # Conversation A's own state came back from the cache: only its new message was evaluated.
    assert usage(a2).prompt_tokens - usage(a2).cached_prompt_tokens < 40
    assert llm.engine.stats.state_loads > loads
    assert usage(a2).cached_prompt_tokens >= usage(a1).prompt_tokens - 30


async def test_the_next_message_s_header_is_read_ahead_after_a_reply_and_the_stream_ends_before_it(
    llm: LocalLlamaProvider,
) -> None:
    """After a reply the model ended itself, the engine evaluates what every next prompt has after it (the
    reply's end and the next user message's header) into the conversation's state, after the stream has
    ended: the next turn evaluates only the caller's words and the assistant header."""

    def usage(events: list[LLMEvent]) -> Usage:
        return next(event for event in events if isinstance(event, Usage))

    first = turn("Please say just the word hello.")
    one = await collect(llm, first, [], max_tokens=40, prompt_cache_key="read-ahead")
    assert finished(one).finish_reason == "stop", "the model ended its reply"
    follow = ChatMessage("user", "And now goodbye?")
    two = await collect(llm, [*first, ChatMessage("assistant", text_of(one)), follow], [], max_tokens=8,
                        prompt_cache_key="read-ahead")  # fmt: skip
    await llm.settled()
    engine = llm.engine
    with engine._lock:  # the model's own tokenizer
        model = engine.load()
        words = len(engine.tokenize(model, follow.content))
        header = len(engine.tokenize(model, ct.IM_END + "\n" + ct.assistant_header()))
    assert usage(two).prompt_tokens - usage(two).cached_prompt_tokens == words + header, usage(two)


async def test_a_stream_ends_with_its_turn_not_after_the_engine_s_work_that_follows(
    llm: LocalLlamaProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pipecat speaks a one-sentence reply only when the reply ends: the stream returns at the turn's end, while
    the worker still keeps the conversation's state and reads ahead (held here until the stream is done)."""
    held, reading = threading.Event(), threading.Event()
    read_ahead = local_llama._Turn.read_ahead

    def slow_read_ahead(turn: Any) -> None:
        reading.set()
        held.wait(30)
        read_ahead(turn)

    monkeypatch.setattr(local_llama._Turn, "read_ahead", slow_read_ahead)
    try:
        events = await asyncio.wait_for(collect(llm, turn("Please say just the word hello."), [], max_tokens=40), 20)
        assert finished(events).finish_reason == "stop"
        assert await asyncio.to_thread(reading.wait, 10), "the engine reads ahead after the turn"
    finally:
        held.set()
    await llm.settled()


async def test_a_warmed_up_agent_evaluates_only_the_first_message_and_a_released_call_is_forgotten(
    llm: LocalLlamaProvider,
) -> None:
    def usage(events: list[LLMEvent]) -> Usage:
        return next(event for event in events if isinstance(event, Usage))

    system = ChatMessage("system", SYSTEM.content + " Our phone number is 555-0100.")  # a prompt no test used
    await llm.warm_up([system], TOOLS)
    first = await collect(llm, [system, ChatMessage("user", "Are you open today?")], TOOLS, max_tokens=8,
                          prompt_cache_key="call-1")  # fmt: skip
    assert usage(first).prompt_tokens - usage(first).cached_prompt_tokens < 40, usage(first)
    await llm.settled()  # the stream returned at the turn's end; the call's state is kept just after
    cache = llm.engine._cache
    owned = [entry for entry in cache._entries.values() if entry.owner == "call-1"]
    assert len(owned) == 1, "the call's own state, kept for its next turn"
    await llm.release("call-1")
    assert [entry for entry in cache._entries.values() if entry.owner == "call-1"] == []
    assert llm.engine.covers(owned[0].tokens[:20]), "the shared prefixes stay"
    kept = set(cache._entries)
    await llm.warm_up([system], TOOLS)  # the agent's next call: its prefixes are there already
    await llm.settled()
    # Before: the warm-up kept whatever the model held (call-1's conversation, released) as a state nobody
    # owns, one more after every call until the cache was full (~4 MB each; the soak's RSS steps).
    assert set(cache._entries) == kept, "a warm-up keeps its prefixes' states, not the model's last conversation"


async def test_a_conversation_that_outgrew_the_context_goes_on_at_the_cost_of_its_new_words() -> None:
    """Past the context, each prompt drops the oldest messages, so none shares more than the system prompt
    with a saved state. The engine loads the conversation's last state with those messages cut out and the
    rest shifted down: each turn still evaluates only its new message, and the model still answers."""
    small = LocalLlamaProvider(LocalModelConfig(model_path=ensure_runtime_model(DATA_DIR, progress=None), n_ctx=512))
    engine = small.engine
    messages = [SYSTEM]
    fresh: list[int] = []
    for n in range(14):
        messages.append(ChatMessage("user", f"Question {n}: is pizza number {n} on the menu today?"))
        events = await collect(small, messages, [], max_tokens=12, prompt_cache_key="long call")
        usage = next(event for event in events if isinstance(event, Usage))
        fresh.append(usage.prompt_tokens - usage.cached_prompt_tokens)
        assert text_of(events).strip(), f"turn {n} got no words"
        messages.append(ChatMessage("assistant", text_of(events)))
    await small.settled()
    assert engine.stats.cuts >= 3, "the conversation outgrew the context and the oldest messages were cut out"
    assert engine.stats.cut_tokens > 100
    assert max(fresh[1:]) < 40, fresh  # before: every turn past the context evaluated the whole conversation


async def test_two_conversations_at_once_both_complete(llm: LocalLlamaProvider) -> None:
    talk, act = await asyncio.gather(
        collect(llm, turn("Hi there, how are you?"), TOOLS, max_tokens=24),
        collect(llm, turn("Do you deliver to 55 Oak Avenue?"), TOOLS),
    )
    assert text_of(talk).strip() and finished(talk).finish_reason in ("stop", "length")
    calls = [event for event in act if isinstance(event, ToolCall)]
    assert [call.name for call in calls] == ["check_service_area"] and "Oak" in calls[0].arguments["address"]


async def test_closing_the_stream_stops_generation_promptly() -> None:
    llm = LocalLlamaProvider(LocalModelConfig(model_path=ensure_runtime_model(DATA_DIR, progress=None)), queue_size=2)
    stats = llm.engine.stats
    stream = llm.stream(turn("Count from 1 to 200, separated by commas."), [], GenerationSettings(max_tokens=400))
    before_tokens, before_turns = stats.generated_tokens, stats.turns
    received = 0
    async for event in stream:
        if isinstance(event, TextDelta):
            received += 1
            if received == 3:
                break
    await stream.aclose()
    # aclose() returns only once the worker has stopped: the turn is over, and it produced what was
    # received plus at most the bounded queue (2), the token in hand and a few whitespace tokens - not 400.
    assert stats.turns == before_turns + 1
    produced = stats.generated_tokens - before_tokens
    assert received <= produced <= received + 6


def test_grammar_sampler_checks_the_argmax_first_and_masks_the_vocabulary_only_when_needed() -> None:
    vocab_only = Llama(str(ensure_runtime_model(DATA_DIR, progress=None)), vocab_only=True, verbose=False)
    vocab, n_vocab = llama_cpp.llama_model_get_vocab(vocab_only.model), vocab_only.n_vocab()
    yes, no, hello = (vocab_only.tokenize(word, add_bos=False)[0] for word in (b"yes", b"no", b"hello"))
    logits = np.zeros(n_vocab, dtype=np.single)
    logits[yes], logits[no] = 5.0, 4.0
    with GrammarSampler(vocab, 'root ::= "yes" | "no"', n_vocab) as sampler:
        assert sampler.pick(logits) == yes and sampler.full_checks == 0
    logits[hello] = 10.0  # the model's favourite is not allowed: the best allowed token wins
    with GrammarSampler(vocab, 'root ::= "yes" | "no"', n_vocab) as sampler:
        assert sampler.pick(logits) == yes and sampler.full_checks == 1


async def test_the_next_token_waits_for_urgent_speech_work(llm: LocalLlamaProvider) -> None:
    """While Piper synthesizes a reply's first clause (here: a held `urgent()` block), the model holds back
    its next token (pipeline/cores.py), then goes on: the reply is complete."""
    cores = llm.engine.cores
    release = threading.Event()
    holder: list[threading.Thread] = []
    arrivals: list[float] = []
    held_from = held_until = 0.0

    def hold() -> None:
        nonlocal held_from, held_until
        with cores.urgent():
            held_from = time.perf_counter()
            release.wait(2)
            held_until = time.perf_counter()

    settings = GenerationSettings(max_tokens=24)
    async for event in llm.stream(turn("Tell me about your pizzas."), [], settings):
        if isinstance(event, TextDelta):
            arrivals.append(time.perf_counter())
            if len(arrivals) == 1:
                holder.append(threading.Thread(target=hold))
                holder[0].start()
                await asyncio.sleep(0.05)
                threading.Timer(0.3, release.set).start()
    holder[0].join()
    assert len(arrivals) >= 4
    during = [t for t in arrivals[1:] if held_from + 0.05 < t < held_until]
    # at most the tokens already sampled or queued before the hold took effect arrive during it
    assert len(during) <= 2, (held_from, held_until, arrivals)
    assert any(t >= held_until for t in arrivals)  # and the reply went on afterwards
