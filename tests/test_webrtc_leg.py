"""The WebRTC leg between two real WebRTC stacks on loopback: an aiortc caller (offer, Opus audio, data
channel) and our `telephony.webrtc` answer, joined to the voice pipeline with scripted STT/LLM/TTS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from pipeline.voice.fakes import ScriptedSTTService, ScriptedTTSService
from runtime.voice.call import VoiceCall, VoiceSettings
from telephony import webrtc
from tests.peers.speech import pad, speech_pcm
from tests.peers.webrtc_caller import WebRtcCaller
from tests.test_brain_support import agent, brain, deps, scripted

LOOPBACK = webrtc.WebRtcConfig(host_addresses=("127.0.0.1",))


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    webrtc.use_host_addresses(LOOPBACK.host_addresses)
    yield
    webrtc.use_host_addresses(None)


async def test_a_browser_caller_hears_the_greeting_asks_and_hears_the_answer() -> None:
    caller = WebRtcCaller(pad(speech_pcm("What time do you open?", 16000), 3.0, 0.0, 16000))  # then silence
    leg, answer_sdp = await webrtc.answer(await caller.offer(), LOOPBACK)
    assert "127.0.0.1" in answer_sdp and "opus/48000" in answer_sdp.lower()
    await caller.accept(answer_sdp)
    llm = scripted("We open at nine.")
    agent_brain = brain(agent(greeting="Hi, this is Tony's Pizza."), deps(llm), channel="voice")
    tts = ScriptedTTSService(sample_rate=leg.sample_rate, ms_per_char=20.0)
    call = VoiceCall(leg, leg, agent_brain, stt=ScriptedSTTService(["what time do you open"]), tts=tts,
                     settings=VoiceSettings(idle_s=30))  # fmt: skip
    task = asyncio.create_task(call.run())
    try:
        async with asyncio.timeout(10):
            await leg.connected.wait()
        await caller.until(lambda: caller.loud_since(0.0) is not None, within=10)  # the greeting's tone
        await caller.until(lambda: caller.speech.finished_at is not None, within=15)
        assert caller.speech.finished_at is not None
        await caller.until(lambda: caller.loud_since(caller.speech.finished_at) is not None, within=10)
        caller.hang_up()
        result = await asyncio.wait_for(task, 10)
    finally:
        await caller.close()
        if not task.done():
            task.cancel()
    assert [t.user_text for t in result.turns] == ["what time do you open"]
    assert "We open at nine." in tts.spoken
    assert leg.played_ms >= 500 and await leg.wait_ended() == "remote hangup"  # ~0.8 s of tones were queued
    heard = caller.heard_pcm()
    assert len(heard) > 16000 and np.abs(heard).max() > 3000, "the agent's audio came through Opus"
