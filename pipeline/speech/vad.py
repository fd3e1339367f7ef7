"""Voice activity: Silero VAD (pipecat's bundled ONNX) plus a start/stop hysteresis state machine.

Silero v5 takes 512-sample windows at 16 kHz (32 ms) together with the previous window's last 64 samples
and a recurrent state. `SpeechDetector.process()` accepts frames of any length (20 ms from the call leg),
accumulates them into windows and returns the probability of the latest complete window. The ONNX session is
shared per process (`InferenceSession.run` is thread-safe); each detector keeps its own state, so there is
one detector per call. Like pipecat's analyzer, the recurrent state is reset every ~2 s of clear silence
(a long stretch of non-speech can otherwise leave it slow to notice the next utterance).

The gate is a table over (state, is_speech) where `is_speech` applies two thresholds (enter above
`threshold`, leave below `threshold - 0.15`, in between keeps the current side):

    QUIET     speech   -> STARTING   start counting speech
    STARTING  speech   -> STARTING   ... SPEAKING and SPEECH_START once `start_s` of speech is counted
    STARTING  silence  -> QUIET      a blip: forget it
    SPEAKING  speech   -> SPEAKING
    SPEAKING  silence  -> STOPPING   start counting silence
    STOPPING  silence  -> STOPPING   ... QUIET and SPEECH_END once `stop_s` of silence is counted
    STOPPING  speech   -> SPEAKING   a pause inside the utterance

Time advances by each frame's duration, so the machine is independent of the wall clock. Silero costs
about a tenth of a millisecond per 32 ms window, which is cheaper than a hop to a worker thread; call
`feed()` inline on the media path, or `feed_async()` to run it on the shared VAD thread.
"""

from __future__ import annotations

import asyncio
import enum
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.speech.loaded import Loaded, onnx_session
from pipeline.speech.model_assets import silero_vad_path

SAMPLE_RATE = 16000
WINDOW = 512  # samples per Silero window at 16 kHz
CONTEXT = 64  # samples of the previous window prepended to each
RESET_AFTER_S = 2.0
RESET_QUIET_WINDOWS = 5
RESET_MAX_PROBABILITY = 0.1


class SpeechEvent(enum.Enum):
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"


class GateState(enum.Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


# (state, is_speech) -> (next state, reset the timer)
_TRANSITIONS: dict[tuple[GateState, bool], tuple[GateState, bool]] = {
    (GateState.QUIET, False): (GateState.QUIET, True),
    (GateState.QUIET, True): (GateState.STARTING, True),
    (GateState.STARTING, True): (GateState.STARTING, False),
    (GateState.STARTING, False): (GateState.QUIET, True),
    (GateState.SPEAKING, True): (GateState.SPEAKING, True),
    (GateState.SPEAKING, False): (GateState.STOPPING, True),
    (GateState.STOPPING, False): (GateState.STOPPING, False),
    (GateState.STOPPING, True): (GateState.SPEAKING, True),
}


class SpeechGate:
    """Hysteresis over per-frame speech probabilities (sans-I/O: probability and duration in, events out)."""

    def __init__(self, *, threshold: float = 0.5, start_s: float = 0.2, stop_s: float = 0.3) -> None:
        self.threshold = threshold
        self.low_threshold = max(0.0, threshold - 0.15)
        self.start_s = start_s
        self.stop_s = stop_s
        self.state = GateState.QUIET
        self._timer = 0.0

    @property
    def speaking(self) -> bool:
        return self.state in (GateState.SPEAKING, GateState.STOPPING)

    def is_speech(self, probability: float) -> bool:
        if probability >= self.threshold:
            return True
        if probability < self.low_threshold:
            return False
        return self.state in (GateState.STARTING, GateState.SPEAKING)  # in the band: stay on the current side

    def step(self, probability: float, duration_s: float) -> SpeechEvent | None:
        speech = self.is_speech(probability)
        state, reset = _TRANSITIONS[(self.state, speech)]
        self._timer = duration_s if reset else self._timer + duration_s
        if state is GateState.STARTING and speech and self._timer >= self.start_s - 1e-9:
            self.state, self._timer = GateState.SPEAKING, 0.0
            return SpeechEvent.SPEECH_START
        if state is GateState.STOPPING and not speech and self._timer >= self.stop_s - 1e-9:
            self.state, self._timer = GateState.QUIET, 0.0
            return SpeechEvent.SPEECH_END
        self.state = state
        return None

    def reset(self) -> None:
        self.state, self._timer = GateState.QUIET, 0.0


class _SileroModel:
    def __init__(self, path: Path) -> None:
        self.session = onnx_session(path, cpu_threads=1)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="silero-vad")


_models: Loaded[_SileroModel] = Loaded(_SileroModel)


def shared_silero_session() -> Any:
    """The process's one Silero ONNX session (stateless: each stream passes its own recurrent state in)."""
    return _models.get("silero", silero_vad_path()).session


class SpeechDetector:
    """Silero probability per frame and speech start/end events for one audio stream (16 kHz mono)."""

    def __init__(self, *, threshold: float = 0.5, start_s: float = 0.2, stop_s: float = 0.3) -> None:
        self._model = _models.get("silero", silero_vad_path())
        self.gate = SpeechGate(threshold=threshold, start_s=start_s, stop_s=stop_s)
        self.probability = 0.0
        self._pending = np.zeros(0, np.float32)
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self._reset_state()

    def _reset_state(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros((1, CONTEXT), np.float32)
        self._windows_since_reset = 0
        self._quiet_windows = 0

    def _window(self, window: NDArray[np.float32]) -> float:
        x = np.concatenate([self._context, window.reshape(1, WINDOW)], axis=1)
        out: Any = self._model.session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._state = out[1]
        self._context = x[:, -CONTEXT:]
        probability = float(out[0][0, 0])
        self._windows_since_reset += 1
        self._quiet_windows = self._quiet_windows + 1 if probability < RESET_MAX_PROBABILITY else 0
        if (
            self._windows_since_reset * WINDOW >= RESET_AFTER_S * SAMPLE_RATE
            and self._quiet_windows >= RESET_QUIET_WINDOWS
            and not self.gate.speaking
        ):
            self._reset_state()
        return probability

    def process(self, frame16k: NDArray[np.int16] | NDArray[np.float32]) -> float:
        """Speech probability of the latest complete 32 ms window (unchanged if this frame completed none)."""
        audio = np.asarray(frame16k)
        samples = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
        pending = np.concatenate([self._pending, samples.reshape(-1)])
        usable = len(pending) - len(pending) % WINDOW
        for start in range(0, usable, WINDOW):
            self.probability = self._window(pending[start : start + WINDOW])
        self._pending = pending[usable:]
        return self.probability

    def feed(self, frame16k: NDArray[np.int16] | NDArray[np.float32]) -> SpeechEvent | None:
        """`process` the frame, then advance the gate by the frame's duration."""
        probability = self.process(frame16k)
        return self.gate.step(probability, len(frame16k) / SAMPLE_RATE)

    async def feed_async(self, frame16k: NDArray[np.int16] | NDArray[np.float32]) -> SpeechEvent | None:
        """`feed` on the process's VAD thread (keep one stream's frames in order: await each call)."""
        return await asyncio.get_running_loop().run_in_executor(self._model.executor, self.feed, frame16k)

    def reset(self) -> None:
        """Forget audio and state (for example after the agent's own turn)."""
        self._reset_state()
        self._pending = np.zeros(0, np.float32)
        self.probability = 0.0
        self.gate.reset()
