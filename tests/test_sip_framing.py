"""TCP stream framing (telephony.sip.framing): chunk splits, keep-alives, and broken streams."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.sip import FramingError, MessageTooLarge, Rejected, SipParseError, StreamFramer, parse
from telephony.sip.framing import Framed
from tests.test_sip_message import BYE, INVITE_LINPHONE, NOTIFY, OK_INVITE, REFER, SAMPLES

STREAM = [INVITE_LINPHONE, b"\r\n\r\n", OK_INVITE, b"\r\n", BYE, REFER, b"\r\n\r\n\r\n\r\n", NOTIFY]
STREAM_BYTES = b"".join(STREAM)
EXPECTED = [parse(m) for m in STREAM if m.strip()]


def _feed_all(framer: StreamFramer, chunks: list[bytes]) -> list[Framed]:
    out: list[Framed] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out


def test_whole_stream_in_one_chunk() -> None:
    framer = StreamFramer()
    assert framer.feed(STREAM_BYTES) == EXPECTED
    assert framer.take_pings() == 3 and framer.take_pings() == 0


def test_byte_at_a_time() -> None:
    framer = StreamFramer()
    assert _feed_all(framer, [STREAM_BYTES[i : i + 1] for i in range(len(STREAM_BYTES))]) == EXPECTED
    assert framer.take_pings() == 3


@given(st.lists(st.integers(0, len(STREAM_BYTES)), max_size=30))
def test_arbitrary_chunk_splits_yield_the_same_messages(cuts: list[int]) -> None:
    points = [0, *sorted(cuts), len(STREAM_BYTES)]
    chunks = [STREAM_BYTES[a:b] for a, b in itertools.pairwise(points)]
    framer = StreamFramer()
    assert _feed_all(framer, chunks) == EXPECTED
    assert framer.take_pings() == 3


@pytest.mark.parametrize("data", SAMPLES)
def test_every_sample_frames(data: bytes) -> None:
    assert StreamFramer().feed(data) == [parse(data)]


def test_partial_message_waits() -> None:
    framer = StreamFramer()
    assert framer.feed(OK_INVITE[:-10]) == []
    assert framer.feed(OK_INVITE[-10:]) == [parse(OK_INVITE)]


def test_missing_content_length_breaks_the_stream() -> None:
    framer = StreamFramer()
    with pytest.raises(FramingError) as exc:
        framer.feed(BYE.replace(b"Content-Length: 0\r\n", b""))
    assert exc.value.status == 400 and exc.value.reason == "missing Content-Length"
    with pytest.raises(FramingError):
        framer.feed(BYE)


def test_error_after_good_messages_is_raised_on_the_next_call() -> None:
    framer = StreamFramer()
    assert framer.feed(BYE + b"garbage line without colon\r\n\r\n") == [parse(BYE)]
    assert isinstance(framer.error, FramingError)
    with pytest.raises(FramingError):
        framer.feed(b"")


def test_invalid_but_framed_message_is_rejected_in_place() -> None:
    bad = BYE.replace(b"Call-ID: 1-4242@192.0.2.20\r\n", b"")
    out = StreamFramer().feed(bad + REFER)
    assert out[1] == parse(REFER)
    assert isinstance(out[0], Rejected) and out[0].data == bad
    assert isinstance(out[0].error, SipParseError) and out[0].error.reason == "missing Call-ID"


def test_size_limits() -> None:
    with pytest.raises(MessageTooLarge):
        StreamFramer(max_size=300).feed(INVITE_LINPHONE)  # head alone is past the limit
    with pytest.raises(MessageTooLarge):
        StreamFramer(max_size=600).feed(BYE.replace(b"Content-Length: 0", b"Content-Length: 100000"))
    with pytest.raises(MessageTooLarge):
        StreamFramer(max_size=1000).feed(b"OPTIONS sip:a@b SIP/2.0\r\nX: " + b"y" * 2000)


def test_endless_crlf_is_bounded() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\n" * 100_000) == []
    assert framer.feed(BYE) == [parse(BYE)]


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_garbage_streams_raise_only_sip_errors(data: bytes, cuts: list[int]) -> None:
    framer = StreamFramer(max_size=2000)
    points = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    try:
        for a, b in itertools.pairwise(points):
            framer.feed(data[a:b])
    except (FramingError, MessageTooLarge):
        assert framer.error is not None
