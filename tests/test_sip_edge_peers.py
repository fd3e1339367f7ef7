"""Our SIP/RTP edge (`SipEdge`) answering real peers over loopback: SIPp, baresip, linphonec, kamailio.

The edge runs in the test's event loop with a router that maps dialed numbers to handlers; each
handler records what the caller sent (audio, digits, how the call ended) and does what the test needs
(echo, hang up, transfer). A missing peer binary fails the test: `./dev test` installs them all.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from telephony.call import SipCallLeg, TransferOutcome
from telephony.echo import echo_call
from telephony.edge import Admit, EdgeConfig, Refuse, SipEdge
from telephony.sip.ua_types import CallInfo
from tests.peers.baresip import Baresip
from tests.peers.fixtures import need
from tests.peers.kamailio import Kamailio
from tests.peers.linphone import Linphonec
from tests.peers.sipp import Sipp, SippResult
from tests.peers.speech import pad, read_wav, rtp_dtmf_pcap, speech_pcm, write_rtp_pcap

HOST = "127.0.0.1"
SPEECH = "Hello, I would like to book a table."
ECHO, HANGUP, REFER, SILENT, NOWHERE = "+15550100", "+15550101", "+15550102", "+15550103", "+15550404"


@dataclass
class Seen:
    """What the handler of one call observed."""

    info: CallInfo
    frames: list[NDArray[np.int16]] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    ended: str = ""
    transfer: TransferOutcome | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    packets_sent: int = 0
    media_updates: int = 0

    @property
    def audio(self) -> NDArray[np.int16]:
        return np.concatenate(self.frames) if self.frames else np.zeros(0, np.int16)


@dataclass
class Harness:
    edge: SipEdge
    calls: list[Seen]
    transfer_target: list[str]
    arrived: asyncio.Condition

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.edge.port

    async def call_done(self, index: int = 0, within: float = 15.0) -> Seen:
        async with asyncio.timeout(within):
            async with self.arrived:
                await self.arrived.wait_for(lambda: len(self.calls) > index)
            await self.calls[index].done.wait()
        return self.calls[index]


async def record(leg: SipCallLeg, seen: Seen, *, echo: bool) -> None:
    async def audio() -> None:
        async for frame in leg.audio():
            seen.frames.append(frame)
            if echo:
                leg.write(frame)

    async def digits() -> None:
        async for digit in leg.dtmf():
            seen.digits.append(digit.digit)

    tasks = [asyncio.create_task(audio()), asyncio.create_task(digits())]
    try:
        seen.ended = await leg.wait_ended()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    calls: list[Seen] = []
    target: list[str] = []
    arrived = asyncio.Condition()

    def handler(kind: str, seen: Seen) -> Callable[[SipCallLeg], Awaitable[None]]:
        async def run(leg: SipCallLeg) -> None:
            try:
                if kind == ECHO:
                    await record(leg, seen, echo=True)
                elif kind == SILENT:
                    await record(leg, seen, echo=False)
                elif kind == HANGUP:
                    leg.write(np.full(8000, 3000, np.int16))
                    await asyncio.sleep(1.0)  # a second of call, then we hang up
                    seen.ended = "local hangup"
                elif kind == REFER:
                    await leg.wait_confirmed()
                    seen.transfer = await leg.transfer(target[0], within=15)
                    seen.ended = "transferred"
            finally:
                seen.packets_sent = leg.media_stats().packets_sent
                seen.media_updates = leg.media_updates
                seen.done.set()

        return run

    async def router(info: CallInfo) -> Admit | Refuse:
        if info.dialed == NOWHERE:
            return Refuse(404, "No Such Number")
        if info.dialed == "+15550999":
            await asyncio.Event().wait()  # routing never finishes: the caller cancels meanwhile
        seen = Seen(info)
        async with arrived:
            calls.append(seen)
            arrived.notify_all()
        return Admit(handler(info.dialed, seen))

    base = random.Random().randrange(30000, 50000, 2)
    edge = SipEdge(EdgeConfig(bind_host=HOST, sip_port=0, rtp_ports=(base, base + 100)), router)
    await edge.start()
    try:
        yield Harness(edge, calls, target, arrived)
    finally:
        await edge.close()


def assert_ok(result: SippResult) -> None:
    assert result.ok, result.describe()


def speech_pcap(tmp_path: Path, text: str = SPEECH) -> tuple[Path, NDArray[np.int16], float]:
    speech = pad(speech_pcm(text), 0.0, 0.3)
    path = tmp_path / "speech.pcap"
    return path, speech, write_rtp_pcap(path, speech, codec="PCMU")


def best_correlation(heard: NDArray[np.int16], sent: NDArray[np.int16]) -> float:
    """The best normalised correlation of `sent` inside `heard` (the offset is unknown)."""
    x = heard.astype(np.float64)
    y = sent.astype(np.float64)
    if len(x) < len(y):
        return 0.0
    corr = np.correlate(x, y, mode="valid")
    energy = np.sqrt(np.convolve(x * x, np.ones(len(y)), mode="valid")) * np.linalg.norm(y) + 1e-9
    return float(np.max(corr / energy))


# --- SIPp as the caller ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_sipp_call_speech_reaches_us_and_bye_ends_it(
    harness: Harness, sipp: Callable[..., Sipp], tmp_path: Path, transport: str
) -> None:
    pcap, speech, duration = speech_pcap(tmp_path)
    uac = sipp(
        "uac_speech",
        remote=harness.address,
        service=ECHO,
        caller="+14155550123",
        transport=transport,
        keys={"pcap": pcap},
        variables={"audio_ms": int(duration * 1000) + 600},
        timeout=20,
    ).start()
    result = await uac.wait_async(30)
    assert_ok(result)
    seen = await harness.call_done()
    assert seen.info.dialed == ECHO and seen.info.caller == "+14155550123"
    assert seen.ended == "remote hangup"
    assert best_correlation(seen.audio, speech[: 8000 // 2 * 2]) > 0.9, "the caller's speech arrived intact"
    assert seen.packets_sent > 0.5 * duration / 0.02, "we sent audio back (the echo)"
    ok = result.received(200)[0]
    assert "m=audio" in ok.body and "RTP/AVP 0 101" in ok.body, ok.body
    assert [m.status for m in result.received() if m.status][:1] == [100]


async def test_sipp_rfc2833_digits_are_collected(harness: Harness, sipp: Callable[..., Sipp], tmp_path: Path) -> None:
    pcap = tmp_path / "digits.pcap"
    duration = rtp_dtmf_pcap(pcap, "42*#", payload_type=101)
    uac = sipp(
        "uac_dtmf",
        remote=harness.address,
        service=SILENT,
        keys={"dtmf_pcap": pcap},
        variables={"lead_ms": 300, "dtmf_ms": int(duration * 1000) + 500},
        timeout=20,
    ).start()
    assert_ok(await uac.wait_async(30))
    seen = await harness.call_done()
    assert seen.digits == ["4", "2", "*", "#"]


async def test_sipp_cancel_before_answer_gets_487(harness: Harness, sipp: Callable[..., Sipp]) -> None:
    uac = sipp("uac_cancel", remote=harness.address, service="+15550999", timeout=15).start()
    result = await uac.wait_async(20)
    assert_ok(result)
    assert 487 in [m.status for m in result.received()]
    assert harness.edge.ua is not None and not harness.edge.ua.calls, "the cancelled call is gone"


async def test_we_hang_up_with_a_bye_the_caller_answers(harness: Harness, sipp: Callable[..., Sipp]) -> None:
    uac = sipp("uac_remote_bye", remote=harness.address, service=HANGUP, timeout=15).start()
    result = await uac.wait_async(20)
    assert_ok(result)
    (bye,) = result.received("BYE")
    assert bye.headers("CSeq")[0].endswith("BYE")


async def test_refer_is_answered_202_and_the_notify_200_reports_success(
    harness: Harness, sipp: Callable[..., Sipp]
) -> None:
    harness.transfer_target.append("sip:+15550199@127.0.0.1:5999")
    uac = sipp("uac_refer", remote=harness.address, service=REFER, timeout=20).start()
    result = await uac.wait_async(25)
    assert_ok(result)
    assert "refer_to=sip:+15550199@127.0.0.1:5999" in result.logs
    seen = await harness.call_done()
    assert seen.transfer == TransferOutcome(True, 200, "transferred")
    refer = result.received("REFER")[0]
    assert refer.headers("Referred-By"), refer.text


async def test_options_and_refusals(harness: Harness, sipp: Callable[..., Sipp], tmp_path: Path) -> None:
    assert_ok(await sipp("uac_options", remote=harness.address, timeout=10).start().wait_async(15))
    pcap, _, _ = speech_pcap(tmp_path, "No.")
    uac = sipp("uac_speech", remote=harness.address, service=NOWHERE, keys={"pcap": pcap}, timeout=10)
    result = await uac.start().wait_async(15)
    assert 404 in [m.status for m in result.received()], result.describe()


async def test_malformed_datagrams_get_400_or_nothing_and_a_call_in_progress_carries_on(
    harness: Harness, sipp: Callable[..., Sipp], tmp_path: Path
) -> None:
    pcap, _, duration = speech_pcap(tmp_path)
    uac = sipp(
        "uac_speech",
        remote=harness.address,
        service=ECHO,
        keys={"pcap": pcap},
        variables={"audio_ms": int(duration * 1000) + 1500},
        timeout=20,
    ).start()
    rng = random.Random(4475)
    template = (  # to a number nobody owns, so a mutation that still parses is refused, not answered
        f"INVITE sip:{NOWHERE}@{HOST} SIP/2.0\r\nVia: SIP/2.0/UDP {HOST}:9;branch=z9hG4bKfuzz\r\n"
        f"From: <sip:x@{HOST}>;tag=1\r\nTo: <sip:{NOWHERE}@{HOST}>\r\nCall-ID: fuzz\r\nCSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    replies: list[bytes] = []
    loop = asyncio.get_running_loop()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe,
    ):
        sock.bind((HOST, 0))
        sock.setblocking(False)
        probe.bind((HOST, 0))
        probe.setblocking(False)
        await asyncio.sleep(0.3)  # the call is being set up
        for i in range(2000):
            raw = bytearray(template)
            for _ in range(rng.randint(1, 5)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            raw[raw.find(b"Call-ID: fuzz") + 13 : raw.find(b"Call-ID: fuzz") + 13] = str(i).encode()
            await loop.sock_sendto(sock, bytes(raw), harness.address)
            if i % 100 == 0:
                await asyncio.sleep(0.01)
        bad = template.replace(f"sip:{NOWHERE}@{HOST}".encode(), b"sip:<nope>", 1)
        # Over UDP a request is retransmitted until answered (RFC 3261 17.1.1.2, Timer A from 500 ms): right
        # after the flood the edge's socket buffer may still be full, and the kernel drops the first copy.
        async with asyncio.timeout(5):
            while not replies:
                await loop.sock_sendto(probe, bad, harness.address)
                try:
                    async with asyncio.timeout(0.5):
                        replies.append(await loop.sock_recv(probe, 65536))
                except TimeoutError:
                    continue
    assert replies[0].startswith(b"SIP/2.0 400 ") and b"Call-ID: fuzz\r\n" in replies[0]
    assert_ok(await uac.wait_async(30))
    assert (await harness.call_done()).ended == "remote hangup"


# --- kamailio as a Record-Route proxy in front ---------------------------------------------------------


@pytest.mark.parametrize(("service", "scenario"), [(HANGUP, "uac_remote_bye"), (REFER, "uac_refer")])
async def test_in_dialog_bye_and_refer_follow_the_route_set_through_kamailio(
    harness: Harness,
    sipp: Callable[..., Sipp],
    kamailio: Callable[[tuple[str, int]], Kamailio],
    service: str,
    scenario: str,
) -> None:
    harness.transfer_target.append("sip:+15550199@127.0.0.1:5999")
    proxy = kamailio(harness.address)
    proxy.start()
    uac = sipp(scenario, remote=proxy.address, service=service, timeout=20).start()
    result = await uac.wait_async(25)
    assert_ok(result)
    hop = f"127.0.0.1:{proxy.port}"
    method = "BYE" if scenario == "uac_remote_bye" else "REFER"
    ours = result.received(method)[0]
    assert hop in ours.headers("Via")[0], f"our {method} went through the proxy: {ours.text}"
    ok = result.received(200)[0]
    assert any(hop in rr for rr in ok.headers("Record-Route")), "our 200 kept the proxy's Record-Route"


# --- baresip and linphonec ------------------------------------------------------------------------------


async def test_baresip_hears_the_prompt_and_its_echo_and_its_digits_arrive(
    baresip: Callable[..., Baresip], tmp_path: Path
) -> None:
    seen_digits: list[str] = []

    async def echo_and_note(leg: SipCallLeg) -> None:
        await echo_call(leg, max_seconds=30, on_digit=lambda digit: seen_digits.append(digit.digit))

    async def router(info: CallInfo) -> Admit | Refuse:
        return Admit(echo_and_note)

    base = random.Random().randrange(30000, 50000, 2)
    async with SipEdge(EdgeConfig(bind_host=HOST, sip_port=0, rtp_ports=(base, base + 50)), router) as edge:
        phone = await baresip(source_pcm=speech_pcm(SPEECH)).start()
        assert (await phone.ctrl.command("dial", f"sip:{ECHO}@{HOST}:{edge.port}")).ok
        await phone.ctrl.wait_event("CALL_ESTABLISHED", within=10)
        for digit in "73":
            assert (await phone.ctrl.command("sndcode", digit)).ok
            await asyncio.sleep(0.4)
        await asyncio.sleep(2.0)  # a real call: let it hear the prompt tone and its own voice echoed
        await phone.ctrl.command("hangup")
        await phone.ctrl.wait_event("CALL_CLOSED", within=5)
        await phone.close()
    assert seen_digits == ["7", "3"]
    (heard,) = phone.recordings("dec")
    pcm, rate = read_wav(heard)
    assert rate == 8000 and np.abs(pcm).max() > 2000, "baresip heard our prompt tone and its echo"


async def test_our_refer_makes_baresip_call_a_second_sipp_uas(
    harness: Harness, sipp: Callable[..., Sipp], baresip: Callable[..., Baresip]
) -> None:
    target = sipp("uas_answer", rtp_echo=True, timeout=20).start()
    target.wait_listening()
    harness.transfer_target.append(f"sip:+15550199@{target.uri_host}")
    phone = await baresip(source_pcm=speech_pcm(SPEECH)).start()
    assert (await phone.ctrl.command("dial", f"sip:{REFER}@{HOST}:{harness.edge.port}")).ok
    seen = await harness.call_done(within=20)
    assert seen.transfer is not None and seen.transfer.ok, seen.transfer
    await phone.ctrl.command("hangup")
    result = await target.wait_async(20)
    assert "dialed=+15550199" in result.logs, result.describe()


async def test_linphonec_holds_with_a_reinvite_before_it_follows_our_refer(
    harness: Harness, sipp: Callable[..., Sipp], tmp_path: Path
) -> None:
    need("linphonec")
    target = sipp("uas_answer", rtp_echo=True, timeout=25).start()
    target.wait_listening()
    harness.transfer_target.append(f"sip:+15550199@{target.uri_host}")
    phone = await Linphonec(workdir=tmp_path, play_pcm=speech_pcm(SPEECH)).start()
    try:
        await phone.call(f"sip:{REFER}@{HOST}:{harness.edge.port}")
        seen = await harness.call_done(within=25)
        assert seen.transfer is not None and seen.transfer.ok, (seen.transfer, phone.tail())
        assert seen.media_updates >= 1, "linphone held the call with a re-INVITE before following the REFER"
        await phone.terminate()
        result = await target.wait_async(25)
        assert "dialed=+15550199" in result.logs, result.describe()
    finally:
        await phone.close()


async def test_sipp_authenticates_with_digest_and_a_wrong_password_is_refused(sipp: Callable[..., Sipp]) -> None:
    from telephony.sip.digest import DigestAuthenticator, DigestCredentials

    answered: list[str] = []

    async def router(info: CallInfo) -> Admit | Refuse:
        async def handler(leg: SipCallLeg) -> None:
            answered.append(leg.call_id)
            await leg.wait_ended()

        return Admit(handler)

    credentials = DigestCredentials("trunk", "s3cret", "flowyte")
    # MD5 offered first, as flowyte serve does: SIPp (like much deployed equipment) reads only the first
    # challenge and knows only MD5; RFC 8760 clients that know SHA-256 still find it in the second.
    auth = DigestAuthenticator("flowyte", credentials, b"x" * 32, algorithms=("MD5", "SHA-256"))
    base = random.Random().randrange(30000, 50000, 2)
    config = EdgeConfig(bind_host=HOST, sip_port=0, rtp_ports=(base, base + 20), auth=auth)
    async with SipEdge(config, router) as edge:
        # SIPp's digest-uri defaults to sip:host:port; the RFC 2617 §3.2.2.5 check wants the Request-URI.
        uri = ["-auth_uri", f"{ECHO}@{HOST}:{edge.port}"]
        good = sipp(
            "uac_auth", remote=(HOST, edge.port), service=ECHO, extra_args=["-au", "trunk", "-ap", "s3cret", *uri]
        )
        result = await good.start().wait_async(20)
        assert_ok(result)
        challenge = result.received(401)[0].headers("WWW-Authenticate")
        assert any("SHA-256" in c for c in challenge) and any("MD5" in c for c in challenge)
        assert len(answered) == 1
        bad = sipp("uac_auth", remote=(HOST, edge.port), service=ECHO, extra_args=["-au", "trunk", "-ap", "nope", *uri])
        refused = await bad.start().wait_async(20)
        assert not refused.ok and [m.status for m in refused.received() if m.status == 401] == [401, 401]
        assert len(answered) == 1
