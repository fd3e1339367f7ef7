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

A turn never ends sooner than `min_pause_s` after the caller's last word (the VAD's stop time less its
`stop_secs`), and one the question rule ends over Smart Turn's "unfinished" not sooner than
`question_pause_s`. Once the transcript was what the turn waited for, and it took ~0.3 s after the VAD's
0.2 s stop; transcribed speculatively from the start of the pause (`WhisperSTTService.speculate`), it can be
ready at the stop, and "Can I talk to a person, please?" - a ~0.2 s pause at the comma, where Whisper
writes "Can I talk to a person?" - ended at the comma before "please" was heard. So the turn end waits for
the pause to have lasted. A new onset within it (`early_speech()`, from `EarlySpeechSileroVAD`, ~0.1 s into
the speech, before the VAD's verdict) holds the end until the VAD confirms speech (pipecat then drops the
end) or `RESUMED_HOLD_S` passes without it (a click, a cough).

Each final transcript is also reported (`on_transcript`, on the event loop) as soon as it is in: the call has
the model evaluate the prompt of the turn these words would start (`AgentBrain.prepare`) while the pause is
not yet long enough to end it, ~0.1 s of the model's ~0.2 s for a voice turn's new tokens.

pipecat's strategy also ends a turn on a transcript that is not final once the STT's p99 latency has passed
since the VAD's stop (a safety net for a streaming STT that never finalizes). Ours marks a transcript not
final only when more of the caller's speech is queued behind it, and the Whisper thread is slow on a busy
machine: "Can I talk to a person" came in 3 s late, after "please?" had been spoken and queued, and the turn
ended on it alone. So a transcript that is not final holds the turn end until the final one, or until the STT
reports all speech transcribed (`SpeechTranscribedFrame`: the later speech had no words).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.frames.frames import Frame, TranscriptionFrame, VADUserStartedSpeakingFrame, VADUserStoppedSpeakingFrame
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop import TurnAnalyzerUserTurnStopStrategy

from pipeline.speech.turn import SAMPLE_RATE, TurnDetector
from pipeline.voice.services import SpeechTranscribedFrame

MIN_PAUSE_S = 0.3
QUESTION_PAUSE_S = 0.45
RESUMED_HOLD_S = 0.5  # as `turn_start.EARLY_HOLD_S`: an onset the VAD has not confirmed by then was no speech


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
    """pipecat's Smart Turn stop strategy; a final transcript that asks a question also ends the turn, and no
    turn ends before the caller's pause has lasted (see the module's docstring)."""

    def __init__(
        self,
        *,
        turn_analyzer: BaseTurnAnalyzer,
        min_pause_s: float = MIN_PAUSE_S,
        question_pause_s: float = QUESTION_PAUSE_S,
        on_transcript: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(turn_analyzer=turn_analyzer, **kwargs)
        self.on_transcript = on_transcript
        self.min_pause_s = min_pause_s
        self.question_pause_s = question_pause_s
        self._speech_end: float | None = None  # the caller's last word, while they are quiet
        self._resumed_at: float | None = None  # an early onset during this pause
        self._pause_needed = min_pause_s
        self._held: asyncio.Task[None] | None = None
        self.holds = 0  # turn ends that waited for the pause, in all
        self._transcribing = False  # the last transcript was not final: more of the caller's words are coming
        self.awaited = 0  # turn ends that waited for the rest of the transcript, in all

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        result = await super().process_frame(frame)
        if isinstance(frame, SpeechTranscribedFrame) and self._transcribing:
            self._transcribing = False  # the later speech had no words: the transcript so far is all there is
            await self._maybe_trigger_user_turn_stopped()  # type: ignore[no-untyped-call]
        return result

    def early_speech(self) -> None:
        """The VAD's first sign of speech (on the event loop): during a pause, the caller may be going on."""
        if self._speech_end is not None and self._resumed_at is None:
            self._resumed_at = time.monotonic()

    async def _handle_vad_user_started_speaking(self, frame: VADUserStartedSpeakingFrame) -> None:
        self._speech_end = self._resumed_at = None
        await super()._handle_vad_user_started_speaking(frame)  # type: ignore[no-untyped-call]

    async def _handle_vad_user_stopped_speaking(self, frame: VADUserStoppedSpeakingFrame) -> None:
        self._speech_end = time.monotonic() - frame.stop_secs
        self._resumed_at = None
        self._pause_needed = self.min_pause_s
        await super()._handle_vad_user_stopped_speaking(frame)  # type: ignore[no-untyped-call]

    async def _handle_transcription(self, frame: TranscriptionFrame) -> None:
        self._transcribing = not frame.finalized
        await super()._handle_transcription(frame)  # type: ignore[no-untyped-call]
        if frame.finalized and self.on_transcript is not None:
            self.on_transcript()
        asked = frame.text.rstrip().endswith("?")
        if asked and frame.finalized and self._vad_stopped and not self._vad_user_speaking and not self._turn_complete:
            self._turn_complete = True  # over Smart Turn's "unfinished": the pause must be the longer one
            self._pause_needed = max(self.min_pause_s, self.question_pause_s)
            await self._maybe_trigger_user_turn_stopped()  # type: ignore[no-untyped-call]

    def _hold_left(self) -> float:
        """Seconds until the pause is long enough to end the turn (0 or less: it is)."""
        if self._speech_end is None:
            return 0.0  # a turn ended without a pause (a transcript with no VAD, a forced stop)
        now = time.monotonic()
        left = self._speech_end + self._pause_needed - now
        if self._resumed_at is not None:
            left = max(left, self._resumed_at + RESUMED_HOLD_S - now)
        return left

    async def trigger_user_turn_stopped(self, *, enable_user_speaking_frames: bool | None = None) -> None:
        if self._transcribing:
            self.awaited += 1  # the final transcript (or the STT's word that there is none) triggers it again
            return
        if self._hold_left() <= 0:
            await super().trigger_user_turn_stopped(enable_user_speaking_frames=enable_user_speaking_frames)
        elif self._held is None:
            self.holds += 1
            self._held = self.task_manager.create_task(
                self._end_after_hold(enable_user_speaking_frames), f"{self}::hold"
            )

    async def _end_after_hold(self, enable_user_speaking_frames: bool | None) -> None:
        while (left := self._hold_left()) > 0:  # noqa: ASYNC110 - a deadline that an onset may move, not an event
            await asyncio.sleep(left)
        self._held = None  # before the turn ends: its reset would cancel this very task
        if self._turn_complete and not self._transcribing:  # pipecat drops it when the VAD hears speech again
            await super().trigger_user_turn_stopped(enable_user_speaking_frames=enable_user_speaking_frames)

    async def _discard_pending_end_of_turn(self) -> None:
        await super()._discard_pending_end_of_turn()  # type: ignore[no-untyped-call]
        if self._held is not None:
            held, self._held = self._held, None
            await self.task_manager.cancel_task(held)

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]
        if self._held is not None:
            await self.task_manager.cancel_task(self._held)
            self._held = None
