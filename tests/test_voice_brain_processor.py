"""The brain processor on its own, in a real pipecat pipeline, with frames arriving in orders a loaded call
produces: which turns are answered, and which are answered together."""

from __future__ import annotations

import asyncio
import time

from pipecat.frames.frames import Frame, InterruptionFrame, LLMContextFrame, TTSSpeakFrame
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from pipeline.llm.scripted import ScriptedLLM
from pipeline.llm.types import ToolCall
from runtime.brain.brain import FALLBACK
from runtime.voice.brain_processor import BrainProcessor, TurnRecord
from tests.test_brain_support import agent, brain, deps, scripted
from tests.test_voice_call import Listener
from tests.test_voice_services import Run

TRANSFER = [ToolCall("t1", "transfer_to_human", {"reason": "the caller asked for a person"})]


class Spoken(FrameProcessor):
    """The end of the test pipeline: what was asked to be spoken without the brain (`TTSSpeakFrame`)."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self._spoke = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSSpeakFrame):
            self.texts.append(frame.text)
            self._spoke.set()
        await self.push_frame(frame, direction)

    async def until(self, text: str, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while text not in self.texts:
                self._spoke.clear()
                await self._spoke.wait()


def user_turn(context: LLMContext, text: str) -> LLMContextFrame:
    """What pipecat's user aggregator pushes at a turn's end: its context, with the turn's words added."""
    context.add_message({"role": "user", "content": text})
    return LLMContextFrame(context)


class Turns(Listener):
    """The turns the brain answered, waited for."""

    def __init__(self) -> None:
        super().__init__()
        self._finished = asyncio.Event()

    async def turn_finished(self, turn: TurnRecord) -> None:
        await super().turn_finished(turn)
        self._finished.set()

    async def until(self, count: int, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while len(self.finished) < count:
                self._finished.clear()
                await self._finished.wait()


def voice_brain(llm: ScriptedLLM) -> tuple[BrainProcessor, Turns, LLMContext]:
    """A brain processor for a call's agent (no greeting), what it answers, and the user aggregator's context."""
    listener = Turns()
    processor = BrainProcessor(brain(agent(greeting=None), deps(llm), channel="voice"), listener)
    return processor, listener, LLMContext()


def played_out(turn: TurnRecord) -> None:
    """What the call records of a turn whose reply the caller heard: their pause, then its first audio."""
    turn.speech_end_at = turn.speech_end_heard = time.monotonic() - 3.0
    turn.first_audio_at = time.monotonic() - 2.0


async def cut_off(processor: BrainProcessor, context: LLMContext, words: str) -> None:
    """A turn and the interruption of the caller's next, queued back to back before the processor's input task
    runs: the interruption (a system frame) is taken first."""
    await processor.queue_frame(user_turn(context, words))
    await processor.queue_frame(InterruptionFrame())


async def test_a_turn_whose_interruption_overtook_it_is_answered_with_the_next_one() -> None:
    """Seen in CI under load: the turn ended at the comma of "Can I talk to a person, please?", and 7 ms later
    the transcript of "please?" started the next turn, whose interruption (a system frame, queued ahead of data
    frames) reached the brain before the first turn's context. The first turn then ran as if never cut off,
    the second was answered on its own, and both asked for the transfer: two handoffs were recorded. The
    caller was still talking: their words make one turn, and one handoff."""
    llm = scripted(TRANSFER, TRANSFER)
    processor, listener, context = voice_brain(llm)
    async with Run([processor]):
        await cut_off(processor, context, "Can I talk to a person,")
        await asyncio.sleep(0.2)
        assert listener.finished == [], "not answered on its own: the caller is still talking"
        await processor.queue_frame(user_turn(context, "please?"))
        await listener.until(1)
    [turn] = listener.finished
    assert turn.user_text == "Can I talk to a person, please?"
    assert [e.type for e in turn.events].count("handoff") == 1
    assert [m.content for m in processor.brain.history if m.role == "user"] == [turn.user_text]
    assert processor.continued == 1 and len(llm.calls) == 1


async def test_an_interruption_after_a_turn_began_leaves_the_turns_before_it_alone() -> None:
    """The usual order: the turn is taken and its reply heard, then the caller's next turn interrupts. That
    turn is its own (not cut at birth, not continuing the one before)."""
    llm = scripted("We open at nine.", "Yes, we deliver.")
    processor, listener, context = voice_brain(llm)
    async with Run([processor]):
        await processor.queue_frame(user_turn(context, "When do you open?"))
        await listener.until(1)
        played_out(listener.finished[0])
        await processor.queue_frame(InterruptionFrame())
        await processor.queue_frame(user_turn(context, "Do you deliver?"))
        await listener.until(2)
    assert [t.user_text for t in listener.finished] == ["When do you open?", "Do you deliver?"]
    assert processor.continued == 0


async def test_a_turn_without_words_is_not_answered_with_the_words_of_the_turn_before() -> None:
    """Speech with no transcript that cut the agent off ends a turn; pipecat's aggregator then adds a
    "developer" message (have the caller repeat) and pushes its context. The caller's last words in it were
    answered already (the brain was asked the previous question again): the caller is asked to say it again."""
    llm = scripted("We open at nine.", "We open at nine.")
    processor, listener, context = voice_brain(llm)
    spoken = Spoken()
    async with Run([processor, spoken]):
        await processor.queue_frame(user_turn(context, "When do you open?"))
        await listener.until(1)
        played_out(listener.finished[0])
        await processor.queue_frame(InterruptionFrame())
        context.add_message({"role": "developer", "content": "The user may have said something..."})
        await processor.queue_frame(LLMContextFrame(context))
        await spoken.until(FALLBACK)
    assert [t.user_text for t in listener.finished] == ["When do you open?"] and len(llm.calls) == 1


async def test_a_turn_without_words_answers_the_words_it_cut_off() -> None:
    """ "Can I talk to a person," cut off (before any of its reply was heard) by speech that had no words: the
    cut-off words are answered, not lost and not met with "say that again"."""
    llm = scripted("Let me connect you.", "Let me connect you.")
    processor, listener, context = voice_brain(llm)
    async with Run([processor]):
        await cut_off(processor, context, "Can I talk to a person,")
        context.add_message({"role": "developer", "content": "The user may have said something..."})
        await processor.queue_frame(LLMContextFrame(context))
        await listener.until(1)
    assert [t.user_text for t in listener.finished] == ["Can I talk to a person,"] and len(llm.calls) == 1
