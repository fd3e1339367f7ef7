"""RTP packets from real bytes; malformed input raises RtpError and nothing else."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.errors import RtpError
from telephony.rtp.packet import HeaderExtension, PacketKind, RtpPacket, classify

# SIPp uac_pcap / linphone PCMU frame: V=2, PT 0, seq 0x1a2b, ts 0x000a1f40, SSRC 0x3a2b1c0d,
# 160 octets of μ-law silence (0xff).
PCMU = bytes.fromhex("80001a2b000a1f403a2b1c0d") + b"\xff" * 160
# The first packet of a talkspurt (marker set), PCMA.
PCMA_MARKER = bytes.fromhex("8088000100000000deadbeef") + b"\xd5" * 160
# SIPp's PT 97 filler packet (the layer above ignores this payload type).
SIPP_PT97 = bytes.fromhex("80610b17000186a0000004d2") + bytes(4)
# Two CSRCs, a one-byte header extension (RFC 8285 profile 0xBEDE, one word), 4 bytes of padding.
FULL = bytes.fromhex("b2000005000000a0000000010000000200000003bede00011001ab00") + b"\x7f\x7f" + bytes.fromhex(
    "00000004"
)


def test_parse_pcmu() -> None:
    p = RtpPacket.parse(PCMU)
    assert (p.version, p.payload_type, p.sequence_number, p.timestamp, p.ssrc) == (2, 0, 0x1A2B, 0xA1F40, 0x3A2B1C0D)
    assert not p.marker and not p.padding and p.extension is None and p.csrc == []
    assert p.payload == b"\xff" * 160
    assert bytes(p) == PCMU


def test_marker_and_filler() -> None:
    p = RtpPacket.parse(PCMA_MARKER)
    assert p.marker and p.payload_type == 8 and p.sequence_number == 1
    assert bytes(p) == PCMA_MARKER
    f = RtpPacket.parse(SIPP_PT97)
    assert f.payload_type == 97 and f.timestamp == 100000 and f.payload == bytes(4)
    assert bytes(f) == SIPP_PT97


def test_csrc_extension_padding_preserved() -> None:
    p = RtpPacket.parse(FULL)
    assert p.csrc == [2, 3]
    assert p.extension == HeaderExtension(0xBEDE, bytes.fromhex("1001ab00"))
    assert p.payload == b"\x7f\x7f"
    assert p.padding_size == 4
    assert bytes(p) == FULL


@pytest.mark.parametrize(
    "data",
    [
        b"",
        PCMU[:11],  # shorter than the fixed header
        bytes([0x40]) + PCMU[1:],  # version 1
        bytes([0x83]) + PCMU[1:12] + bytes(8),  # 3 CSRCs claimed, room for 2
        bytes([0x90]) + PCMU[1:12] + bytes.fromhex("bede0004") + bytes(4),  # extension longer than packet
        bytes([0xA0]) + PCMU[1:12] + b"\x01\x00",  # padding count 0
        bytes([0xA0]) + PCMU[1:12] + b"\x01\x09",  # padding longer than payload
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


@given(st.binary(max_size=80) | st.binary(min_size=1, max_size=80).map(lambda b: bytes([(b[0] & 0x3F) | 0x80]) + b[1:]))
def test_random_bytes_raise_only_rtp_error(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    if p.padding_size == 0 or all(b == 0 for b in data[-p.padding_size : -1]):
        assert bytes(p) == data


@given(
    st.builds(
        RtpPacket,
        payload_type=st.integers(0, 127),
        sequence_number=st.integers(0, 0xFFFF),
        timestamp=st.integers(0, 0xFFFFFFFF),
        ssrc=st.integers(0, 0xFFFFFFFF),
        marker=st.booleans(),
        payload=st.binary(max_size=64),
        csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
        extension=st.none() | st.builds(HeaderExtension, st.integers(0, 0xFFFF), st.binary(max_size=8).map(
            lambda b: b + bytes(-len(b) % 4))),
        padding_size=st.integers(0, 255),
    )
)
def test_round_trip(p: RtpPacket) -> None:
    assert RtpPacket.parse(bytes(p)) == p


def test_classify_rfc5761() -> None:
    assert classify(PCMU) is PacketKind.RTP
    assert classify(SIPP_PT97) is PacketKind.RTP
    assert classify(bytes.fromhex("80c8000c")) is PacketKind.RTCP  # SR 200 = PT 72 with marker
    assert classify(bytes.fromhex("81ca0007")) is PacketKind.RTCP  # SDES 202
    assert classify(bytes.fromhex("81cb0001")) is PacketKind.RTCP  # BYE 203
    assert classify(bytes.fromhex("80e5")) is PacketKind.RTP  # PT 101 with marker: telephone-event
    assert classify(bytes.fromhex("0001002c")) is PacketKind.OTHER  # STUN binding request
    assert classify(b"\x16\xfe") is PacketKind.OTHER  # DTLS
