"""Call recording: the stereo WAV writer on its own, two real RTP endpoints recorded through a leg, and a
real SIPp call answered by an agent with recordCalls on, fetched back through its signed URL on both
databases (expired and tampered URLs, another organization's key, a conversation with no recording)."""

from __future__ import annotations

import asyncio
import io
import os
import random
import stat
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from numpy.typing import NDArray

from control_api.agent_store import DatabaseAgentSource
from control_api.calls.admission import CallAdmission
from control_api.calls.records import CallRecords
from control_api.calls.session import AdmittedCall
from control_api.clock import SystemClock
from control_api.conversations import recordings
from control_api.db.engine import create_engine
from control_api.db.tables import conversations
from control_api.http.app import create_app
from control_api.numbers.inbound import DatabaseNumberRouter
from control_api.services import Services
from runtime.agent_config import CompiledAgent, config_hash
from telephony.call import SipCallLeg
from telephony.echo import tone
from telephony.edge import EdgeConfig, SipEdge
from telephony.recording import CallRecorder
from telephony.rtp.endpoint import RtpEndpoint
from telephony.rtp.ports import PortPool
from telephony.sip.ua_types import CallInfo, Peer
from tests.conftest import TenantFactory, make_settings
from tests.peers.sipp import Sipp
from tests.peers.speech import pad, speech_pcm, write_rtp_pcap
from tests.test_calls_admission import HOST
from tests.test_chat_support import fund, published_agent
from tests.test_numbers_support import unstocked_number

FRAME = 160  # 20 ms at 8 kHz


def read_stereo(source: Path | bytes) -> tuple[NDArray[np.int16], wave.Wave_read]:
    """(samples as an (n, 2) array, the reader with its header fields) of a WAV file or its bytes."""
    with wave.open(io.BytesIO(source) if isinstance(source, bytes) else str(source), "rb") as handle:
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2").astype(np.int16)
    return data.reshape(-1, handle.getnchannels()), handle


def const(value: int, n: int = FRAME) -> NDArray[np.int16]:
    return np.full(n, value, dtype=np.int16)


