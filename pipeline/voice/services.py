"""pipecat speech services over our in-process models: `WhisperSTTService` and `PiperTTSService`.

`WhisperSTTService` is a `SegmentedSTTService`: pipecat buffers the caller's audio (with ~1 s of pre-roll)
between `VADUserStartedSpeakingFrame` and `VADUserStoppedSpeakingFrame`, pads it with
`trailing_silence_secs` of silence and queues it; one pipecat task hands each segment, in order, to
`run_stt`, which transcribes it on the shared Whisper worker thread (`WhisperSTT.transcribe_async`) and
yields at most one `TranscriptionFrame`. Segments arrive as raw 16-bit PCM (`wants_wav_segments` is False);
a WAV container is decoded too. A segment whose speech level is below `silence_dbfs` is never transcribed,
and known silence hallucinations ("you", "Thank you.") are dropped when the segment is quiet
(below `quiet_dbfs`). Every segment leaves a `SegmentTiming` in `timings` (VAD stop → transcript ready).
A transcript is final only when no later speech is being spoken or queued behind it, and once the last queued
segment is done (words or none) a `SpeechTranscribedFrame` says so: the turn strategy
(`turn_analyzer.TranscriptAwareTurnStop`) never ends a turn on a transcript with more of the caller's words
still on their way.

Speculation. The VAD calls a pause only after `stop_secs` (200 ms) of silence, and the transcript is what
the turn waits for. So when the caller has been quiet for ~64 ms (`speculate()`, from the VAD's
`on_early_silence`), what they said so far is transcribed at once, as the segment would be if the pause
lasted. When the segment comes and holds exactly that speech and nothing but quiet after it, that transcript
is used (often already done); when the caller went on talking, it is dropped (one wasted transcription on the
shared Whisper thread, done before the real segment is normally due). A speculation's words, when they are worth
a turn, are reported at once (`on_speculated`, on the event loop): the segment's transcript will say the same
if the pause lasts, but only once the VAD calls it, ~0.1-0.2 s later, and the call has the model evaluate the
turn's prompt meanwhile (`AgentBrain.prepare`).

`PiperTTSService` is a `TTSService` with pipecat 1.14's HTTP-style contract (as pipecat's own Piper
service): `push_start_frame=True` (the base opens the audio context and queues `TTSStartedFrame` before
`run_tts`), `push_stop_frames=True` (the base queues `TTSStoppedFrame` when the context ends), sentence
aggregation of LLM text (`TextAggregationMode.SENTENCE`, so `run_tts` gets one sentence, or one whole
`TTSSpeakFrame`; but a reply's first chunk ends at its first clause, see clauses.py), and `run_tts` only
yields `TTSAudioRawFrame`s (40 ms pieces at the output rate) and `ErrorFrame`s into the audio context.
A reply's first chunk is synthesized as urgent work (the caller waits for it; pipeline/cores.py), so a local
LLM holds back its next tokens until that chunk's audio is out.

Interruption. `run_tts` runs in the processor's frame task, which pipecat cancels on `InterruptionFrame`
and awaits before it passes the interruption on. Piper cannot stop inside a sentence, so synthesis runs in
a separate task and `run_tts` only reads its output: cancelling `run_tts` cancels that task without
waiting, which stops Piper after the sentence in progress (no later sentence is synthesized), and the
interruption goes on at once. The unfinished synthesis is awaited by the next `run_tts` (it holds the one
Piper worker thread anyway) or at cleanup, never left behind. Each call leaves a `SynthesisTiming`.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
import wave
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr
from numpy.typing import NDArray
from pipecat.frames.frames import (
    DataFrame,
    ErrorFrame,
    Frame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.services.tts_service import TextAggregationMode, TTSService
from pipecat.transcriptions.language import Language
from pipecat.utils.time import time_now_iso8601

from pipeline.speech.levels import leading_silence, window_rms
from pipeline.speech.stt import SAMPLE_RATE as WHISPER_RATE
from pipeline.speech.stt import Transcript, WhisperSTT
from pipeline.speech.tts import PiperTTS, SynthesisStats
from pipeline.voice.clauses import FirstClauseAggregator

Clock = Callable[[], float]

# Whisper's usual inventions on silence or noise; dropped only when the segment is quiet.
HALLUCINATIONS = frozenset(
    {
        "you",
        "thank you",
        "thanks",
        "thank you very much",
        "thanks for watching",
        "thank you for watching",
        "bye",
        "so",
        "okay",
    }
)
_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*|♪+")


# --- pure helpers -----------------------------------------------------------------------------------
def segment_pcm(audio: bytes, sample_rate: int) -> NDArray[np.int16]:
    """A segment from `run_stt` (raw 16-bit mono PCM at `sample_rate`, or a WAV file) as int16 at 16 kHz."""
    rate = sample_rate
    if audio[:4] == b"RIFF" and audio[8:12] == b"WAVE":
        with wave.open(io.BytesIO(audio), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise ValueError("expected 16-bit mono WAV")
            rate = wav.getframerate()
            audio = wav.readframes(wav.getnframes())
    pcm = np.frombuffer(audio[: len(audio) // 2 * 2], dtype="<i2").astype(np.int16)
    if rate != WHISPER_RATE and len(pcm):
        pcm = np.asarray(soxr.resample(pcm, rate, WHISPER_RATE, quality="HQ"), dtype=np.int16)
    return pcm


def speech_level_dbfs(pcm: NDArray[np.int16], rate: int = WHISPER_RATE, window_ms: int = 20) -> float:
    """Loudness of the speech in a segment: the 90th percentile of its 20 ms RMS levels, in dBFS.

    A percentile, not the mean, so pre-roll and the trailing pad do not dilute a short word; not the
    maximum, so one click does not count as speech. Digital silence is -120 dBFS.
    """
    levels = window_rms(pcm, rate * window_ms // 1000)
    if len(levels) == 0:
        return -120.0
    rms = float(np.percentile(levels, 90))
    return max(-120.0, 20.0 * float(np.log10(max(rms, 1e-6))))


def spoken_words(text: str) -> str:
    """`text` without annotations ("[BLANK_AUDIO]", "(music)", "♪") and punctuation, lower case."""
    bare = _ANNOTATION.sub(" ", text.lower())
    return " ".join(re.sub(r"[^\w']+", " ", bare).split())


def _language(code: str | None) -> Language | None:
    if not code:
        return None
    try:
        return Language(code)
    except ValueError:
        return None


# --- speech to text ---------------------------------------------------------------------------------
@dataclass
class SpeechTranscribedFrame(DataFrame):
    """All the caller's speech so far is transcribed: the last queued segment is done, none is being spoken.

    It follows that segment's `TranscriptionFrame` (if it had words) in order, like any data frame."""


