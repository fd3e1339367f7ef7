"""SIP URIs, name-addr values, Via and the Headers multi-dict (telephony.sip.uri, .headers)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.sip import Headers, NameAddr, SipParseError, SipUri, UnsupportedUriScheme, Via
from telephony.sip.headers import HEADERS, canonical, spec, split_top_level
from telephony.sip.uri import parse_name_addrs, parse_uri, refer_target

ROUND_TRIP_URIS = [
    "sip:alice@atlanta.example.com",
    "sip:alice:secretword@atlanta.example.com;transport=tcp",
    "sips:alice@atlanta.example.com?subject=project%20x&priority=urgent",
    "sip:+1-212-555-1212:1234@gateway.example.com;user=phone",
    "sips:1212@gateway.example.com",
    "sip:alice@192.0.2.4",
    "sip:atlanta.example.com;method=REGISTER?to=alice%40atlanta.example.com",
    "sip:alice;day=tuesday@atlanta.example.com",
    "sip:[2001:db8::10]:5070;lr",
    "sip:agent@192.0.2.10:5060;transport=udp;ob",
    "SIP:Bob@Biloxi.Example.COM",
    "tel:+1-201-555-0123",
    "tel:7042;phone-context=example.com",
]


@pytest.mark.parametrize("text", ROUND_TRIP_URIS)
def test_uri_round_trip(text: str) -> None:
    assert str(SipUri.parse(text)) == text


def test_uri_fields() -> None:
    u = SipUri.parse("sips:alice:pw@[2001:db8::10]:5061;transport=tls;lr?subject=x")
    assert (u.scheme, u.user, u.password, u.host, u.port) == ("sips", "alice", "pw", "[2001:db8::10]", 5061)
    assert u.secure and u.param("LR") == "" and u.param("transport") == "tls" and u.param("maddr") is None
    assert u.headers == (("subject", "x"),)
    tel = SipUri.parse("tel:+1-201-555-0123;ext=42")
    assert (tel.user, tel.host, tel.param("ext")) == ("+1-201-555-0123", "", "42")
    assert str(u.with_params(transport="udp")) == "sips:alice:pw@[2001:db8::10]:5061;lr;transport=udp?subject=x"


@pytest.mark.parametrize(
    "text",
    ["sip:", "sip:alice@", "sip:[2001:db8::zz]", "sip:host:99999", "sip:host:port", "sip:a b@host", "sip:host;",
     "sip:host?x", "sip:ho..st", "sip:host;a=b c", "tel:", "tel:12 34", "alice@host", "<sip:a@b>", "sip:%zz@h"],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)


def test_unknown_schemes() -> None:
    assert parse_uri("urn:service:sos") == "urn:service:sos"
    with pytest.raises(UnsupportedUriScheme):
        parse_uri("urn:service:sos", strict=True)
    with pytest.raises(UnsupportedUriScheme):
        SipUri.parse("mailto:a@b")


NAME_ADDRS = [
    '"Display" <sip:u@h;p>;tag=x',
    "Bob <sip:bob@biloxi.example.com>",
    "<sip:+15551234567@pbx.example.com;user=phone>",
    "sip:caller@example.com;tag=3413415",
    '"A \\"quoted\\" name" <sips:a@b.example>;tag=1;expires=60',
    "<sip:p1.example.com;lr>",
    "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>",
    '"Agent" <sip:agent@flowyte.example>;+sip.instance="<urn:uuid:1>";q=0.7',
]


@pytest.mark.parametrize("text", NAME_ADDRS)
def test_name_addr_round_trip(text: str) -> None:
    assert str(NameAddr.parse(text)) == text


def test_name_addr_fields() -> None:
    na = NameAddr.parse('"Display" <sip:u@h;p>;tag=x')
    assert na.display == "Display" and na.tag == "x" and isinstance(na.uri, SipUri) and na.uri.param("p") == ""
    bare = NameAddr.parse("sip:caller@example.com;tag=3413415")
    assert bare.tag == "3413415" and isinstance(bare.uri, SipUri) and bare.uri.params == ()
    assert str(NameAddr(SipUri("sip", "h", "u", params=(("lr", None),)))) == "<sip:u@h;lr>"
    assert str(NameAddr(SipUri("sip", "h", "u"), "Bob", quoted=False, bracketed=False)) == "Bob <sip:u@h>"
    assert str(NameAddr(SipUri("sip", "h"), 'say "hi"')) == '"say \\"hi\\"" <sip:h>'
    assert str(bare.with_param("tag", "new")) == "sip:caller@example.com;tag=new"


@pytest.mark.parametrize(
    "text", ['"unterminated <sip:a@b>', "Bob sip:a@b", "<sip:a@b", '"x" sip:a@b', "sip:a@b, sip:c@d", "", "*",
             "<sip:a@b>;=x", "<sip:a@b>;tag=a b", "B@d <sip:a@b>"],
)
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(SipParseError):
        NameAddr.parse(text)


def test_contact_list() -> None:
    values = parse_name_addrs('"Mr. Watson, Jr." <sip:watson@worcester.example.com>;q=0.7, <sip:w@b.example>')
    assert [v.display for v in values] == ["Mr. Watson, Jr.", None]


def test_via() -> None:
    via = Via.parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport=5061;received=198.51.100.2")
    assert (via.transport, via.host, via.port, via.branch, via.rport, via.received) == (
        "UDP", "192.0.2.1", 5060, "z9hG4bK776", 5061, "198.51.100.2")
    assert str(via) == "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport=5061;received=198.51.100.2"
    v6 = Via.parse("SIP/2.0/TLS [2001:db8::1]:5061;branch=z9hG4bKx;rport;received=[2001:db8::2]")
    assert v6.wants_rport and v6.rport is None and v6.received == "[2001:db8::2]"
    for bad in ("SIP/2.0 192.0.2.1", "SIP/3.0/UDP host", "SIP/2.0/UDP host:70000", "SIP/2.0/UDP", "SIP/2.0/UDP h;=x"):
        with pytest.raises(SipParseError):
            Via.parse(bad)


def test_header_table_compact_forms() -> None:
    compact = {s.compact: s.name for s in HEADERS if s.compact}
    assert compact == {
        "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length", "c": "Content-Type",
        "f": "From", "s": "Subject", "k": "Supported", "t": "To", "v": "Via", "r": "Refer-To", "b": "Referred-By",
        "o": "Event", "u": "Allow-Events", "x": "Session-Expires",
    }
    assert len({s.name.lower() for s in HEADERS}) == len(HEADERS)
    assert canonical("V") == "Via" and canonical("x-custom") == "x-custom"
    for name in ("WWW-Authenticate", "Authorization", "Proxy-Authenticate", "Proxy-Authorization", "Date"):
        found = spec(name)
        assert found is not None and not found.split


def test_headers_multidict() -> None:
    h = Headers([("Via", "SIP/2.0/UDP a;branch=1, SIP/2.0/UDP b;branch=2"), ("v", "SIP/2.0/UDP c;branch=3"),
                 ("WWW-Authenticate", 'Digest realm="a", nonce="b"'), ("X-Thing", "a, b")])
    assert h.get_all("VIA") == ["SIP/2.0/UDP a;branch=1", "SIP/2.0/UDP b;branch=2", "SIP/2.0/UDP c;branch=3"]
    assert h.get("www-authenticate") == 'Digest realm="a", nonce="b"'
    assert h.get_all("x-thing") == ["a, b"]  # unknown headers are never split
    assert h.get("Nope") is None and h.get("Nope", "d") == "d"
    h.replace("via", "SIP/2.0/TCP z")
    assert h.items()[0] == ("Via", "SIP/2.0/TCP z") and len(h.lines("Via")) == 1
    h.add("Route", "<sip:r1;lr>")
    assert h.remove("route") == 1 and "Route" not in h
    h.replace("Subject", "hi")
    assert h.items()[-1] == ("Subject", "hi") and h == h.copy() and len(h) == 4


def test_split_top_level() -> None:
    assert split_top_level('"a, b" <sip:x,y>, c', ",") == ['"a, b" <sip:x,y>', "c"]
    assert split_top_level('"esc \\" , still" , d', ",") == ['"esc \\" , still"', "d"]
    for bad in ('"open', "<open", "a>", "<<a>>"):
        with pytest.raises(SipParseError):
            split_top_level(bad, ",")


_label = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
_uris = st.builds(
    SipUri,
    scheme=st.sampled_from(["sip", "sips"]),
    host=st.one_of(st.lists(_label, min_size=1, max_size=3).map(".".join), st.ip_addresses(v=4).map(str),
                   st.ip_addresses(v=6).map(lambda a: f"[{a}]")),
    user=st.none() | st.from_regex(r"[A-Za-z0-9\-_.!~*'()&=+$,;?/]{1,10}|%[0-9A-F]{2}", fullmatch=True),
    password=st.none() | st.from_regex(r"[a-z0-9]{0,6}", fullmatch=True),
    port=st.none() | st.integers(0, 65535),
    params=st.lists(st.tuples(_label, st.none() | _label), max_size=3).map(tuple),
    headers=st.lists(st.tuples(_label, _label), max_size=2).map(tuple),
).filter(lambda u: u.user is not None or u.password is None)


@given(_uris)
def test_generated_uris_round_trip(uri: SipUri) -> None:
    assert SipUri.parse(str(uri)) == uri


@given(_uris, st.none() | st.text(max_size=20).filter(lambda s: "\r" not in s and "\n" not in s),
       st.lists(st.tuples(_label, st.none() | _label), max_size=3).map(tuple))
def test_generated_name_addrs_round_trip(
    uri: SipUri, display: str | None, params: tuple[tuple[str, str | None], ...]
) -> None:
    na = NameAddr(uri, display, params)
    assert NameAddr.parse(str(na)) == na


@given(st.text(max_size=60))
def test_arbitrary_text_never_escapes_the_error_tree(text: str) -> None:
    for parser in (SipUri.parse, NameAddr.parse, Via.parse):
        with contextlib.suppress(SipParseError, UnsupportedUriScheme):
            parser(text)


def test_refer_targets_for_numbers_and_uris() -> None:
    assert refer_target("+14155550199", "192.0.2.7") == "sip:+14155550199@192.0.2.7;user=phone"
    assert refer_target(" +14155550199 ", "[2001:db8::7]:5070") == "sip:+14155550199@[2001:db8::7]:5070;user=phone"
    assert refer_target("+14155550199", None) == "tel:+14155550199"
    assert refer_target("sip:desk@pbx.example.com", "ignored.example.com") == "sip:desk@pbx.example.com"
    for bad in ("", "desk", "+1 415", "sip:", "http://example.com", "+1415555019@9"):
        with pytest.raises(SipParseError):
            refer_target(bad, "192.0.2.7")
