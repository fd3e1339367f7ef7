"""SIP message parse/serialize (telephony.sip.message): captured-style messages, RFC 4475 torture
cases, make_response, and Hypothesis round-trips and mutations.

Messages are written one line per list item and joined with CRLF; `_msg` fills in Content-Length
when the last header is `Content-Length: N` so bodies can be edited without counting bytes.
Round-trip rule (see the message.py docstring): a message in normal form (CRLF, `Name: value`, no
folding, correct Content-Length) serializes back to exactly its input bytes.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.sip import (
    FramingError,
    Headers,
    MessageTooLarge,
    NameAddr,
    SipError,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    UnsupportedUriScheme,
    make_response,
    parse,
)
from telephony.sip.headers import HEADERS
from telephony.sip.message import sipfrag_status


def _msg(head: list[str], body: list[str] | bytes = b"") -> bytes:
    raw = body if isinstance(body, bytes) else "".join(line + "\r\n" for line in body).encode()
    text = "\r\n".join(head).replace("Content-Length: N", f"Content-Length: {len(raw)}")
    text = text.replace("l: N", f"l: {len(raw)}")
    return text.encode() + b"\r\n\r\n" + raw


SDP_SIPP = [
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 192.0.2.20",
    "s=-",
    "c=IN IP4 192.0.2.20",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
]

INVITE_SIPP = _msg(
    [
        "INVITE sip:service@192.0.2.10:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5061;branch=z9hG4bK-4242-1-0",
        "From: sipp <sip:sipp@192.0.2.20:5061>;tag=4242SIPpTag001",
        "To: service <sip:service@192.0.2.10:5060>",
        "Call-ID: 1-4242@192.0.2.20",
        "CSeq: 1 INVITE",
        "Contact: sip:sipp@192.0.2.20:5061",
        "Max-Forwards: 70",
        "Subject: Performance Test",
        "Content-Type: application/sdp",
        "Content-Length: N",
    ],
    SDP_SIPP,
)

INVITE_LINPHONE = _msg(
    [
        "INVITE sip:bob@sip.example.org SIP/2.0",
        "Via: SIP/2.0/TCP 10.0.0.12:48764;alias;branch=z9hG4bK.Xa2~Kb1cN;rport",
        'From: "Alice" <sip:alice@sip.example.org>;tag=Pv2J~3Cbd',
        "To: sip:bob@sip.example.org",
        "CSeq: 20 INVITE",
        "Call-ID: Lk4pbqT1Ae",
        "Max-Forwards: 70",
        "Supported: replaces, outbound, gruu",
        "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, UPDATE",
        "Content-Type: application/sdp",
        "Content-Length: N",
        'Contact: <sip:alice@10.0.0.12:48764;transport=tcp>;+sip.instance="<urn:uuid:5b3b9b2e-0a5e-00c6>"',
        "User-Agent: Linphone Desktop/4.4.10 (Ubuntu 22.04) LinphoneCore/5.1.64",
    ],
    [
        "v=0",
        "o=alice 3185 1390 IN IP4 10.0.0.12",
        "s=Talk",
        "c=IN IP4 10.0.0.12",
        "t=0 0",
        "a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics",
        "m=audio 7078 RTP/AVP 96 0 8 101",
        "a=rtpmap:96 opus/48000/2",
        "a=fmtp:96 useinbandfec=1",
        "a=rtpmap:101 telephone-event/8000",
    ],
)

INVITE_BARESIP = _msg(
    [
        "INVITE sip:+15551234567@pbx.example.com;user=phone SIP/2.0",
        "Via: SIP/2.0/UDP 192.168.1.50:5060;branch=z9hG4bK3b1c0e6d5f8a2b47;rport",
        "Contact: <sip:carol-0x55d5@192.168.1.50:5060;transport=udp>",
        "Max-Forwards: 70",
        "To: <sip:+15551234567@pbx.example.com;user=phone>",
        'From: "Carol" <sip:carol@pbx.example.com>;tag=9c1d6b2a7e4f3a10',
        "Call-ID: 6fd1c0c4a2b1b9e7",
        "CSeq: 32391 INVITE",
        "Record-Route: <sip:192.0.2.1;lr>",
        "Allow: INVITE,ACK,BYE,CANCEL,OPTIONS,PRACK,MESSAGE,SUBSCRIBE,NOTIFY,INFO,REFER,UPDATE",
        "Supported: replaces,norefersub,100rel",
        "Timestamp: 54",
        "User-Agent: baresip v2.12.0 (x86_64/linux)",
        "Content-Type: application/sdp",
        "Content-Length: N",
    ],
    SDP_SIPP,
)

RINGING = _msg(
    [
        "SIP/2.0 180 Ringing",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds8;received=192.0.2.1",
        "Via: SIP/2.0/UDP 192.0.2.20:5061;branch=z9hG4bK-4242-1-0;rport=5061;received=198.51.100.7",
        "From: sipp <sip:sipp@192.0.2.20:5061>;tag=4242SIPpTag001",
        "To: service <sip:service@192.0.2.10:5060>;tag=flowyte-7f3a",
        "Call-ID: 1-4242@192.0.2.20",
        "CSeq: 1 INVITE",
        "Contact: <sip:service@192.0.2.10:5060>",
        "Content-Length: 0",
    ]
)

OK_INVITE = _msg(
    [
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.20:5061;branch=z9hG4bK-4242-1-0",
        "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>",
        "From: sipp <sip:sipp@192.0.2.20:5061>;tag=4242SIPpTag001",
        "To: service <sip:service@192.0.2.10:5060>;tag=flowyte-7f3a",
        "Call-ID: 1-4242@192.0.2.20",
        "CSeq: 1 INVITE",
        "Contact: <sip:service@192.0.2.10:5060>",
        "Content-Type: application/sdp",
        "Content-Length: N",
    ],
    SDP_SIPP,
)

BYE = _msg(
    [
        "BYE sip:sipp@192.0.2.20:5061 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye77;rport",
        "From: service <sip:service@192.0.2.10:5060>;tag=flowyte-7f3a",
        "To: sipp <sip:sipp@192.0.2.20:5061>;tag=4242SIPpTag001",
        "Call-ID: 1-4242@192.0.2.20",
        "CSeq: 2 BYE",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
)

CANCEL = _msg(
    [
        "CANCEL sip:service@192.0.2.10:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.20:5061;branch=z9hG4bK-4242-1-0",
        "From: sipp <sip:sipp@192.0.2.20:5061>;tag=4242SIPpTag001",
        "To: service <sip:service@192.0.2.10:5060>",
        "Call-ID: 1-4242@192.0.2.20",
        "CSeq: 1 CANCEL",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
)

REFER = _msg(
    [
        "REFER sip:+15550001111@carrier.example SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKrefer1",
        "Max-Forwards: 70",
        "From: <sip:agent@flowyte.example>;tag=a73kszlfl",
        'To: "Caller" <sip:+15550001111@carrier.example>;tag=314159',
        "Call-ID: 2f7a9c2e@192.0.2.10",
        "CSeq: 3 REFER",
        "Contact: <sip:agent@192.0.2.10:5060>",
        "Refer-To: <sip:sales@pbx.example.com?Replaces=12345%40192.0.2.5%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE>",
        'Referred-By: "Agent" <sip:agent@flowyte.example>',
        "Content-Length: 0",
    ]
)

NOTIFY = _msg(
    [
        "NOTIFY sip:agent@192.0.2.10:5060 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnotify1",
        "Max-Forwards: 70",
        'From: "Caller" <sip:+15550001111@carrier.example>;tag=314159',
        "To: <sip:agent@flowyte.example>;tag=a73kszlfl",
        "Call-ID: 2f7a9c2e@192.0.2.10",
        "CSeq: 1993402 NOTIFY",
        "Event: refer",
        "Subscription-State: terminated;reason=noresource",
        "Content-Type: message/sipfrag;version=2.0",
        "Content-Length: N",
    ],
    ["SIP/2.0 200 OK"],
)

OPTIONS = _msg(
    [
        "OPTIONS sip:192.0.2.10:5060 SIP/2.0",
        "Via: SIP/2.0/UDP [2001:db8::9]:5060;branch=z9hG4bKopt9",
        "From: <sip:ping@[2001:db8::9]>;tag=opt",
        "To: <sip:192.0.2.10:5060>",
        "Call-ID: 80f0e0d0c0b0@2001:db8::9",
        "CSeq: 102 OPTIONS",
        "Max-Forwards: 70",
        "Accept: application/sdp",
        "Content-Length: 0",
    ]
)

COMPACT = _msg(
    [
        "INVITE sip:bob@biloxi.example.com SIP/2.0",
        "v: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
        "t: Bob <sip:bob@biloxi.example.com>",
        "f: Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "i: a84b4c76e66710@pc33.atlanta.example.com",
        "CSeq: 314159 INVITE",
        "m: <sip:alice@pc33.atlanta.example.com>",
        "k: timer",
        "x: 1800;refresher=uac",
        "c: application/sdp",
        "l: N",
    ],
    SDP_SIPP,
)

SAMPLES = [INVITE_SIPP, INVITE_LINPHONE, INVITE_BARESIP, RINGING, OK_INVITE, BYE, CANCEL, REFER, NOTIFY, OPTIONS,
           COMPACT]


@pytest.mark.parametrize("data", SAMPLES)
def test_samples_round_trip_byte_exact(data: bytes) -> None:
    message = parse(data)
    assert bytes(message) == data
    assert parse(bytes(message)) == message


def test_invite_accessors() -> None:
    m = parse(INVITE_SIPP)
    assert isinstance(m, SipRequest)
    assert m.method == "INVITE"
    assert m.sip_uri == SipUri("sip", "192.0.2.10", "service", port=5060)
    assert m.call_id == "1-4242@192.0.2.20"
    assert m.cseq == (1, "INVITE")
    assert m.branch == "z9hG4bK-4242-1-0"
    assert m.from_tag == "4242SIPpTag001" and m.to_tag is None
    assert m.content_type == "application/sdp"
    assert m.max_forwards == 70
    assert m.body.startswith(b"v=0\r\no=user1") and m.body.endswith(b"PCMU/8000\r\n")
    assert [str(c.uri) for c in m.contacts] == ["sip:sipp@192.0.2.20:5061"]
    assert m.contacts[0].bracketed is False


def test_linphone_contact_and_lists() -> None:
    m = parse(INVITE_LINPHONE)
    assert m.top_via.transport == "TCP" and m.top_via.port == 48764 and m.top_via.wants_rport
    assert m.top_via.rport is None and m.top_via.param("alias") == ""
    assert m.from_.display == "Alice"
    assert m.headers.get_all("Supported") == ["replaces", "outbound", "gruu"]
    assert len(m.headers.get_all("allow")) == 11
    (contact,) = m.contacts
    assert contact.param("+sip.instance") == '"<urn:uuid:5b3b9b2e-0a5e-00c6>"'
    assert isinstance(contact.uri, SipUri) and contact.uri.param("transport") == "tcp"


def test_response_vias_received_rport() -> None:
    m = parse(RINGING)
    assert isinstance(m, SipResponse) and (m.status, m.reason) == (180, "Ringing")
    vias = m.vias
    assert [v.host for v in vias] == ["192.0.2.1", "192.0.2.20"]
    assert vias[1].rport == 5061 and vias[1].received == "198.51.100.7"
    assert m.to_tag == "flowyte-7f3a"


def test_refer_and_notify() -> None:
    refer = parse(REFER)
    refer_to = NameAddr.parse(refer.headers.get("Refer-To") or "")
    assert isinstance(refer_to.uri, SipUri)
    assert refer_to.uri.headers == (("Replaces", "12345%40192.0.2.5%3Bto-tag%3D12345%3Bfrom-tag%3D5FFE"),)
    assert NameAddr.parse(refer.headers.get("b") or "").display == "Agent"
    notify = parse(NOTIFY)
    assert notify.content_type == "message/sipfrag"
    assert notify.headers.get("o") == "refer"
    assert notify.body == b"SIP/2.0 200 OK\r\n"
    assert sipfrag_status(notify.body) == (200, "OK")
    for bad in (b"", b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 2000 OK\r\n", b"\xff\r\n"):
        with pytest.raises(SipParseError):
            sipfrag_status(bad)


def test_ipv6_options() -> None:
    m = parse(OPTIONS)
    assert m.top_via.host == "[2001:db8::9]" and m.top_via.port == 5060
    assert isinstance(m.from_.uri, SipUri) and m.from_.uri.host == "[2001:db8::9]"


def test_compact_forms_read_like_full_names() -> None:
    m = parse(COMPACT)
    assert m.call_id == "a84b4c76e66710@pc33.atlanta.example.com"
    assert m.headers.get("Session-Expires") == "1800;refresher=uac"
    assert m.headers.get("SUPPORTED") == "timer"
    assert m.content_type == "application/sdp"
    assert m.from_tag == "1928301774"
    assert str(m.contacts[0].uri) == "sip:alice@pc33.atlanta.example.com"
    assert bytes(m).count(b"\r\nl: ") == 1  # the compact spelling is kept


def test_comma_joined_and_repeated_headers_are_equivalent() -> None:
    joined = parse(OK_INVITE)
    repeated = parse(
        OK_INVITE.replace(
            b"Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>",
            b"Record-Route: <sip:p2.example.com;lr>\r\nrecord-route: <sip:p1.example.com;lr>",
        )
    )
    assert joined.headers.get_all("Record-Route") == repeated.headers.get_all("Record-Route")
    assert joined.headers.get_all("Record-Route") == ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]


def test_header_names_are_case_insensitive() -> None:
    m = parse(INVITE_SIPP.replace(b"Call-ID:", b"cAlL-iD:").replace(b"Max-Forwards:", b"MAX-FORWARDS:"))
    assert m.call_id == "1-4242@192.0.2.20" and m.max_forwards == 70
    assert "call-id" in m.headers and "i" in m.headers


def test_bare_lf_and_folding_normalize() -> None:
    folded = INVITE_SIPP.replace(b"Subject: Performance Test", b"Subject: Performance\r\n \t Test")
    m = parse(folded)
    assert m.headers.get("Subject") == "Performance Test"
    assert bytes(m) == INVITE_SIPP
    head, _, body = INVITE_SIPP.partition(b"\r\n\r\n")
    lf = parse(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    assert bytes(lf) == INVITE_SIPP


def test_missing_content_length_on_udp_body_is_the_rest() -> None:
    data = BYE.replace(b"Content-Length: 0\r\n", b"")
    m = parse(data)
    assert m.body == b"" and bytes(m) == data.replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")


def test_shorter_content_length_truncates() -> None:
    m = parse(BYE + b"trailing junk")
    assert m.body == b""
    assert bytes(m) == BYE


def test_size_limits() -> None:
    with pytest.raises(MessageTooLarge) as exc:
        parse(INVITE_SIPP, max_size=100)
    assert exc.value.status == 513
    extra = b"\r\n".join(b"X-H%d: v" % i for i in range(250))
    many = BYE.replace(b"Content-Length: 0", extra + b"\r\nContent-Length: 0")
    with pytest.raises(MessageTooLarge):
        parse(many)


# --- RFC 4475 torture messages (reconstructed; §3.1.1 valid, §3.1.2 invalid) ----------------------

WSINV_BODY = [
    "v=0",
    "o=mhandley 29739 7272939 IN IP4 192.0.2.3",
    "s=-",
    "c=IN IP4 192.0.2.4",
    "t=0 0",
    "m=audio 49217 RTP/AVP 0 12",
    "m=video 3227 RTP/AVP 31",
    "a=rtpmap:31 LPC",
]
WSINV = _msg(
    [
        "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0",
        "TO :",
        " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n",
        'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>',
        "  ;",
        "  tag = 98asjd8",
        "MaX-fOrWaRdS: 0068",
        "Call-ID: wsinv.ndaksdj@192.0.2.1",
        "Content-Length   : 150",
        "cseq: 0009",
        "  INVITE",
        "Via  : SIP  /   2.0",
        " /UDP",
        "    192.0.2.2;branch=390skdjuw",
        "s :",
        "NewFangledHeader:   newfangled value",
        " continued newfangled value",
        "UnknownHeaderWithUnusualValue: ;;,,;;,;",
        "Content-Type: application/sdp",
        "Route:",
        " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>",
        "v:  SIP  / 2.0  / TCP     spindle.example.com   ;",
        "  branch  =   z9hG4bK9ikj8  ,",
        " SIP  /    2.0   / UDP  192.168.255.111   ; branch=",
        " z9hG4bK30239",
        'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =',
        "      newvalue ;",
        "  secondparam ; q = 0.33",
    ],
    WSINV_BODY,
)


def test_wsinv_short_tortuous_invite() -> None:
    assert len(b"".join(line.encode() + b"\r\n" for line in WSINV_BODY)) == 150
    m = parse(WSINV)
    assert isinstance(m, SipRequest) and m.method == "INVITE"
    assert m.to.tag == "1918181833n" and str(m.to.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert m.from_.display == 'J Rosenberg \\"' and m.from_tag == "98asjd8"
    assert m.max_forwards == 68 and m.cseq == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    (contact,) = m.contacts
    assert contact.display == 'Quoted string ""' and contact.param("q") == "0.33"
    assert contact.param("secondparam") == ""
    assert len(m.body) == 150
    assert parse(bytes(m)) == m


def _invite(extra: list[str], request_line: str = "INVITE sip:user@example.com SIP/2.0", body: bytes = b"") -> bytes:
    base = [
        "Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw",
        "Max-Forwards: 70",
        "To: sip:j.user@example.com",
        "From: sip:caller@example.net;tag=93942939o2",
        "Call-ID: torture.0ha0isndaksdjweiafasdk3",
        "CSeq: 8 " + request_line.split(" ")[0],
    ]
    return _msg([request_line, *base, *extra], body)


def test_esc01_escaped_uris() -> None:
    m = SipRequest.parse(_invite([], "INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0"))
    assert m.sip_uri.user == "sips%3Auser%40example.com"
    assert m.sip_uri.user_unescaped == "sips:user@example.com"
    assert m.sip_uri.host == "example.net"


def test_escnull_and_semicolon_in_user() -> None:
    null = SipRequest.parse(_invite([], "INVITE sip:null-%00-null@example.com SIP/2.0"))
    assert null.sip_uri.user_unescaped == "null-\x00-null"
    semi = SipRequest.parse(_invite([], "OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0"))
    assert semi.sip_uri.user == "user;par=u%40example.net" and semi.sip_uri.params == ()


def test_unkscm_unknown_schemes_parse_but_are_416() -> None:
    m = SipRequest.parse(_invite([], "OPTIONS nobodyknowsthisscheme:totallyopaquecontent SIP/2.0"))
    assert m.uri == "nobodyknowsthisscheme:totallyopaquecontent"
    with pytest.raises(UnsupportedUriScheme) as exc:
        _ = m.sip_uri
    assert exc.value.status == 416
    novel = SipRequest.parse(_invite([], "OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0"))
    assert novel.uri == "soap.beep://192.0.2.103:3002"
    unksm2 = parse(_invite([]).replace(b"To: sip:j.user@example.com", b"To: isbn:2983792873"))
    assert unksm2.to.uri == "isbn:2983792873"


def test_intmeth_unusual_method_token() -> None:
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    uri = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com"
    m = SipRequest.parse(_invite([], f"{method} {uri} SIP/2.0"))
    assert m.method == method and m.cseq == (8, method)
    assert m.sip_uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"


def test_noreason_and_utf8_reason() -> None:
    resp = _msg(["SIP/2.0 100 ", *[line for line in RINGING.decode().split("\r\n")[1:] if line]][:7])
    assert SipResponse.parse(resp).reason == ""
    unreason = parse(RINGING.replace(b"180 Ringing", "200 = 2**3 * 5**2 но сто девяносто девять - простое".encode()))
    assert isinstance(unreason, SipResponse) and unreason.reason.startswith("= 2**3")


def test_dblreq_second_request_in_a_datagram_is_ignored() -> None:
    m = parse(BYE + INVITE_SIPP)  # Content-Length 0 ends the first message (RFC 4475 §3.1.1.12)
    assert isinstance(m, SipRequest) and m.method == "BYE" and m.body == b""


def test_longreq_long_values() -> None:
    long_name = "extreme" * 120
    contact = f'Contact: "{long_name}" <sip:{"a" * 500}@example.com>;q=0.5'
    data = _invite([contact, "X-Long: " + "v" * 4000, "Content-Length: 0"])
    m = parse(data)
    assert m.contacts[0].display == long_name and m.headers.get("x-long") == "v" * 4000
    assert bytes(m) == data


def test_tel_request_uri() -> None:
    m = SipRequest.parse(_invite([], "INVITE tel:+1-201-555-0123;phone-context=example.com SIP/2.0"))
    assert m.sip_uri.scheme == "tel" and m.sip_uri.user == "+1-201-555-0123"


REJECTED = {
    "clerr": (_invite(["Content-Type: application/sdp", "Content-Length: 9999"], body=b"v=0\r\n"),
              "Content-Length mismatch"),
    "ncl": (_invite(["Content-Length: -999"], body=b"v=0\r\n"), "bad Content-Length"),
    "scalar02": (_invite([]).replace(b"Max-Forwards: 70", b"Max-Forwards: 300"), "bad Max-Forwards"),
    "scalarlg": (_invite([]).replace(b"CSeq: 8", b"CSeq: 36893488147419103232"), "bad CSeq"),
    "multi01": (_invite(["Call-ID: multi01.98asdh@192.0.2.2", "To: sip:other@example.net"]), "multiple Call-ID"),
    "multi01-to": (_invite(["To: sip:other@example.net"]), "multiple To"),
    "comma-call-id": (_invite([]).replace(b"Call-ID: torture.", b"Call-ID: a@b, torture."), "bad Call-ID"),
    "comma-to": (_invite([]).replace(b"To: sip:j.user@example.com", b"To: <sip:a@b>, <sip:c@d>"), "bad To"),
    "comma-cseq": (_invite([]).replace(b"CSeq: 8 INVITE", b"CSeq: 8 INVITE, 9 INVITE"), "bad CSeq"),
    "comma-max-forwards": (_invite([]).replace(b"Max-Forwards: 70", b"Max-Forwards: 70, 69"), "bad Max-Forwards"),
    "insuf": (_msg(["INVITE sip:user@example.com SIP/2.0", "CSeq: 193942 INVITE",
                    "Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf", "Content-Type: application/sdp", "l: N"],
                   WSINV_BODY), "missing From"),
    "mismatch01": (_invite([], "OPTIONS sip:user@example.com SIP/2.0").replace(b"CSeq: 8 OPTIONS", b"CSeq: 8 INVITE"),
                   "CSeq method mismatch"),
    "lwsstart": (_invite([], "INVITE  sip:user@example.com  SIP/2.0"), "bad request line"),
    "lwsruri": (_invite([], "INVITE sip:user@example.com; lr SIP/2.0"), "bad request line"),
    "ltgtruri": (_invite([], "INVITE <sip:user@example.com> SIP/2.0"), "bad Request-URI"),
    "quotbal": (_invite([]).replace(b"To: sip:j.user@example.com", b'To: "Mr. J. User <sip:j.user@example.com>'),
                "bad To"),
    "badinv01": (_invite([]).replace(b"From: sip:caller@example.net;tag=93942939o2",
                                     b"From: sip:caller@example.net;tag=1, sip:x@y"), "bad From"),
    "bigcode": (RINGING.replace(b"180 Ringing", b"4294967301 better not break the receiver"), "bad status line"),
    "no-empty-line": (b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n", "missing empty line after headers"),
    "missing-call-id": (BYE.replace(b"Call-ID: 1-4242@192.0.2.20\r\n", b""), "missing Call-ID"),
    "missing-via": (BYE.replace(b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye77;rport\r\n", b""), "missing Via"),
}


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_torture_rejections_are_400_with_reason(name: str) -> None:
    data, reason = REJECTED[name]
    with pytest.raises(SipParseError) as exc:
        parse(data)
    assert (exc.value.status, exc.value.reason) == (400, reason)


def test_badvers_is_505() -> None:
    with pytest.raises(SipParseError) as exc:
        parse(_invite([], "OPTIONS sip:t.watson@example.org SIP/7.0"))
    assert exc.value.status == 505


# --- make_response (RFC 3261 §8.2.6) ---------------------------------------------------------------


def test_make_response_copies_dialog_headers() -> None:
    invite = parse(INVITE_BARESIP)
    assert isinstance(invite, SipRequest)
    ok = make_response(invite, 200, to_tag="as7d9", extra_headers=[("Contact", "<sip:agent@192.0.2.10>")])
    names = [n for n, _ in ok.headers]
    assert names == ["Via", "To", "From", "Call-ID", "CSeq", "Record-Route", "Contact"]
    assert ok.to_tag == "as7d9" and ok.from_tag == invite.from_tag and ok.reason == "OK"
    assert ok.headers.get("Record-Route") == "<sip:192.0.2.1;lr>"
    assert parse(bytes(ok)) == SipResponse(200, "OK", Headers([*ok.headers, ("Content-Length", "0")]))
    trying = make_response(invite, 100, to_tag="as7d9")
    assert trying.to_tag is None and trying.headers.get("Timestamp") == "54"
    assert "Record-Route" not in trying.headers
    busy = make_response(invite, 486, to_tag="as7d9")
    assert "Record-Route" not in busy.headers and busy.reason == "Busy Here" and busy.to_tag == "as7d9"


def test_make_response_keeps_existing_to_tag_and_all_vias() -> None:
    bye = parse(BYE.replace(b"CSeq: 2 BYE", b"Via: SIP/2.0/TCP proxy.example;branch=z9hG4bKp\r\nCSeq: 2 BYE"))
    assert isinstance(bye, SipRequest)
    ok = make_response(bye, 200, "Bye now", to_tag="other")
    assert ok.to_tag == "4242SIPpTag001" and ok.reason == "Bye now"
    assert [v.branch for v in ok.vias] == ["z9hG4bKbye77", "z9hG4bKp"]
    assert ok.cseq == (2, "BYE")
    as_bye = OK_INVITE.replace(b"SIP/2.0 200 OK", b"BYE sip:a@b SIP/2.0").replace(b"1 INVITE", b"1 BYE")
    bye_rr = SipRequest.parse(as_bye)
    assert bye_rr.headers.get("Record-Route") and "Record-Route" not in make_response(bye_rr, 200).headers


def test_typed_parse_entry_points() -> None:
    assert SipRequest.parse(BYE).method == "BYE" and SipResponse.parse(RINGING).status == 180
    with pytest.raises(SipParseError, match="expected a request"):
        SipRequest.parse(RINGING)
    with pytest.raises(SipParseError, match="expected a response"):
        SipResponse.parse(BYE)


# --- Hypothesis ------------------------------------------------------------------------------------

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~", min_size=1,
                 max_size=12)
_known = {s.name.lower() for s in HEADERS} | {s.compact for s in HEADERS if s.compact}
_header_name = _token.filter(lambda n: n.lower() not in _known)
_value = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00\x7f"
                               + "".join(map(chr, range(1, 32)))), max_size=40).map(lambda s: s.strip(" \t"))
_host = st.one_of(
    st.from_regex(r"[a-z]([a-z0-9\-]{0,10}[a-z0-9])?(\.[a-z][a-z0-9]{0,6}){0,2}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
_uri = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    host=_host,
    user=st.one_of(st.none(), st.from_regex(r"[a-z0-9+%][a-z0-9._+]{0,10}", fullmatch=True).filter(
        lambda u: "%" not in u)),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    params=st.lists(st.tuples(st.from_regex(r"[a-z]{1,6}", fullmatch=True),
                              st.one_of(st.none(), st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True))),
                    max_size=3).map(tuple),
)


@st.composite
def messages(draw: st.DrawFn) -> SipRequest | SipResponse:
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REFER", "NOTIFY"]) | _token)
    tag = draw(_token)
    fields = [
        ("Via", f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {draw(_host)};branch=z9hG4bK{draw(_token)}"),
        ("From", str(NameAddr(draw(_uri), draw(st.none() | _token), (("tag", tag),)))),
        ("To", str(NameAddr(draw(_uri)))),
        ("Call-ID", draw(_token) + "@" + draw(_host)),
        ("CSeq", f"{draw(st.integers(0, 2**31 - 1))} {method}"),
    ]
    fields += draw(st.lists(st.tuples(_header_name, _value), max_size=6))
    fields = draw(st.permutations(fields))
    body = draw(st.binary(max_size=200))
    headers = Headers([*fields, ("Content-Length", str(len(body)))])
    if draw(st.booleans()):
        return SipRequest(method, draw(_uri), headers, body)
    reason = draw(_value)
    return SipResponse(draw(st.integers(100, 699)), reason, headers, body)


@given(messages())
def test_generated_messages_round_trip(message: SipRequest | SipResponse) -> None:
    assert parse(bytes(message)) == message


_mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("cut"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 10_000), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.integers(0, 10_000),
              st.sampled_from([b"\r\n", b"\n", b",", b";", b"<", b'"', b":", b" ", b"\r\n "])),
)


@settings(max_examples=3000)
@given(st.sampled_from([*SAMPLES, WSINV]), st.lists(_mutation, min_size=1, max_size=4))
def test_mutations_parse_or_raise_sip_errors(data: bytes, mutations: list[tuple[str, int, object]]) -> None:
    buf = bytearray(data)
    for kind, pos, arg in mutations:
        pos %= len(buf) + 1
        if kind == "flip" and pos < len(buf):
            assert isinstance(arg, int)
            buf[pos] ^= arg or 1
        elif kind == "cut":
            del buf[pos:]
        elif kind == "insert":
            assert isinstance(arg, bytes)
            buf[pos:pos] = arg
        if not buf:
            buf = bytearray(b"\r\n")
    try:
        message = parse(bytes(buf))
    except (SipParseError, MessageTooLarge):
        return
    except SipError as exc:  # pragma: no cover - any other SipError is a bug for parse()
        raise AssertionError(f"unexpected {exc!r}") from exc
    # a parsed message: every eager-checked accessor works and serialization is a fixed point
    _ = (message.call_id, message.cseq, message.vias, message.from_tag, message.to_tag, message.content_type,
         message.max_forwards)
    again = parse(bytes(message))
    assert bytes(again) == bytes(message)
    with contextlib.suppress(SipParseError):
        _ = message.contacts


def test_framing_error_is_a_parse_error() -> None:
    assert issubclass(FramingError, SipParseError) and FramingError().status == 400
