"""Silero VAD that also reports the first sign of speech, for holding the agent's audio sooner on a barge-in.

pipecat's VAD reports speech once `start_secs` of it has passed its two tests: Silero's confidence and a
smoothed loudness (a 0.4 s rolling window, exponentially smoothed) above `min_volume`. The loudness test is
what keeps echo and line noise from taking the floor, but it lags a speech onset by about 0.2 s on top of
`start_secs`, and the caller hears the agent talk over them for all of it.

Holding the agent's audio is reversible (duck-and-decide, `turn_start.py`), so it need not wait for that
verdict. `EarlySpeechSileroVAD` scores the same Silero windows and calls `on_early_speech` as soon as
`EARLY_WINDOWS` windows in a row are confident speech that is not quiet (raw window RMS at least
`EARLY_MIN_DBFS`: telephone echo arrives well below a caller's own voice), which is ~0.1 s after the onset.
The strategy holds playback then, and lets go again if the VAD does not confirm speech soon after.

The end of speech, likewise, is the audio going quiet, not Silero saying so: its recurrent state carries
speech on for a window or two after a caller's last word (0.96 then 0.73 on windows of pure silence, seen),
which delays pipecat's stop count - and so transcription, the turn decision and the reply - by up to ~80 ms.
A window whose level is below `SILENCE_DBFS` (the line's own noise floor is well above it on any real call;
a caller's words are 30 dB and more above it) scores 0 for pipecat's state machine. Silero still sees every
window, so its state stays what it would have been.

Windows are scored on pipecat's VAD executor thread; the callback is handed to the event loop.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADState

EARLY_WINDOWS = 3  # 3 x 32 ms Silero windows at 16 kHz
EARLY_MIN_DBFS = -40.0
SILENCE_DBFS = -60.0  # a window this quiet is no speech, whatever Silero's state still says


def window_dbfs(buffer: bytes) -> float:
    """RMS level of 16-bit PCM in dBFS (-inf for digital silence)."""
    pcm = np.frombuffer(buffer, dtype=np.int16).astype(np.float64)
    if not len(pcm):
        return -math.inf
    rms = math.sqrt(float(np.mean(pcm * pcm)))
    return 20 * math.log10(rms / 32768) if rms > 0 else -math.inf


class EarlySpeechSileroVAD(SileroVADAnalyzer):
    def __init__(self, *, on_early_speech: Callable[[], None] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_early_speech = on_early_speech
        self.early_reports = 0
        self._streak = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def analyze_audio(self, buffer: bytes) -> VADState:
        self._loop = asyncio.get_running_loop()
        return await super().analyze_audio(buffer)

    def voice_confidence(self, buffer: bytes) -> Any:
        """Silero's confidence for one window (0 for a silent one), counting the streak of early speech."""
        confidence = super().voice_confidence(buffer)  # a one-element array (or 0 on an empty buffer)
        level = window_dbfs(buffer)
        if level < SILENCE_DBFS:
            self._streak = 0
            return confidence * 0
        if float(np.max(confidence)) >= self.params.confidence and level >= EARLY_MIN_DBFS:
            self._streak += 1
            if self._streak == EARLY_WINDOWS:  # once per run of speech windows
                self._report()
        else:
            self._streak = 0
        return confidence

    def _report(self) -> None:
        self.early_reports += 1
        if self.on_early_speech is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_early_speech)
