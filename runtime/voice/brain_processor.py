"""The agent's brain as a pipecat processor: each completed user turn becomes one `AgentBrain` turn.

It sits between the user aggregator (which emits an `LLMContextFrame` when pipecat's turn-taking decides
the caller has finished) and TTS. The brain's reply streams on as `LLMTextFrame`s between
`LLMFullResponseStartFrame` and `LLMFullResponseEndFrame`, so TTS starts on the first clause while the
model is still writing. The brain keeps its own history (tools, guardrails, knowledge); pipecat's context
only carries the user's words here.

Interruption semantics (STYLE rule 8): an `InterruptionFrame` (the caller talked over the agent) cancels
the turn in progress - closing the brain's stream cancels generation and any tool still running, and the
brain keeps what was complete. What the caller actually heard is applied afterwards by the call
(`replace_last_reply`), from the playback position. Receipt events, handoff and end requests go to the
`TurnListener`; the call carries out transfers and hang-ups once the announcement has been played.
A reply that opens like JSON is held until it is complete and not spoken if it is JSON: small local models
sometimes write a tool call out as text, and a caller must never hear it read aloud.
A caller who goes on talking after a turn has ended ("Can I talk to a person," - a pause the turn-taking
took for the end - "please?") before any of its reply reached them, or within `RESUMED_WITHIN_S` of their
last words (the reply had barely begun), is still saying one thing: the cut-off turn's words and the new ones
are answered together, as one turn, and the cut-off turn leaves nothing in the brain's history. A turn that
ran a tool stands as it is (its effects did happen), unless its only tools were a transfer or an end: the call
carries those out after the announcement, so a continued turn's never happen (the brain's state goes back to
before it, and the whole request is answered afresh; `VoiceCall` waits for the caller's next turn before it
carries out the effect of a turn they cut off). pipecat queues system frames ahead of data frames, so the next
turn's interruption can reach the brain before the turn it cut off: such a turn is cut off at birth, never
answered on its own (its words go with the next turn's), as if the interruption had come just after it.
Speech with no words that cut the agent off (pipecat's aggregator ends such a turn with a request for a reply)
is answered with FALLBACK ("could you say that again?"), or, when it cut off a turn before its reply was heard,
with that turn's words; never with the caller's last words again.
When no word of the reply has come after `filler_after_s` (a slow tool, a cold model), a short filler
("One moment.") is spoken so the caller is not left in silence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSSpeakFrame,
    VADUserStartedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipeline.llm.types import ChatMessage
from runtime.brain import AgentBrain
from runtime.brain.brain import FALLBACK
from runtime.events import ConversationEvent
from runtime.voice.heard_time import heard_at
from runtime.voice.turn_start import RESUMED_WITHIN_S

log = logging.getLogger(__name__)

FILLER = "One moment."
FILLER_AFTER_S = 1.2  # no words of the reply yet after this long: say the filler
HEARD_WAIT_S = 2.0  # the longest the brain's work after a reply waits for the reply's first audio


@dataclass
class TurnRecord:
    """One answered turn: what the caller said, what the brain did, and when (monotonic seconds)."""

    number: int
    user_text: str
    started: float  # the turn was decided and the brain asked
    events: list[ConversationEvent] = field(default_factory=list)
    speech_end_at: float | None = None  # the VAD heard the caller stop (set by the call)
    speech_end_heard: float | None = None  # when the audio of that stop arrived (`heard_time.py`; set by the call)
    first_token_at: float | None = None
    first_audio_at: float | None = None  # the first agent audio went into the leg, ~ the first RTP packet
    audio_started: asyncio.Event = field(default_factory=asyncio.Event, repr=False, compare=False)  # and then
    added: list[ChatMessage] = field(default_factory=list)
    interrupted: bool = False
    resumed_heard: float | None = None  # the VAD heard the caller again after the turn began (when that audio came)
    continued: bool = False  # cut off, its words were answered with the next turn's: it stands for nothing
    history_at: int = 0  # where the turn's messages begin in the brain's history
    state_before: dict[str, Any] = field(default_factory=dict)  # the brain's state (`AgentBrain.state`) before it


class TurnListener(Protocol):
    async def turn_started(self, turn: TurnRecord) -> None: ...
    async def turn_finished(self, turn: TurnRecord) -> None: ...


def last_user_text(messages: Sequence[Any]) -> str:
    """The words of the caller's turn that ends with `messages`: the last message, when it is the caller's.
    pipecat's aggregator ends a turn that had no words (speech that cut the agent off, with no transcript) with
    a "developer" message asking for a reply; the caller's message before it was answered already."""
    message = messages[-1] if messages else None
    if isinstance(message, dict) and message.get("role") == "user":
        content = message.get("content", "")
        return content if isinstance(content, str) else " ".join(str(p.get("text", "")) for p in content)
    return ""


