"""The pipecat speech services over the real models: Whisper (tiny.en) and Piper (en_US-joe-medium).

Each service runs inside a real pipecat pipeline (PipelineWorker + WorkerRunner) in front of a collector;
caller speech is espeak-ng (tests/peers/speech.py) bracketed by VAD frames, and the TTS output is checked
by transcribing it back with Whisper. Each model loads once per module. Tests wait on the collector's
condition with bounded timeouts; nothing sleeps to poll.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
import wave
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from pipecat.frames.frames import (
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.workers.runner import WorkerRunner

from pipeline.speech.levels import leading_silence
from pipeline.speech.stt import WhisperSTT
from pipeline.speech.tts import PiperTTS, SynthesisStats
from pipeline.voice.clauses import FirstClauseAggregator
from pipeline.voice.services import (
    PiperTTSService,
    SpeechTranscribedFrame,
    WhisperSTTService,
    segment_pcm,
    speech_level_dbfs,
    spoken_words,
)
from tests.peers.speech import pad, speech_pcm
from tests.test_voice_transport import Collector

RATE = 16000
FRAME = 320  # 20 ms at 16 kHz
QUESTION = "What time do you open on Saturday?"
HOURS = "Our hours are nine to five."
LONG = (
    "Thanks for calling Riverside Dental. "
    "Our opening hours are nine to five on weekdays, and ten to two on Saturdays. "
    "We are closed on Sundays and on public holidays. "
    "If you would like to book an appointment, please stay on the line and I will find a time for you."
)
DIGITS = {"9": "nine", "5": "five", "10": "ten", "2": "two"}


def words(text: str) -> set[str]:
    return {DIGITS.get(w, w) for w in re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()}


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> WhisperSTT:
    return WhisperSTT("tiny.en", tmp_path_factory.mktemp("speech-data"), eager=True)


@pytest.fixture(scope="module")
def piper() -> PiperTTS:
    return PiperTTS()


class Run:
    """One pipeline (16 kHz in and out), run by pipecat's real worker and runner."""

    def __init__(self, processors: Sequence[FrameProcessor]) -> None:
        self.worker = PipelineWorker(
            Pipeline(list(processors)),
            params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE),
            cancel_on_idle_timeout=False,
            idle_timeout_secs=None,
        )
        self.started = asyncio.Event()
        self.worker.add_event_handler("on_pipeline_started", self._on_started)
        self.done: asyncio.Task[None] | None = None

    async def _on_started(self, *_: Any) -> None:
        self.started.set()

    async def __aenter__(self) -> Run:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        self.done = asyncio.create_task(runner.run())
        async with asyncio.timeout(5):
            await self.started.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.worker.cancel()
        assert self.done is not None
        async with asyncio.timeout(5):
            await self.done

    async def queue(self, *frames: Frame) -> None:
        await self.worker.queue_frames(list(frames))


def segment(pcm: NDArray[np.int16]) -> list[Frame]:
    """`pcm` as 20 ms input frames between the VAD's start and stop, as a VAD would bracket it."""
    audio = [InputAudioRawFrame(pcm[i : i + FRAME].tobytes(), RATE, 1) for i in range(0, len(pcm), FRAME)]
    return [VADUserStartedSpeakingFrame(), *audio, VADUserStoppedSpeakingFrame(stop_secs=0.3)]


def tts_audio(frames: Sequence[Frame]) -> NDArray[np.int16]:
    return np.frombuffer(b"".join(f.audio for f in frames if isinstance(f, TTSAudioRawFrame)), dtype=np.int16)


# --- pure helpers ------------------------------------------------------------------------------------
def test_segments_decode_from_pcm_or_wav_at_any_rate() -> None:
    tone = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.int16)  # 1 s at 8 kHz
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(tone.tobytes())
    from_pcm, from_wav = segment_pcm(tone.tobytes(), 8000), segment_pcm(out.getvalue(), 16000)
    assert abs(len(from_pcm) - RATE) <= 2 and np.array_equal(from_pcm, from_wav)
    assert speech_level_dbfs(from_pcm) == pytest.approx(-15.3, abs=0.5)  # 8000/32768 sine: -12.3 dB peak - 3
    assert speech_level_dbfs(np.zeros(RATE, np.int16)) == -120.0


