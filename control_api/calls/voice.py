"""The voice agent answering an admitted call: the brain for the pinned version, the speech models, and
every turn written to the conversation record with its timings.

Speech models are loaded once per process and shared by all calls (`SpeechModels`); the first call
after start waits for them unless `preload()` ran at server start. A turn's receipt starts with the
caller's `user_utterance` marked `source: voice` and carrying the turn's timings in milliseconds since
the caller's speech ended (the VAD's pause): the transcript ready (speechEndToTranscriptMs), the turn
decided (turnDecidedMs), the first LLM token, and the first agent audio into the leg (firstAudioMs; the
first RTP packet leaves within the next 20 ms tick).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from control_api.calls.native_memory import release_after_call
from control_api.calls.session import AdmittedCall
from control_api.chat.turns import brain_deps
from control_api.conversations import repository as conversations_repo
from control_api.conversations.repository import NewMessage
from control_api.services import Services
from pipeline.speech.stt import WhisperSTT
from pipeline.speech.tts import PiperTTS
from pipeline.speech.turn import TurnDetector
from pipeline.voice.services import PiperTTSService, WhisperSTTService
from runtime.agent_config import CompiledAgent
from runtime.brain import AgentBrain
from runtime.events import ConversationEvent
from runtime.voice.brain_processor import TurnRecord
from runtime.voice.call import VoiceCall, VoiceSettings
from telephony.call import SipCallLeg

log = logging.getLogger(__name__)


@dataclass
class SpeechModels:
    """The process's speech models: loaded once, shared by every call (each runs on its own worker thread)."""

    data_dir: Path
    _stt: dict[str, WhisperSTT] = field(default_factory=dict)
    _tts: PiperTTS | None = None
    _turn: TurnDetector | None = None

    def stt(self, language: str) -> WhisperSTT:
        if language not in self._stt:
            self._stt[language] = WhisperSTT.for_language(language, self.data_dir)
        return self._stt[language]

    def tts(self) -> PiperTTS:
        if self._tts is None:
            self._tts = PiperTTS()
        return self._tts

    def turn(self) -> TurnDetector:
        if self._turn is None:
            self._turn = TurnDetector()
        return self._turn

    async def preload(self, languages: tuple[str, ...] = ("en",)) -> None:
        """Load the models off the event loop, so the first call does not wait for them."""

        def load() -> None:
            # Loading is not enough: the first inference of each model initialises its kernels and costs
            # seconds (seen: a 5 s first transcription), so each runs once on a throwaway input.
            noise = (np.random.default_rng(0).standard_normal(16000) * 300).astype(np.int16)
            for language in languages:
                self.stt(language).transcribe(noise, language)
            for _ in self.tts().synthesize("Hello."):
                pass
            self.turn().predict(noise)

        await asyncio.to_thread(load)


