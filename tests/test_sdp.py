"""SDP parse/serialize (byte-exact) and RFC 3264 negotiation against bodies shaped like real UAs."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.errors import SdpError
from telephony.sdp import (
    G722,
    PCMA,
    PCMU,
    Attribute,
    Capabilities,
    Connection,
    Direction,
    Media,
    Origin,
    RtpMap,
    SessionDescription,
    build_offer,
    negotiate,
)


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


SIPP_UAC = crlf(
    """v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""
)

SIPP_UAC_PCAP = crlf(
    """v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 8 96
a=rtpmap:8 PCMA/8000
a=rtpmap:96 telephone-event/8000
a=fmtp:96 0-11,16
"""
)

LINPHONE = crlf(
    """v=0
o=alice 1234 5678 IN IP4 192.168.1.10
s=Talk
c=IN IP4 192.168.1.10
t=0 0
a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
m=audio 7078 RTP/AVP 96 97 98 0 8 101 99 100
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:97 speex/16000
a=fmtp:97 vbr=on
a=rtpmap:98 telephone-event/8000
a=rtpmap:101 telephone-event/48000
a=rtpmap:99 telephone-event/16000
a=rtpmap:100 speex/8000
a=fmtp:100 vbr=on
a=rtcp-fb:* trr-int 1000
a=rtcp-fb:* ccm tmmbr
m=video 9078 RTP/AVP 96
a=rtpmap:96 VP8/90000
a=rtcp-fb:* nack
"""
)

LINPHONE_101 = crlf(
    """v=0
o=bob 3029 1738 IN IP4 192.168.1.11
s=Talk
c=IN IP4 192.168.1.11
t=0 0
m=audio 7078 RTP/AVP 96 0 8 101
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:101 telephone-event/8000
a=ptime:20
"""
)

BARESIP = crlf(
    """v=0
o=- 1839516410 2044279327 IN IP4 10.0.0.5
s=-
c=IN IP4 10.0.0.5
t=0 0
a=tool:baresip 3.10.1
m=audio 10000 RTP/AVP 0 8 101
b=AS:64
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=label:1
a=rtcp-rsize
a=ssrc:2763441352 cname:2f6a1c77-3b7c-4c5e-9a3f-1f4ad5c0e0a1
a=ptime:20
"""
)

PJSUA = crlf(
    """v=0
o=- 3871234567 3871234567 IN IP4 192.168.0.20
s=pjmedia
b=AS:84
t=0 0
a=X-nat:0
m=audio 4000 RTP/AVP 96 9 8 0 120
c=IN IP4 192.168.0.20
b=TIAS:64000
a=rtcp:4001 IN IP4 192.168.0.20
a=sendrecv
a=rtpmap:96 speex/16000
a=rtpmap:9 G722/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:120 telephone-event/8000
a=fmtp:120 0-16
a=ssrc:1094581524 cname:3c2d1a0b5e6f7081
"""
)


def hold(body: bytes, old: str, new: str) -> bytes:
    return body.replace(old.encode(), new.encode())


HOLD_SENDONLY = hold(BARESIP, "a=sendrecv", "a=sendonly").replace(b" 2044279327 ", b" 2044279328 ")
HOLD_INACTIVE = hold(BARESIP, "a=sendrecv", "a=inactive")
HOLD_ZERO = hold(SIPP_UAC, "c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")

G729_ONLY = crlf(
    """v=0
o=- 1 1 IN IP4 203.0.113.7
s=-
c=IN IP4 203.0.113.7
t=0 0
m=audio 30000 RTP/AVP 18
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
"""
)

CAPS = Capabilities(address="198.51.100.2", port=20000, session_id="42", session_version=1)


@pytest.mark.parametrize(
    "body", [SIPP_UAC, SIPP_UAC_PCAP, LINPHONE, LINPHONE_101, BARESIP, PJSUA, HOLD_ZERO, G729_ONLY]
)
def test_byte_exact_round_trip(body: bytes) -> None:
    sd = SessionDescription.parse(body)
    assert bytes(sd) == body
    assert bytes(SessionDescription.parse(bytes(sd))) == body


def test_lf_only_body_round_trips() -> None:
    body = SIPP_UAC.replace(b"\r\n", b"\n")
    assert bytes(SessionDescription.parse(body)) == body


def test_parsed_fields() -> None:
    sd = SessionDescription.parse(PJSUA)
    assert sd.origin == Origin("-", "3871234567", 3871234567, "192.168.0.20")
    assert sd.session_name == "pjmedia" and sd.connection is None
    assert sd.lines == [("b", "AS:84")]
    (m,) = sd.media
    assert (m.media, m.port, m.proto, m.payload_types) == ("audio", 4000, "RTP/AVP", [96, 9, 8, 0, 120])
    assert m.connection == Connection("192.168.0.20")
    assert m.rtpmap(120) == RtpMap(120, "telephone-event", 8000)
    assert m.fmtp == {120: "0-16"}
    assert m.direction is Direction.SENDRECV
    lin = SessionDescription.parse(LINPHONE)
    assert lin.media[0].rtpmaps[96] == RtpMap(96, "opus", 48000, 2)
    assert lin.media[0].rtpmap(0) == RtpMap(0, "PCMU", 8000)  # static, no rtpmap line
    assert lin.attributes[0].name == "rtcp-xr"
    assert SessionDescription.parse(BARESIP).media[0].ptime == 20