def test_noise_only_and_quiet_hallucinations_are_dropped(whisper: WhisperSTT) -> None:
    stt = WhisperSTTService(whisper, "en")
    assert spoken_words(" [BLANK_AUDIO] ") == "" and spoken_words("(music) ♪♪") == ""
    assert not stt.keeps("[BLANK_AUDIO]", -20.0)
    assert not stt.keeps("Thank you.", -45.0) and not stt.keeps(" you", -45.0)
    assert stt.keeps("Thank you.", -20.0)  # said out loud, it is a turn
    assert stt.keeps("What time do you open?", -45.0)


# --- speech to text ----------------------------------------------------------------------------------
async def test_whisper_service_transcribes_speech_segments_and_not_silence(whisper: WhisperSTT) -> None:
    stt = WhisperSTTService(whisper, "en-US")
    seen = Collector()
    noise = np.random.default_rng(7).normal(0, 15, RATE).astype(np.int16)  # ~ -67 dBFS line hiss
    question = pad(speech_pcm(QUESTION, RATE), 0.1, 0.3, RATE)
    async with Run([stt, seen]) as run:
        await run.queue(*segment(noise), *segment(question))  # segments are transcribed in order
        await seen.until(lambda: bool(seen.of(TranscriptionFrame)), within=15)
    transcripts = seen.of(TranscriptionFrame)
    assert len(transcripts) == 1, transcripts
    assert "saturday" in words(transcripts[0].text)
    assert transcripts[0].finalized and transcripts[0].language == "en"
    hiss, said = stt.timings
    assert not hiss.kept and hiss.transcribe_s == 0.0 and hiss.level_dbfs < -60
    assert said.kept and said.text == transcripts[0].text
    assert said.audio_s >= len(question) / RATE + 0.5  # the base pads each segment with 0.5 s of silence
    assert 0 < said.transcribe_s <= said.ready_s < 5.0
    print(f"\nSTT: {said.audio_s:.2f} s segment, ready {1000 * said.ready_s:.0f} ms after the VAD stop")


async def buffered(stt: WhisperSTTService, samples: int) -> None:
    """Wait until the service has buffered `samples` of the current speech (the frames went through)."""
    async with asyncio.timeout(5):
        while len(stt._audio_buffer) < 2 * samples:  # noqa: ASYNC110 - the buffer has no event to wait on
            await asyncio.sleep(0.005)


