"""RFC 4733 telephone events: payload bytes, collapsing receiver, sender schedule."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.errors import RtpError
from telephony.rtp.dtmf import (
    _TRANSITIONS,
    DtmfReceiver,
    EndReason,
    TelephoneEvent,
    _Input,
    _State,
    dtmf_packets,
    event_to_digit,
)
from telephony.rtp.packet import RtpPacket


def rtp(hexstr: str) -> RtpPacket:
    return RtpPacket.parse(bytes.fromhex(hexstr))


# SIPp (PT 101) sending '1' as in its dtmf_2833_1.pcap: start with marker, updates, 3× end,
# timestamp 0x0000a0 throughout, volume 10, durations 160, 320, 480, 640, 800 ×3.
SIPP_DIGIT_1 = [
    "80e5000a000000a000003039" "010a00a0",
    "8065000b000000a000003039" "010a0140",
    "8065000c000000a000003039" "010a01e0",
    "8065000d000000a000003039" "010a0280",
    "8065000e000000a000003039" "018a0320",
    "8065000f000000a000003039" "018a0320",
    "80650010000000a000003039" "018a0320",
]


def test_payload_bytes() -> None:
    ev = TelephoneEvent.parse(bytes.fromhex("018a0320"))
    assert (ev.event, ev.end, ev.volume, ev.duration, ev.digit) == (1, True, 10, 800, "1")
    assert bytes(ev) == bytes.fromhex("018a0320")
    assert TelephoneEvent.parse(bytes.fromhex("0b0a00a0")).digit == "#"
    assert TelephoneEvent.parse(bytes.fromhex("0a0a00a0")).digit == "*"
    assert [event_to_digit(e) for e in (12, 15, 16)] == ["A", "D", None]
    with pytest.raises(RtpError):
        TelephoneEvent.parse(b"\x01\x0a\x00")


@given(st.binary(max_size=8))
def test_payload_random_bytes(data: bytes) -> None:
    try:
        ev = TelephoneEvent.parse(data)
    except RtpError:
        return
    assert bytes(ev) == data[:4]


def feed(rx: DtmfReceiver, packets: list[str], start: float = 0.0) -> list:  # type: ignore[type-arg]
    out = []
    for i, h in enumerate(packets):
        out += rx.receive_packet(rtp(h), now=start + i * 0.02)
    return out


def test_sipp_digit_collapses_to_one() -> None:
    rx = DtmfReceiver()
    (digit,) = feed(rx, SIPP_DIGIT_1)
    assert digit.digit == "1" and digit.duration == 800 and digit.duration_ms == 100.0
    assert digit.reason is EndReason.END and digit.timestamp == 0xA0


def test_duplicates_and_reordering() -> None:
    rx = DtmfReceiver()
    p = SIPP_DIGIT_1
    out = feed(rx, [p[0], p[0], p[2], p[1], p[3], p[4], p[3], p[5], p[6], p[6]])
    assert len(out) == 1 and out[0].duration == 800


def test_lost_start_packet() -> None:
    rx = DtmfReceiver()
    (digit,) = feed(rx, SIPP_DIGIT_1[2:])
    assert digit.digit == "1" and digit.duration == 800


def test_only_end_packets_arrive() -> None:
    rx = DtmfReceiver()
    (digit,) = feed(rx, SIPP_DIGIT_1[5:])
    assert digit.duration == 800 and digit.reason is EndReason.END


def test_lost_end_packets_time_out() -> None:
    rx = DtmfReceiver(timeout=0.3)
    assert feed(rx, SIPP_DIGIT_1[:4]) == []
    assert rx.tick(0.06 + 0.29) == []
    (digit,) = rx.tick(0.06 + 0.3)
    assert digit.reason is EndReason.TIMEOUT and digit.duration == 640
    assert rx.tick(5.0) == []
    # the end packets arriving late after the timeout are not a second digit
    assert feed(rx, SIPP_DIGIT_1[4:], start=1.0) == []


def test_new_event_replaces_unfinished_one() -> None:
    rx = DtmfReceiver()
    out = feed(rx, SIPP_DIGIT_1[:3])
    # digit '2' at timestamp 0x3c0: start with marker
    out += rx.receive_packet(rtp("80e50011000003c000003039020a00a0"), now=0.2)
    assert [(d.digit, d.reason) for d in out] == [("1", EndReason.REPLACED)]
    out = rx.receive_packet(rtp("80650012000003c000003039028a00a0"), now=0.22)
    assert [(d.digit, d.reason) for d in out] == [("2", EndReason.END)]
    # a late packet of the old event is ignored
    assert rx.receive_packet(rtp(SIPP_DIGIT_1[4]), now=0.3) == []


def test_other_event_code_on_same_timestamp_is_a_new_digit() -> None:
    rx = DtmfReceiver()
    out = feed(rx, SIPP_DIGIT_1[4:5])  # '1' ends at ts 0xa0
    out += rx.receive_packet(rtp("80e50011000000a000003039098a00a0"), now=0.1)  # '9' ends, same ts
    assert [d.digit for d in out] == ["1", "9"]


def test_sipp_pt97_filler_is_not_a_digit_but_is_rtp() -> None:
    p = rtp("80610b17000186a0000004d200000000")
    assert p.payload_type == 97  # the layer above routes only the negotiated telephone-event PT here


def test_transition_table_is_total_for_reachable_pairs() -> None:
    for state in _State:
        for inp in _Input:
            if state is _State.IDLE and inp in (_Input.SAME, _Input.SAME_END, _Input.STALE):
                assert (state, inp) not in _TRANSITIONS  # unreachable: no event yet
            else:
                assert (state, inp) in _TRANSITIONS


@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=40))
def test_any_order_with_loss_and_duplicates_gives_at_most_one_digit(ops: list[tuple[int, bool]]) -> None:
    rx = DtmfReceiver()
    out = []
    now = 0.0
    for index, tick in ops:
        now += 0.02
        out += rx.tick(now) if tick else rx.receive_packet(rtp(SIPP_DIGIT_1[index]), now)
    out += rx.tick(now + 1.0)
    assert len(out) == (1 if any(not tick for _, tick in ops) else 0)
    assert all(d.digit == "1" for d in out)


def test_sender_schedule_and_loopback() -> None:
    sched = dtmf_packets("5", payload_type=101, ssrc=0x3039, first_sequence=65534, timestamp=0xA0, duration_ms=100)
    pkts = [s.packet for s in sched]
    assert [s.offset for s in sched] == [0.0, 0.06, 0.1, 0.12, 0.14]
    assert [p.sequence_number for p in pkts] == [65534, 65535, 0, 1, 2]
    assert [p.marker for p in pkts] == [True, False, False, False, False]
    assert {p.timestamp for p in pkts} == {0xA0}
    events = [TelephoneEvent.parse(p.payload) for p in pkts]
    assert [(e.duration, e.end) for e in events] == [(160, False), (640, False), (800, True), (800, True), (800, True)]
    assert bytes(pkts[0]) == bytes.fromhex("80e5fffe000000a000003039050a00a0")
    rx = DtmfReceiver()
    out = []
    for s in sched:
        out += rx.receive_packet(RtpPacket.parse(bytes(s.packet)), now=s.offset)
    assert [(d.digit, d.duration_ms) for d in out] == [("5", 100.0)]


def test_sender_ptime_10_updates_every_50ms() -> None:
    sched = dtmf_packets("#", payload_type=98, ssrc=1, first_sequence=0, timestamp=0, duration_ms=200, ptime_ms=10)
    assert [round(s.offset, 3) for s in sched] == [0.0, 0.05, 0.1, 0.15, 0.2, 0.21, 0.22]
    with pytest.raises(ValueError):
        dtmf_packets("x", payload_type=98, ssrc=1, first_sequence=0, timestamp=0)


DIGIT_2 = [
    "80e50011000003c000003039020a00a0",
    "80650012000003c000003039020a0140",
    "80650013000003c000003039028a01e0",
    "80650014000003c000003039028a01e0",
]


@given(st.lists(st.tuples(st.integers(0, len(SIPP_DIGIT_1) + len(DIGIT_2) - 1), st.booleans()), max_size=50))
def test_two_events_any_order_one_digit_per_timestamp(ops: list[tuple[int, bool]]) -> None:
    packets = SIPP_DIGIT_1 + DIGIT_2
    rx = DtmfReceiver()
    out = []
    now = 0.0
    for index, tick in ops:
        now += 0.1
        out += rx.tick(now) if tick else rx.receive_packet(rtp(packets[index]), now)
    out += rx.tick(now + 1.0)
    timestamps = [d.timestamp for d in out]
    assert len(timestamps) == len(set(timestamps))  # never two digits for one key press
    assert {(d.timestamp, d.digit) for d in out} <= {(0xA0, "1"), (0x3C0, "2")}
    assert rx.state.value != "active"
