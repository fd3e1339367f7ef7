"""One voice call: a leg joined to the streaming pipeline and the agent's brain, for the call's whole life.

The pipeline (pipecat; turn_start.py says how a caller takes the floor, backchannels included):

    leg in (16 kHz) -> STT -> user turns (Silero VAD + Smart Turn) -> brain -> TTS -> leg out

STT is segmented: it transcribes each stretch of speech as soon as the VAD reports the pause (Whisper starts
on the speech so far ~64 ms into the pause, and that transcript is used if the pause lasts), while Smart Turn
decides whether the caller has finished, so transcription overlaps endpointing. A turn the model calls
finished ends as soon as its transcript is in, and so does one whose transcript asks a question, once the
pause has lasted `min_pause_s` (`question_pause_s` for a question Smart Turn calls unfinished); an unfinished
one waits for more speech, up to `max_silence_s` of silence. (Without the model, as with fakes, a fixed
`turn_timeout_s` of silence.) The brain's reply streams into TTS clause by clause. The greeting is spoken
first. A barge-in (pipecat's `InterruptionFrame`) clears the leg's buffer and cancels the brain's turn; the
brain's history then keeps only what the caller heard (the transport's playback position,
`replace_last_reply`). Keypad entries become user turns. When a turn ends with a transfer or an end request,
the announcement plays out first, then the call is transferred (REFER) or hung up; a failed transfer is said
and the call goes on. A turn the caller cut off before its reply was heard (or just as it began) may be
continued by their next one (`BrainProcessor`: "Can I talk to a person," - the agent starts on it -
"please?"): such a turn's transfer or end waits for that next turn to begin, and is dropped when it continued
the cut-off one; a continued turn is not recorded on its own (its words are in the turn that continued it).

Call control: an idle reminder ("Are you still there?") after `idle_s` of silence from the caller, up
to `max_reminders`, then the call ends; a maximum call length. Everything the call does is reported to
the `CallListener` (turns for the record, timings), which the control plane implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputDTMFFrame,
    LLMMessagesAppendFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMUserAggregatorParams
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.turns.user_start import TranscriptionUserTurnStartStrategy
from pipecat.turns.user_stop import BaseUserTurnStopStrategy, SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.workers.runner import WorkerRunner

from pipeline.speech.turn import TurnDetector
from pipeline.voice.leg import AudioLeg
from pipeline.voice.playback import Heard
from pipeline.voice.services import WhisperSTTService
from pipeline.voice.transport import LegTransport
from pipeline.voice.turn_analyzer import MIN_PAUSE_S, QUESTION_PAUSE_S, SharedSmartTurn, TranscriptAwareTurnStop
from runtime.brain import AgentBrain
from runtime.events import ConversationEvent
from runtime.events import transfer as transfer_event
from runtime.voice.brain_processor import BrainProcessor, TurnListener, TurnRecord, replace_last_reply
from runtime.voice.early_vad import EarlySpeechSileroVAD
from runtime.voice.heard_time import HeardTimeline, HeardTimeUserAggregator, heard_at
from runtime.voice.keypad import KeypadCollector, as_user_text
from runtime.voice.turn_start import (
    DEFAULT_MIN_BARGE_IN_S,
    RESUMED_WITHIN_S,
    BackchannelAwareTurnStart,
    BackchannelFilter,
)
from telephony.call import TransferOutcome
from telephony.codecs.resample import StreamingResampler

log = logging.getLogger(__name__)

REMINDER = "Are you still there?"
FIRST_AUDIO_WAIT_S = 5.0  # a turn's record waits this long for its first audio (for the receipt's timings)
SPEECH_START_WAIT_S = 5.0  # what the call says itself starts playing within this (TTS takes a moment)
# A turn the caller cut off is settled (continued by their next turn, or not) once that turn begins, or once the
# caller has been quiet this much longer than the longest a turn end waits for silence.
SETTLE_MARGIN_S = 1.0
SETTLE_S = 0.1  # for the interruption to reach the brain after the speech that caused it
SETTLE_POLL_S = 0.25
HEARD_WAIT_S = 3.0  # the longest the VAD is waited for to catch up with the caller's audio
TRANSFER_FAILED = "I'm sorry, I couldn't connect you right now. Is there anything else I can help with?"


class CallListener(TurnListener, Protocol):
    """Told of each turn (`TurnListener`) and of what happens between turns: a transfer's outcome."""

    async def call_event(self, turn: TurnRecord | None, event: ConversationEvent) -> None: ...


