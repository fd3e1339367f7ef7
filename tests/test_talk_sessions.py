"""In-browser voice sessions end to end over the API: a talk token minted, an aiortc caller (a real WebRTC
stack) sends its offer to `POST /talk/{room}` with the token, hears the greeting, asks, hears the answer and
sees the turn's events on its data channel; the session is a conversation record (draft: never billed;
published: its seconds metered as voice). Scripted STT/LLM/TTS keep the timing deterministic; the real
models are in the browser test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from control_api.db.tables import conversations, usage_items
from control_api.services import Services
from control_api.talk.rooms import TalkRooms, Voice
from pipeline.voice.fakes import ScriptedSTTService, ScriptedTTSService
from runtime.agent_config import CompiledAgent
from runtime.voice.call import VoiceSettings
from telephony import webrtc
from tests.conftest import Tenant
from tests.peers.speech import pad, speech_pcm
from tests.peers.webrtc_caller import WebRtcCaller
from tests.test_chat_support import Script, fund, script  # noqa: F401 (fixture)

LOOPBACK = webrtc.WebRtcConfig(host_addresses=("127.0.0.1",))
QUESTION = "what time do you open"


def scripted_voice(agent: CompiledAgent, sample_rate: int) -> Voice:
    return Voice(ScriptedSTTService([QUESTION]), ScriptedTTSService(sample_rate=sample_rate, ms_per_char=20.0))


@pytest.fixture
async def rooms(services: Services) -> AsyncIterator[TalkRooms]:
    webrtc.use_host_addresses(LOOPBACK.host_addresses)
    services.talk = TalkRooms(services, scripted_voice, LOOPBACK, VoiceSettings(idle_s=30))
    yield services.talk
    await services.talk.close()
    services.talk = None
    webrtc.use_host_addresses(None)


async def join(tenant: Tenant, minted: dict[str, Any], offer: str, token: str | None = None) -> Any:
    room = minted["room"]
    headers = {"Authorization": f"Bearer {token or minted['token']}"}
    return await tenant.http.post(f"/api/v1/talk/{room}", json={"type": "offer", "sdp": offer}, headers=headers)


async def talk(tenant: Tenant, rooms: TalkRooms, *, draft: bool) -> tuple[WebRtcCaller, dict[str, Any]]:
    """One session: greeting heard, the question asked, the answer heard, then the caller hangs up."""
    agent = await tenant.create_agent(name="Tony's Pizza", greeting="Hi, this is Tony's Pizza.")
    if not draft:
        assert (await tenant.post(f"/agents/{agent['id']}/publish")).status_code == 201
    minted = (await tenant.post(f"/agents/{agent['id']}/talk-token", json={"draftMode": draft})).json()["data"]
    caller = WebRtcCaller(pad(speech_pcm("What time do you open?", 16000), 3.0, 0.0, 16000))
    try:
        joined = await join(tenant, minted, await caller.offer())
        assert joined.status_code == 200, joined.text
        await caller.accept(joined.json()["data"]["sdp"])
        await caller.until(lambda: any(m["type"] == "ready" for m in caller.messages), within=15)
        await caller.until(lambda: caller.speech.finished_at is not None, within=15)
        await caller.until(lambda: any(m["type"] == "agent_message" for m in caller.messages), within=15)
        caller.hang_up()
        await caller.until(lambda: any(m["type"] == "ended" for m in caller.messages), within=10)
        replay = await join(tenant, minted, await WebRtcCaller(np.zeros(1, np.int16)).offer())
        assert replay.status_code == 409 and replay.json()["code"] == "talk_token_used"
    finally:
        await caller.close()
    async with asyncio.timeout(10):
        await rooms.wait_idle()
    return caller, joined.json()["data"]


async def stored(services: Services, tenant: Tenant, conversation_id: str) -> tuple[Any, list[Any]]:
    """The session's conversation record, and what the organization was billed."""
    async with services.engine.connect() as conn:
        record = (await conn.execute(sa.select(conversations).where(conversations.c.id == conversation_id))).one()
        billed = (await conn.execute(sa.select(usage_items).where(usage_items.c.org_id == tenant.org_id))).all()
    return record, list(billed)


async def test_a_draft_session_is_heard_recorded_and_never_billed(
    services: Services,
    tenant: Tenant,
    rooms: TalkRooms,
    script: Script,  # noqa: F811 - the fixture
) -> None:
    script("We open at nine every day.")
    caller, joined = await talk(tenant, rooms, draft=True)
    kinds = [m["type"] for m in caller.messages]
    assert kinds[0] == "ready" and kinds[-1] == "ended"
    said = next(m for m in caller.messages if m["type"] == "user_utterance")["data"]["text"]
    answer = next(m for m in caller.messages if m["type"] == "agent_message")["data"]["text"]
    assert (said, answer) == (QUESTION, "We open at nine every day.")
    assert np.abs(caller.heard_pcm()).max() > 3000, "the greeting and answer came through Opus"
    record, billed = await stored(services, tenant, joined["conversationId"])
    assert (record.channel, record.draft, record.status, record.first_user_text) == ("voice", True, "ended", QUESTION)
    assert record.outcome in ("completed", "abandoned") and billed == []


async def test_a_published_session_bills_its_seconds_as_voice(
    services: Services,
    tenant: Tenant,
    rooms: TalkRooms,
    script: Script,  # noqa: F811 - the fixture
) -> None:
    script("We open at nine every day.")
    await fund(services, tenant, 10_000)
    _, joined = await talk(tenant, rooms, draft=False)
    record, billed = await stored(services, tenant, joined["conversationId"])
    assert record.draft is False and record.agent_version_id is not None
    assert [(b.channel, b.event_id) for b in billed] == [("voice", f"voice:{joined['conversationId']}")]
    assert float(billed[0].quantity) == 1.0, "a session of some seconds: one started minute"


async def test_a_bad_or_missing_token_joins_nothing(services: Services, tenant: Tenant, rooms: TalkRooms) -> None:
    agent = await tenant.create_agent(name="Tony's Pizza")
    minted = (await tenant.post(f"/agents/{agent['id']}/talk-token", json={"draftMode": True})).json()["data"]
    offer = await WebRtcCaller(np.zeros(1, np.int16)).offer()
    forged = await join(tenant, minted, offer, token="tt_forged")
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_talk_token"
    bare = await tenant.http.post(f"/api/v1/talk/{minted['room']}", json={"type": "offer", "sdp": offer})
    assert bare.status_code == 401
    not_an_offer = await tenant.http.post(f"/api/v1/talk/{minted['room']}", json={"type": "answer", "sdp": "x"},
                                          headers={"Authorization": f"Bearer {minted['token']}"})  # fmt: skip
    assert not_an_offer.status_code == 400 and not_an_offer.json()["errors"][0]["field"] == "type"
    assert rooms.active == 0