def answer_of(body: bytes, caps: Capabilities = CAPS):  # type: ignore[no-untyped-def]
    neg = negotiate(SessionDescription.parse(body), caps)
    # the answer itself is a valid body that round-trips
    assert SessionDescription.parse(bytes(neg.answer)) == neg.answer
    return neg


def test_sipp_uac_pcmu_only() -> None:
    neg = answer_of(SIPP_UAC)
    assert bytes(neg.answer) == crlf(
        """v=0
o=flowyte 42 1 IN IP4 198.51.100.2
s=flowyte
c=IN IP4 198.51.100.2
t=0 0
m=audio 20000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=ptime:20
a=sendrecv
"""
    )
    a = neg.audio
    assert (a.remote_address, a.remote_port, a.codec.payload_type, a.telephone_event_pt) == ("127.0.0.1", 6000, 0, None)


def test_sipp_pcap_keeps_offer_te_pt_96() -> None:
    neg = answer_of(SIPP_UAC_PCAP)
    m = neg.answer.media[0]
    assert m.formats == ["8", "96"]
    assert m.rtpmap(96) == RtpMap(96, "telephone-event", 8000)
    assert neg.audio.codec == PCMA and neg.audio.telephone_event_pt == 96
    assert m.fmtp == {96: "0-11,16"}  # the offered events we also handle (RFC 4733 §7.1.1)


def test_linphone_te_98_video_rejected() -> None:
    neg = answer_of(LINPHONE)
    audio, video = neg.answer.media
    assert audio.formats == ["0", "98"] and audio.port == 20000
    assert (video.media, video.port, video.formats) == ("video", 0, ["96"])
    assert neg.audio.telephone_event_pt == 98 and neg.audio.codec == PCMU


def test_telephone_event_list_intersection() -> None:
    assert answer_of(BARESIP).answer.media[0].fmtp == {101: "0-15"}
    assert answer_of(PJSUA).answer.media[0].fmtp == {120: "0-16"}
    only_flash = hold(PJSUA, "a=fmtp:120 0-16", "a=fmtp:120 66-70")  # tones we don't handle: no DTMF PT
    assert answer_of(only_flash).audio.telephone_event_pt is None


def test_linphone_te_101() -> None:
    assert answer_of(LINPHONE_101).audio.telephone_event_pt == 101


def test_pjsua_te_120_and_g722_preference() -> None:
    assert answer_of(PJSUA).audio.telephone_event_pt == 120
    neg = answer_of(PJSUA, Capabilities("198.51.100.2", 20000, codecs=(G722, PCMU, PCMA)))
    assert neg.audio.codec == G722 and neg.answer.media[0].formats == ["9", "120"]
    assert neg.audio.remote_address == "192.168.0.20"  # media-level c=


def test_our_preference_order_wins() -> None:
    neg = answer_of(BARESIP, Capabilities("198.51.100.2", 20000, codecs=(PCMA, PCMU)))
    assert neg.audio.codec == PCMA


@pytest.mark.parametrize(
    ("body", "ours"),
    [
        (BARESIP, Direction.SENDRECV),
        (HOLD_SENDONLY, Direction.RECVONLY),
        (HOLD_INACTIVE, Direction.INACTIVE),
        (HOLD_ZERO, Direction.RECVONLY),  # RFC 2543 hold: don't send to 0.0.0.0
        (hold(BARESIP, "a=sendrecv", "a=recvonly"), Direction.SENDONLY),
        (hold(HOLD_ZERO, "a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000\r\na=recvonly"), Direction.INACTIVE),
    ],
)
def test_direction_rfc3264_6_1(body: bytes, ours: Direction) -> None:
    neg = answer_of(body)
    assert neg.audio.direction is ours
    assert neg.answer.media[0].direction is ours


def test_session_level_direction_inherited() -> None:
    body = hold(SIPP_UAC, "t=0 0", "t=0 0\r\na=sendonly")
    assert answer_of(body).audio.direction is Direction.RECVONLY


def test_ptime_from_offer_and_maxptime() -> None:
    assert answer_of(hold(SIPP_UAC, "PCMU/8000", "PCMU/8000\r\na=ptime:30")).audio.ptime == 30
    assert answer_of(hold(SIPP_UAC, "PCMU/8000", "PCMU/8000\r\na=maxptime:10")).audio.ptime == 10


def test_g729_only_is_488() -> None:
    with pytest.raises(SdpError) as err:
        negotiate(SessionDescription.parse(G729_ONLY), CAPS)
    assert err.value.status == 488


