"""The peer tooling in tests/peers, proven against real peers only: SIPp as UAS (and UAC), baresip,
linphonec and kamailio talking to each other over loopback. None of these tests touches our own SIP
server; they show that the drivers, scenarios and media files do what the server tests will rely on.

A missing peer binary fails the test (``./dev test`` installs them all); nothing here is skipped.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from telephony.codecs.g711 import alaw_decode
from telephony.rtp.dtmf import DtmfReceiver
from telephony.rtp.packet import RtpPacket
from tests.peers.baresip import Baresip
from tests.peers.fixtures import need
from tests.peers.kamailio import Kamailio
from tests.peers.linphone import Linphonec
from tests.peers.sipp import Sipp, SippResult
from tests.peers.speech import (
    Codec,
    decode_rtp_audio,
    pad,
    read_udp_pcap,
    read_wav,
    rtp_dtmf_pcap,
    speech_pcm,
    write_rtp_pcap,
)

SPEECH = "Hello, I would like to book a table for two at seven."
DIALED = "+15550100"


def correlation(a: NDArray[np.int16], b: NDArray[np.int16]) -> float:
    n = min(len(a), len(b))
    x, y = a[:n].astype(np.float64), b[:n].astype(np.float64)
    return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9))


def best_lag_correlation(heard: NDArray[np.int16], sent: NDArray[np.int16], max_lag: int) -> float:
    """Highest correlation of ``sent`` against ``heard`` shifted by 0..max_lag samples."""
    return max(correlation(heard[lag:], sent) for lag in range(0, max_lag, 8))


@pytest.fixture
def rtp_sink() -> Iterator[socket.socket]:
    """A UDP socket standing in as the callee's media port: what lands here is what the caller sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[RtpPacket]:
    packets: list[RtpPacket] = []
    while True:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return packets
        packets.append(RtpPacket.parse(data))


def assert_ok(result: SippResult) -> None:
    assert result.ok, result.describe()


# ---------------------------------------------------------------------------------------------- media


