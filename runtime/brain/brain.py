"""`AgentBrain`: one conversation with one compiled agent, text in and a stream of receipt events out.

It knows nothing of HTTP routes or SIP: the chat channel and the voice pipeline both drive it through
`respond(user_text)`, an async generator of `runtime.events` in this order:

    user_utterance                       first, always
    kb_retrieval (+ error)               the automatic knowledge search of the turn
    agent_delta ...                      reply text as it streams (a preview)
    guardrail / verification / tool_call / kb_retrieval / handoff / end    as tools run, between deltas
    error                                the model failed or was too slow (then the reply is an apology)
    agent_message                        the complete reply, with ttftMs and the model's token usage
    kb_retrieval (+ error)               last, on a call whose agent's whole knowledge is in the prompt: the
                                         turn's search, done after the reply (for the receipt and the gaps)

`agent_message.text` is authoritative. The deltas of a turn add up to it, except when the reply was
replaced afterwards: a blocked phrase (the deltas stop before the phrase), or a model failure mid-reply.
The model's own slips are stopped the same way, without a guardrail event: a reply that reads out its
instructions or names a tool (`prompt.echoes`) becomes FALLBACK, one that reads out a knowledge passage's
heading becomes the passage's sentences.

One turn is at most `deps.max_steps` model calls; the last is made with tool_choice "none" so it must
answer in words. A transfer or end_call closes the turn with its announcement or goodbye. Failures of the
model or of tools never raise out of `respond`; the conversation stays usable. After end_call, `respond`
yields only an error ("conversation ended"). Closing the generator early (`aclose()`, or cancelling the
task iterating it) cancels the model stream and any tool running; what was complete is kept in history
(a tool call interrupted before its result is recorded as cancelled).

History keeps the user's messages, the assistant's tool calls with their results, and each reply. The
automatic knowledge passages stay in the model's prompt before their turn's message, never in history.

On a call, knowledge of at most `retrieval.PROMPT_KNOWLEDGE_CHARS` goes whole into the system prompt instead
(loaded once, at `warm_up` or the first turn): the model's cached prefix then holds it, so a turn evaluates
only its own words and the search is off the path to the first word (see `_load_knowledge`).

Verification and the other guardrail state live in the brain, never in history: `load_history` cannot make
a caller verified. A channel that rebuilds the brain for every turn carries that state over with `state` /
`load_state` (JSON it stores itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pipeline.llm.errors import LLMError, LLMUnavailable
from pipeline.llm.provider import StatefulLLM
from pipeline.llm.types import ChatMessage, GenerationSettings, TextDelta, ToolCall, ToolSpec, Usage
from runtime import events as ev
from runtime.agent_config import WEEKDAYS, CompiledAgent
from runtime.brain import guardrails, retrieval
from runtime.brain.deps import BrainDeps
from runtime.brain.dispatch import DEFAULT_GOODBYE, Effect, ToolRunner, TurnContext
from runtime.brain.prompt import echoes, system_prompt
from runtime.brain.tools import KNOWLEDGE_TOOL, build_toolset, usable_methods
from runtime.brain.verification import Verification
from runtime.events import ConversationEvent

log = logging.getLogger(__name__)

APOLOGY = "Sorry, I'm having trouble answering right now. Please try again in a moment."
FALLBACK = "Sorry, could you say that again?"
ENDED = "conversation ended"
STATE_VERSION = 1


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 1)


class _Turn:
    """The state of one `respond` call."""

    def __init__(self, user_text: str, phrases: list[tuple[str, str]]) -> None:
        self.user_text = user_text
        self.started = time.perf_counter()
        self.guard = guardrails.PhraseGuard(phrases)
        self.messages: list[ChatMessage] = []  # complete assistant/tool units of this turn
        self.unit: tuple[ChatMessage, list[ChatMessage]] | None = None  # tool calls awaiting results
        self.context: ChatMessage | None = None  # knowledge passages for this turn
        self.shown = ""  # reply text streamed so far, all steps
        self.step = ""  # text of the current step, not yet in `messages`
        self.ttft_ms: float | None = None
        self.usage: dict[str, int] | None = None  # summed over the turn's model calls, when reported
        self.failure: ConversationEvent | None = None
        self.final: str | None = None  # the last reply text, once decided
        self.committed = False

    def ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def show(self, text: str) -> ConversationEvent | None:
        """Record streamed text (with a space between steps) and make its delta event."""
        if not text:
            return None
        if not self.step and self.shown and not self.shown[-1].isspace() and not text[0].isspace():
            text = " " + text
        elif not self.shown:
            text = text.lstrip()
            if not text:
                return None
        self.shown += text
        self.step += text
        if self.ttft_ms is None:
            self.ttft_ms = self.ms()
        return ev.agent_delta(text, self.ms())

    def count(self, usage: Usage) -> None:
        total = self.usage or {"promptTokens": 0, "cachedPromptTokens": 0, "completionTokens": 0}
        total["promptTokens"] += usage.prompt_tokens
        total["cachedPromptTokens"] += usage.cached_prompt_tokens
        total["completionTokens"] += usage.completion_tokens
        self.usage = total

    def begin_tools(self, calls: list[ToolCall]) -> None:
        self.unit = (ChatMessage("assistant", self.step.strip(), tool_calls=tuple(calls)), [])
        self.step = ""

    def end_tools(self) -> None:
        if self.unit is not None:
            self.messages += [self.unit[0], *self.unit[1]]
            self.unit = None

    def closing_messages(self) -> list[ChatMessage]:
        """This turn's messages for history: complete units, an interrupted one closed, the reply."""
        out = list(self.messages)
        if self.unit is not None:
            call_msg, results = self.unit
            done = {r.tool_call_id for r in results}
            cancelled = [
                ChatMessage("tool", '{"status":"error","result":{"error":"cancelled"}}', tool_call_id=c.id, name=c.name)
                for c in call_msg.tool_calls
                if c.id not in done
            ]
            out += [call_msg, *results, *cancelled]
        reply = self.final if self.final is not None else self.step.strip()
        if reply:
            out.append(ChatMessage("assistant", reply))
        return out


