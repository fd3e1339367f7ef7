"""RTCP compound packets from real bytes, and ReceptionStats against RFC 3550 A.3/A.8 worked by hand."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.errors import RtpError
from telephony.rtp.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    parse_compound,
    serialize_compound,
)

# linphone-style compound: SR with one report block, then SDES with the CNAME.
SR_SDES = bytes.fromhex(
    "81c8000c3a2b1c0de8b4f2a18000000000001f400000003200001f40"
    "112233441a0000050001000a00000025f2a1800000010000"
    "81ca00073a2b1c0d01156c696e70686f6e65403139322e3136382e312e313000"
)
# RR with one block reporting cumulative lost = -2 (duplicates), then SDES, then BYE with a reason.
RR_SDES_BYE = bytes.fromhex(
    "81c90007deadbeef3a2b1c0d00fffffe0000ffff000000a000000000000000"
    "00"
    "81ca0003deadbeef0104736970700000"
    "81cb0003deadbeef0662796562796500"
)


def test_sr_sdes() -> None:
    sr, sdes = parse_compound(SR_SDES)
    assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
    assert sr.ssrc == 0x3A2B1C0D
    assert sr.ntp_timestamp == 0xE8B4F2A180000000
    assert (sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (8000, 50, 8000)
    assert sr.lsr == 0xF2A18000
    (block,) = sr.reports
    assert block == ReportBlock(0x11223344, 26, 5, 0x1000A, 37, 0xF2A18000, 65536)
    assert sdes.chunks[0].ssrc == 0x3A2B1C0D and sdes.chunks[0].cname == "linphone@192.168.1.10"
    assert serialize_compound([sr, sdes]) == SR_SDES


def test_rr_negative_lost_and_bye() -> None:
    rr, sdes, bye = parse_compound(RR_SDES_BYE)
    assert isinstance(rr, ReceiverReport) and isinstance(bye, Bye) and isinstance(sdes, SourceDescription)
    assert rr.reports[0].cumulative_lost == -2
    assert rr.reports[0].highest_sequence == 0xFFFF
    assert sdes.chunks[0].cname == "sipp"
    assert bye.sources == [0xDEADBEEF] and bye.reason == b"byebye"
    assert serialize_compound([rr, sdes, bye]) == RR_SDES_BYE


def test_unknown_type_kept_and_padding_dropped() -> None:
    app = bytes.fromhex("80cc0002deadbeef6e616d65")  # APP
    (pkt,) = parse_compound(app)
    assert pkt == UnknownRtcp(204, 0, bytes.fromhex("deadbeef6e616d65"))
    assert bytes(pkt) == app
    padded = bytes.fromhex("a0c90002deadbeef00000004")  # RR, no blocks, 4 octets of padding
    (rr,) = parse_compound(padded)
    assert rr == ReceiverReport(0xDEADBEEF)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes.fromhex("81c8"),  # header truncated
        bytes.fromhex("41c90001deadbeef"),  # version 1
        bytes.fromhex("81c90009deadbeef"),  # length beyond datagram
        bytes.fromhex("81c90001deadbeef"),  # RC 1 but no block
        bytes.fromhex("81ca0001deadbeef"),  # SDES items not terminated
        bytes.fromhex("81ca0002deadbeef0109aaaa"),  # SDES item longer than packet
        bytes.fromhex("82cb0001deadbeef"),  # BYE count 2, one SSRC
        bytes.fromhex("a0c90001deadbeef"),  # padding count 0xef > body
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(RtpError):
        parse_compound(data)


v2_bytes = st.binary(min_size=1, max_size=120).map(lambda b: bytes([(b[0] & 0x3F) | 0x80]) + b[1:])


@given(st.binary(max_size=120) | v2_bytes)
def test_random_bytes_raise_only_rtp_error(data: bytes) -> None:
    with contextlib.suppress(RtpError):  # the only exception allowed
        parse_compound(data)


u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(ReportBlock, u32, st.integers(0, 255), st.integers(-(1 << 23), (1 << 23) - 1), u32, u32, u32, u32)


@given(
    st.lists(
        st.one_of(
            st.builds(SenderReport, u32, st.integers(0, (1 << 64) - 1), u32, u32, u32, st.lists(blocks, max_size=3)),
            st.builds(ReceiverReport, u32, st.lists(blocks, max_size=3)),
            st.builds(
                SourceDescription,
                st.lists(
                    st.builds(SdesChunk, u32, st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=20)), max_size=3)),  # noqa: E501
                    max_size=3,
                ),
            ),
            st.builds(Bye, st.lists(u32, max_size=3), st.none() | st.binary(max_size=20)),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_compound_round_trip(packets: list) -> None:  # type: ignore[type-arg]
    data = serialize_compound(packets)
    assert parse_compound(data) == packets
    assert serialize_compound(parse_compound(data)) == data


def test_jitter_worked_example() -> None:
    # 8 kHz, 20 ms frames. Arrivals 0, 20, 50, 60 ms; timestamps 0, 160, 320, 480.
    # Transit (arrival*8000 - ts): 0, 0, 80, 0 → |D|: 0, 80, 80.
    # J: 0 → 0 + (0-0)/16 = 0 → 0 + (80-0)/16 = 5 → 5 + (80-5)/16 = 9.6875
    stats = ReceptionStats(clock_rate=8000)
    for seq, ts, at in [(10, 0, 0.0), (11, 160, 0.020), (12, 320, 0.050), (13, 480, 0.060)]:
        stats.receive(seq, ts, at)
    assert stats.jitter == pytest.approx(9.6875)
    assert stats.report_block(0x1234, now=1.0).jitter == 9


def test_jitter_across_timestamp_wrap() -> None:
    stats = ReceptionStats()
    stats.receive(1, 0xFFFFFF60, 0.0)
    stats.receive(2, 0x00000000, 0.020)  # exactly on time across the 32-bit wrap
    assert stats.jitter == 0


def test_loss_fraction_and_wrap() -> None:
    stats = ReceptionStats()
    # 65530..65535, 0..9 minus 65533, 2, 3 lost: expected 16, received 13
    seqs = [s for s in [*range(65530, 65536), *range(10)] if s not in (65533, 2, 3)]
    for i, s in enumerate(seqs):
        stats.receive(s, i * 160, i * 0.02)
    assert stats.expected == 16 and stats.received == 13 and stats.lost == 3
    block = stats.report_block(0x1, now=1.0)
    assert block.fraction_lost == (3 << 8) // 16  # 48
    assert block.cumulative_lost == 3
    assert block.highest_sequence == (1 << 16) | 9
    # next interval: 10 packets expected, 10 received → fraction 0, cumulative still 3
    for s in range(10, 20):
        stats.receive(s, s * 160, s * 0.02)
    block = stats.report_block(0x1, now=2.0)
    assert block.fraction_lost == 0 and block.cumulative_lost == 3


def test_duplicates_make_lost_negative_and_lsr_dlsr() -> None:
    stats = ReceptionStats()
    for s in (1, 2, 2, 3):
        stats.receive(s, s * 160, s * 0.02)
    assert stats.lost == -1
    stats.sender_report_received(SenderReport(7, ntp_timestamp=0xE8B4F2A180000000), now=10.0)
    block = stats.report_block(7, now=10.5)
    assert block.lsr == 0xF2A18000 and block.dlsr == 32768 and block.fraction_lost == 0


def test_sequence_restart_and_stray_packet() -> None:
    stats = ReceptionStats()
    for s in range(1, 11):
        assert stats.receive(s, s * 160, s * 0.02)
    assert not stats.receive(40000, 0, 0.3)  # a stray jump is not counted
    assert stats.receive(11, 11 * 160, 0.22)
    assert (stats.received, stats.expected, stats.lost) == (11, 11, 0)
    # the peer restarts its sequence (e.g. after a re-INVITE): two in a row confirm it
    assert not stats.receive(50000, 0, 1.0)
    assert stats.receive(50001, 160, 1.02)
    assert stats.receive(50002, 320, 1.04)
    assert (stats.received, stats.expected, stats.lost) == (2, 2, 0)
    assert stats.report_block(1, now=1.1).highest_sequence == 50002
    assert stats.jitter_ms == pytest.approx(stats.jitter / 8)


@given(st.integers(0, 0xFFFF), st.lists(st.integers(0, 3), min_size=1, max_size=200))
def test_stats_invariants_under_loss_and_duplication(start: int, copies: list[int]) -> None:
    # packet i is delivered copies[i] times (0 = lost), in order, 20 ms apart on time
    stats = ReceptionStats()
    delivered = [(i, k) for i, k in enumerate(copies) for _ in range(k)]
    for i, _ in delivered:
        assert stats.receive((start + i) % 0x10000, i * 160, i * 0.02)
    if not delivered:
        assert stats.expected == 0
        return
    first, last = delivered[0][0], delivered[-1][0]
    assert stats.received == len(delivered)
    assert stats.expected == last - first + 1
    assert stats.lost == stats.expected - stats.received
    assert stats.jitter == pytest.approx(0, abs=1e-6)  # on-time delivery has no jitter
    block = stats.report_block(1, now=10.0)
    assert 0 <= block.fraction_lost <= 255
    # The receiver counts cycles from the first packet it actually received, not from one it never saw.
    base = (start + first) % 0x10000
    assert block.highest_sequence == base + (last - first)
