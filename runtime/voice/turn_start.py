"""When does the caller's speech start a turn (and so interrupt the agent)? Fast, and not for backchannels.

While the agent is silent, a turn starts as soon as the VAD hears speech: nothing to interrupt, and the
sooner STT and the turn decision begin, the faster the reply.

While the agent is speaking, the caller's speech may be a barge-in ("wait, no - tomorrow") or a
backchannel ("mm-hmm", "okay", "right": listening, not asking for the floor). Both must stop the agent's
audio at once, so the first is answered quickly, but only the first may cut the reply. So, duck and
decide:

    VAD speech start, agent speaking   hold playback where it is (nothing lost; the caller hears silence)
    speech still going after min_s     a barge-in: the turn starts, pipecat interrupts, the held audio is
                                       cleared, history keeps what was heard
    speech ended before min_s          a backchannel: playback goes on from where it was held

The agent therefore goes quiet within the VAD's start delay (~0.2 s) whatever the speech turns out to
be, and a short "mm-hmm" costs the caller a pause of about its own length, not the reply. Sooner still:
`early_speech()` (from `early_vad.EarlySpeechSileroVAD`, ~0.1 s after the onset) holds playback before
the VAD's verdict; if the VAD has not confirmed speech within `EARLY_HOLD_S`, playback goes on.
`min_barge_in_s` is measured from the VAD's speech start, and the VAD's stop lags the speech by its
`stop_secs`, so it must cover the longest backchannel (~0.55 s of "mm-hmm") plus that lag. Both ends are the
caller's time (when their audio arrived, `heard_time.py`), not when a busy pipeline's VAD got to it: the
speech is a barge-in once the VAD has analyzed `min_barge_in_s` of it without hearing it stop (a VAD that fell
behind during an "okay" would otherwise decide its stop after the wall-clock threshold, and cut the reply).

Speech that starts again within `RESUMED_WITHIN_S` of the pause that ended the caller's turn (by when their
audio arrived, `heard_time.py`) is no backchannel whatever its length: the agent has only just begun (its first
audio comes ~0.7 s after that pause with the local models), so the caller was still talking ("Can I talk to a
person," - pause - "please?"), and they take the floor at once. `BrainProcessor` then answers their words
together with the turn they cut off.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start.base_user_turn_start_strategy import BaseUserTurnStartStrategy

from runtime.voice.heard_time import HeardTimeline, heard_at

DEFAULT_MIN_BARGE_IN_S = 0.65
RESUMED_WITHIN_S = 0.8  # speech again this soon after the VAD's stop that ended the turn: the caller goes on
EARLY_HOLD_S = 0.5  # an early hold the VAD does not confirm within this is let go (a cough, a click)
BACKCHANNEL_TRANSCRIPT_WAIT_S = 3.0  # a backchannel's transcript arrives within this, or never
CATCH_UP_WAIT_S = 2.0  # the longest a barge-in waits for the VAD to analyze the caller's audio up to its threshold


class BackchannelFilter(FrameProcessor):
    """Between STT and the user aggregator: drops the transcript of speech the turn strategy called a
    backchannel ("okay" while the agent talked is listening; the same "okay" after a question is an
    answer, and goes through). The segmented STT transcribes each VAD segment in order, so the
    backchannel's transcript is the next one; a drop that finds none within a few seconds lapses."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._drops: list[float] = []  # monotonic deadlines of pending drops
        self.dropped: list[str] = []

    def drop_next(self) -> None:
        self._drops.append(time.monotonic() + BACKCHANNEL_TRANSCRIPT_WAIT_S)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            now = time.monotonic()
            self._drops = [d for d in self._drops if d > now]
            if self._drops:
                self._drops.pop(0)
                self.dropped.append(frame.text)
                return
        await self.push_frame(frame, direction)