class BrainProcessor(FrameProcessor):
    def __init__(
        self,
        brain: AgentBrain,
        listener: TurnListener,
        *,
        filler_after_s: float = FILLER_AFTER_S,
        filler_text: str = FILLER,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.brain = brain
        self.listener = listener
        self.filler_after_s, self.filler_text = filler_after_s, filler_text
        self.fillers = 0
        self.unspoken: list[str] = []  # replies withheld from TTS (JSON written out as text)
        self.turns = 0
        self._task: Any = None  # the asyncio.Task answering the current turn
        self._current: TurnRecord | None = None
        self._last: TurnRecord | None = None  # the turn answered (or cut off) before the current one
        self.continued = 0  # turns answered together with the cut-off turn before them
        self._speech_heard: float | None = None  # when the audio of the VAD's last speech start arrived
        # Turns (LLMContextFrames) in the order they arrived and were taken, and the last one an interruption
        # came after: pipecat queues system frames ahead of data frames, so a turn's interruption can reach
        # `process_frame` before the turn it cut off (see `queue_frame`).
        self._queued = self._taken = self._cut_through = 0
        self._words: dict[int, str] = {}  # the caller's words of each turn queued, by id(LLMContextFrame)

    async def queue_frame(
        self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM, callback: Any = None
    ) -> None:
        if isinstance(frame, LLMContextFrame):
            self._queued += 1
            frame.interruptible = False  # an interruption must not drop the caller's words: they are answered
            # Read now: the aggregator goes on adding to the same context, and the frame may wait in the queue.
            self._words[id(frame)] = last_user_text(frame.context.get_messages()).strip()
        elif isinstance(frame, InterruptionFrame) and direction == FrameDirection.DOWNSTREAM:
            self._cut_through = self._queued  # every turn that arrived before it was cut off by the caller
        await super().queue_frame(frame, direction, callback)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            return  # nothing after the brain uses the caller's audio: 50 frames a second less through four hops
        if isinstance(frame, LLMContextFrame):
            self._taken += 1
            await self._stop_turn()
            cut_at_birth = self._taken <= self._cut_through
            text = self._continuing(self._words.pop(id(frame), "")).strip()
            if not text:
                # Speech without words cut the agent off (pipecat's aggregator asks for a reply to such a turn):
                # the caller is asked to say it again, unless they are talking already.
                if not cut_at_birth:
                    await self.push_frame(TTSSpeakFrame(FALLBACK))
                return
            self.turns += 1
            turn = TurnRecord(self.turns, text, time.monotonic(), state_before=self.brain.state)
            self._last = turn
            if cut_at_birth:
                # The caller's next turn began before this one reached the brain (its interruption overtook
                # it): they are still talking, and these words are answered with theirs.
                turn.interrupted = True
                return
            self._current = turn
            self._task = self.create_task(self._answer(turn), name="brain-turn")
            return
        if isinstance(frame, VADUserStartedSpeakingFrame):
            self._speech_heard = heard_at(frame)
            if self._last is not None and self._last.resumed_heard is None:
                self._last.resumed_heard = self._speech_heard
        if isinstance(frame, InterruptionFrame):
            await self._stop_turn(interrupted=True)
        await self.push_frame(frame, direction)

    async def cleanup(self) -> None:
        await self._stop_turn()
        await super().cleanup()  # type: ignore[no-untyped-call]

    async def _stop_turn(self, *, interrupted: bool = False) -> None:
        task, self._task = self._task, None
        if interrupted and self._current is not None:
            self._current.interrupted = True
        elif interrupted and self._last is not None and _cut_short(self._last, at=self._speech_heard):
            self._last.interrupted = True  # written out, but cut before (or just as) its audio went out
        if task is not None and not task.done():
            await self.cancel_task(task)  # (one cancelled before it ran never clears `_current` itself)
        self._current = None

    def _continuing(self, text: str) -> str:
        """`text`, after the words of the turn before it when that turn was cut short (see the module's
        docstring); that turn's messages then leave the brain's history."""
        cut = self._last
        if cut is None or not cut.interrupted or not _cut_short(cut):
            return text
        if not cut.added:  # cut off before the brain took it: nothing to undo
            return self._continued(cut, text)
        if cut.added[0].role != "user" or any(m.role == "user" for m in cut.added[1:]):
            return text
        calls = [call for message in cut.added[1:] for call in message.tool_calls]
        if not all(self.brain.defers(call.name) for call in calls):
            return text  # a tool ran: what it did stands
        history = list(self.brain.history)
        if history[cut.history_at : cut.history_at + 1] != cut.added[:1]:
            return text  # the history has moved on since: leave it be
        # Everything from the turn's words on goes (the call may already have taken its unheard reply out).
        self.brain.load_history(history[: cut.history_at])
        if calls:
            self.brain.load_state(cut.state_before)  # a transfer's skill run, an end's "ended": not done after all
        return self._continued(cut, text)

    def _continued(self, cut: TurnRecord, text: str) -> str:
        cut.continued = True
        self.continued += 1
        return f"{cut.user_text} {text}"

    async def _answer(self, turn: TurnRecord) -> None:
        text = turn.user_text
        before = turn.history_at = len(self.brain.history)  # set as it starts: a barge-in may take a reply out
        await self.listener.turn_started(turn)
        filler = self.create_task(self._filler(), name="brain-filler") if self.filler_after_s else None
        replying = False  # the reply's LLMFullResponseStartFrame went out
        closed = False  # and its end frame
        fell_back = False  # the reply was markup and the caller got FALLBACK instead
        markup = ""  # a tool call written out as text, once certain (see below): never spoken
        held = ""  # reply text not yet passed on (see _may_be_markup)
        try:
            async with aclosing(self.brain.respond(text)) as events:
                async for event in events:
                    turn.events.append(event)
                    if event.type == "agent_message" and not closed:
                        # The reply is complete: the TTS speaks its last sentence once the response ends, so
                        # it ends now, not after what the brain does next (a search for the receipt).
                        if filler is not None and not filler.done():
                            await self.cancel_task(filler)
                        replying, fell_back = await self._last_words(held, replying)
                        held, closed = "", True
                        if replying:
                            await self.push_frame(LLMFullResponseEndFrame())
                        if replying and self.brain.searches_after_reply:
                            await self._until_heard(turn)
                        continue
                    if event.type == "agent_delta" and markup:
                        markup += str(event.data.get("text", ""))
                        continue
                    if event.type != "agent_delta" or closed:
                        continue
                    if turn.first_token_at is None:
                        turn.first_token_at = time.monotonic()
                    held += str(event.data.get("text", ""))
                    if not replying and _CALL_AS_TEXT.match(held.lstrip()):
                        # Certain from its name and bracket: the caller is asked again now, not once the whole
                        # call is written (~0.6 s more of the 0.5B model's tokens in the voice benchmark).
                        markup, held = held, ""
                        await self._fall_back(filler)
                        await self.push_frame(LLMFullResponseEndFrame())
                        replying = fell_back = closed = True
                        continue
                    if not replying and _may_be_markup(held):
                        continue  # wait: a reply that opens like JSON may be a tool call written out as text
                    if not replying:
                        replying = True
                        if filler is not None:
                            await self.cancel_task(filler)
                        await self.push_frame(LLMFullResponseStartFrame())
                    await self.push_frame(LLMTextFrame(held))
                    held = ""
            if markup:
                self._not_spoken(markup)
            if not closed:
                replying, fell_back = await self._last_words(held, replying)
            if fell_back:  # now that the turn is in the history: not markup for the model to copy later
                replace_last_reply(self.brain, FALLBACK)
        finally:
            if filler is not None and not filler.done():
                await self.cancel_task(filler)
            turn.added = list(self.brain.history[before:])
            if self._current is turn:
                self._current = None
            if replying and not closed:
                await self.push_frame(LLMFullResponseEndFrame())
            await self.listener.turn_finished(turn)

    async def _until_heard(self, turn: TurnRecord) -> None:
        """Hold the brain (its search for the receipt) until the reply's first audio is out, so the search's
        embeddings never share the two cores with Piper's first sentence. (Not what made knowledge turns
        slow to the first audio, as first thought: with or without this wait the voice benchmark measured
        ~0.85 s from the first token to the first audio there; that is the replies' long first clauses.)"""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(HEARD_WAIT_S):
                await turn.audio_started.wait()

    async def _last_words(self, held: str, replying: bool) -> tuple[bool, bool]:
        """Pass on the reply text still held back, unless it is markup (then FALLBACK, if nothing was said);
        returns whether a reply was started and whether it is FALLBACK."""
        if held.strip() and _is_markup(held):
            self._not_spoken(held)
            if not replying:  # nothing was said: not silence
                await self._fall_back(None)
                return True, True
        elif held.strip():
            if not replying:
                await self.push_frame(LLMFullResponseStartFrame())
            await self.push_frame(LLMTextFrame(held))
            return True, False
        return replying, False

    async def _fall_back(self, filler: Any) -> None:
        """Say FALLBACK as the reply: the model wrote markup, and the caller is asked to say it again."""
        if filler is not None and not filler.done():
            await self.cancel_task(filler)
        await self.push_frame(LLMFullResponseStartFrame())
        await self.push_frame(LLMTextFrame(FALLBACK))

    def _not_spoken(self, markup: str) -> None:
        self.unspoken.append(markup)  # a small model wrote its tool call as text: never read JSON aloud
        log.warning("not speaking a reply that is JSON: %.120s", markup)

    @property
    def answering(self) -> bool:
        """A turn is being answered (the brain is thinking, or its reply is still being written)."""
        return self._current is not None

    async def _filler(self) -> None:
        """A slow answer (a tool call, a cold model) gets a short spoken filler so the line is not dead."""
        await asyncio.sleep(self.filler_after_s)
        self.fillers += 1
        await self.push_frame(TTSSpeakFrame(self.filler_text))


def _cut_short(turn: TurnRecord, *, at: float | None = None) -> bool:
    """None of the turn's reply had gone out, or the caller's speech came back (at `at`, when the turn has no
    such time yet) so soon after their turn ended that they were still talking (`RESUMED_WITHIN_S`), both by when
    the caller's audio arrived (`heard_time.py`), not by when a busy pipeline's VAD got to it."""
    if turn.first_audio_at is None:
        return True
    resumed = turn.resumed_heard if turn.resumed_heard is not None else at
    end = turn.speech_end_heard
    return end is not None and resumed is not None and resumed - end <= RESUMED_WITHIN_S


# A tool call written out as its name and arguments, as the 0.5B model has done ('end_conversation{"reason":
# ...}', 'Knowledge_lookup({"query": ...})'): a name with an underscore, then "(" or "{". Never words.
_TOOL_NAME = r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+"
_CALL_AS_TEXT = re.compile(_TOOL_NAME + r"\s*[({]")
_ONE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*")  # the reply's first word, not ended yet
# A tool's name alone as the whole reply ("end_conversation", seen): not words either.
_NAME_ALONE = re.compile(_TOOL_NAME + r"[.!]?")


def _may_be_markup(text: str) -> bool:
    """Could this reply so far still turn out to be JSON or a call written out? Then it is held back until the
    reply is complete. A first word is held until what follows it shows (one token: pipecat speaks whole
    clauses anyway)."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "[") or stripped.startswith("```"):
        return True
    return _ONE_WORD.fullmatch(stripped.rstrip()) is not None or _CALL_AS_TEXT.match(stripped) is not None


def _is_markup(text: str) -> bool:
    """A complete reply that is JSON (or a fenced code block): not words for a caller.

    JSON here is one value or several in a row (a small model has repeated its written-out tool call line
    after line), or one cut off by the token limit; "[laughs] Sure." is words.
    """
    stripped = text.strip()
    if stripped.startswith("```") or _CALL_AS_TEXT.match(stripped) or _NAME_ALONE.fullmatch(stripped):
        return True
    decoder, at = json.JSONDecoder(), 0
    while at < len(stripped):
        try:
            _, at = decoder.raw_decode(stripped, at)
        except json.JSONDecodeError:
            # Junk after a first value, or a first value cut off by the token limit: `{"` opens no sentence.
            return at > 0 or stripped.startswith(('{"', "[{", '["'))
        while at < len(stripped) and stripped[at].isspace():
            at += 1
    return bool(stripped)


def replace_last_reply(brain: AgentBrain, heard: str) -> bool:
    """After a barge-in: the last assistant reply in the brain's history becomes what the caller heard
    (nothing at all if they heard nothing). Returns whether the history changed."""
    history = list(brain.history)
    for i in range(len(history) - 1, -1, -1):
        message = history[i]
        if message.role == "assistant" and not message.tool_calls:
            if message.content == heard:
                return False
            if heard.strip():
                history[i] = ChatMessage("assistant", heard)
            else:
                del history[i]
            brain.load_history(history)
            return True
    return False