def dominant_hz(pcm: NDArray[np.int16], rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


def band_share(pcm: NDArray[np.int16], low: float, high: float, rate: int = 8000) -> float:
    """The fraction of the signal's energy between `low` and `high` Hz."""
    power = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    return float(power[(freqs >= low) & (freqs <= high)].sum() / max(power.sum(), 1e-9))


def rms(pcm: NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0


# ------------------------------------------------------------------------------------------- the writer


def test_both_channels_line_up_by_tick_with_silence_where_nothing_was_reported(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "call.wav"
    with CallRecorder(path, 8000) as recorder:
        for tick in range(10, 20):
            recorder.caller_frame(const(100 + tick), tick)
        for tick in (12, 13, 15):  # the agent spoke at 12-13 and 15; nothing left at 14
            recorder.agent_frame(const(-(100 + tick)), tick)
        recorder.caller_frame(const(7, 100), 20)  # a short frame: the rest of its tick is silence
    samples, header = read_stereo(path)
    assert (header.getnchannels(), header.getsampwidth(), header.getframerate()) == (2, 2, 8000)
    assert header.getnframes() == 11 * FRAME == len(samples)
    assert recorder.frames_written == 11 and recorder.seconds == pytest.approx(0.22)
    frames = samples.reshape(11, FRAME, 2)
    for i, tick in enumerate(range(10, 20)):
        assert (frames[i, :, 0] == 100 + tick).all(), f"caller at tick {tick}"
        expected = -(100 + tick) if tick in (12, 13, 15) else 0
        assert (frames[i, :, 1] == expected).all(), f"agent at tick {tick}"
    assert (frames[10, :100, 0] == 7).all() and (frames[10, 100:, 0] == 0).all()
    # The RIFF header is exactly the 44-byte canonical one, sizes included.
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and int.from_bytes(raw[4:8], "little") == len(raw) - 8
    assert raw[8:16] == b"WAVEfmt " and int.from_bytes(raw[40:44], "little") == 11 * FRAME * 4


def test_gaps_and_out_of_order_sides_are_placed_by_tick(tmp_path: Path) -> None:
    path = tmp_path / "gaps.wav"
    recorder = CallRecorder(path)
    recorder.caller_frame(const(1), 0)
    recorder.caller_frame(const(2), 5)  # ticks 1-4: the consumer skipped ahead
    recorder.agent_frame(const(3), 3)  # the other side reports an earlier tick afterwards
    recorder.agent_frame(const(4), 8)
    recorder.close()
    recorder.close()  # idempotent
    frames = read_stereo(path)[0].reshape(-1, FRAME, 2)
    assert len(frames) == 9
    assert [int(f[0, 0]) for f in frames] == [1, 0, 0, 0, 0, 2, 0, 0, 0]
    assert [int(f[0, 1]) for f in frames] == [0, 0, 0, 3, 0, 0, 0, 0, 4]


def test_a_long_call_streams_to_disk_with_bounded_memory_and_a_valid_header_throughout(tmp_path: Path) -> None:
    path = tmp_path / "long.wav"
    recorder = CallRecorder(path, window_ticks=50, lag_ticks=25)
    window = recorder._window.nbytes
    ticks = 3000  # a minute
    for tick in range(ticks):
        recorder.caller_frame(const(tick % 1000), tick)
        if tick % 2 == 0:
            recorder.agent_frame(const(-(tick % 1000)), tick)
        if tick == 1500:
            # Mid-call the file on disk is already a WAV any reader accepts, with what has been written.
            partial, header = read_stereo(path)
            assert header.getnframes() == recorder.frames_written * FRAME == len(partial) > 1400 * FRAME
    assert recorder._window.nbytes == window, "the window never grows"
    recorder.caller_frame(const(9), 10)  # long written: dropped, counted
    assert recorder.late_frames == 1
    recorder.close()
    frames = read_stereo(path)[0].reshape(-1, FRAME, 2)
    assert len(frames) == ticks
    for tick in (0, 1, 999, 1000, 1777, 2998, 2999):
        assert int(frames[tick, 0, 0]) == tick % 1000
        assert int(frames[tick, 0, 1]) == (-(tick % 1000) if tick % 2 == 0 else 0)


def test_a_jump_far_past_the_window_writes_silence_in_between(tmp_path: Path) -> None:
    path = tmp_path / "jump.wav"
    with CallRecorder(path, window_ticks=10, lag_ticks=5) as recorder:
        recorder.caller_frame(const(1), 0)
        recorder.agent_frame(const(2), 137)  # the event loop stalled for almost 3 s
    frames = read_stereo(path)[0].reshape(-1, FRAME, 2)
    assert len(frames) == 138
    assert int(frames[0, 0, 0]) == 1 and int(frames[137, 0, 1]) == 2
    assert not frames[1:137].any()


def test_an_empty_recording_is_still_a_valid_wav(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    CallRecorder(path).close()
    samples, header = read_stereo(path)
    assert header.getnframes() == 0 and header.getnchannels() == 2 and len(samples) == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_stops_the_recording_quietly() -> None:
    recorder = CallRecorder("/dev/full", window_ticks=4, lag_ticks=2)
    for tick in range(40):  # each slide of the window writes, and fails
        recorder.caller_frame(const(1), tick)
        recorder.agent_frame(const(2), tick)
    recorder.close()
    assert isinstance(recorder.error, OSError)


# ------------------------------------------------------------------------ the leg over real endpoints


class NoSignalling:
    def hangup_call(self, call_id: str) -> None:
        pass

    def refer_call(self, call_id: str, target: str) -> None:
        pass


async def test_a_leg_records_what_it_heard_and_what_left_aligned_in_time(tmp_path: Path) -> None:
    """The far end echoes what it hears: the caller channel is the agent channel a little later, never earlier."""
    base = random.Random().randrange(30000, 50000, 2)
    pool = PortPool(base, base + 20)
    ours, theirs = await RtpEndpoint.open(pool), await RtpEndpoint.open(pool)
    ours.set_remote(theirs.local_address)
    theirs.set_remote(ours.local_address)
    leg = SipCallLeg(CallInfo("rec@test", "+1", "+2", None, Peer("UDP", HOST, 5060)), ours, NoSignalling(),
                     inband_dtmf=False)  # fmt: skip
    recorder = CallRecorder(tmp_path / "leg.wav")
    leg.start_recording(recorder)

    async def echo() -> None:
        async for frame in theirs.audio():
            theirs.send_audio(frame)

    async def consume() -> None:
        async for _ in leg.audio():
            pass

    burst = np.concatenate([np.zeros(1600, np.int16), tone(700.0, 0.3), np.zeros(8000, np.int16)])
    async with asyncio.TaskGroup() as group:
        echoing, consuming = group.create_task(echo()), group.create_task(consume())
        await ours.wait_tick()
        leg.write(burst[:8000])
        await asyncio.sleep(0.5)
        leg.write(burst[8000:])
        await asyncio.sleep(1.2)
        assert leg.stop_recording() is recorder and leg.stop_recording() is None
        echoing.cancel()
        consuming.cancel()
    recorder.close()
    await leg.close()
    await theirs.close()
    samples = read_stereo(tmp_path / "leg.wav")[0].astype(np.float64)
    caller, agent = samples[:, 0], samples[:, 1]
    assert dominant_hz(agent.astype(np.int16)) == pytest.approx(700, abs=10)
    # Onsets: the tone left at some tick; its echo came back (jitter buffer and all) a little later.
    sent_at = int(np.argmax(np.abs(agent) > 1000))
    heard_at = int(np.argmax(np.abs(caller) > 1000))
    assert 0 < heard_at - sent_at < 0.25 * 8000, (sent_at, heard_at)
    assert recorder.late_frames == 0


class BrokenRecorder:
    def caller_frame(self, pcm: NDArray[np.int16], tick: int) -> None:
        raise RuntimeError("bug in a recorder")

    def agent_frame(self, pcm: NDArray[np.int16], tick: int) -> None:
        raise RuntimeError("bug in a recorder")


async def test_a_failing_recorder_is_detached_and_the_call_goes_on() -> None:
    base = random.Random().randrange(30000, 50000, 2)
    pool = PortPool(base, base + 20)
    ours, theirs = await RtpEndpoint.open(pool), await RtpEndpoint.open(pool)
    ours.set_remote(theirs.local_address)
    theirs.set_remote(ours.local_address)
    leg = SipCallLeg(CallInfo("rec@test", "+1", "+2", None, Peer("UDP", HOST, 5060)), ours, NoSignalling(),
                     inband_dtmf=False)  # fmt: skip
    leg.start_recording(BrokenRecorder())
    leg.write(tone(500.0, 0.2))
    for _ in range(12):
        await ours.wait_tick()
    assert ours.tap is None and ours.stats.packets_sent == 10, "every frame still left"
    frames = leg.audio()
    await anext(frames)  # the caller side fails too: detached, the frame still delivered
    assert leg.stop_recording() is None
    await frames.aclose()
    await leg.close()
    await theirs.close()


# ---------------------------------------------------------------------------- a real call, end to end


@pytest.fixture
async def recording_api(database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Services, TenantFactory]]:
    """Services whose data directory is this test's own, and the API over them."""
    engine = create_engine(database_url)
    settings = replace(make_settings(database_url), data_dir=tmp_path / "data")
    services = Services(settings=settings, engine=engine, clock=SystemClock())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(services)), base_url="http://testserver"
    ) as http:
        yield services, TenantFactory(services, http)
    await engine.dispose()


class ToneAnswerer:
    """Answers with a 1 kHz tone and listens until the caller hangs up (the leg records what it reads)."""

    def __init__(self) -> None:
        self.conversations: list[str] = []

    async def __call__(self, call: AdmittedCall, leg: SipCallLeg, conversation_id: str) -> str | None:
        self.conversations.append(conversation_id)
        leg.write(tone(1000.0, 0.8))
        async for _ in leg.audio():
            pass
        return None


async def test_a_recorded_call_is_served_through_a_signed_url(
    recording_api: tuple[Services, TenantFactory], sipp: Callable[..., Sipp], tmp_path: Path
) -> None:
    services, tenants = recording_api
    tenant, stranger = await tenants(), await tenants()
    await fund(services, tenant, 1_000)
    agent = await published_agent(tenant, recordCalls=True)
    assert agent["recordCalls"] is True
    e164 = unstocked_number("212")
    await tenant.post("/numbers/import", json={"e164": e164, "agentId": agent["id"]})
    speech = pad(speech_pcm("Hello there, I would like to book a table."), 0.0, 0.2)
    pcap = tmp_path / "hello.pcap"
    duration = write_rtp_pcap(pcap, speech, codec="PCMU")
    answerer = ToneAnswerer()
    assert services.meter is not None
    admission = CallAdmission(
        DatabaseNumberRouter(services.engine), DatabaseAgentSource(services.engine), services.meter,
        CallRecords(services.engine, services.clock), answerer, data_dir=services.settings.resolved().data_dir,
    )  # fmt: skip
    base = random.Random().randrange(30000, 50000, 2)
    config = EdgeConfig(bind_host=HOST, sip_port=0, rtp_ports=(base, base + 20))
    async with SipEdge(config, admission) as edge:
        uac = sipp(
            "uac_speech", remote=(HOST, edge.port), service=e164, caller="+14155550123",
            keys={"pcap": pcap}, variables={"audio_ms": int(duration * 1000) + 1200}, timeout=20,
        )  # fmt: skip
        result = await uac.start().wait_async(25)
        assert result.ok, result.describe()
        async with asyncio.timeout(5):
            await edge.wait_idle()
    (conversation_id,) = answerer.conversations
    async with services.engine.connect() as conn:
        row = (await conn.execute(sa.select(conversations).where(conversations.c.id == conversation_id))).one()
    assert row.recording_path == f"recordings/{tenant.org_id}/{conversation_id}.wav"
    assert (await tenant.get(f"/conversations/{conversation_id}")).json()["data"]["hasRecording"] is True

    key_file = services.settings.data_dir / recordings.KEY_FILE
    early = await tenant.http.get("/api/v1/recordings/forged.token")
    assert early.status_code == 403 and not key_file.exists(), "an anonymous request never creates the key"
    response = await tenant.get(f"/conversations/{conversation_id}/audio")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["data"]["expiresAt"].endswith("Z")
    url = body["data"]["url"]
    assert url.startswith("http://testserver/api/v1/recordings/")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and key_file.stat().st_size == 32

    audio = await tenant.http.get(url)  # no API key: the signature is the credential
    assert audio.status_code == 200, audio.text
    assert audio.headers["content-type"] == "audio/wav"
    assert audio.headers["content-disposition"] == f'attachment; filename="{conversation_id}.wav"'
    samples, header = read_stereo(audio.content)
    assert (header.getnchannels(), header.getsampwidth(), header.getframerate()) == (2, 2, 8000)
    caller, ours = samples[:, 0], samples[:, 1]
    assert len(samples) / 8000 >= duration, "the recording covers the whole call"
    assert rms(caller) > 300, "the caller's speech is on the left"
    assert band_share(caller, 950, 1050) < 0.2, "and the agent's tone is not"
    assert dominant_hz(ours) == pytest.approx(1000, abs=10) and band_share(ours, 950, 1050) > 0.9
    assert rms(ours[: 8000 // 2]) > 1000, "the tone left at the start of the call"

    # Tampered, forged and expired links; another organization; a conversation with nothing recorded.
    token = url.rsplit("/", 1)[1]
    payload, signature = token.split(".")
    forged = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    for bad in (f"{payload}.{forged}", f"{payload[:-2]}xx.{signature}", "not-a-token", f"{payload}."):
        denied = await tenant.http.get(f"/api/v1/recordings/{bad}")
        assert denied.status_code == 403 and denied.json()["code"] == "invalid_signature", (bad, denied.text)
        assert denied.headers["content-type"] == "application/problem+json"
    key = recordings.load_key(services.settings.data_dir)
    stale = recordings.sign(key, tenant.org_id, conversation_id, now=services.clock.now() - timedelta(minutes=6))
    expired = await tenant.http.get(f"/api/v1/recordings/{stale.token}")
    assert expired.status_code == 410 and expired.json()["code"] == "link_expired"
    other = await stranger.get(f"/conversations/{conversation_id}/audio")
    assert other.status_code == 404 and other.headers["content-type"] == "application/problem+json"
    chat = await tenant.post("/chat/sessions", json={"agentId": agent["id"], "draftMode": True})
    chat_conversation = chat.json()["data"]["conversationId"]
    unrecorded = await tenant.get(f"/conversations/{chat_conversation}/audio")
    assert unrecorded.status_code == 404 and "has no recording" in unrecorded.json()["detail"]
    assert (await tenant.get(f"/conversations/{chat_conversation}")).json()["data"]["hasRecording"] is False
    # A link for a conversation that is not the signer's organization's finds nothing.
    crossed = recordings.sign(key, stranger.org_id, conversation_id, now=services.clock.now())
    assert (await tenant.http.get(f"/api/v1/recordings/{crossed.token}")).status_code == 404


async def test_an_agent_exposes_and_versions_record_calls(recording_api: tuple[Services, TenantFactory]) -> None:
    _, tenants = recording_api
    tenant = await tenants()
    agent = await published_agent(tenant)
    assert agent["recordCalls"] is False
    got = (await tenant.get(f"/agents/{agent['id']}")).json()["data"]
    assert got["recordCalls"] is False and got["hasUnpublishedChanges"] is False
    patched = await tenant.patch(f"/agents/{agent['id']}", json={"recordCalls": True})
    assert patched.status_code == 200 and patched.json()["data"]["recordCalls"] is True
    got = (await tenant.get(f"/agents/{agent['id']}")).json()["data"]
    assert got["hasUnpublishedChanges"] is True
    diff = (await tenant.get(f"/agents/{agent['id']}/versions/{agent['publishedVersionId']}/diff")).json()["data"]
    assert diff["changes"] == [{"field": "recordCalls", "before": None, "after": True, "kind": "added"}]
    report = (await tenant.get(f"/agents/{agent['id']}/prepublish-report")).json()["data"]
    assert "recording_not_announced" in {w["code"] for w in report["warnings"]}
    v2 = (await tenant.post(f"/agents/{agent['id']}/publish")).json()["data"]
    version = (await tenant.get(f"/agents/{agent['id']}/versions/{v2['id']}")).json()["data"]
    assert version["config"]["recordCalls"] is True
    bad = await tenant.patch(f"/agents/{agent['id']}", json={"recordCalls": "sometimes"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "recordCalls"


def test_versions_stored_before_record_calls_load_with_it_off_and_keep_their_hash() -> None:
    from control_api.schemas.agent import AgentDraft

    base = {**AgentDraft.model_validate({"name": "Old"}).stored(), "schemaVersion": 1, "agentId": "agt_x",
            "skills": [], "guardrails": [], "callerVerification": []}  # fmt: skip
    assert "recordCalls" not in base
    old = CompiledAgent.from_config(base)
    assert old.record_calls is False and old.config_hash == config_hash(base) == config_hash(old.to_config())
    on = CompiledAgent.from_config({**base, "recordCalls": True})
    assert on.record_calls is True and on.to_config()["recordCalls"] is True
    assert CompiledAgent.from_config(on.to_config()) == on and on.config_hash != old.config_hash