class CallActions(Protocol):
    """What the call asks of the leg beyond audio (SipCallLeg implements it)."""

    async def hangup(self) -> None: ...
    async def transfer(self, target: str, within: float = 30.0) -> TransferOutcome: ...


@dataclass
class VoiceSettings:
    vad_start_s: float = 0.15  # speech this long is the caller speaking (and holds the agent's audio)
    vad_stop_s: float = 0.2  # the pause after which STT starts and the turn is judged (pipecat's default)
    # With Smart Turn (a `turn_detector`): silence after the VAD pause that ends a turn the model calls
    # unfinished ("I'd like to order a..."); a finished one ends as soon as its transcript is in.
    max_silence_s: float = 1.0
    # With Smart Turn: no turn ends sooner than this after the caller's last word (a speculated transcript can be
    # ready at the VAD's stop), nor one the question rule ends over Smart Turn's "unfinished" sooner than this
    min_pause_s: float = MIN_PAUSE_S
    question_pause_s: float = QUESTION_PAUSE_S
    turn_timeout_s: float = 0.35  # without a turn model: the silence after the VAD pause that ends a turn
    idle_s: float = 8.0  # silence before "Are you still there?"
    max_reminders: int = 2
    max_call_s: float = 1800.0
    transfer_timeout_s: float = 30.0
    keypad_pause_s: float = 2.5  # a keyed entry without `#` is complete after this pause
    min_barge_in_s: float = DEFAULT_MIN_BARGE_IN_S  # speech this long while the agent talks takes the floor
    no_response_transfer_to: str | None = None  # onNoResponseAction "transfer": where to, instead of ending


@dataclass
class CallResult:
    outcome: str = "completed"  # completed | transferred | ended_by_agent | abandoned
    reason: str = ""
    turns: list[TurnRecord] = field(default_factory=list)
    transfers: list[ConversationEvent] = field(default_factory=list)  # each attempt's outcome (`transfer` events)
    heard: list[Heard] = field(default_factory=list)