class AgentBrain:
    def __init__(
        self,
        agent: CompiledAgent,
        deps: BrainDeps,
        *,
        channel: Literal["chat", "voice"],
        conversation_id: str,
        org_id: str,
        caller_id: str | None = None,
    ) -> None:
        self.agent = agent
        self.deps = deps
        self.channel: Literal["chat", "voice"] = channel
        self.conversation_id = conversation_id
        self.org_id = org_id
        self.caller_id = caller_id
        # On a call every caller message is searched before the model is asked (`_retrieve`, focused to a
        # few sentences); `knowledge_lookup` is for chat only. Offered on a call, it (a) changed the tool list
        # in the prompt's cached prefix between turns with and without passages, so the local model evaluated
        # the whole conversation again at each change (~1.5-2.3 s before the first word, measured), and (b)
        # cost a second model pass over whole passages (seconds of silence) when the model used it.
        self.tools = build_toolset(agent, knowledge=deps.knowledge is not None and channel == "chat")
        self._verification = Verification([m for m, _ in usable_methods(agent)])
        ids = {"agentId": agent.agent_id, "conversationId": conversation_id, "callerId": caller_id}
        self._runner = ToolRunner(agent, deps, self.tools, self._verification, ids=ids)
        self._phrases = guardrails.blocked_phrases(agent)
        # The model's own slips, after the operator's phrases: its instructions or a tool's name read out.
        self._slips = [(echo, FALLBACK) for echo in echoes(self.tools)]
        self._guarded = [*self._phrases, *self._slips]  # what a turn's PhraseGuard stops
        self._history: list[ChatMessage] = []
        # Knowledge passages the model was given, by the index in `_history` of the user message they came
        # before (with that message, to tell whether it is still there after `load_history`); see `_heard`.
        self._passages: dict[int, tuple[ChatMessage, ChatMessage]] = {}
        self._context: list[str] = []  # system messages a client sent, after the agent's own prompt
        self._whole_knowledge: tuple[str, ...] | None = None  # on a call: the agent's small knowledge, in the prompt
        self._knowledge_loaded = False
        self._ended = False
        self._busy = False
        self._prompts: dict[tuple[bool, str | None], str] = {}

    # --- the interface ---------------------------------------------------------------------------

    @property
    def history(self) -> tuple[ChatMessage, ...]:
        return tuple(self._history)

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def verified(self) -> dict[str, Any]:
        return self._verification.snapshot(self.deps.now())

    def defers(self, tool_name: str) -> bool:
        """Whether `tool_name`'s effect is left to the channel after the turn (`ToolBinding.deferred`)."""
        binding = self.tools.get(tool_name)
        return binding is not None and binding.deferred

    @property
    def searches_after_reply(self) -> bool:
        """Whether each turn's knowledge search runs after its reply (the knowledge is whole in the prompt)."""
        return self._whole_knowledge is not None

    def greeting(self) -> str | None:
        return self.agent.greeting

    @property
    def state(self) -> dict[str, Any]:
        """What the guardrails remember (verification, lockouts, step-up requests, skill runs) and whether
        the conversation ended, as JSON. A channel that builds a new brain per turn must store this after
        each turn and give it back with `load_state` (from its own storage, never from the client), or
        every turn starts unverified and maxAttempts/maxPerCall count per turn."""
        return {"version": STATE_VERSION, "ended": self._ended, "verification": self._verification.to_state(),
                "skillRuns": dict(self._runner.runs)}

    def load_state(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown brain state version {state.get('version')!r}")
        self._ended = bool(state.get("ended", False))
        self._verification.load_state(state.get("verification") or {})
        self._runner.runs.clear()
        self._runner.runs.update({str(k): int(v) for k, v in (state.get("skillRuns") or {}).items()})

    def load_history(self, messages: Sequence[ChatMessage]) -> None:
        """Replace the conversation so far. System messages become extra context after the agent's prompt."""
        self._context = [m.content for m in messages if m.role == "system" and m.content.strip()]
        self._history = [m for m in messages if m.role != "system"]
        self._passages = {
            at: kept for at, kept in self._passages.items() if at < len(self._history) and self._history[at] == kept[0]
        }

    def system_prompt(self, now: datetime | None = None) -> str:
        at = self.deps.now() if now is None else now
        open_now = self.agent.is_open(at)
        hours = self.agent.business_hours
        weekday = WEEKDAYS[at.astimezone(ZoneInfo(hours.timezone)).weekday()] if hours is not None else None
        key = (open_now, weekday)
        if key not in self._prompts:
            self._prompts[key] = system_prompt(
                self.agent, self.tools, channel=self.channel, open_now=open_now, weekday=weekday,
                knowledge=self._whole_knowledge or (),
            )  # fmt: skip
        return self._prompts[key]

    async def warm_up(self) -> None:
        """Have a model that keeps state compute this agent's prompt and tools now (a call does it while its
        greeting plays), so the first turn does not; a model that keeps none has nothing to do."""
        await self._load_knowledge()
        llm = self.deps.llm
        if isinstance(llm, StatefulLLM):
            await llm.warm_up([ChatMessage("system", self.system_prompt())], self.tools.specs)

    async def prepare(self, user_text: str) -> None:
        """The caller has paused after `user_text` and the turn may end there: have a model that keeps state
        evaluate the prompt that turn's first model call would have (`StatefulLLM.prepare`), so that the turn
        starts on its last token. Nothing in the brain changes. A turn that comes with other words (the caller
        went on) finds the part they share in the model; one whose prompt is not known before it starts (its
        knowledge is searched first, its topic is blocked) is not prepared."""
        llm = self.deps.llm
        if self._busy or self._ended or not self._knowledge_loaded or not isinstance(llm, StatefulLLM):
            return
        if self.deps.knowledge is not None and self.agent.knowledge and self._whole_knowledge is None:
            return  # the turn's passages go into its prompt: known only once it has searched
        if not user_text.strip() or guardrails.blocked_topic(self.agent, user_text) is not None:
            return
        turn = _Turn(user_text, self._guarded)
        messages = [ChatMessage("system", self.system_prompt()), *self._prefix(turn)]
        await llm.prepare(messages, self._offered(turn), self._step_settings(0))

    async def release(self) -> None:
        """The conversation is over (the call hung up): a model that kept state for it may drop it."""
        llm = self.deps.llm
        if isinstance(llm, StatefulLLM):
            await llm.release(self.conversation_id)

    async def respond(self, user_text: str) -> AsyncGenerator[ConversationEvent, None]:
        if self._ended:
            yield ev.error(ENDED, 0.0, code="conversation_ended")
            return
        if self._busy:
            yield ev.error("a reply is already being generated", 0.0, code="busy")
            return
        self._busy = True
        turn = _Turn(user_text, self._guarded)
        try:
            yield ev.user_utterance(user_text, 0.0)
            async with contextlib.aclosing(self._turn(turn)) as events:
                async for event in events:
                    yield event
        finally:
            self._commit(turn)
            self._busy = False

    # --- one turn --------------------------------------------------------------------------------

    async def _load_knowledge(self) -> None:
        """On a call, the agent's knowledge whole into the system prompt when it is small, once.

        Searched per turn, its passages went before the caller's message, where the model evaluated them
        before its first word, and Qwen2.5 0.5B often read them out or their heading (voice benchmark, demo
        pizzeria: first token p50 1.9 s, 5 of 10 replies with the fact). Whole in the prompt (measured on
        the engine, same questions): first token 0.3-0.5 s, the prompt evaluated per turn no longer than a
        plain turn's, 10 of 12 replies with the fact. Larger knowledge is searched per turn as on chat."""
        if self._knowledge_loaded:
            return
        self._knowledge_loaded = True
        if self.channel != "voice" or self.deps.knowledge is None or not self.agent.knowledge:
            return
        try:
            async with asyncio.timeout(self.deps.tool_timeout_s):
                whole = await self.deps.knowledge.contents(self.agent.knowledge, retrieval.PROMPT_KNOWLEDGE_CHARS)
        except Exception as exc:  # searched per turn instead
            log.warning("could not load the agent's knowledge whole: %r", exc)
            return
        if whole is not None:
            self._whole_knowledge = tuple(k.text for k in whole)
            self._prompts.clear()

    async def _turn(self, turn: _Turn) -> AsyncGenerator[ConversationEvent, None]:
        await self._load_knowledge()
        now = self.deps.now()
        topic = guardrails.blocked_topic(self.agent, turn.user_text)
        if topic is not None:
            yield ev.guardrail("content_rule", "deny", "the message is on a blocked topic", turn.ms(), topic=topic[0])
            for event in self._finish(turn, topic[1]):
                yield event
            return
        async with contextlib.aclosing(self._retrieve(turn)) as retrieved:
            async for event in retrieved:
                yield event
        ctx = TurnContext(turn.user_text, self._asked(), now, self.agent.is_open(now), turn.ms)
        prompt = ChatMessage("system", self.system_prompt(now))
        effect: Effect | None = None
        for step in range(max(1, self.deps.max_steps)):
            calls: list[ToolCall] = []
            async with contextlib.aclosing(
                self._stream(turn, [prompt, *self._prefix(turn)], self._step_settings(step), calls)
            ) as streamed:
                async for event in streamed:
                    yield event
            if turn.failure is not None:
                yield turn.failure
                for event in self._finish(turn, APOLOGY):
                    yield event
                return
            if turn.guard.hit is not None or not calls:
                break
            turn.begin_tools(calls)
            for call in calls:
                run = await self._runner.run(call, ctx)
                assert turn.unit is not None
                turn.unit[1].append(run.message)
                effect = effect or run.effect
                for event in run.events:
                    yield event
            turn.end_tools()
            if effect is not None:
                break
        for event in self._close(turn, effect):
            yield event
        if self._whole_knowledge is not None:  # searched only now, for the receipt and the gaps
            async with contextlib.aclosing(self._retrieve(turn, for_prompt=False)) as retrieved:
                async for event in retrieved:
                    yield event

    def _step_settings(self, step: int) -> GenerationSettings:
        """A turn's model call number `step`: the last one must answer in words."""
        last = step == max(1, self.deps.max_steps) - 1
        return replace(
            self.deps.generation, tool_choice="none" if last else "auto", prompt_cache_key=self.conversation_id
        )

    def _prefix(self, turn: _Turn) -> list[ChatMessage]:
        """Everything after the agent's own system prompt, for this step."""
        extra = [ChatMessage("system", text) for text in self._context]
        knowledge = [turn.context] if turn.context is not None else []
        user = ChatMessage("user", turn.user_text)
        pending = [turn.unit[0], *turn.unit[1]] if turn.unit is not None else []
        return [*extra, *self._heard(), *knowledge, user, *turn.messages, *pending]

    def _heard(self) -> list[ChatMessage]:
        """The history as the model read it: each earlier turn's knowledge passages stay before its message.

        So every prompt starts with the previous one and its reply, and a model that keeps state (the local
        engine's KV cache, a hosted provider's prompt cache) evaluates only what is new. Dropping a turn's
        passages afterwards made the next prompt differ from the state saved after that turn at those
        passages, so the previous question and reply were evaluated again (~10 ms a token for Qwen2.5 0.5B
        on 2 cores, before the caller hears a word). The passages cost their tokens once, and the oldest
        leave with their messages when the context is full."""
        out: list[ChatMessage] = []
        for at, message in enumerate(self._history):
            kept = self._passages.get(at)
            if kept is not None and kept[0] == message:
                out.append(kept[1])
            out.append(message)
        return out

    async def _stream(
        self, turn: _Turn, messages: list[ChatMessage], settings: GenerationSettings, calls: list[ToolCall]
    ) -> AsyncGenerator[ConversationEvent, None]:
        """One model call: deltas out, tool calls into `calls`, a failure into `turn.failure`."""
        stream = self.deps.llm.stream(messages, self._offered(turn), settings)
        try:
            while True:
                try:
                    async with asyncio.timeout(self.deps.llm_timeout_s):
                        item = await anext(stream)
                except StopAsyncIteration:
                    break
                if isinstance(item, TextDelta):
                    delta = turn.show(turn.guard.feed(item.text))
                    if turn.guard.hit is not None:
                        break
                    if delta is not None:
                        yield delta
                elif isinstance(item, ToolCall):
                    calls.append(item)
                elif isinstance(item, Usage):
                    turn.count(item)
        except TimeoutError:
            turn.failure = ev.error("the language model did not answer in time", turn.ms(), code="llm_timeout")
        except LLMError as exc:
            code = "llm_unavailable" if isinstance(exc, LLMUnavailable) else "llm_error"
            turn.failure = ev.error(f"the language model failed: {exc}", turn.ms(), code=code)
        except Exception as exc:  # a provider bug must not take the conversation down
            log.exception("LLM stream failed")
            turn.failure = ev.error(f"the language model failed: {type(exc).__name__}", turn.ms(), code="llm_error")
        finally:
            await stream.aclose()
        if turn.failure is None:
            delta = turn.show(turn.guard.flush())
            if delta is not None:
                yield delta

    def _offered(self, turn: _Turn) -> tuple[ToolSpec, ...]:
        """The tools offered to the model this turn. When the knowledge found passages for the message before
        the model was asked, they are in its prompt and `knowledge_lookup` is not offered: a second lookup
        adds nothing, and the small local model, offered it, looks up again and then reads the tool result
        out instead of answering (seen with Qwen2.5 0.5B; without the tool it answers from the passages).
        On a call the tool is never offered (see `__init__`), so the tool list stays the same all call."""
        if turn.context is None:
            return self.tools.specs
        return tuple(spec for spec in self.tools.specs if spec.name != KNOWLEDGE_TOOL)

    def _close(self, turn: _Turn, effect: Effect | None) -> list[ConversationEvent]:
        hit = turn.guard.hit or guardrails.phrase_in(turn.shown, self._phrases)
        if hit is not None and (hit[0] == retrieval.HEADING_ECHO or hit in self._slips):
            return self._finish(turn, hit[1])  # the model's own slip, not the operator's rule: no guardrail event
        if hit is not None:
            blocked = ev.guardrail("content_rule", "deny", "the reply contained a blocked phrase", turn.ms(),
                                   phrase=hit[0])
            return [blocked, *self._finish(turn, hit[1])]
        closing = ""
        if effect is not None and effect.kind == "end":
            self._ended = True
            closing = effect.say or ("" if turn.shown.strip() else DEFAULT_GOODBYE)
            closing = "" if closing in turn.shown else closing
        elif effect is not None:
            closing = effect.say
        if not turn.shown.strip() and not closing:
            return self._finish(turn, FALLBACK)
        delta = turn.show(closing)
        turn.final = turn.step.strip()
        message = ev.agent_message(turn.shown.strip(), turn.ms(), ttft_ms=_round(turn.ttft_ms), usage=turn.usage)
        return [delta, message] if delta is not None else [message]

    def _finish(self, turn: _Turn, text: str) -> list[ConversationEvent]:
        """End the turn with a reply the brain decided (a refusal, an apology, a fallback): it replaces
        whatever was streamed, and streams as one delta when nothing was."""
        events = []
        if not turn.shown:
            delta = turn.show(text)
            events += [delta] if delta is not None else []
        turn.final = text
        ttft = turn.ttft_ms if turn.ttft_ms is not None else turn.ms()
        return [*events, ev.agent_message(text, turn.ms(), ttft_ms=_round(ttft), usage=turn.usage)]

    async def _retrieve(self, turn: _Turn, *, for_prompt: bool = True) -> AsyncGenerator[ConversationEvent, None]:
        """The turn's knowledge search: its receipt event, a gap when nothing answers the message, and (when
        `for_prompt`, unless the whole knowledge is in the system prompt) the passages for the model."""
        if self.deps.knowledge is None or not self.agent.knowledge:
            return
        if for_prompt and self._whole_knowledge is not None:
            return
        voice = self.channel == "voice"  # a call hears the reply's first word after the model has read this
        found = await retrieval.retrieve(
            self.deps.knowledge, self.agent.knowledge, turn.user_text, timeout_s=self.deps.tool_timeout_s,
            focus_chars=retrieval.VOICE_KNOWLEDGE_CHARS if voice else 0,
        )  # fmt: skip
        if found.error is not None:
            yield ev.error(found.error, turn.ms(), code="knowledge_unavailable")
            return
        yield ev.kb_retrieval(turn.user_text, retrieval.passages_json(found), found.top_score, turn.ms())
        if for_prompt and found.passages:
            turn.context = retrieval.context_message(found.passages, focused=voice)
            sentences = " ".join(c.focus for c in found.passages if c.focus.strip())
            if voice and sentences:  # a reply reading the passages out, heading first, says just the sentences
                turn.guard = guardrails.PhraseGuard([*self._guarded, (retrieval.HEADING_ECHO, sentences)])
        if self.deps.gaps is not None and retrieval.is_gap(found, turn.user_text):
            try:
                await self.deps.gaps.record_gap(
                    self.org_id, self.agent.agent_id, turn.user_text, found.top_score, self.conversation_id
                )
            except Exception:  # a lost gap is not worth a failed turn
                log.exception("recording a knowledge gap failed")

    def _asked(self) -> bool:
        last = next((m for m in reversed(self._history) if m.role == "assistant" and m.content.strip()), None)
        return last is not None and "?" in last.content

    def _commit(self, turn: _Turn) -> None:
        if turn.committed:
            return
        turn.committed = True
        user = ChatMessage("user", turn.user_text)
        if turn.context is not None:
            self._passages[len(self._history)] = (user, turn.context)
        self._history += [user, *turn.closing_messages()]