class TurnWriter:
    """Writes each finished turn of one call to its conversation (a `TurnListener`)."""

    def __init__(self, services: Services, org_id: str, conversation_id: str, brain: AgentBrain) -> None:
        self.services, self.org_id, self.conversation_id, self.brain = services, org_id, conversation_id, brain
        self.stt: WhisperSTTService | None = None
        self.tts: PiperTTSService | None = None

    async def turn_started(self, turn: TurnRecord) -> None:
        return None

    async def turn_finished(self, turn: TurnRecord) -> None:
        events = [self._with_timings(e, turn) if e.type == "user_utterance" else e for e in turn.events]
        added = list(turn.added)
        messages = [NewMessage("user", turn.user_text)]
        messages += [NewMessage.of(m) for m in (added[1:] if added and added[0].role == "user" else added)]
        clock = self.services.clock
        try:
            async with self.services.engine.begin() as conn:
                await conversations_repo.record_turn(
                    conn, org_id=self.org_id, conversation_id=self.conversation_id, turn=turn.number,
                    messages=messages, events=[e for e in events if e.stored], started_at=clock.now(),
                    now=clock.now(), brain_state=self.brain.state,
                )  # fmt: skip
        except Exception:
            log.exception("could not record turn %s of call conversation %s", turn.number, self.conversation_id)

    async def call_event(self, turn: TurnRecord | None, event: ConversationEvent) -> None:
        """An event between turns (a transfer's outcome), filed under the turn that led to it."""
        clock = self.services.clock
        try:
            async with self.services.engine.begin() as conn:
                await conversations_repo.record_turn(
                    conn, org_id=self.org_id, conversation_id=self.conversation_id,
                    turn=turn.number if turn is not None else 0, messages=[], events=[event],
                    started_at=clock.now() - timedelta(milliseconds=event.t_ms), now=clock.now(),
                )  # fmt: skip
        except Exception:
            log.exception("could not record a %s event of call conversation %s", event.type, self.conversation_id)

    def _with_timings(self, event: ConversationEvent, turn: TurnRecord) -> ConversationEvent:
        """The turn's timings, in ms after the caller stopped speaking (the VAD's pause), when known."""
        timings: dict[str, Any] = {"interrupted": turn.interrupted}
        stt = self.stt.timings[-1] if self.stt is not None and self.stt.timings else None
        if stt is not None:
            timings["speechEndToTranscriptMs"] = round(stt.ready_s * 1000, 1)
            timings["transcribeMs"] = round(stt.transcribe_s * 1000, 1)  # Whisper's own time, of the above
            timings["transcriptSpeculated"] = stt.speculated  # started at the start of the pause
        end = turn.speech_end_at
        for name, at in (("turnDecidedMs", turn.started), ("firstTokenMs", turn.first_token_at),
                         ("firstAudioMs", turn.first_audio_at)):  # fmt: skip
            if end is not None and at is not None:
                timings[name] = round((at - end) * 1000, 1)
        return replace(event, data={**event.data, "source": "voice", "timings": timings})


def call_settings(base: VoiceSettings, agent: CompiledAgent, *, can_transfer: bool) -> VoiceSettings:
    """`base` with the agent's call control: maximum length, idle reminders, and what no response leads to
    (a transfer only where the call can be transferred: a phone call, not a browser session)."""
    control = agent.call_control
    transfer = can_transfer and control.on_no_response_action == "transfer"
    return replace(
        base,
        max_call_s=float(control.max_call_seconds or base.max_call_s),
        idle_s=float(control.idle_reminder_seconds or base.idle_s),
        max_reminders=control.idle_reminder_count,
        no_response_transfer_to=agent.handoff.transfer_destination if transfer else None,
    )


class VoiceAgent:
    """The `CallHandler` that answers admitted calls with the voice pipeline."""

    def __init__(self, services: Services, models: SpeechModels, settings: VoiceSettings | None = None) -> None:
        self.services, self.models = services, models
        self.settings = settings or VoiceSettings()

    async def __call__(self, call: AdmittedCall, leg: SipCallLeg, conversation_id: str) -> str | None:
        agent = call.agent
        brain = AgentBrain(
            agent, brain_deps(self.services), channel="voice", conversation_id=conversation_id,
            org_id=call.route.org_id, caller_id=call.info.caller or None,
        )  # fmt: skip
        writer = TurnWriter(self.services, call.route.org_id, conversation_id, brain)
        language = agent.primary_language
        writer.stt = WhisperSTTService(self.models.stt(language), language=language)
        writer.tts = PiperTTSService(self.models.tts())
        settings = call_settings(self.settings, agent, can_transfer=True)
        started = time.monotonic()
        try:
            result = await VoiceCall(
                leg, leg, brain, stt=writer.stt, tts=writer.tts, listener=writer, settings=settings,
                turn_detector=self.models.turn(),
            ).run()  # fmt: skip
        finally:
            await release_after_call()
        log.info("call %s: %s after %.1f s, %d turns", call.info.call_id, result.outcome, time.monotonic() - started,
                 len(result.turns))  # fmt: skip
        return result.outcome
