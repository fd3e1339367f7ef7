"""The in-browser voice sessions of this process: a talk token and a WebRTC offer in, a running call out.

`TalkRooms.connect()` redeems the token (once: tokens.py), resolves the agent it was minted for (the draft
compiled now, or the live published version; a published session needs a wallet that can pay), answers the
browser's offer (telephony/webrtc.py) and starts the session in the background: the same `VoiceCall` as a
phone call, with the agent's brain, the process's speech models and Smart Turn.

Each session is a conversation on channel `voice` (marked `draft` in draft mode), written turn by turn like
a phone call's (control_api/calls/voice.py `TurnWriter`). Published sessions bill their connected seconds
as voice through the metering API; draft sessions are never billed. While it runs, the browser is told what
happens over its data channel, one JSON message each: `{"type": "ready", "conversationId"}` once media
flows, `{"type": "greeting", "data": {"text"}}`, every stored receipt event of a turn as
`{"type": <event type>, "data": {...}}` (user_utterance, kb_retrieval, tool_call, agent_message, ...), and
`{"type": "ended", "outcome"}` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pipecat.processors.frame_processor import FrameProcessor

from control_api.calls.native_memory import release_after_call
from control_api.calls.voice import SpeechModels, TurnWriter, call_settings
from control_api.chat import sessions as sessions_repo
from control_api.chat.turns import brain_deps
from control_api.conversations import repository as conversations
from control_api.errors import PaymentRequired
from control_api.services import Services
from control_api.talk import tokens
from pipeline.speech.turn import TurnDetector
from pipeline.voice.services import PiperTTSService, WhisperSTTService
from runtime.agent_config import CompiledAgent
from runtime.brain import AgentBrain
from runtime.events import ConversationEvent
from runtime.voice.brain_processor import TurnRecord
from runtime.voice.call import VoiceCall, VoiceSettings
from telephony import webrtc

log = logging.getLogger(__name__)

CONNECT_WAIT_S = 15.0  # ICE and DTLS must be up within this after the answer, or the session is dropped


@dataclass(frozen=True)
class Voice:
    """The speech side of one session: STT and TTS processors (new per session, over shared models)."""

    stt: FrameProcessor
    tts: FrameProcessor
    turn_detector: TurnDetector | None = None


VoiceFactory = Callable[[CompiledAgent, int], Voice]  # (agent, the leg's sample rate) -> its voice


@dataclass(frozen=True)
class Connected:
    answer_sdp: str
    conversation_id: str


class _BrowserRelay:
    """A `CallListener` that records the call (the `TurnWriter`) and tells the browser what happened."""

    def __init__(self, writer: TurnWriter, leg: webrtc.WebRtcLeg) -> None:
        self.writer, self.leg = writer, leg

    async def turn_started(self, turn: TurnRecord) -> None:
        await self.writer.turn_started(turn)

    async def turn_finished(self, turn: TurnRecord) -> None:
        for event in turn.events:
            if event.stored:  # the receipt's events; the streamed deltas are in the agent_message
                self.leg.send_event({"type": event.type, "data": event.data})
        await self.writer.turn_finished(turn)

    async def call_event(self, turn: TurnRecord | None, event: ConversationEvent) -> None:
        self.leg.send_event({"type": event.type, "data": event.data})
        await self.writer.call_event(turn, event)


def speech_voice(models: SpeechModels) -> VoiceFactory:
    """Sessions voiced by the process's speech models (loaded on first use unless preloaded)."""

    def voice(agent: CompiledAgent, sample_rate: int) -> Voice:
        language = agent.primary_language
        stt = WhisperSTTService(models.stt(language), language=language)
        return Voice(stt, PiperTTSService(models.tts()), models.turn())

    return voice


