"""A pipecat transport over any `AudioLeg` (a SIP call, later WebRTC).

`LegTransport(leg).input()` reads the leg: each 20 ms frame is resampled (soxr, streaming) from the
leg's rate to the pipeline's (16 kHz) and pushed as `InputAudioRawFrame`, carrying when it was read
(`ARRIVED_AT` in its metadata, monotonic seconds: the caller's timeline, which processors behind a busy
queue see late); each digit becomes an `InputDTMFFrame`; when the leg ends, a `CancelWorkerFrame` (or
`EndWorkerFrame`) goes upstream so the pipeline worker stops the pipeline. `LegTransport(leg).output()` is
pipecat's `BaseOutputTransport` with the leg's rate as its output rate, so pipecat's media sender resamples
TTS audio and cuts it into 20 ms chunks; `write_audio_frame` paces them into the leg, keeping at most
`lead_ms` queued there, so pipecat's bot-speaking state and the text it releases downstream follow what is
really playing.

Interruptions (STYLE rules 7 and 8). On `InterruptionFrame` the output transport, before pipecat drains
its own queue: drops any chunk still on its way into the leg, calls `leg.clear_buffer()` - unless audio
written as uninterruptible (`frame.interruptible = False`) is still playing, which is never cut - and
reads `leg.played_ms` into the `PlaybackTracker` to learn what of the reply the caller heard. That
`Heard` is kept as `output.last_heard` and passed to the `on_playback_interrupted` event handler, so the
runtime can truncate the assistant message to it. Uninterruptible frames (EndFrame, function results)
are left to pipecat, which keeps them through an interruption.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol, TypeGuard

import numpy as np
import soxr
from loguru import logger
from numpy.typing import NDArray
from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames.frames import (
    AggregatedTextFrame,
    CancelFrame,
    CancelWorkerFrame,
    EndFrame,
    EndWorkerFrame,
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    OutputAudioRawFrame,
    StartFrame,
    TTSStartedFrame,
    TTSTextFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from pipeline.voice.leg import AudioLeg
from pipeline.voice.playback import Heard, PlaybackTracker

PIPELINE_SAMPLE_RATE = 16000
ARRIVED_AT = "flowyte.arrived_at"  # an input audio frame's metadata: when it was read from the leg (monotonic)
EndMode = Literal["cancel", "end"]


class Resampler(Protocol):
    """Streaming int16 mono resampling, one call per frame, state kept between calls."""

    def __call__(self, pcm: NDArray[np.int16]) -> NDArray[np.int16]: ...


ResamplerFactory = Callable[[int, int], Resampler]


class StreamResampler:
    """Streaming int16 mono resampler over soxr (filter state kept between frames: no clicks at edges).

    soxr works in blocks: fed 20 ms frames it answers in ~100 ms bursts (HQ, 8 -> 16 kHz), which delays the
    caller's audio by up to 100 ms. A runtime with a sample-exact streaming resampler (the telephony edge has
    one) passes it as `LegTransport(resampler=...)` instead.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")

    def __call__(self, pcm: NDArray[np.int16]) -> NDArray[np.int16]:
        if self.in_rate == self.out_rate:
            return pcm
        out: NDArray[np.int16] = self._stream.resample_chunk(np.ascontiguousarray(pcm, dtype=np.int16))
        return out

    def reset(self) -> None:
        self._stream.clear()


def leg_transport_params(leg: AudioLeg, *, pipeline_sample_rate: int = PIPELINE_SAMPLE_RATE) -> TransportParams:
    """Pipecat parameters for a phone leg: audio both ways, 20 ms output chunks, no end-of-call silence."""
    return TransportParams(
        audio_in_enabled=True,
        audio_in_sample_rate=pipeline_sample_rate,
        audio_out_enabled=True,
        audio_out_sample_rate=leg.sample_rate,
        audio_out_10ms_chunks=2,
        audio_out_end_silence_secs=0,
    )


