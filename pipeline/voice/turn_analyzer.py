"""Smart Turn for pipecat's turn strategies, on the process's one shared model, with the transcript's word.

pipecat's `TurnAnalyzerUserTurnStopStrategy` asks a `BaseTurnAnalyzer` whether the caller has finished
once the VAD reports a pause, and ends the turn when the analyzer says COMPLETE and the transcript is in
(our segmented STT marks every transcript final, so no extra wait). Said INCOMPLETE ("I'd like to order
a..."), the turn stays open until the caller speaks again or `max_silence_s` of silence has passed.

Smart Turn hears only audio, and it misjudges some questions: espeak-ng's "What is your phone number?" scores
0.10, so the caller would wait the whole ceiling for an answer. `TranscriptAwareTurnStop` adds the words:
when the caller's speech has paused and its final transcript ends with a question mark (Whisper writes one
only for what it heard as a whole question), the turn ends then, whatever Smart Turn said.

`BaseSmartTurn` does the buffering (speech plus a little pre-roll, the last 8 s) and the silence count;
this subclass only supplies the prediction. pipecat's own `LocalSmartTurnAnalyzerV3` opens an ONNX session
and a thread per instance, that is per call; here every call uses `pipeline.speech.turn.TurnDetector`'s
session and its single worker thread (a prediction costs ~30 ms on one core).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.frames.frames import TranscriptionFrame
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

from pipeline.speech.turn import SAMPLE_RATE, TurnDetector


class SharedSmartTurn(BaseSmartTurn):
    """A per-call turn analyzer (it holds the call's audio) over the shared `TurnDetector`."""

    def __init__(self, detector: TurnDetector, *, max_silence_s: float) -> None:
        super().__init__(sample_rate=SAMPLE_RATE, params=SmartTurnParams(stop_secs=max_silence_s))
        self.detector = detector

    def set_sample_rate(self, sample_rate: int) -> None:
        if sample_rate != SAMPLE_RATE:  # the model takes 16 kHz, and so does the call's pipeline
            raise ValueError(f"Smart Turn needs {SAMPLE_RATE} Hz audio, the pipeline has {sample_rate} Hz")
        super().set_sample_rate(sample_rate)

    @property
    def _model_executor(self) -> ThreadPoolExecutor:
        # The shared thread, never this instance's own: BaseSmartTurn.cleanup() then has nothing to shut down.
        return self.detector.executor

    def _predict_endpoint(self, audio_array: NDArray[np.float32]) -> dict[str, Any]:
        complete, probability = self.detector.predict(audio_array)
        return {"prediction": 1 if complete else 0, "probability": probability}


class TranscriptAwareTurnStop(TurnAnalyzerUserTurnStopStrategy):
    """pipecat's Smart Turn stop strategy; a final transcript that asks a question also ends the turn."""

    async def _handle_transcription(self, frame: TranscriptionFrame) -> None:
        await super()._handle_transcription(frame)  # type: ignore[no-untyped-call]
        asked = frame.text.rstrip().endswith("?")
        if asked and frame.finalized and self._vad_stopped and not self._vad_user_speaking and not self._turn_complete:
            self._turn_complete = True
            await self._maybe_trigger_user_turn_stopped()  # type: ignore[no-untyped-call]