class TalkRooms:
    def __init__(
        self,
        services: Services,
        voice: VoiceFactory,
        config: webrtc.WebRtcConfig,
        settings: VoiceSettings | None = None,
    ) -> None:
        self.services, self.voice, self.config = services, voice, config
        self.settings = settings or VoiceSettings()
        self._sessions: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> int:
        return len(self._sessions)

    async def connect(self, room: str, token: str, offer_sdp: str) -> Connected:
        services = self.services
        async with services.engine.begin() as conn:
            grant = await tokens.redeem(conn, room=room, token=token, now=services.clock.now())
            agent = await sessions_repo.resolve_agent(conn, grant.org_id, grant.agent_id, draft=grant.draft)
        if not agent.is_draft:
            await self._ensure_can_pay(grant.org_id)
        leg, answer_sdp = await webrtc.answer(offer_sdp, self.config)
        async with services.engine.begin() as conn:
            conversation_id = await conversations.create(
                conn, org_id=grant.org_id, agent=agent, channel="voice", now=services.clock.now()
            )
        session = asyncio.create_task(self._run(grant, agent, leg, conversation_id), name=f"talk-{room}")
        self._sessions.add(session)
        session.add_done_callback(self._sessions.discard)
        return Connected(answer_sdp, conversation_id)

    async def wait_idle(self) -> None:
        """Until every session running now has ended and written its record."""
        await asyncio.gather(*self._sessions, return_exceptions=True)

    async def close(self) -> None:
        """End every session (server shutdown); each still writes its record."""
        for session in list(self._sessions):
            session.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    async def _ensure_can_pay(self, org_id: str) -> None:
        assert self.services.meter is not None
        decision = await self.services.meter.can_serve(org_id, "voice")
        if not decision.allowed:
            raise PaymentRequired(
                "the wallet balance cannot pay for a voice session; add credits or test the draft for free",
                extra={"balanceCredits": decision.balance_credits},
            )

    async def _run(
        self, grant: tokens.TalkGrant, agent: CompiledAgent, leg: webrtc.WebRtcLeg, conversation_id: str
    ) -> None:
        services, loop = self.services, asyncio.get_running_loop()
        outcome, started = "abandoned", loop.time()
        try:
            async with asyncio.timeout(CONNECT_WAIT_S):
                await leg.connected.wait()
            started = loop.time()
            leg.send_event({"type": "ready", "conversationId": conversation_id})
            if agent.greeting:  # spoken by the call itself, not a turn: the page shows it from here
                leg.send_event({"type": "greeting", "data": {"text": agent.greeting}})
            brain = AgentBrain(agent, brain_deps(services), channel="voice", conversation_id=conversation_id,
                               org_id=grant.org_id)  # fmt: skip
            writer = TurnWriter(services, grant.org_id, conversation_id, brain)
            voice = self.voice(agent, leg.sample_rate)
            if isinstance(voice.stt, WhisperSTTService):  # the receipts' STT and TTS timings
                writer.stt = voice.stt
            if isinstance(voice.tts, PiperTTSService):
                writer.tts = voice.tts
            settings = call_settings(self.settings, agent, can_transfer=False)
            call = VoiceCall(
                leg, leg, brain, stt=voice.stt, tts=voice.tts, listener=_BrowserRelay(writer, leg),
                settings=settings, turn_detector=voice.turn_detector,
            )  # fmt: skip
            result = await call.run()
            outcome = result.outcome
        except TimeoutError:
            log.warning("talk session %s: the browser never connected", grant.room)
        except Exception:
            log.exception("talk session %s failed", grant.room)
            outcome = "error"
        finally:
            seconds = max(0.0, loop.time() - started) if leg.connected.is_set() else 0.0
            leg.send_event({"type": "ended", "outcome": outcome})
            with contextlib.suppress(Exception):
                await leg.hangup()
            await asyncio.shield(self._close(grant, agent, conversation_id, outcome, seconds))
            await release_after_call()

    async def _close(
        self, grant: tokens.TalkGrant, agent: CompiledAgent, conversation_id: str, outcome: str, seconds: float
    ) -> None:
        services = self.services
        if not agent.is_draft and seconds > 0:  # draft sessions are never billed
            assert services.meter is not None
            try:
                await services.meter.record_usage(
                    grant.org_id, agent.agent_id, "voice", round(seconds, 3), f"voice:{conversation_id}",
                    services.clock.now(),
                )  # fmt: skip
            except Exception:
                log.exception("talk session %s: metering %.1f s failed", grant.room, seconds)
        try:
            async with services.engine.begin() as conn:
                await conversations.finish(conn, grant.org_id, conversation_id, outcome, services.clock.now())
        except Exception:
            log.exception("talk session %s: could not close its conversation", grant.room)