class BackchannelAwareTurnStart(BaseUserTurnStartStrategy):
    def __init__(
        self,
        *,
        hold: Callable[[], None],
        release: Callable[[], None],
        on_backchannel: Callable[[], None] | None = None,
        min_barge_in_s: float = DEFAULT_MIN_BARGE_IN_S,
        timeline: HeardTimeline | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._hold, self._release, self._on_backchannel = hold, release, on_backchannel
        self.min_barge_in_s = min_barge_in_s
        self._timeline = timeline  # the VAD's progress through the caller's audio (without it: wall-clock time)
        self.bot_speaking = False
        self.backchannels = 0  # speech while the agent talked that was too short to take the floor
        self.barge_ins = 0
        self.resumed = 0  # speech soon after the caller's own turn ended that took the floor from the agent at once
        # when the audio of the VAD's stop that ended the caller's turn arrived (the agent was silent): a busy
        # pipeline's VAD decides late, and the pause between its decisions would seem longer than the caller's
        self._stopped_at: float | None = None
        self._pending: asyncio.Task[None] | None = None
        self._early: asyncio.Task[None] | None = None  # an early hold awaiting the VAD's verdict
        self.early_holds = 0

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        if isinstance(frame, BotStartedSpeakingFrame):
            self.bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.bot_speaking = False
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            await self._cancel_early()  # confirmed: what follows decides
            stopped, self._stopped_at = self._stopped_at, None
            resumed = stopped is not None and heard_at(frame) - stopped <= RESUMED_WITHIN_S
            if not self.bot_speaking or resumed:
                self.resumed += self.bot_speaking
                await self.trigger_user_turn_started()
                return ProcessFrameResult.STOP
            await self._cancel_pending()
            self._hold()
            self._pending = self.task_manager.create_task(self._sustained(heard_at(frame)), "barge-in-wait")
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            # Only a pause while the agent was silent can have ended the caller's turn (not a backchannel's end)
            self._stopped_at = None if self.bot_speaking else heard_at(frame)
            if self._pending is not None:  # still timing it, or done having seen this stop coming: a backchannel
                self.backchannels += 1
                await self._cancel_pending()
                self._release()
                if self._on_backchannel is not None:
                    self._on_backchannel()  # its transcript, still to come, is not a turn
        return ProcessFrameResult.CONTINUE

    def early_speech(self) -> None:
        """The first sign of the caller's speech: hold the agent's audio now if it is talking."""
        if not self.bot_speaking or self._pending is not None or self._early is not None:
            return
        self.early_holds += 1
        self._hold()
        self._early = self.task_manager.create_task(self._early_lapse(), "early-hold")

    async def _early_lapse(self) -> None:
        await asyncio.sleep(EARLY_HOLD_S)
        self._early = None
        if self._pending is None:
            self._release()  # the VAD never confirmed speech: not a barge-in after all

    async def _cancel_early(self) -> None:
        task, self._early = self._early, None
        if task is not None and not task.done():
            await self.task_manager.cancel_task(task)

    async def _sustained(self, since: float) -> None:
        """A barge-in, unless the VAD hears the speech that started at `since` (arrival time) stop within
        `min_barge_in_s` of it; then this returns, and the stop on its way calls it a backchannel."""
        threshold = since + self.min_barge_in_s
        await asyncio.sleep(max(0.0, threshold - time.monotonic()))
        timeline = self._timeline
        if timeline is not None:
            await timeline.until_analyzed(threshold, CATCH_UP_WAIT_S)
            if timeline.stopped_within(since, threshold):
                return
        self._pending = None
        self.barge_ins += 1
        await self.trigger_user_turn_started()  # pipecat interrupts: the held audio is cleared

    async def _cancel_pending(self) -> None:
        task, self._pending = self._pending, None
        if task is not None and not task.done():
            await self.task_manager.cancel_task(task)

    async def cleanup(self) -> None:
        await self._cancel_early()
        await self._cancel_pending()
        await super().cleanup()  # type: ignore[no-untyped-call]
