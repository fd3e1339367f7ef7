"""The call's VAD (`runtime.voice.early_vad.EarlySpeechSileroVAD`, real Silero): where it scores its windows,
early speech, the one shared session, and when a pause starts and is called."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
import soxr
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from runtime.voice.early_vad import SILENCE_DBFS, EarlySpeechSileroVAD, window_dbfs
from tests.test_voice_transport import RATE, _speech_8k


async def test_the_vad_scores_its_windows_on_the_event_loop_and_still_reports_the_pause() -> None:
    """pipecat hands every 20 ms frame to a VAD thread and the state back: two thread wake-ups a frame (~3x an
    idle call's context switches), each taking a core from the LLM or Whisper. A window is ~0.25 ms of Silero."""
    threads: set[int] = set()
    silences: list[int] = []

    class _Where(EarlySpeechSileroVAD):
        def voice_confidence(self, buffer: bytes) -> Any:
            threads.add(threading.get_ident())
            return super().voice_confidence(buffer)

    vad = _Where(params=VADParams(stop_secs=0.2), on_early_silence=lambda: silences.append(1))
    vad.set_sample_rate(16000)
    speech = soxr.resample(_speech_8k("What time do you open?"), RATE, 16000).astype(np.int16)
    pcm = np.concatenate((speech, np.zeros(16000 // 2, np.int16)))
    states = [await vad.analyze_audio(pcm[i : i + 320].tobytes()) for i in range(0, len(pcm) - 320, 320)]
    await asyncio.sleep(0)  # the callback was scheduled on the loop
    assert threads == {threading.get_ident()}
    assert VADState.SPEAKING in states and states[-1] == VADState.QUIET and silences == [1]


def test_early_speech_is_confident_speech_that_is_not_quiet() -> None:
    vad = EarlySpeechSileroVAD(params=VADParams())
    vad.set_sample_rate(16000)
    speech = soxr.resample(_speech_8k("Sorry, can I just order a pizza?"), RATE, 16000)

    def reports(pcm: np.ndarray[Any, np.dtype[np.int16]]) -> int:
        before = vad.early_reports
        for i in range(0, len(pcm) - 512, 512):
            vad.voice_confidence(pcm[i : i + 512].tobytes())
        vad.voice_confidence(np.zeros(512, np.int16).tobytes())  # a silent window ends the run
        return vad.early_reports - before

    assert reports(speech) >= 1
    assert reports((speech.astype(np.float64) * 0.005).astype(np.int16)) == 0, "echo-level speech (-46 dB)"
    assert reports(np.zeros(16000, np.int16)) == 0
    assert window_dbfs(np.full(512, 3277, np.int16).tobytes()) == pytest.approx(-20.0, abs=0.01)


def test_every_call_s_vad_runs_on_the_one_silero_session_with_its_own_state() -> None:
    """pipecat's analyzer opens a session per instance (per call); ours share the process's one, and each
    keeps its own recurrent state: interleaved with another call's audio, a call's confidences are exactly
    those of pipecat's own analyzer on the same audio."""
    ours, other = EarlySpeechSileroVAD(params=VADParams()), EarlySpeechSileroVAD(params=VADParams())
    stock = SileroVADAnalyzer(params=VADParams())
    assert ours._model.session is other._model.session is not stock._model.session
    for vad in (ours, other, stock):
        vad.set_sample_rate(16000)
    speech = soxr.resample(_speech_8k("Sorry, can I just order a pizza?"), RATE, 16000)
    noise = np.random.default_rng(7).normal(0, 2000, len(speech)).astype(np.int16)
    mine, theirs = [], []
    for i in range(0, len(speech) - 512, 512):
        other.voice_confidence(noise[i : i + 512].tobytes())  # another call, on the same session
        mine.append(float(np.max(ours.voice_confidence(speech[i : i + 512].tobytes()))))
        theirs.append(float(np.max(stock.voice_confidence(speech[i : i + 512].tobytes()))))
    loud = [i for i in range(len(mine)) if window_dbfs(speech[i * 512 : (i + 1) * 512].tobytes()) >= SILENCE_DBFS]
    assert [mine[i] for i in loud] == pytest.approx([theirs[i] for i in loud], abs=1e-5)
    assert max(mine) > 0.9  # it heard the speech


class _Lingering(SileroVADAnalyzer):
    """Silero's recurrent state carrying speech on, as it does for a window or two after the last word
    (0.96, 0.73 on windows of pure silence, seen): confident speech on every window."""

    def voice_confidence(self, buffer: bytes) -> Any:
        return np.array([0.96], dtype=np.float32)


class _LingeringEarly(EarlySpeechSileroVAD, _Lingering):
    pass


def test_the_pause_starts_when_the_audio_goes_quiet_not_when_silero_lets_go() -> None:
    """A digitally silent window is no speech, whatever Silero's state says, so pipecat's stop count starts
    at once. Above the silence floor (line noise) the decision is Silero's, as before."""
    speech = soxr.resample(_speech_8k("What time do you open on Saturday?"), RATE, 16000).astype(np.int16)
    loud = np.flatnonzero(np.abs(speech.astype(np.int32)) > 300)
    speech = speech[: int(loud[-1]) + 1]

    def windows_to_quiet(vad: Any, pause: np.ndarray[Any, np.dtype[np.int16]]) -> int | None:
        """Windows after the last speech window until the VAD's state machine says QUIET (None: never)."""
        vad.set_sample_rate(16000)
        pcm = np.concatenate([speech, np.zeros((-len(speech)) % 512, np.int16), pause])
        n_speech = -(-len(speech) // 512)
        for i in range(0, len(pcm), 512):
            state = vad._run_analyzer(pcm[i : i + 512].tobytes())
            if i // 512 >= n_speech and state is VADState.QUIET:
                return i // 512 - n_speech + 1
        return None

    params = VADParams(stop_secs=0.2)  # pipecat counts round(0.2 / 0.032) = 6 quiet windows
    silence_after = np.zeros(16000, np.int16)
    # The real Silero: at most the 6 counted windows after the speech (the count may start in its faint tail).
    real = windows_to_quiet(EarlySpeechSileroVAD(params=params), silence_after)
    assert real is not None and real <= 6
    assert windows_to_quiet(_LingeringEarly(params=params), silence_after) == 6
    lingering = windows_to_quiet(_Lingering(params=params), silence_after)  # pipecat alone: until the loudness fades
    assert lingering is None or lingering > 6
    noise = (np.random.default_rng(1).normal(0, 100, 16000)).astype(np.int16)  # about -50 dBFS: a noisy line
    assert window_dbfs(noise.tobytes()) > SILENCE_DBFS
    assert windows_to_quiet(_LingeringEarly(params=params), noise) == windows_to_quiet(
        _Lingering(params=params), noise
    )


def _frames_to_quiet(vad: Any, pcm: np.ndarray[Any, np.dtype[np.int16]], speech_end: int) -> float | None:
    """Fed `pcm` in 20 ms frames (as the transport does): ms from `speech_end` (a sample) to the end of the
    frame on which the VAD's state machine says QUIET (None: never)."""
    vad.set_sample_rate(16000)
    for start in range(0, len(pcm), 320):
        if vad._run_analyzer(pcm[start : start + 320].tobytes()) is VADState.QUIET and start + 320 > speech_end:
            return (start + 320 - speech_end) / 16
    return None


def test_a_quiet_pause_is_called_on_the_frame_that_completes_it_whatever_the_windows_phase() -> None:
    """pipecat scores 32 ms windows, each once the 20 ms frame completing it arrives, and counts 6 after the
    last speech window: the window holding the last word also holds up to 28 ms of pause it never counts, so
    its stop came 200 or 220 ms after a frame-aligned speech end by the windows' phase. A digitally quiet pause
    is called on the first frame that completes 192 ms of quiet (the count's length): 200 ms, every phase.
    Over line noise the windows decide, as before (`quiet_stops` stays 0)."""
    noise = np.random.default_rng(3).normal(0, 3000, 16000 * 3).astype(np.int16)  # "speech" to the stand-in
    phases, delays = set(), []
    for frames in range(40, 48):  # speech ends on a frame boundary, at each of the 8 phases of the windows
        end = 320 * frames
        phases.add(end % 512)
        vad = _LingeringEarly(params=VADParams(stop_secs=0.2))
        delays.append(_frames_to_quiet(vad, np.concatenate([noise[:end], np.zeros(16000, np.int16)]), end))
    assert len(phases) == 8
    assert delays == [200.0] * 8
    hiss = np.random.default_rng(4).normal(0, 100, 16000).astype(np.int16)  # ~-50 dBFS: above the floor
    vad = _LingeringEarly(params=VADParams(stop_secs=0.2))
    assert _frames_to_quiet(vad, np.concatenate([noise[: 320 * 41], hiss]), 320 * 41) is None  # Silero lingers
    assert vad.quiet_stops == 0
    # The real Silero on real speech: never later than the frame completing the count's quiet.
    speech = soxr.resample(_speech_8k("What time do you open on Saturday?"), RATE, 16000).astype(np.int16)
    loud = np.flatnonzero(np.abs(speech.astype(np.int32)) > 300)
    speech = speech[: int(loud[-1]) + 1]
    for lead in range(0, 512, 64):
        pcm = np.concatenate([np.zeros(lead, np.int16), speech, np.zeros(16000, np.int16)])
        delay = _frames_to_quiet(EarlySpeechSileroVAD(params=VADParams(stop_secs=0.2)), pcm, lead + len(speech))
        assert delay is not None and delay < 212


class _Immediate:
    """An event loop stand-in that runs `call_soon_threadsafe` callbacks at once (the scoring's view)."""

    def call_soon_threadsafe(self, callback: Any, *args: Any) -> None:
        callback(*args)


def test_the_start_of_a_pause_is_reported_two_windows_in_and_once() -> None:
    """`on_early_silence` comes 2 windows (64 ms) into a pause, 4 windows before pipecat calls it (QUIET),
    and once per pause: a word between two pauses makes a second report."""
    reports: list[int] = []
    window = 0
    vad = _LingeringEarly(params=VADParams(stop_secs=0.2), on_early_silence=lambda: reports.append(window))
    vad.set_sample_rate(16000)
    vad._loop = _Immediate()  # type: ignore[assignment]  # the callback as soon as it is scheduled
    # "speech": a second of loud noise, so that only the pauses between are quiet (the stand-in is confident)
    speech = np.random.default_rng(2).normal(0, 3000, 512 * 31).astype(np.int16)
    pause = np.zeros(512 * 3, np.int16)  # shorter than the VAD's stop: the caller goes on
    pcm = np.concatenate([speech, pause, speech, np.zeros(16000, np.int16)])
    states = []
    for window in range(len(pcm) // 512):
        states.append(vad._run_analyzer(pcm[window * 512 : (window + 1) * 512].tobytes()))
    first_pause, second_pause = len(speech) // 512, (2 * len(speech) + len(pause)) // 512
    assert reports == [first_pause + 1, second_pause + 1]  # the pauses' second windows
    assert states.index(VADState.QUIET, second_pause) == second_pause + 5  # pipecat's stop: 6 windows
    assert vad.early_silences == 2
