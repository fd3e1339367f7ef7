"""Deterministic stand-ins for speech services, implementing pipecat's real service interfaces.

`ScriptedSTTService` is an `InOrderSTTService` (a `SegmentedSTTService`, as `WhisperSTTService`): pipecat
cuts the caller's audio into segments on `VADUserStartedSpeakingFrame` / `VADUserStoppedSpeakingFrame` (from
a `VADProcessor` or the user aggregator's VAD) and hands each to `run_stt`, which answers with the next
scripted line after `delay_s`. `ScriptedTTSService` is a `TTSService` that "speaks" a text as a tone whose
length is proportional to the text (`ms_per_char`), after `ttfb_s`. `EchoLLM` answers the last user message
with "You said <it>." through the LLM frames a real LLM service emits. For tests and offline demos;
no network, no models.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import numpy as np
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.utils.time import time_now_iso8601

from pipeline.voice.services import InOrderSTTService


class ScriptedSTTService(InOrderSTTService):
    """Transcribes the n-th speech segment as `script[n]` (empty once the script runs out), `delay_s` after
    the VAD's stop; its transcripts are final, or not, as Whisper's (`InOrderSTTService`)."""

    def __init__(self, script: Sequence[str], *, delay_s: float = 0.05, **kwargs: Any) -> None:
        kwargs.setdefault("settings", STTSettings(model=None, language=None))
        kwargs.setdefault("ttfs_p99_latency", delay_s + 0.05)
        super().__init__(trailing_silence_secs=0.0, **kwargs)
        self._script = list(script)
        self._delay_s = delay_s
        self.segments_ms: list[int] = []  # length of each segment it was given

    @property
    def wants_wav_segments(self) -> bool:
        return False

    def can_generate_metrics(self) -> bool:
        return False

    async def transcribe_segment(self, audio: bytes, stopped: float) -> TranscriptionFrame | None:
        turn = len(self.segments_ms)
        self.segments_ms.append(1000 * len(audio) // (2 * self.sample_rate))
        await asyncio.sleep(self._delay_s)  # the recognizer's latency
        text = self._script[turn] if turn < len(self._script) else ""
        return TranscriptionFrame(text, self._user_id, time_now_iso8601()) if text else None


class ScriptedTTSService(TTSService):
    """Speaks text as a tone of `ms_per_char` per character, first audio after `ttfb_s`."""

    def __init__(
        self,
        *,
        sample_rate: int = 24000,
        ttfb_s: float = 0.05,
        ms_per_char: float = 30.0,
        tone_hz: float = 440.0,
        chunk_ms: int = 40,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("stop_frame_timeout_s", 0.5)
        kwargs.setdefault("settings", TTSSettings(model=None, voice=None, language=None))
        super().__init__(push_start_frame=True, push_stop_frames=True, sample_rate=sample_rate, **kwargs)
        self._ttfb_s = ttfb_s
        self._ms_per_char = ms_per_char
        self._tone_hz = tone_hz
        self._chunk_ms = chunk_ms
        self.spoken: list[str] = []  # every text it synthesized, in order

    def can_generate_metrics(self) -> bool:
        return False

    def duration_ms(self, text: str) -> float:
        return len(text.strip()) * self._ms_per_char

    def tone(self, text: str) -> bytes:
        rate = self.sample_rate
        n = int(rate * self.duration_ms(text) / 1000)
        t = np.arange(n) / rate
        pcm = (8000 * np.sin(2 * np.pi * self._tone_hz * t)).astype(np.int16)
        return pcm.tobytes()

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        self.spoken.append(text.strip())
        await asyncio.sleep(self._ttfb_s)  # the synthesizer's time to first byte
        audio = self.tone(text)
        step = 2 * self.sample_rate * self._chunk_ms // 1000
        for i in range(0, len(audio), step):
            yield TTSAudioRawFrame(audio[i : i + step], self.sample_rate, 1, context_id=context_id)


class EchoLLM(FrameProcessor):
    """A trivial "LLM": answers each `LLMContextFrame` with "You said <last user message>."."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.replies: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, LLMContextFrame):
            await self.push_frame(frame, direction)
            return
        said = ""
        for message in reversed(frame.context.get_messages()):
            if isinstance(message, dict) and message.get("role") == "user":
                said = str(message.get("content", ""))
                break
        reply = f"You said {said.strip().rstrip('.')}."
        self.replies.append(reply)
        await self.push_frame(LLMFullResponseStartFrame())
        for token in reply.split(" "):
            await self.push_frame(LLMTextFrame(token + " "))
        await self.push_frame(LLMFullResponseEndFrame())
