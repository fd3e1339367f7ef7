"""When did the caller's audio that made the VAD decide reach the call?

The turn-taking asks questions about the caller's timing: did they go on talking within `RESUMED_WITHIN_S` of
the pause that ended their turn ("Can I talk to a person," - pause - "please?")? pipecat's VAD frames carry the
wall-clock time the VAD decided, and a processor sees each when it arrives; both lag the caller's audio when the
pipeline is busy (seen in CI: the user aggregator, which runs the VAD, fell behind the audio during the 0.5 s
pause and decided the speech after it 1.5 s after the stop, so the caller going on was taken for a barge-in).
Two such times measure the load as much as the caller.

So the VAD's frames are stamped with when the audio frame that completed the VAD's transition was read from the
leg (`ARRIVED_AT`, set by the transport): the caller's timeline, whatever queue the frame then waited in. It is
the arrival time, not a count of samples, because a leg need not send audio while the caller is quiet (a test
leg; a browser's discontinuous transmission): the time between frames is the caller's too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregator, LLMUserAggregatorParams
from pipecat.processors.frame_processor import FrameCallback, FrameDirection

from pipeline.voice.transport import ARRIVED_AT

ANALYZED_POLL_S = 0.02  # one frame of the caller's audio
HEARD_AT = "flowyte.heard_at"  # a VAD frame's metadata: when the audio it was decided on arrived (monotonic)


def heard_at(frame: Frame) -> float:
    """When the audio a VAD frame was decided on arrived (monotonic seconds). A frame `HeardTimeUserAggregator` did
    not stamp (a pipeline without it) gives the time it is read: on the same clock, only later under load."""
    stamp = frame.metadata.get(HEARD_AT)
    return float(stamp) if stamp is not None else time.monotonic()


@dataclass
class HeardTimeline:
    """How far the VAD has got through the caller's audio, in arrival times (monotonic seconds), for those who
    must not decide ahead of it: the call waiting for it to catch up, the turn start timing a barge-in."""

    analyzed_until: float | None = None  # when the latest audio frame the VAD analyzed arrived
    last_stop: float | None = None  # when the audio of the latest stop the VAD decided arrived

    def analyzed(self, at: float) -> bool:
        """Whether the VAD has analyzed the caller's audio that arrived by `at`."""
        return self.analyzed_until is not None and self.analyzed_until >= at

    async def until_analyzed(self, at: float, within: float, gave_up: Callable[[], bool] = lambda: False) -> None:
        """Until the VAD has analyzed the caller's audio that arrived by `at`; at most `within` seconds, or until
        `gave_up()`. Polled: it moves on every 20 ms frame, and an event set for each would cost every call."""
        waited = 0.0
        while not self.analyzed(at) and waited < within and not gave_up():
            await asyncio.sleep(ANALYZED_POLL_S)
            waited += ANALYZED_POLL_S

    def stopped_within(self, start: float, end: float) -> bool:
        """Whether the VAD heard the caller stop in [start, end), its stop frame perhaps still on its way."""
        return self.last_stop is not None and start <= self.last_stop < end


class HeardTimeUserAggregator(LLMUserAggregator):
    """pipecat's user aggregator, stamping the VAD frames it makes with `HEARD_AT`.

    Its VAD controller analyzes each audio frame inside `process_frame`, and queues a VAD frame into the
    aggregator in the same call when the analyzer reports a transition: the audio frame being processed then is
    the one that completed it. The VAD frame is processed (reaches the turn strategies and the rest of the
    pipeline) later, after any audio queued ahead of it."""

    def __init__(
        self,
        context: LLMContext,
        *,
        params: LLMUserAggregatorParams,
        timeline: HeardTimeline | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(context, params=params, **kwargs)
        self.timeline = timeline if timeline is not None else HeardTimeline()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, InputAudioRawFrame):
            self.timeline.analyzed_until = frame.metadata.get(ARRIVED_AT, time.monotonic())
        await super().process_frame(frame, direction)

    async def queue_frame(
        self,
        frame: Frame,
        direction: FrameDirection = FrameDirection.DOWNSTREAM,
        callback: FrameCallback | None = None,
    ) -> None:
        if isinstance(frame, (VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame)):
            # (the controller's stop after its audio idle timeout: when the last audio came, as it should be)
            analyzed = self.timeline.analyzed_until
            frame.metadata.setdefault(HEARD_AT, analyzed if analyzed is not None else time.monotonic())
            if isinstance(frame, VADUserStoppedSpeakingFrame):
                self.timeline.last_stop = heard_at(frame)
        await super().queue_frame(frame, direction, callback)