class _LowDelayResampler:
    """`pipeline.voice.transport.Resampler` over telephony's sample-by-sample windowed-sinc resampler."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self._resampler = StreamingResampler(in_rate, out_rate)

    def __call__(self, pcm: NDArray[np.int16]) -> NDArray[np.int16]:
        return self._resampler.process(pcm)


class _Watch(FrameProcessor):
    """Taps the frames the call reacts to (bot speaking state, user turns) without changing them."""

    def __init__(self, on_frame: Callable[[Frame], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_frame = on_frame

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        self.on_frame(frame)
        await self.push_frame(frame, direction)


class _Keypad(FrameProcessor):
    """Keypad digits (pipecat `InputDTMFFrame`s from the transport) collected into entries; a complete
    entry (`#` or a pause) goes on as a user message that runs the brain, like a spoken turn."""

    def __init__(self, pause_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.keys = KeypadCollector(pause_s=pause_s)
        self._timer: asyncio.Task[None] | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, InputDTMFFrame):
            await self.push_frame(frame, direction)
            return
        entry = self.keys.press(str(frame.button.value), time.monotonic())
        if self._timer is not None:
            await self.cancel_task(self._timer)
            self._timer = None
        if entry is not None:
            await self._send(entry)
        elif self.keys.deadline is not None:
            self._timer = self.create_task(self._expire(self.keys.deadline), name="keypad-pause")

    async def _expire(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        entry = self.keys.expire(time.monotonic())
        if entry is not None:
            await self._send(entry)

    async def _send(self, entry: str) -> None:
        message: Any = {"role": "user", "content": as_user_text(entry)}
        await self.push_frame(LLMMessagesAppendFrame([message], run_llm=True))

    async def cleanup(self) -> None:
        if self._timer is not None:
            await self.cancel_task(self._timer)
        await super().cleanup()  # type: ignore[no-untyped-call]


class VoiceCall(TurnListener):
    def __init__(
        self,
        leg: AudioLeg,
        actions: CallActions,
        brain: AgentBrain,
        *,
        stt: FrameProcessor,
        tts: FrameProcessor,
        listener: CallListener | None = None,
        settings: VoiceSettings | None = None,
        transport: LegTransport | None = None,
        turn_detector: TurnDetector | None = None,
    ) -> None:
        self.leg, self.actions, self.brain = leg, actions, brain
        self.settings = settings or VoiceSettings()
        self.listener = listener
        # The caller's audio goes 8 -> 16 kHz through our sample-by-sample resampler (~2 ms of delay): soxr's
        # streaming mode hands it over in ~100 ms bursts, which the VAD (and so barge-in) would wait for.
        self.transport = transport or LegTransport(leg, resampler=_LowDelayResampler)
        self.result = CallResult()
        self.bot_speaking = False
        self._speech_done = asyncio.Event()
        self._speech_done.set()
        # Counted so that "wait until it has been said" cannot return before the saying has begun.
        self._speech_starts = 0
        self._speech_started = asyncio.Event()
        self._user_active = asyncio.Event()
        # ("transfer" | "end", the event's data, the turn that asked for it)
        self._pending: tuple[str, dict[str, Any], TurnRecord] | None = None
        self._pending_set = asyncio.Event()
        self._last_speech_end: float | None = None  # monotonic, when the VAD's stop reached the call (receipts)
        self._last_speech_end_heard: float | None = None  # when that stop's audio arrived (`heard_time.py`)
        self._caller_speaking = False  # the VAD hears the caller
        self._turn_began = asyncio.Event()
        self._answering: TurnRecord | None = None  # the turn whose first audio is awaited
        self._first_audio = asyncio.Event()
        self._recording: list[asyncio.Task[None]] = []
        self._preparing: list[asyncio.Task[None]] = []  # `_prepare_in_model` tasks, kept referenced until done
        self._prepared = ""  # the words the model was last asked to prepare a turn for (this turn's)
        self.backchannels = BackchannelFilter()
        self.heard = HeardTimeline()  # how far the VAD has got through the caller's audio
        self.turn_start = BackchannelAwareTurnStart(
            hold=self.transport.output().hold,
            release=self.transport.output().release,
            on_backchannel=self.backchannels.drop_next,
            min_barge_in_s=self.settings.min_barge_in_s,
            timeline=self.heard,
        )
        self.turn_stop = self._turn_stop(turn_detector)
        self.vad = EarlySpeechSileroVAD(
            params=VADParams(start_secs=self.settings.vad_start_s, stop_secs=self.settings.vad_stop_s),
            on_early_speech=self._early_speech,
            # Whisper starts on the speech so far ~64 ms into a pause instead of at the VAD's 200 ms stop
            on_early_silence=stt.speculate if isinstance(stt, WhisperSTTService) else None,
        )
        if isinstance(stt, WhisperSTTService):
            stt.on_speculated = self._speculated
        context = LLMContext()
        self._user_turns = HeardTimeUserAggregator(
            context,
            params=LLMUserAggregatorParams(
                vad_analyzer=self.vad,
                user_turn_strategies=UserTurnStrategies(
                    # A transcript outside a turn starts one, as in pipecat's defaults: words are never left over.
                    start=[self.turn_start, TranscriptionUserTurnStartStrategy()],
                    stop=[self.turn_stop],
                ),
            ),
            timeline=self.heard,
        )
        self.brain_processor = BrainProcessor(brain, self)
        self.worker = PipelineWorker(
            Pipeline(
                [
                    self.transport.input(),
                    _Keypad(self.settings.keypad_pause_s),
                    stt,
                    self.backchannels,
                    self._user_turns,
                    self.brain_processor,
                    tts,
                    self.transport.output(),
                    _Watch(self._on_frame),
                ]
            ),
            params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=leg.sample_rate),
            cancel_on_idle_timeout=False,
            idle_timeout_secs=None,
            # No call speaks RTVI (pipecat's client protocol) or reads pipecat's turn tracking; their processor and
            # observers saw every frame, and an idle call's event loop time comes out of the LLM's two threads.
            enable_rtvi=False,
            enable_turn_tracking=False,
        )
        self._started = asyncio.Event()
        self.worker.add_event_handler("on_pipeline_started", self._pipeline_started)
        output = self.transport.output()
        output.add_event_handler("on_playback_interrupted", self._playback_interrupted)
        output.add_event_handler("on_reply_audio", self._reply_audio)

    def _turn_stop(self, detector: TurnDetector | None) -> BaseUserTurnStopStrategy:
        """Smart Turn with a silence ceiling when the call has the model; a fixed silence otherwise (fakes)."""
        if detector is None:
            return SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=self.settings.turn_timeout_s)
        analyzer = SharedSmartTurn(detector, max_silence_s=self.settings.max_silence_s)
        settings = self.settings
        return TranscriptAwareTurnStop(
            turn_analyzer=analyzer, min_pause_s=settings.min_pause_s, question_pause_s=settings.question_pause_s,
            on_transcript=self._transcribed,
        )  # fmt: skip

    # --- the turn's prompt, evaluated while the pause lasts (`AgentBrain.prepare`) ----------------------------
    def _speculated(self, text: str) -> None:
        """Whisper has the caller's words ~64 ms into a pause, before the VAD calls it (`WhisperSTTService`'s
        speculation): the turn they would end with them is prepared now, ~0.1-0.2 s before the transcript."""
        so_far = self._user_turns.aggregation_string()  # earlier segments of this turn, if any
        self._prepare(f"{so_far} {text}".strip())

    def _transcribed(self) -> None:
        """A final transcript is in (as the user aggregator takes it): the turn so far, unless it has ended with
        it or was prepared with these words already, is prepared while the pause lasts."""
        asyncio.get_running_loop().call_soon(self._prepare_aggregation)

    def _prepare_aggregation(self) -> None:
        # Read once the aggregator is done with the frame: a turn that ended on it has nothing left here.
        self._prepare(self._user_turns.aggregation_string().strip())

    def _prepare(self, text: str) -> None:
        if not text or text == self._prepared:
            return
        self._prepared = text
        self._preparing.append(asyncio.create_task(self._prepare_in_model(text), name="prepare-turn"))

    async def _prepare_in_model(self, text: str) -> None:
        try:
            await self.brain.prepare(text)
        except Exception:  # the turn evaluates its prompt itself
            log.exception("preparing the turn in the model failed")
        finally:
            task = asyncio.current_task()
            if task in self._preparing:
                self._preparing.remove(task)

    def _early_speech(self) -> None:
        """The VAD's first sign of speech: hold the agent's audio, and a turn end still waiting on the pause."""
        self.turn_start.early_speech()
        if isinstance(self.turn_stop, TranscriptAwareTurnStop):
            self.turn_stop.early_speech()

    # --- frames the call watches ---------------------------------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, BotStartedSpeakingFrame):
            self.bot_speaking = True
            self._speech_done.clear()
            self._speech_starts += 1
            self._speech_started.set()
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._caller_speaking = True
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._caller_speaking = False
            self._last_speech_end = time.monotonic()
            self._last_speech_end_heard = heard_at(frame)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self.bot_speaking = False
            self._speech_done.set()
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._user_active.set()

    async def _reply_audio(self, *_: Any) -> None:
        turn = self._answering
        if turn is not None and turn.first_audio_at is None:
            turn.first_audio_at = time.monotonic()
            turn.audio_started.set()
            self._first_audio.set()

    async def _pipeline_started(self, *_: Any) -> None:
        self._started.set()

    async def _playback_interrupted(self, _transport: Any, heard: Heard) -> None:
        self.result.heard.append(heard)
        if not heard.complete and replace_last_reply(self.brain, heard.text):
            log.info("barge-in: the caller heard %d of %d ms; history keeps %r", heard.heard_ms, heard.total_ms,
                     heard.text)  # fmt: skip

    # --- TurnListener (from the brain processor) -----------------------------------------------
    async def turn_started(self, turn: TurnRecord) -> None:
        self._prepared = ""  # the next turn has new history before the caller's words
        self._user_active.set()
        turn.speech_end_at, turn.speech_end_heard = self._last_speech_end, self._last_speech_end_heard
        self._answering = turn
        self._first_audio.clear()
        self._turn_began.set()
        if self.listener is not None:
            await self.listener.turn_started(turn)

    async def turn_finished(self, turn: TurnRecord) -> None:
        self.result.turns.append(turn)
        if self.listener is not None:  # recorded once its first audio is out (or it never comes), in its own task
            self._recording.append(asyncio.create_task(self._record(turn), name=f"record-turn-{turn.number}"))
        for event in turn.events:
            if event.type == "handoff":
                self._pending = ("transfer", dict(event.data), turn)
            elif event.type == "end":
                self._pending = ("end", dict(event.data), turn)
        if self._pending is not None:
            self._pending_set.set()

    async def _record(self, turn: TurnRecord) -> None:
        if turn.first_audio_at is None and not turn.interrupted:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_AUDIO_WAIT_S):
                    await self._first_audio.wait()
        if self._answering is turn:
            self._answering = None
        assert self.listener is not None
        if await self._stands(turn):
            await self.listener.turn_finished(turn)

    async def _stands(self, turn: TurnRecord) -> bool:
        """Whether `turn` stands, i.e. was not continued by the caller's next turn (see the module's docstring).
        Only a turn the caller cut off can be, before any of its reply was heard or within `RESUMED_WITHIN_S` of
        their pause; it is settled once a later turn begins, or once the caller has been quiet long enough that
        no turn is coming."""
        if turn.speech_end_at is not None:  # until then the caller's speech may still cut it short
            await asyncio.sleep(max(0.0, turn.speech_end_at + RESUMED_WITHIN_S + SETTLE_S - time.monotonic()))
        if turn.speech_end_heard is not None:  # ... which a VAD behind on the caller's audio hears later
            await self._until_heard(turn.speech_end_heard + RESUMED_WITHIN_S)
        settings = self.settings
        quiet_enough = max(settings.max_silence_s, settings.turn_timeout_s) + SETTLE_MARGIN_S
        while turn.interrupted and self.brain_processor.turns == turn.number and not self.leg.ended:
            quiet = 0.0 if self._caller_speaking else time.monotonic() - (self._last_speech_end or turn.started)
            if quiet >= quiet_enough:
                break
            self._turn_began.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(SETTLE_POLL_S, quiet_enough - quiet)):  # a hang-up settles it too
                    await self._turn_began.wait()
        return not turn.continued

    async def _until_heard(self, at: float) -> None:
        """Until the VAD has analyzed the caller's audio that arrived by `at` (monotonic, `heard_time.py`), or all
        the audio read so far when that is less (a leg that sends nothing while the caller is quiet); then long
        enough for what it heard to reach the brain. At most `HEARD_WAIT_S`."""
        read = self.transport.input().read_at
        if read is None:
            return  # no audio yet: nothing to be behind on
        target = min(at, read)
        if self.heard.analyzed(target):
            return
        await self.heard.until_analyzed(target, HEARD_WAIT_S, gave_up=lambda: self.leg.ended)
        await asyncio.sleep(SETTLE_S)

    # --- the call ------------------------------------------------------------------------------
    async def say(self, text: str) -> None:
        """Speak `text`; returns once its audio has started (or after SPEECH_START_WAIT_S), so that a following
        `_wait_spoken()` waits for it to be heard."""
        starts = self._speech_starts
        await self.worker.queue_frames([TTSSpeakFrame(text)])
        await self._until_speech_after(starts)

    async def _until_speech_after(self, starts: int) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SPEECH_START_WAIT_S):
                while self._speech_starts == starts:
                    self._speech_started.clear()
                    await self._speech_started.wait()

    async def run(self) -> CallResult:
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(self.worker)
        running = asyncio.create_task(runner.run(), name="voice-pipeline")
        control = asyncio.create_task(self._control(), name="voice-control")
        try:
            done, _ = await asyncio.wait(
                {running, control, asyncio.ensure_future(self.leg.wait_ended())},
                timeout=self.settings.max_call_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                self.result.reason = "maximum call length"
                await self.say("We've reached the time limit for this call. Goodbye.")
                await self._wait_spoken()
                await self.actions.hangup()
        finally:
            control.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await control
            if not self.leg.ended:
                await self.actions.hangup()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                async with asyncio.timeout(5):
                    await running
            if not running.done():
                running.cancel()
            if self._recording:  # the last turns' records, whatever happened to the call
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FIRST_AUDIO_WAIT_S + 5):
                        await asyncio.gather(*self._recording, return_exceptions=True)
            if self._preparing:  # a state they kept after the release would outlive the call
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5):
                        await asyncio.gather(*self._preparing, return_exceptions=True)
            try:  # the model's state for this conversation is of no more use
                await self.brain.release()
            except Exception:
                log.exception("releasing the call's model state failed")
        if not self.result.turns and self.result.outcome == "completed":
            self.result.outcome = "abandoned"
        return self.result

    async def _control(self) -> None:
        """Greeting, keypad entries, idle reminders, and carrying out transfer/end requests."""
        async with asyncio.timeout(10):
            await self._started.wait()
        greeting = self.brain.greeting()
        if greeting:
            await self.say(greeting)
        async with asyncio.TaskGroup() as group:
            # While the greeting plays (its audio has started, so the prefill no longer delays it), the model
            # computes the agent's prompt: the caller's first turn then only evaluates its own words.
            group.create_task(self._warm_up())
            group.create_task(self._idle())
            group.create_task(self._actions())

    async def _warm_up(self) -> None:
        try:
            await self.brain.warm_up()
        except Exception:  # a cold first turn is slower, not broken
            log.exception("warming the model up for the call failed")

    async def _idle(self) -> None:
        reminders = 0
        while True:
            self._user_active.clear()
            await self._wait_spoken()
            try:
                async with asyncio.timeout(self.settings.idle_s):
                    await self._user_active.wait()
                reminders = 0
                continue
            except TimeoutError:
                pass
            if self.bot_speaking or self.brain_processor.answering:
                continue  # not idle: the agent is talking, or thinking about what the caller said
            if reminders >= self.settings.max_reminders and self.settings.no_response_transfer_to:
                target = self.settings.no_response_transfer_to
                if await self._transfer(target, self.result.turns[-1] if self.result.turns else None):
                    self.result.outcome, self.result.reason = "transferred", "no response"
                    await self.actions.hangup()
                    return
            if reminders >= self.settings.max_reminders:
                self.result.outcome, self.result.reason = "abandoned", "no response"
                await self.say("I haven't heard anything, so I'll end the call now. Goodbye.")
                await self._wait_spoken()
                await self.actions.hangup()
                return
            reminders += 1
            await self.say(REMINDER)

    async def _actions(self) -> None:
        while True:
            await self._pending_set.wait()
            self._pending_set.clear()
            pending, self._pending = self._pending, None
            if pending is None:
                continue
            kind, data, turn = pending
            # The announcement or goodbye is heard first. The turn may be over before its audio has begun
            # (the text is complete, the TTS is still at work): wait for that audio, then for its end.
            if turn.first_audio_at is None and not turn.interrupted and self._answering is turn:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FIRST_AUDIO_WAIT_S):
                        await self._first_audio.wait()
            await self._wait_spoken(settle_s=0.3)
            if not await self._stands(turn):
                continue  # the caller was still talking: their whole request was answered afresh
            if kind == "end":
                self.result.outcome, self.result.reason = "ended_by_agent", str(data.get("reason", ""))
                await self.actions.hangup()
                return
            target = str(data.get("destination") or data.get("target") or "")
            if await self._transfer(target, turn):
                self.result.outcome, self.result.reason = "transferred", target
                await self.actions.hangup()
                return
            await self.say(TRANSFER_FAILED)

    async def _transfer(self, target: str, turn: TurnRecord | None) -> bool:
        """REFER the caller to `target`; the outcome (the NOTIFY's status) is recorded as a `transfer` event."""
        outcome = await self.actions.transfer(target, within=self.settings.transfer_timeout_s)
        ok = outcome.ok
        if not ok:
            log.info("transfer to %s failed: %s", target, outcome)
        t_ms = (time.monotonic() - turn.started) * 1000 if turn is not None else 0.0
        event = transfer_event(target, ok=ok, sip_status=outcome.status, reason=outcome.reason, t_ms=t_ms)
        self.result.transfers.append(event)
        if self.listener is not None:
            await asyncio.gather(*self._recording, return_exceptions=True)  # the turn that asked is recorded first
            await self.listener.call_event(turn, event)
        return ok

    async def _wait_spoken(self, settle_s: float = 0.0) -> None:
        """Until the agent has finished speaking and its audio has left the leg."""
        await self._speech_done.wait()
        # What is still queued in the leg plays out in real time (the transport keeps it to ~120 ms).
        await asyncio.sleep(self.leg.buffered_ms / 1000 + settle_s)
