"""End of turn: Smart Turn v3.2 (pipecat's bundled CPU ONNX) with a silence ceiling.

Smart Turn is a Whisper-encoder classifier over the last 8 s of the user's turn (16 kHz; shorter audio is
left-padded with zeros) that returns the probability that the speaker has finished. Features are Whisper
log-mels computed by pipecat's vendored numpy extractor, the same code pipecat's own analyzer uses.

The runtime asks after the VAD reports SPEECH_END. Whatever the model says, a silence of `max_silence_s` or
more ends the turn (`decide`), so a caller who trails off mid-sentence is never left waiting. One ONNX session
and one worker thread serve the whole process; `predict_async`/`decide_async` queue there.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipeline.cores import CORES
from pipeline.speech.loaded import Loaded, onnx_session
from pipeline.speech.model_assets import smart_turn_path

SAMPLE_RATE = 16000
MAX_SECONDS = 8


@dataclass(frozen=True)
class TurnDecision:
    complete: bool
    probability: float  # Smart Turn's; 1.0 when the silence ceiling decided without the model
    reason: str  # "model" or "max_silence"
    elapsed_s: float


class _SmartTurnModel:
    def __init__(self, path: Path, cpu_threads: int) -> None:
        self.session = onnx_session(path, cpu_threads)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smart-turn")


_models: Loaded[_SmartTurnModel] = Loaded(_SmartTurnModel)


def last_seconds(pcm16k: NDArray[np.int16] | NDArray[np.float32], seconds: int = MAX_SECONDS) -> NDArray[np.float32]:
    """The last `seconds` of the audio as float32 in [-1, 1], left-padded with zeros to exactly that length."""
    audio = np.asarray(pcm16k)
    samples = audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)
    samples = samples.reshape(-1)[-seconds * SAMPLE_RATE :]
    return np.pad(samples, (seconds * SAMPLE_RATE - len(samples), 0)).astype(np.float32)


class TurnDetector:
    """Is the user's turn over? `predict` asks the model; `decide` adds the silence ceiling."""

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        max_silence_s: float = 2.0,
        model_path: Path | None = None,
        cpu_threads: int = 1,
    ) -> None:
        self.threshold = threshold
        self.max_silence_s = max_silence_s
        path = Path(model_path or smart_turn_path()).resolve()
        self._model = _models.get(path, path, cpu_threads)

    @property
    def executor(self) -> ThreadPoolExecutor:
        """The one worker thread the model runs on, shared by every detector of this model file."""
        return self._model.executor

    def predict(self, pcm16k: NDArray[np.int16] | NDArray[np.float32]) -> tuple[bool, float]:
        """(is_complete, probability) for the current turn's audio (only its last 8 s are used); blocking."""
        from pipecat.audio.turn.smart_turn._whisper_features import compute_whisper_log_mel_features

        features = compute_whisper_log_mel_features(last_seconds(pcm16k), do_normalize=True)
        # After the LLM's prompt batch, if one is running (the turn waits for it anyway), then ahead of its
        # next token: not beside it, at half speed each (pipeline/cores.py).
        with CORES.urgent(after_batch=True):
            out: Any = self._model.session.run(None, {"input_features": np.expand_dims(features, 0)})
        probability = float(np.clip(float(out[0].reshape(-1)[0]), 0.0, 1.0))
        return probability >= self.threshold, probability

    def decide(self, pcm16k: NDArray[np.int16] | NDArray[np.float32], silence_s: float) -> TurnDecision:
        """The turn ends if the silence so far reaches `max_silence_s`, otherwise if the model says so."""
        start = time.perf_counter()
        if silence_s >= self.max_silence_s:
            return TurnDecision(True, 1.0, "max_silence", time.perf_counter() - start)
        complete, probability = self.predict(pcm16k)
        return TurnDecision(complete, probability, "model", time.perf_counter() - start)

    async def predict_async(self, pcm16k: NDArray[np.int16] | NDArray[np.float32]) -> tuple[bool, float]:
        return await asyncio.get_running_loop().run_in_executor(self._model.executor, self.predict, pcm16k)

    async def decide_async(self, pcm16k: NDArray[np.int16] | NDArray[np.float32], silence_s: float) -> TurnDecision:
        if silence_s >= self.max_silence_s:  # no model, no thread hop
            return self.decide(pcm16k, silence_s)
        return await asyncio.get_running_loop().run_in_executor(self._model.executor, self.decide, pcm16k, silence_s)