def test_speech_pcap_holds_the_speech_as_paced_rtp(tmp_path: Path) -> None:
    need("espeak-ng", "sox")
    speech = speech_pcm(SPEECH)
    assert speech.dtype == np.int16 and len(speech) > 8000  # more than a second of audio
    assert np.abs(speech).max() > 5000  # not silence
    assert speech_pcm(SPEECH) is not speech and np.array_equal(speech_pcm(SPEECH), speech)  # cached, same

    codecs: list[tuple[Codec, int]] = [("PCMU", 0), ("PCMA", 8)]
    for codec, pt in codecs:
        path = tmp_path / f"speech-{codec}.pcap"
        duration = write_rtp_pcap(
            path, speech, codec=codec, ssrc=0x1234, src=("127.0.0.1", 40000), dst=("127.0.0.1", 6000)
        )
        records = read_udp_pcap(path)
        assert len(records) == -(-len(speech) // 160) and duration == pytest.approx(len(records) * 0.02)
        packets = [RtpPacket.parse(r.payload) for r in records]
        assert {p.payload_type for p in packets} == {pt}
        assert {p.ssrc for p in packets} == {0x1234}
        assert {len(p.payload) for p in packets} == {160}
        assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
        assert np.all(np.diff([p.sequence_number for p in packets]) == 1)
        assert np.all(np.diff([p.timestamp for p in packets]) == 160)
        assert np.allclose(np.diff([r.time for r in records]), 0.02, atol=2e-6)
        assert {(r.src, r.dst) for r in records} == {(("127.0.0.1", 40000), ("127.0.0.1", 6000))}
        decoded = decode_rtp_audio(packets, codec)
        assert correlation(decoded, speech) > 0.99  # G.711 quantization only


def test_pcap_reader_reads_sipps_own_pcaps_and_dtmf_pcap_carries_the_digits(tmp_path: Path) -> None:
    need("sipp")
    shipped = Path("/usr/share/sip-tester/g711a.pcap")
    assert shipped.exists(), "sip-tester ships /usr/share/sip-tester/g711a.pcap"
    packets = [RtpPacket.parse(r.payload) for r in read_udp_pcap(shipped)]
    assert len(packets) > 100 and {p.payload_type for p in packets} == {8}
    assert np.abs(alaw_decode(b"".join(p.payload for p in packets))).max() > 1000

    path = tmp_path / "digits.pcap"
    duration = rtp_dtmf_pcap(path, "1#9", payload_type=101)
    receiver = DtmfReceiver()
    digits: list[str | None] = []
    records = read_udp_pcap(path)
    for record in records:
        packet = RtpPacket.parse(record.payload)
        assert packet.payload_type == 101
        digits += [d.digit for d in receiver.receive_packet(packet, record.time)]
    assert digits == ["1", "#", "9"]
    assert records[-1].time - records[0].time < duration


# ------------------------------------------------------------------------------------------ SIPp ↔ SIPp


def test_sipp_uac_speech_reaches_sipp_uas_media_port(
    tmp_path: Path, sipp: Callable[..., Sipp], rtp_sink: socket.socket
) -> None:
    speech = pad(speech_pcm(SPEECH), 0.0, 0.2)
    pcap = tmp_path / "speech.pcap"
    duration = write_rtp_pcap(pcap, speech, codec="PCMU")
    uas = sipp("uas_answer", rtp_port=rtp_sink.getsockname()[1], timeout=15).start()
    uas.wait_listening()
    uac = sipp(
        "uac_speech",
        remote=uas.address,
        service=DIALED,
        caller="alice",
        keys={"pcap": pcap},
        variables={"audio_ms": int(duration * 1000) + 500},
        timeout=15,
    ).start()
    assert_ok(uac.wait())
    uas_result = uas.wait()
    assert_ok(uas_result)

    invite = uas_result.received("INVITE")[0]
    assert invite.start_line == f"INVITE sip:{DIALED}@127.0.0.1:{uas.local_port} SIP/2.0"
    assert "m=audio" in invite.body and "RTP/AVP 0 8 101" in invite.body and "a=ptime:20" in invite.body
    assert "dialed=" + DIALED in uas_result.logs
    assert [m.method for m in uas_result.received()] == ["INVITE", "ACK", "BYE"]

    packets = drain(rtp_sink)
    assert len(packets) == round(duration / 0.02)  # loopback: every packet arrives
    assert correlation(decode_rtp_audio(packets, "PCMU"), speech) > 0.99


def test_sipp_uac_dtmf_sends_rfc4733_digits(tmp_path: Path, sipp: Callable[..., Sipp], rtp_sink: socket.socket) -> None:
    pcap = tmp_path / "digits.pcap"
    duration = rtp_dtmf_pcap(pcap, "42*", payload_type=101)
    uas = sipp("uas_answer", rtp_port=rtp_sink.getsockname()[1], timeout=15).start()
    uas.wait_listening()
    uac = sipp(
        "uac_dtmf",
        remote=uas.address,
        service=DIALED,
        keys={"dtmf_pcap": pcap},
        variables={"lead_ms": 200, "dtmf_ms": int(duration * 1000) + 300},
        timeout=15,
    ).start()
    assert_ok(uac.wait())
    assert_ok(uas.wait())
    receiver = DtmfReceiver()
    digits = [d.digit for p in drain(rtp_sink) for d in receiver.receive_packet(p, 0.0)]
    assert digits == ["4", "2", "*"]


# ------------------------------------------------------------------------------------------- baresip


async def test_baresip_dials_sipp_uas_sends_dtmf_and_records(
    sipp: Callable[..., Sipp], baresip: Callable[..., Baresip]
) -> None:
    uas = sipp("uas_answer", rtp_echo=True, timeout=20).start()  # echoes baresip's own RTP back to it
    uas.wait_listening()
    phone = await baresip(source_pcm=speech_pcm(SPEECH)).start()

    dial = await phone.ctrl.command("dial", f"sip:{DIALED}@{uas.uri_host}")
    assert dial.ok, dial
    established = await phone.ctrl.wait_event("CALL_ESTABLISHED", within=10)
    assert DIALED in established.param
    await phone.ctrl.wait_event("CALL_RTPESTAB", within=5)  # RTP came back from SIPp's echo
    sent = await phone.ctrl.command("sndcode", "5")
    assert sent.ok, sent
    echoed = await phone.ctrl.wait_event("CALL_DTMF_START", within=5)  # its own RFC 4733 event, echoed
    assert echoed.param == "5"
    await asyncio.sleep(1.5)  # real time on a real call: let baresip talk and hear its echo for a while
    await phone.ctrl.command("hangup")
    await phone.ctrl.wait_event("CALL_CLOSED", within=5)
    result = await uas.wait_async()
    assert_ok(result)
    assert [m.method for m in result.received()] == ["INVITE", "ACK", "BYE"]
    assert "PCMU/8000" in result.received("INVITE")[0].body

    await phone.close()  # SIGTERM: sndfile finalizes the WAV headers
    heard = phone.recordings("dec")
    assert len(heard) == 1, phone.log()[-2000:]
    assert heard[0].read_bytes()[:4] == b"RIFF" and heard[0].read_bytes()[8:12] == b"WAVE"
    pcm, rate = read_wav(heard[0])
    assert rate == 8000 and len(pcm) > 8000
    assert np.abs(pcm).max() > 1000  # it heard its own speech echoed, not silence


# ------------------------------------------------------------------------------------------ linphonec


async def test_linphonec_calls_holds_resumes_and_hangs_up(
    sipp: Callable[..., Sipp], linphonec: Callable[..., Linphonec]
) -> None:
    uas = sipp("uas_hold", rtp_echo=True, timeout=25).start()
    uas.wait_listening()
    phone = await linphonec(play_pcm=speech_pcm(SPEECH)).start()

    await phone.call(f"sip:{DIALED}@{uas.uri_host}")
    await phone.hold()
    await phone.resume()
    await phone.terminate()
    result = await uas.wait_async()
    assert_ok(result)  # uas_hold checks the hold SDP (sendonly/inactive) and the resume SDP itself

    assert "hold=sendonly" in result.logs or "hold=inactive" in result.logs
    assert "resume=sendrecv" in result.logs
    assert [m.method for m in result.received()] == ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"]
    invites = result.received("INVITE")
    assert "a=sendonly" in invites[1].body and "a=sendonly" not in invites[2].body
    assert "c=IN IP4 127.0.0.1" in invites[0].body  # media bound to loopback, as configured
    assert phone.record_wav.exists()


# ------------------------------------------------------------------------------------------- kamailio


def test_kamailio_record_routes_a_sipp_call(
    tmp_path: Path, sipp: Callable[..., Sipp], kamailio: Callable[[tuple[str, int]], Kamailio]
) -> None:
    pcap = tmp_path / "hello.pcap"
    duration = write_rtp_pcap(pcap, speech_pcm("Hello."), codec="PCMU")
    uas = sipp("uas_answer", rtp_echo=True, timeout=15).start()
    proxy = kamailio(uas.address)
    assert "Listening on" in proxy.check()
    proxy.start()
    uas.wait_listening()
    uac = sipp(
        "uac_speech",
        remote=proxy.address,
        service=DIALED,
        keys={"pcap": pcap},
        variables={"audio_ms": int(duration * 1000) + 200},
        timeout=15,
    ).start()
    uac_result = uac.wait()
    assert_ok(uac_result)
    uas_result = uas.wait()
    assert_ok(uas_result)

    proxy_hop = f"127.0.0.1:{proxy.port}"
    invite = uas_result.received("INVITE")[0]
    assert any(proxy_hop in rr and ";lr" in rr for rr in invite.headers("Record-Route")), invite.text
    assert proxy_hop in invite.headers("Via")[0]  # it came through the proxy
    bye = uas_result.received("BYE")[0]
    assert proxy_hop in bye.headers("Via")[0]  # the in-dialog BYE followed the route set
    assert any(proxy_hop in route for route in uac_result.sent("BYE")[0].headers("Route"))
    ok = uac_result.received(200)[0]
    assert any(proxy_hop in rr for rr in ok.headers("Record-Route"))


# ----------------------------------------------------------------- the other UAC scenarios, against SIPp


@pytest.mark.parametrize(
    ("uac_scenario", "uas_scenario", "uas_saw"),
    [
        ("uac_cancel", "uas_ring_cancel", ["INVITE", "CANCEL", "ACK"]),
        ("uac_remote_bye", "uas_hangup", ["INVITE", "ACK", 200]),
        ("uac_refer", "uas_transfer", ["INVITE", "ACK", 202, "NOTIFY", 200]),
        ("uac_options", "uas_options", ["OPTIONS"]),
    ],
)
def test_uac_scenario_completes_against_its_sipp_counterpart(
    sipp: Callable[..., Sipp], uac_scenario: str, uas_scenario: str, uas_saw: list[str | int]
) -> None:
    uas = sipp(uas_scenario, rtp_echo=True, keys={"refer_to": "+15550199@127.0.0.1:5999"}, timeout=15).start()
    uas.wait_listening()
    uac = sipp(uac_scenario, remote=uas.address, service=DIALED, timeout=15).start()
    uac_result = uac.wait()
    assert_ok(uac_result)
    uas_result = uas.wait()
    assert_ok(uas_result)
    assert [m.method or m.status for m in uas_result.received()] == uas_saw
    if uac_scenario == "uac_cancel":
        statuses = [m.status for m in uac_result.received()]
        assert statuses[0] == 100 and statuses[-1] == 487 and 200 in statuses
        cancel, ack = uac_result.sent("CANCEL")[0], uac_result.sent("ACK")[0]
        invite = uac_result.sent("INVITE")[0]
        assert cancel.headers("Via") == invite.headers("Via") == ack.headers("Via")  # same transaction
    if uac_scenario == "uac_refer":
        assert "refer_to=sip:+15550199@127.0.0.1:5999" in uac_result.logs
        assert "notify=SIP/2.0 200 OK" in uas_result.logs
        notify = uac_result.sent("NOTIFY")[0]
        assert notify.headers("Event") == ["refer"] and notify.body.strip() == "SIP/2.0 200 OK"
        assert notify.headers("Subscription-State") == ["terminated;reason=noresource"]