async def test_a_pause_that_lasts_is_transcribed_from_its_start(whisper: WhisperSTT) -> None:
    """`speculate()` (the VAD: ~64 ms of quiet) starts Whisper on the speech so far; the VAD's stop 200 ms
    later brings the same speech and only silence after it, so that transcript is the segment's. Its words are
    reported as soon as Whisper has them (`on_speculated`: the call prepares the turn in the model)."""
    stt = WhisperSTTService(whisper, "en")
    reported: list[tuple[str, int]] = []
    seen = Collector()
    stt.on_speculated = lambda text: reported.append((text, len(seen.of(TranscriptionFrame))))
    speech = pad(speech_pcm(QUESTION, RATE), 0.1, 0.06, RATE)
    *said, stop = segment(speech)
    quiet = segment(np.zeros(RATE // 5, np.int16))[1:-1]  # the rest of the pause: 200 ms
    async with Run([stt, seen]) as run:
        await run.queue(*said)
        await buffered(stt, len(speech))
        stt.speculate()
        await run.queue(*quiet, stop)
        await seen.until(lambda: bool(seen.of(TranscriptionFrame)), within=15)
    [transcript] = seen.of(TranscriptionFrame)
    assert "saturday" in words(transcript.text)
    [timing] = stt.timings
    assert timing.speculated and stt.speculations == 1
    assert reported == [(transcript.text, 0)]  # the same words, before the transcript


async def test_speech_after_the_speculation_is_transcribed_with_it(whisper: WhisperSTT) -> None:
    """The caller only drew breath: the speculated transcript of "Good morning," is dropped, and the segment,
    with the words after the breath, is transcribed whole. ("Hello," before the breath was heard as "The law" on
    an AMD EPYC machine, and as "Hello" on an Intel Xeon.)"""
    stt = WhisperSTTService(whisper, "en")
    reported: list[str] = []
    stt.on_speculated = reported.append
    seen = Collector()
    opening, question = speech_pcm("Good morning,", RATE), speech_pcm("who makes your bread?", RATE)
    breath = np.zeros(RATE // 10, np.int16)
    frames = segment(np.concatenate([opening, breath, question, np.zeros(RATE // 5, np.int16)]))
    before_breath = 1 + (len(opening) + len(breath)) // FRAME
    async with Run([stt, seen]) as run:
        await run.queue(*frames[:before_breath])
        await buffered(stt, len(opening))
        stt.speculate()
        await run.queue(*frames[before_breath:])
        await seen.until(lambda: bool(seen.of(TranscriptionFrame)), within=15)
    [transcript] = seen.of(TranscriptionFrame)
    assert {"morning", "bread"} <= words(transcript.text), transcript.text
    assert stt.speculations == 1 and not stt.timings[0].speculated
    # Done while the caller was still talking, the speculation's words may have been reported (a turn prepared
    # in vain); what it never reports is the segment's.
    assert all("bread" not in words(text) for text in reported), reported


async def test_no_speculation_without_speech() -> None:
    stt = WhisperSTTService(WhisperSTT("tiny.en", Path(".flowyte")), "en")
    stt.speculate()  # not started, nobody speaking
    assert stt.speculations == 0


async def test_words_after_a_short_pause_keep_their_onset_and_the_turn_open(whisper: WhisperSTT) -> None:
    """The caller says "Hello, who makes your bread?", with a 0.16 s pause at the comma. A VAD with a 0.2 s
    stop calls the pause 40 ms into "who". The next segment still begins with "who" (the VAD's stop window
    carries over), and the first transcript, in while more speech waits behind it, is not final: the turn
    stays open for the rest. Once the last segment is transcribed, the STT says so (`SpeechTranscribedFrame`)."""
    stt = WhisperSTTService(whisper, "en")
    seen = Collector()
    speech = speech_pcm("Hello, who makes your bread?", RATE)
    loud = [float(np.abs(speech[i : i + FRAME]).max()) > 300 for i in range(0, len(speech), FRAME)]
    first_quiet = loud.index(False, loud.index(True))
    resumes = loud.index(True, first_quiet)
    assert 0.1 <= (resumes - first_quiet) * 0.02 <= 0.2, "espeak-ng's comma pause"
    split = (resumes + 2) * FRAME  # 40 ms into "who"
    hello, rest = segment(speech[:split]), segment(pad(speech[split:], 0.0, 0.3, RATE))
    hello[-1] = VADUserStoppedSpeakingFrame(stop_secs=0.2)
    async with Run([stt, seen]) as run:
        await run.queue(*hello, *rest)
        await seen.until(lambda: len(seen.of(TranscriptionFrame)) == 2 and bool(seen.of(SpeechTranscribedFrame)), 15)
    first, second = seen.of(TranscriptionFrame)
    assert "hello" in words(first.text) and not first.finalized
    assert {"who", "makes"} <= words(second.text), second.text  # the onset kept (not "make your ...")
    assert second.finalized
    [settled] = seen.of(SpeechTranscribedFrame)
    assert seen.frames.index(settled) > seen.frames.index(second), "after the last segment, not the first"


# --- text to speech ----------------------------------------------------------------------------------
async def test_piper_service_speaks_a_reply_that_whisper_understands(piper: PiperTTS, whisper: WhisperSTT) -> None:
    tts = PiperTTSService(piper)
    seen = Collector()
    async with Run([tts, seen]) as run:
        tokens = [LLMTextFrame(word + " ") for word in HOURS.split(" ")]
        await run.queue(LLMFullResponseStartFrame(), *tokens, LLMFullResponseEndFrame())
        await seen.until(lambda: bool(seen.of(TTSStoppedFrame)), within=15)
    kinds = [type(f) for f in seen.frames]
    audio_at = [i for i, kind in enumerate(kinds) if kind is TTSAudioRawFrame]
    assert kinds.index(TTSStartedFrame) < audio_at[0] and audio_at[-1] < kinds.index(TTSStoppedFrame)
    chunks = seen.of(TTSAudioRawFrame)
    assert {(f.sample_rate, f.num_channels) for f in chunks} == {(RATE, 1)}
    assert max(len(f.audio) for f in chunks) == 2 * RATE * 40 // 1000  # 40 ms pieces
    assert len({f.context_id for f in chunks}) == 1
    pcm = tts_audio(chunks)
    assert 1.2 < len(pcm) / RATE < 4.0  # six words
    heard = await whisper.transcribe_async(pcm, "en")
    assert {"nine", "five"} <= words(heard.text), heard.text
    [timing] = tts.timings
    assert timing.text == HOURS and not timing.interrupted and timing.first_audio_s is not None
    assert timing.audio_s == pytest.approx(len(pcm) / RATE)
    # Piper's ~40-60 ms of silence before the first word is not sent: sound within the first 15 ms
    assert leading_silence(pcm, RATE, keep_s=0.0) <= 0.015 * RATE, leading_silence(pcm, RATE, keep_s=0.0)
    print(f"\nTTS: first audio {1000 * timing.first_audio_s:.0f} ms, {timing.audio_s:.2f} s of speech")


def test_leading_silence_is_measured_up_to_the_sound_less_a_lead_in() -> None:
    rate = 8000
    tone = (3000 * np.sin(np.arange(rate // 10) * 2 * np.pi * 440 / rate)).astype(np.int16)
    quiet = np.full(rate // 20, 3, np.int16)  # 50 ms at about -80 dBFS: not sound
    assert leading_silence(np.concatenate([quiet, tone]), rate) == rate // 20 - rate // 100  # 10 ms kept
    assert leading_silence(np.concatenate([quiet, tone]), rate, keep_s=0.0) == rate // 20
    assert leading_silence(tone, rate) == 0
    assert leading_silence(np.zeros(0, np.int16), rate) == 0
    assert leading_silence(quiet, rate, keep_s=0.0) == len(quiet)  # all of it


async def chunks_of(aggregator: FirstClauseAggregator, text: str) -> list[str]:
    """What the aggregator hands the TTS for one reply streamed a few characters at a time, then flushed."""
    out = [a.text for i in range(0, len(text), 3) async for a in aggregator.aggregate(text[i : i + 3])]
    rest = await aggregator.flush()
    return out + ([rest.text] if rest is not None else [])


async def test_a_reply_is_spoken_first_clause_then_sentences() -> None:
    aggregator = FirstClauseAggregator()
    reply = "Yes, we deliver to the airport. It costs 1,000 yen, or 10 dollars at 10:30 today. Anything else?"
    assert await chunks_of(aggregator, reply) == [
        "Yes,", "we deliver to the airport.", "It costs 1,000 yen, or 10 dollars at 10:30 today.", "Anything else?",
    ]  # fmt: skip
    assert await chunks_of(aggregator, "Sure, nine to five.") == ["Sure,", "nine to five."], "each reply anew"
    assert await chunks_of(aggregator, "We open at nine. Then, we bake.") == ["We open at nine.", "Then, we bake."]
    async for _ in aggregator.aggregate("Well"):
        pass
    await aggregator.handle_interruption()  # the caller cut in: the next reply starts fresh
    assert await chunks_of(aggregator, "Okay, tell me.") == ["Okay,", "tell me."]


async def test_a_clause_after_a_word_is_spoken_without_waiting_for_the_next_token() -> None:
    aggregator = FirstClauseAggregator()
    assert [a.text async for a in aggregator.aggregate("Yes,")] == ["Yes,"]  # " we" is not written yet
    assert [a.text async for a in aggregator.aggregate(" we deliver.")] == []
    assert (await aggregator.flush()) is not None
    assert [a.text async for a in aggregator.aggregate("It is 1,")] == [], "a number's comma waits for what follows"
    assert [a.text async for a in aggregator.aggregate("000 yen.")] == []
    await aggregator.flush()


async def test_a_long_opening_without_a_clause_is_cut_before_a_joining_word() -> None:
    aggregator = FirstClauseAggregator()
    reply = "You can pick up your order at the counter when it is ready. Then we will text you when it ships."
    assert await chunks_of(aggregator, reply) == [
        "You can pick up your order",  # six words, then "at": the caller hears this while the rest is written
        "at the counter when it is ready.",
        "Then we will text you when it ships.",  # later sentences stay whole
    ]
    # three words are enough before most joining words; "to", "that", "which", "who" need six
    assert await chunks_of(aggregator, "We open on Saturday at 10:00 AM.") == ["We open on Saturday", "at 10:00 AM."]
    assert await chunks_of(aggregator, "We open at nine on Saturday.") == ["We open at nine", "on Saturday."]
    assert await chunks_of(aggregator, "We deliver to the airport.") == ["We deliver to the airport."]
    assert await chunks_of(aggregator, "You do not have to be there.") == ["You do not have to be there."]
    assert await chunks_of(aggregator, "It is the pizza that we bake best.") == ["It is the pizza that we bake best."]
    assert await chunks_of(aggregator, "Yes, you can pick up your order in twenty minutes.") == [
        "Yes,", "you can pick up your order in twenty minutes.",
    ]  # fmt: skip
    # a sentence mark still pending ("Dr.") leaves the decision to the sentence rules
    assert await chunks_of(aggregator, "Dr. Smith and his team will see you at noon.") == [
        "Dr. Smith and his team will see you at noon."
    ]
    # no cut until a joining word comes: here "and", after six words
    assert await chunks_of(aggregator, "We had nine large orders yesterday and more today.") == [
        "We had nine large orders yesterday", "and more today.",
    ]  # fmt: skip


async def test_an_opening_is_cut_before_a_long_number() -> None:
    """A phone or order number is written a token per digit and read digit by digit: the words before it are
    spoken first. Times, years and prices stay inside their sentence."""
    aggregator = FirstClauseAggregator()
    assert await chunks_of(aggregator, "Your phone number is 555-201-7788. Anything else?") == [
        "Your phone number is", "555-201-7788.", "Anything else?",
    ]  # fmt: skip
    assert await chunks_of(aggregator, "Order 48213 is ready.") == ["Order 48213 is ready."]  # one word before
    assert await chunks_of(aggregator, "Call us at +1 (415) 555-0100 today.") == [
        "Call us at", "+1 (415) 555-0100 today.",
    ]  # fmt: skip
    for whole in ("It opens at 10:30 sharp.", "Baked fresh since 1982.", "A large is $18.99 plus tax."):
        assert await chunks_of(aggregator, whole) == [whole]
    assert await chunks_of(aggregator, "Yes, it is 555-201-7788.") == ["Yes,", "it is 555-201-7788."]  # one cut


class UrgencyNotingPiper(PiperTTS):
    """The real Piper voice, noting which texts were synthesized as urgent (pipeline/cores.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.urgent: list[tuple[str, bool]] = []

    async def stream(
        self, text: str, rate: int, stats: SynthesisStats | None = None, *, urgent: bool = False
    ) -> AsyncIterator[NDArray[np.int16]]:
        self.urgent.append((text, urgent))
        async for chunk in super().stream(text, rate, stats, urgent=urgent):
            yield chunk


async def test_piper_service_speaks_a_first_clause_before_the_sentence_is_written() -> None:
    piper = UrgencyNotingPiper()
    tts = PiperTTSService(piper)
    seen = Collector()
    async with Run([tts, seen]) as run:
        await run.queue(LLMFullResponseStartFrame(), LLMTextFrame("Yes, our hours"), LLMTextFrame(" are nine"))
        await seen.until(lambda: bool(seen.of(TTSAudioRawFrame)), within=10)  # "Yes," without the rest
        await run.queue(LLMTextFrame(" to five."), LLMFullResponseEndFrame())
        await seen.until(lambda: bool(seen.of(TTSStoppedFrame)), within=15)
    assert [t.text for t in tts.timings] == ["Yes,", "our hours are nine to five."]
    assert len({f.context_id for f in seen.of(TTSAudioRawFrame)}) == 1, "one reply, one audio context"
    # the caller waits for the first clause only: the LLM holds back for it, not for the rest
    assert piper.urgent == [("Yes,", True), ("our hours are nine to five.", False)]


async def test_an_interruption_stops_a_long_utterance_at_once(piper: PiperTTS) -> None:
    tts = PiperTTSService(piper)
    seen = Collector()
    async with Run([tts, seen]) as run:
        await run.queue(TTSSpeakFrame(LONG))
        await seen.until(lambda: bool(seen.of(TTSAudioRawFrame)), within=10)  # first sentence out
        asked = time.perf_counter()
        await run.queue(InterruptionFrame())
        await seen.until(lambda: bool(seen.of(InterruptionFrame)), within=2)
        passed = seen.arrived[seen.frames.index(seen.of(InterruptionFrame)[0])] - asked
        await run.queue(TTSSpeakFrame("Sure."))
        await seen.until(lambda: len(seen.of(TTSStoppedFrame)) >= 1, within=10)
    first, second = tts.timings
    at = seen.frames.index(seen.of(InterruptionFrame)[0])
    late = [f for f in seen.frames[at:] if isinstance(f, TTSAudioRawFrame) and f.context_id == first.context_id]
    assert late == []  # nothing of the interrupted utterance after the interruption
    assert passed < 0.1, f"the interruption waited {passed:.3f} s behind the synthesis"
    assert first.interrupted and first.audio_s < 8.0  # LONG is ~14 s of speech: Piper stopped early
    assert not second.interrupted and second.first_audio_s is not None
    after = [f for f in seen.frames[at:] if isinstance(f, TTSAudioRawFrame)]
    assert after and {f.context_id for f in after} == {second.context_id}
    print(
        f"\ninterruption passed the TTS in {1000 * passed:.1f} ms; {first.audio_s:.2f} s of the long reply "
        f"synthesized; next reply's first audio {1000 * second.first_audio_s:.0f} ms"
    )