class LegInputTransport(BaseInputTransport):
    """Caller audio and digits into the pipeline; ends the pipeline when the leg ends."""

    def __init__(
        self,
        leg: AudioLeg,
        params: TransportParams,
        *,
        end_with: EndMode = "cancel",
        resampler: ResamplerFactory = StreamResampler,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self._leg = leg
        self._end_with: EndMode = end_with
        self._make_resampler = resampler
        self._resampler: Resampler | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.read_at: float | None = None  # when the caller's latest audio frame was read (monotonic)

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if self._tasks:
            return
        self._resampler = self._make_resampler(self._leg.sample_rate, self.sample_rate)
        await self.set_transport_ready(frame)
        self._tasks = [
            self.create_task(self._read_audio(), name="leg-audio-in"),
            self.create_task(self._read_digits(), name="leg-dtmf-in"),
            self.create_task(self._watch_end(), name="leg-end"),
        ]

    async def stop(self, frame: EndFrame) -> None:
        await super().stop(frame)
        await self._cancel_tasks()

    async def cancel(self, frame: CancelFrame) -> None:
        await super().cancel(frame)
        await self._cancel_tasks()

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        await self._cancel_tasks()

    async def _cancel_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                await self.cancel_task(task)

    async def _read_audio(self) -> None:
        resample = self._resampler
        assert resample is not None
        async for pcm in self._leg.audio():
            audio = resample(pcm)
            if len(audio):
                frame = InputAudioRawFrame(audio=audio.tobytes(), sample_rate=self.sample_rate, num_channels=1)
                frame.metadata[ARRIVED_AT] = self.read_at = time.monotonic()
                await self.push_audio_frame(frame)

    async def _read_digits(self) -> None:
        async for digit in self._leg.dtmf():
            try:
                button = KeypadEntry(digit.digit)
            except ValueError:  # A-D have no KeypadEntry
                logger.debug(f"{self}: ignoring digit {digit.digit!r}")
                continue
            await self.push_frame(InputDTMFFrame(button=button))

    async def _watch_end(self) -> None:
        reason = await self._leg.wait_ended()
        logger.debug(f"{self}: leg ended ({reason}), ending the pipeline ({self._end_with})")
        end: Frame = CancelWorkerFrame(reason=reason) if self._end_with == "cancel" else EndWorkerFrame(reason=reason)
        await self.push_frame(end, FrameDirection.UPSTREAM)


class LegOutputTransport(BaseOutputTransport):
    """Agent audio into the leg, paced, with barge-in and playback tracking.

    Event handlers: ``on_playback_interrupted(transport, heard: Heard)`` after a barge-in cut a reply;
    ``on_reply_audio(transport)`` when the first audio of an LLM reply goes into the leg.
    """

    def __init__(
        self,
        leg: AudioLeg,
        params: TransportParams,
        *,
        lead_ms: int = 120,
        tracker: PlaybackTracker | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self._leg = leg
        self._lead_ms = lead_ms
        self.tracker = tracker or PlaybackTracker()
        self.last_heard: Heard | None = None
        self._resampler: StreamResampler | None = None  # only for audio not already at the leg rate
        self._epoch = 0  # bumped by each interruption: a write that waited across one is dropped
        self._flushing = False  # between an interruption and pipecat draining its queue
        self._uninterruptible_until_ms = 0.0  # leg position until which audio must not be cut
        self._in_reply = False
        self._incoming_text: int | None = None  # the text chunk whose audio is arriving now
        self._released = asyncio.Event()  # cleared while playback is held (a possible barge-in)
        self._released.set()
        # The first audio of a reply: frames reach process_frame in pipeline order (the reply's start before its
        # audio) but are written later, re-chunked, by pipecat's sender; so count milliseconds both ways.
        self._received_ms = 0.0  # audio handed to this transport
        self._written_ms = 0.0  # audio written into the leg (or dropped by a barge-in)
        self._reply_marks: list[float] = []  # received_ms at each reply start whose audio has not begun
        self._register_event_handler("on_playback_interrupted")
        self._register_event_handler("on_reply_audio")

    def hold(self) -> None:
        """Stop playback where it is without losing anything: the caller may be barging in, or may only be
        saying "mm-hmm". `release()` goes on from the same place; an interruption clears instead."""
        self._released.clear()
        self._leg.pause_output(True)

    def release(self) -> None:
        self._leg.pause_output(False)
        self._released.set()

    @property
    def held(self) -> bool:
        return not self._released.is_set()

    async def start(self, frame: StartFrame) -> None:
        await super().start(frame)
        if not self._media_senders:
            await self.set_transport_ready(frame)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if _is_spoken_text(frame):
            self._incoming_text = frame.id
        elif isinstance(frame, OutputAudioRawFrame) and frame.sample_rate:
            samples = len(frame.audio) // (2 * max(1, frame.num_channels))
            self._received_ms += 1000.0 * samples / frame.sample_rate
            if self._incoming_text is not None:
                self.tracker.expect(self._incoming_text, 1000.0 * samples / frame.sample_rate)
        elif isinstance(frame, LLMFullResponseStartFrame):
            self._reply_marks.append(self._received_ms)
        if isinstance(frame, InterruptionFrame):
            self._incoming_text = None
            self._received_ms = self._written_ms = 0.0
            self._reply_marks.clear()
            await self._interrupt()
            try:
                await super().process_frame(frame, direction)
            finally:
                self._flushing = False
            return
        await super().process_frame(frame, direction)

    async def _interrupt(self) -> None:
        self._epoch += 1
        self._flushing = True
        played = self._leg.played_ms
        if played >= self._uninterruptible_until_ms:
            dropped = self._leg.clear_buffer()
            logger.debug(f"{self}: barge-in at {played} ms, cleared {dropped} queued frames")
        self.release()  # what was held is gone; what comes next plays
        if not self.tracker.empty:
            heard = self.tracker.heard(played)
            self.last_heard = heard
            self.tracker.reset()
            await self._call_event_handler("on_playback_interrupted", heard)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        if self._leg.ended or (self._flushing and frame.interruptible):
            return False
        pcm = np.frombuffer(frame.audio, dtype=np.int16)
        if frame.num_channels > 1:
            pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
        if frame.sample_rate != self._leg.sample_rate:
            if self._resampler is None or self._resampler.in_rate != frame.sample_rate:
                self._resampler = StreamResampler(frame.sample_rate, self._leg.sample_rate)
            pcm = self._resampler(pcm)
        duration_ms = 1000.0 * len(pcm) / self._leg.sample_rate
        epoch = self._epoch
        await self._released.wait()  # held: the next chunk waits with the rest
        # Deadline pacing: wait until the leg's queue has drained to `lead_ms` (one computed sleep).
        excess_ms = self._leg.buffered_ms + duration_ms - self._lead_ms
        if excess_ms > 0:
            await asyncio.sleep(excess_ms / 1000.0)
        if frame.interruptible and (epoch != self._epoch or self._flushing):
            return False  # a barge-in happened while this chunk waited
        position = float(self._leg.played_ms + self._leg.buffered_ms)
        self._leg.write(pcm)
        self.tracker.add_audio(position, duration_ms)
        self._written_ms += duration_ms
        if self._reply_marks and self._written_ms > self._reply_marks[0]:  # a reply's first audio is going out
            del self._reply_marks[0]
            await self._call_event_handler("on_reply_audio")
        if not frame.interruptible:
            self._uninterruptible_until_ms = max(self._uninterruptible_until_ms, position + duration_ms)
        return True

    async def write_transport_frame(self, frame: Frame) -> None:
        """Frames the media sender hands over in playback order: they mark where text and replies begin."""
        if isinstance(frame, LLMFullResponseStartFrame):
            self.tracker.reset()
            self._in_reply = True
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._in_reply = False
        elif isinstance(frame, TTSStartedFrame) and not self._in_reply:
            self.tracker.reset()  # a TTSSpeakFrame outside any LLM reply (a greeting, a filler)
        elif _is_spoken_text(frame):
            self.tracker.add_text(frame.text, key=frame.id)


def _is_spoken_text(frame: Frame) -> TypeGuard[AggregatedTextFrame]:
    """The sentence a TTS service announces before synthesizing it (its `TTSTextFrame` follows the audio)."""
    return isinstance(frame, AggregatedTextFrame) and not isinstance(frame, TTSTextFrame) and frame.will_be_spoken


class LegTransport(BaseTransport):
    """Input and output processors over one `AudioLeg`."""

    def __init__(
        self,
        leg: AudioLeg,
        *,
        pipeline_sample_rate: int = PIPELINE_SAMPLE_RATE,
        lead_ms: int = 120,
        end_with: EndMode = "cancel",
        resampler: ResamplerFactory = StreamResampler,
        params: TransportParams | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name)
        self.leg = leg
        self._params = params or leg_transport_params(leg, pipeline_sample_rate=pipeline_sample_rate)
        self._input = LegInputTransport(
            leg, self._params, end_with=end_with, resampler=resampler, name=f"{self.name}#input"
        )
        self._output = LegOutputTransport(leg, self._params, lead_ms=lead_ms, name=f"{self.name}#output")

    def input(self) -> LegInputTransport:
        return self._input

    def output(self) -> LegOutputTransport:
        return self._output

    @property
    def tracker(self) -> PlaybackTracker:
        return self._output.tracker


__all__ = [
    "PIPELINE_SAMPLE_RATE",
    "EndMode",
    "LegInputTransport",
    "LegOutputTransport",
    "LegTransport",
    "Resampler",
    "ResamplerFactory",
    "StreamResampler",
    "leg_transport_params",
]