@dataclass(frozen=True)
class SegmentTiming:
    """One VAD segment through `WhisperSTTService` (seconds)."""

    audio_s: float  # segment length, pre-roll and trailing pad included
    level_dbfs: float  # speech level of the segment (`speech_level_dbfs`)
    transcribe_s: float  # Whisper inference (0 when the segment was too quiet to transcribe)
    ready_s: float  # VAD stop -> transcript ready: waiting for earlier segments, the worker, inference
    text: str  # what Whisper heard ("" when not transcribed)
    kept: bool  # whether a TranscriptionFrame was pushed
    speculated: bool = False  # the transcript was started at the start of the pause (`speculate`)


@dataclass
class _Speculation:
    """A transcription started at the start of a pause: of `audio`, the segment buffer at that moment."""

    audio: bytes
    level_dbfs: float
    task: asyncio.Future[Transcript]
    dropped: bool = False  # its segment held more speech: the caller went on


class InOrderSTTService(SegmentedSTTService):
    """A `SegmentedSTTService` whose transcripts tell the turn strategy whether more of the caller's words are
    coming: one is final only when no later speech is being spoken or queued behind it, and a
    `SpeechTranscribedFrame` follows the last queued segment. Subclasses transcribe one segment in
    `transcribe_segment`."""

    def __init__(self, *, clock: Clock = time.perf_counter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._clock = clock
        self._stops: deque[float] = deque()  # VAD stop times of the segments queued for `run_stt`

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        if isinstance(frame, VADUserStoppedSpeakingFrame) and self.is_usable:
            self._stops.append(self._clock())  # the base queues exactly one segment for it
        await super().process_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: FrameDirection = FrameDirection.DOWNSTREAM) -> None:
        """The base marks every transcript final: one segment, one transcript. But the turn strategy takes a
        final transcript to cover all the speech so far, and ends the turn on it. When the caller went on
        talking after a short pause ("Hello, | who makes your bread?"), the next segment is still being spoken
        or still queued here: its words would miss the turn. So a transcript is final only when no later
        speech is being spoken or waits behind it."""
        if isinstance(frame, TranscriptionFrame) and (self._stops or self._user_speaking):
            await STTService.push_frame(self, frame, direction)  # past SegmentedSTTService's marking
            return
        await super().push_frame(frame, direction)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        stopped = self._stops.popleft() if self._stops else self._clock()
        try:
            frame = await self.transcribe_segment(audio, stopped)
        except Exception as error:  # as the base would, but the turn strategy still hears that nothing is coming
            await self.push_error(f"{self}: transcription failed: {error}", exception=error)
            frame = None
        if frame is not None:
            yield frame
        if not (self._stops or self._user_speaking):
            yield SpeechTranscribedFrame()

    async def transcribe_segment(self, audio: bytes, stopped: float) -> TranscriptionFrame | None:
        """The transcript of one segment (the VAD stopped at `stopped`, on `clock`), or None: no words."""
        raise NotImplementedError