def test_only_video_or_srtp_is_488() -> None:
    for body in (hold(SIPP_UAC, "m=audio", "m=video"), hold(SIPP_UAC, "RTP/AVP", "RTP/SAVP")):
        with pytest.raises(SdpError) as err:
            negotiate(SessionDescription.parse(body), CAPS)
        assert err.value.status == 488


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"o=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n",  # no v=
        b"v=0\r\ns=-\r\nt=0 0\r\n",  # no o=
        b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n",  # no t=
        b"v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n",
        b"v=0\r\no=- 1 1 IN\r\ns=-\r\nt=0 0\r\n",
        SIPP_UAC.replace(b"m=audio 6000", b"m=audio six"),
        SIPP_UAC.replace(b"m=audio 6000 RTP/AVP 0", b"m=audio 6000"),
        SIPP_UAC.replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:x PCMU/8000"),
        SIPP_UAC.replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4"),
        SIPP_UAC + b"garbage\r\n",
        b"v=0\r\n\xff\xfe",
    ],
)
def test_malformed_is_400(body: bytes) -> None:
    with pytest.raises(SdpError) as err:
        SessionDescription.parse(body)
    assert err.value.status == 400


def test_build_offer_and_reinvite_hold() -> None:
    caps = Capabilities("198.51.100.2", 20000, codecs=(PCMU, PCMA, G722), session_id="7", session_version=3)
    offer = build_offer(caps)
    assert bytes(offer) == crlf(
        """v=0
o=flowyte 7 3 IN IP4 198.51.100.2
s=flowyte
c=IN IP4 198.51.100.2
t=0 0
m=audio 20000 RTP/AVP 0 8 9 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:9 G722/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
"""
    )
    on_hold = build_offer(caps, Direction.SENDONLY)
    assert on_hold.media[0].direction is Direction.SENDONLY
    # a peer answering our own offer picks the same thing back
    peer = Capabilities("192.0.2.9", 5004, codecs=(G722, PCMU))
    neg = negotiate(offer, peer)
    assert neg.audio.codec == G722 and neg.audio.telephone_event_pt == 101
    assert neg.audio.remote_address == "198.51.100.2" and neg.audio.remote_port == 20000
    v6 = build_offer(Capabilities("2001:db8::1", 20000))
    assert v6.connection == Connection("2001:db8::1", "IN", "IP6")


# --- Hypothesis: any description we can build round-trips through bytes -------------------------

token = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_/+", min_size=1, max_size=12)
text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)
attr_name = token.filter(lambda n: n not in ("rtpmap", "fmtp", "ptime", "maxptime"))
attributes = st.lists(st.builds(Attribute, attr_name, st.none() | text), max_size=4)
connections = st.none() | st.builds(Connection, token, token, token)


@st.composite
def descriptions(draw: st.DrawFn) -> SessionDescription:
    media = draw(
        st.lists(
            st.builds(
                Media,
                token,
                st.integers(0, 65535),
                token,
                st.lists(token, min_size=1, max_size=5),
                st.none() | st.integers(1, 4),
                connections,
                attributes,
                st.lists(st.tuples(st.sampled_from("bk"), text), max_size=2),
            ),
            max_size=3,
        )
    )
    lines = [(k, draw(text)) for k in draw(st.lists(st.sampled_from("iuep"), max_size=2))]
    lines += [("b", draw(text)) for _ in range(draw(st.integers(0, 1)))]
    lines += [(k, draw(text)) for k in draw(st.lists(st.sampled_from("rzk"), max_size=2))]
    return SessionDescription(
        origin=draw(st.builds(Origin, token, token, st.integers(0, 2**63), token, token, token)),
        session_name=draw(text),
        connection=draw(connections),
        timing=draw(st.lists(token, min_size=1, max_size=2)),
        media=media,
        attributes=draw(attributes),
        lines=lines,
        line_ending=draw(st.sampled_from(["\r\n", "\n"])),
    )


@given(descriptions())
def test_hypothesis_round_trip(sd: SessionDescription) -> None:
    data = bytes(sd)
    assert SessionDescription.parse(data) == sd
    assert bytes(SessionDescription.parse(data)) == data


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_sdp_error(data: bytes) -> None:
    try:
        SessionDescription.parse(data)
    except SdpError as err:
        assert err.status == 400


@given(descriptions(), st.sampled_from(["0", "8", "9", "18", "101", "x"]), st.booleans())
def test_negotiate_raises_only_sdp_error(sd: SessionDescription, fmt: str, rtpmap: bool) -> None:
    for m in sd.media:
        m.media, m.proto = "audio", "RTP/AVP"
        m.formats.append(fmt)
        if rtpmap and fmt.isdigit():
            m.attributes.append(Attribute("rtpmap", f"{fmt} telephone-event/8000"))
    try:
        neg = negotiate(sd, CAPS)
    except SdpError as err:
        assert err.status == 488
        return
    assert len(neg.answer.media) == len(sd.media)
    assert sum(m.port != 0 for m in neg.answer.media) == 1
