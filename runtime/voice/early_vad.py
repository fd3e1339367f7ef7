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

The stop itself is timed by the audio, to the frame, when the pause is that quiet (a line with silence
suppression, whose missing packets the jitter buffer plays as zeros; WebRTC's DTX; loopback benchmarks).
pipecat counts the stop in whole windows after the last speech window, and a window is only scored once the
20 ms frame that completes it arrives: the 32 ms window holding the last word also holds up to 28 ms of the
pause, which the count never sees, so the stop came 0 or 20 ms after the count's length (6 windows, 192 ms)
by the windows' phase against the speech (seen: two modes 20 ms apart in the runtime-overhead benchmark).
`EarlySpeechSileroVAD` also counts the quiet samples at the end of the audio, in `QUIET_BLOCK` blocks below
`SILENCE_DBFS`, window or not, and calls the pause on the first frame that brings that quiet to the count's
length, once Silero has scored the pause's first windows as no speech (pipecat's STOPPING). Where the pause
is line noise above the floor nothing changes: the windows decide.

The start of a pause is reported too (`on_early_silence`): when `EARLY_SILENCE_WINDOWS` windows in a row
have been silence after speech, ~64 ms into it, rather than after the `stop_secs` (200 ms) pipecat waits
before it calls the pause. The STT transcribes what was said so far from then on, in case the pause lasts
(`WhisperSTTService.speculate`).

pipecat's `SileroVADAnalyzer` opens an ONNX Runtime session of its own for every instance, that is every
call: ~44 ms and ~10 MB of RSS each here, and the memory stayed with the process after the call. The model
is stateless (each stream passes its recurrent state and context in), so every call's analyzer runs on the
process's one session (`pipeline.speech.vad.shared_silero_session`), with its own state.

Windows are scored on the event loop (`analyze_audio`); the callbacks are scheduled on it, never run inside the
scoring.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADState

from pipeline.speech.levels import window_rms
from pipeline.speech.vad import shared_silero_session

EARLY_WINDOWS = 3  # 3 x 32 ms Silero windows at 16 kHz
EARLY_MIN_DBFS = -40.0
SILENCE_DBFS = -60.0  # a window this quiet is no speech, whatever Silero's state still says
EARLY_SILENCE_WINDOWS = 2  # 2 x 32 ms windows of silence after speech: the caller may have finished
QUIET_BLOCK = 32  # samples (2 ms at 16 kHz): how finely the quiet at the end of the audio is measured


def window_dbfs(buffer: bytes) -> float:
    """RMS level of 16-bit PCM in dBFS (-inf for digital silence)."""
    pcm = np.frombuffer(buffer, dtype=np.int16)
    rms = float(window_rms(pcm, len(pcm))[0]) if len(pcm) else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


class _SharedSessionSilero(SileroOnnxModel):
    """pipecat's Silero wrapper (one stream's recurrent state and context) over the process's one session."""

    def __init__(self) -> None:  # not SileroOnnxModel.__init__: it opens a session of its own
        self.session = shared_silero_session()
        self.reset_states()  # type: ignore[no-untyped-call]
        self.sample_rates = [8000, 16000]


class EarlySpeechSileroVAD(SileroVADAnalyzer):
    def __init__(
        self,
        *,
        on_early_speech: Callable[[], None] | None = None,
        on_early_silence: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        # Not SileroVADAnalyzer.__init__, which opens a session of its own: its other state, as pipecat 1.14
        VADAnalyzer.__init__(self, **kwargs)
        self._model = _SharedSessionSilero()
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self.on_early_speech = on_early_speech
        self.on_early_silence = on_early_silence
        self.early_reports = 0
        self.early_silences = 0
        self._pause_reported = False  # this pause's start was reported
        self._quiet_samples = 0  # samples under SILENCE_DBFS at the end of the audio so far (whole blocks)
        self.quiet_stops = 0  # pauses called on the frame their quiet reached the count (before its windows did)
        self._streak = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Scored here, on the event loop, not on pipecat's VAD thread: a window costs ~0.25 ms of Silero (one
        ONNX thread), less than handing every 20 ms frame to that thread and its state back to the loop, two
        thread wake-ups a frame, each taking a core from the LLM's or Whisper's threads mid-operation."""
        self._loop = asyncio.get_running_loop()
        return self._run_analyzer(buffer)

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

    def _run_analyzer(self, buffer: bytes) -> VADState:
        self._count_quiet(np.frombuffer(buffer, dtype=np.int16))
        state = super()._run_analyzer(buffer)
        if state == VADState.STOPPING and self._quiet_samples >= self._vad_stop_frames * self._vad_frames:
            # the count's length of quiet has arrived (in whole frames) before its windows have all been scored
            self._vad_state, self._vad_stopping_count, state = VADState.QUIET, 0, VADState.QUIET
            self.quiet_stops += 1
        # pipecat counts the pause's windows in `_vad_stopping_count` (pinned pipecat 1.14.0)
        pausing = state == VADState.STOPPING and self._vad_stopping_count >= EARLY_SILENCE_WINDOWS
        if pausing and not self._pause_reported:
            self.early_silences += 1
            if self.on_early_silence is not None and self._loop is not None:
                self._loop.call_soon_threadsafe(self.on_early_silence)
        self._pause_reported = pausing
        return state

    def _count_quiet(self, pcm: NDArray[np.int16]) -> None:
        """Extend the run of quiet samples at the end of the audio with `pcm`, or restart it after its last
        loud block."""
        tail = len(pcm) % QUIET_BLOCK
        levels = window_rms(pcm, QUIET_BLOCK)
        if tail:  # a frame that is not whole blocks: its last part is a (shorter) block of its own
            levels = np.append(levels, window_rms(pcm[-tail:], tail))
        loud = np.flatnonzero(levels >= 10 ** (SILENCE_DBFS / 20))
        if not len(loud):
            self._quiet_samples += len(pcm)
        else:
            self._quiet_samples = max(0, len(pcm) - (int(loud[-1]) + 1) * QUIET_BLOCK)

    def _report(self) -> None:
        self.early_reports += 1
        if self.on_early_speech is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self.on_early_speech)