class WhisperSTTService(InOrderSTTService):
    """Transcribes each VAD segment with our faster-whisper `WhisperSTT` (injected, shared per process)."""

    def __init__(
        self,
        stt: WhisperSTT,
        language: str | None,
        *,
        silence_dbfs: float = -50.0,
        quiet_dbfs: float = -38.0,
        trailing_silence_secs: float = 0.5,
        clock: Clock = time.perf_counter,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("settings", STTSettings(model=stt.name, language=None))
        # The turn strategy waits this long after the VAD stop for the transcript before giving up on it (and then
        # the turn only ends at the aggregator's 5 s timeout): tiny.en takes ~0.3-0.8 s on two idle cores, but
        # 2 s and more when Piper and the LLM share them, so the bound is generous.
        kwargs.setdefault("ttfs_p99_latency", 3.0)
        super().__init__(trailing_silence_secs=trailing_silence_secs, clock=clock, **kwargs)
        self._stt = stt
        self._language = language
        self._silence_dbfs = silence_dbfs
        self._quiet_dbfs = quiet_dbfs
        self._speculation: _Speculation | None = None
        self.on_speculated: Callable[[str], None] | None = None  # a speculation's words worth a turn
        self.speculations = 0  # started, in all
        self.timings: list[SegmentTiming] = []

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def _handle_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        """The base sends the buffer off as a segment and empties it. Its last `stop_secs` are what the VAD
        waited through before calling the pause, so when the pause was barely longer than that, they hold the
        onset of the caller's next words ("Hello, | who makes..."): without them the next segment begins
        mid-word and Whisper hears "make your bread". They stay in the buffer as the next segment's pre-roll
        (the base keeps at most 1 s of it, so a long pause drops them)."""
        tail = bytes(self._audio_buffer[-2 * round(frame.stop_secs * self.sample_rate) :]) if frame.stop_secs else b""
        await super()._handle_user_stopped_speaking(frame)  # type: ignore[no-untyped-call]
        self._audio_buffer[:0] = tail

    def speculate(self) -> None:
        """The caller went quiet mid-turn: transcribe what they said so far now, in case the pause lasts."""
        if not self._user_speaking or self._stops or not self.is_usable:
            return  # no speech being buffered, or a segment already waiting for the Whisper thread
        if self._speculation is not None and not self._speculation.task.done():
            return  # one at a time
        audio = bytes(self._audio_buffer)
        pcm = segment_pcm(audio + self._trailing_silence(), self.sample_rate)
        level = speech_level_dbfs(pcm)
        if level < self._silence_dbfs:
            return
        self.speculations += 1
        task = asyncio.ensure_future(self._stt.transcribe_async(pcm, self._language))
        task.add_done_callback(_consume_exception)  # a dropped speculation's failure is not an error
        speculation = self._speculation = _Speculation(audio, level, task)
        task.add_done_callback(lambda _: self._report(speculation))

    def _report(self, speculation: _Speculation) -> None:
        """A speculation is done: its words go to `on_speculated` if the caller is still quiet."""
        task = speculation.task
        if self.on_speculated is None or task.cancelled() or task.exception() is not None:
            return
        if speculation.dropped or self._speculation not in (speculation, None):
            return  # the caller went on talking, or a later speculation is under way
        text = task.result().text.strip()
        if self.keeps(text, speculation.level_dbfs):
            self.on_speculated(text)

    def _speculated(self, audio: bytes) -> _Speculation | None:
        """The speculation that transcribed this segment's speech: the segment is the speculated audio plus
        only quiet (the rest of the pause, and the trailing pad), 20 dB and more under the speech."""
        speculation, self._speculation = self._speculation, None
        if speculation is None:
            return None
        if not audio.startswith(speculation.audio) or speculation.task.cancelled():
            speculation.dropped = True
            return None
        after = segment_pcm(audio[len(speculation.audio) :], self.sample_rate)
        quiet = speech_level_dbfs(after) < max(self._silence_dbfs, speculation.level_dbfs - 20.0)
        speculation.dropped = not quiet
        return speculation if quiet else None

    def keeps(self, text: str, level_dbfs: float) -> bool:
        """Whether a transcript is speech worth a turn: words, and not a hallucination on quiet audio."""
        words = spoken_words(text)
        if not words:
            return False
        return not (level_dbfs < self._quiet_dbfs and words in HALLUCINATIONS)

    async def transcribe_segment(self, audio: bytes, stopped: float) -> TranscriptionFrame | None:
        """The segment's transcript, when it holds words worth a turn; its `SegmentTiming` either way."""
        pcm = segment_pcm(audio, self.sample_rate)
        level = speech_level_dbfs(pcm)
        audio_s = len(pcm) / WHISPER_RATE
        if level < self._silence_dbfs:
            self.timings.append(SegmentTiming(audio_s, level, 0.0, self._clock() - stopped, "", False))
            return None
        await self.start_processing_metrics()
        speculation = self._speculated(audio)
        transcript: Transcript | None = None
        if speculation is not None:
            try:
                transcript = await speculation.task
            except Exception:  # transcribed again below, and failing there is reported
                speculation = None
        if transcript is None:
            transcript = await self._stt.transcribe_async(pcm, self._language)
        await self.stop_processing_metrics()
        text = transcript.text.strip()
        kept = self.keeps(text, level)
        ready = self._clock() - stopped
        timing = SegmentTiming(audio_s, level, transcript.elapsed_s, ready, text, kept, speculation is not None)
        self.timings.append(timing)
        if not kept:
            return None
        return TranscriptionFrame(text, self._user_id, time_now_iso8601(), _language(transcript.language))


def _consume_exception(task: asyncio.Future[Transcript]) -> None:
    if not task.cancelled():
        task.exception()


# --- text to speech ---------------------------------------------------------------------------------
@dataclass
class SynthesisTiming:
    """One `run_tts` call (a sentence of a reply, or a whole `TTSSpeakFrame`); seconds from the call.

    A reply's time to first audio is `first_audio_s` of the first entry with its `context_id`.
    """

    context_id: str
    text: str
    first_audio_s: float | None = None  # first audio yielded (includes waiting for an interrupted synthesis)
    elapsed_s: float = 0.0  # until the last audio, or the interruption
    audio_s: float = 0.0  # audio yielded
    interrupted: bool = False


_Chunk = NDArray[np.int16] | BaseException | None


class PiperTTSService(TTSService):
    """Speaks with our in-process `PiperTTS` (injected; one voice and worker thread per process)."""

    def __init__(
        self,
        tts: PiperTTS,
        *,
        chunk_ms: int = 40,
        voice: str = "en_US-joe-medium",
        clock: Clock = time.perf_counter,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("settings", TTSSettings(model=None, voice=voice, language=None))
        kwargs.setdefault("text_aggregation_mode", TextAggregationMode.SENTENCE)
        super().__init__(push_start_frame=True, push_stop_frames=True, **kwargs)
        # A reply's first clause is spoken on its own (clauses.py); pipecat has no parameter for the aggregator.
        self._text_aggregator = FirstClauseAggregator(
            aggregation_type=self._text_aggregator.aggregation_type, language=self._text_aggregator.language
        )
        self._tts = tts
        self._chunk_ms = chunk_ms
        self._clock = clock
        self._synthesis: asyncio.Task[None] | None = None
        self.timings: list[SynthesisTiming] = []

    def can_generate_metrics(self) -> bool:
        return True

    async def _synthesize(self, text: str, queue: asyncio.Queue[_Chunk], *, urgent: bool) -> None:
        """Piper's chunks (one per sentence) into `queue`, then None; cancelled, stops after the sentence."""
        try:
            async for pcm in self._tts.stream(text, rate=self.sample_rate, stats=SynthesisStats(), urgent=urgent):
                queue.put_nowait(pcm)
        except Exception as exc:  # handed to run_tts
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(None)

    async def _settle(self) -> None:
        """Wait for a cancelled synthesis to finish its sentence (it holds the Piper worker thread)."""
        if self._synthesis is not None:
            await asyncio.wait([self._synthesis])
            self._synthesis = None

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        start = self._clock()
        first_chunk = not self.timings or self.timings[-1].context_id != context_id  # the caller waits for it
        timing = SynthesisTiming(context_id, text)
        self.timings.append(timing)
        await self._settle()
        await self.start_tts_usage_metrics(text)
        queue: asyncio.Queue[_Chunk] = asyncio.Queue()  # bounded by the text: one entry per sentence
        self._synthesis = self.create_task(self._synthesize(text, queue, urgent=first_chunk), "piper")
        step = 2 * max(1, self.sample_rate * self._chunk_ms // 1000)
        finished = False
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    yield ErrorFrame(error=f"Piper synthesis failed: {item}")
                    continue
                if timing.first_audio_s is None:
                    timing.first_audio_s = self._clock() - start
                    await self.stop_ttfb_metrics()
                if first_chunk and timing.audio_s == 0:
                    # Piper opens every sentence with 50 ms or more of near-silence (up to ~190 ms seen; it varies
                    # run to run): sent first, it is dead air before the reply (later sentences keep it as a pause).
                    item = item[leading_silence(item, self.sample_rate) :]
                audio = item.tobytes()
                timing.audio_s += len(item) / self.sample_rate
                for i in range(0, len(audio), step):
                    yield TTSAudioRawFrame(audio[i : i + step], self.sample_rate, 1, context_id=context_id)
            finished = True
            await self._settle()  # already past its last chunk
        finally:
            timing.elapsed_s = self._clock() - start
            if not finished:  # cancelled (interruption) or closed early
                timing.interrupted = True
                if self._synthesis is not None:
                    self._synthesis.cancel()  # no wait: awaited by the next run_tts or cleanup

    async def cleanup(self) -> None:
        await self._settle()
        await super().cleanup()  # type: ignore[no-untyped-call]
