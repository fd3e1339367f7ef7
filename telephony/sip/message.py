"""SIP requests and responses (RFC 3261 §7): `parse(bytes)` and `bytes(message)`, no I/O.

Parsing, for one datagram (§18.3) or one message cut out of a stream by `framing.StreamFramer`:

* the start line, then header lines up to the first empty line; CRLF or bare LF both end a line;
* a line starting with SP/HT continues the previous header (folding, §7.3.1);
* the body is the rest of the datagram; Content-Length may shorten it (the excess is discarded) but
  must not exceed it (400 "Content-Length mismatch");
* limits: `max_size` bytes (513) and `max_headers` field lines (513);
* checked eagerly, so `call_id`, `cseq`, `vias`/`top_via`/`branch`, `from_`/`to` and their tags,
  `max_forwards` and `content_type` never fail on a parsed message (`contacts` and `sip_uri` are
  checked when asked for, since only some elements need them): the start line and version
  (505 for anything but SIP/2.0), a single line for each single-value header (RFC 4475 §3.1.2.19),
  Via, From, To, Call-ID and CSeq present and well-formed, CSeq's method equal to a request's method,
  Max-Forwards 0..255, Content-Length digits.

Serialization writes the start line, then every field line as `Name: value` in stored order, CRLF
line ends, and a Content-Length equal to the body (replacing the stored value, or appended last when
the message had none). So for a message already in that form - CRLF, `Name: value` with one space,
no folding, a correct Content-Length - `bytes(parse(data)) == data` exactly; otherwise the
normalizations are exactly those: LF -> CRLF, folded lines joined with one space, whitespace around
the colon reduced to `: `, and Content-Length written as the body's length.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from telephony.sip.errors import MessageTooLarge, SipParseError, UnsupportedUriScheme
from telephony.sip.headers import HEADERS, TOKEN_RE, Headers, Via, canonical
from telephony.sip.uri import NameAddr, SipUri, Uri, parse_name_addrs, parse_uri

MAX_MESSAGE = 65536
MAX_HEADERS = 200
VERSION = "SIP/2.0"

_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_LINE_RE = re.compile(r"\r?\n")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DIGITS_RE = re.compile(r"[0-9]{1,10}")
_CSEQ_RE = re.compile(r"([0-9]{1,10})[ \t]+(\S+)")
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALL_ID_RE = re.compile(rf"{_WORD}(?:@{_WORD})?")  # RFC 3261 §25.1 callid = word ["@" word]
_SINGLE = tuple(s for s in HEADERS if s.single)

REASONS: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 413: "Request Entity Too Large",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
    483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here", 489: "Bad Event",
    491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large", 603: "Decline",
}
DIALOG_CREATING = frozenset({"INVITE", "SUBSCRIBE", "REFER"})


def find_head_end(data: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(end of the last header line, start of the body) or None when the empty line is not there yet."""
    m = _HEAD_END_RE.search(data, start)
    return (m.start(), m.end()) if m else None


def split_head(head: bytes, max_headers: int = MAX_HEADERS) -> tuple[str, list[tuple[str, str]]]:
    """The start line and the unfolded (name, value) field lines of a message head."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("header is not UTF-8") from None
    start, *lines = _LINE_RE.split(text)
    if _CONTROL_RE.search(start):
        raise SipParseError("control character in start line")
    fields: list[tuple[str, str]] = []
    for line in lines:
        if _CONTROL_RE.search(line):
            raise SipParseError("control character in header")
        if line[:1] in (" ", "\t"):
            if not fields:
                raise SipParseError("continuation before first header")
            name, value = fields[-1]
            fields[-1] = (name, (value + " " + line.strip(" \t")).strip(" \t"))
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not TOKEN_RE.fullmatch(name):
            raise SipParseError("bad header line")
        fields.append((name, value.strip(" \t")))
        if len(fields) > max_headers:
            raise MessageTooLarge("too many headers")
    return start, fields


def content_length(headers: Headers) -> int | None:
    lines = headers.lines("Content-Length")
    if not lines:
        return None
    if len(lines) > 1:
        raise SipParseError("multiple Content-Length")
    if not _DIGITS_RE.fullmatch(lines[0]):
        raise SipParseError("bad Content-Length")
    return int(lines[0])


def parse_cseq(value: str) -> tuple[int, str]:
    m = _CSEQ_RE.fullmatch(value)
    if not m or not TOKEN_RE.fullmatch(m[2]) or int(m[1]) >= 2**31:
        raise SipParseError("bad CSeq")
    return int(m[1]), m[2]


# One message is read through these accessors several times (transaction keys, dialog matching), and
# the values are immutable dataclasses, so parsing each distinct header value once is safe. Bounded, and small:
# Via branches and From/To tags are new in every call, so beyond the messages in flight a cache only keeps old
# calls' headers (at 4,096 entries each the two held 6.3 MB once full, after ~1,000 calls); 512 covers 64
# concurrent calls' messages and their retransmissions.
_PARSED_HEADER_CACHE = 512


@functools.lru_cache(maxsize=_PARSED_HEADER_CACHE)
def _parse_via(value: str) -> Via:
    return Via.parse(value)


@functools.lru_cache(maxsize=_PARSED_HEADER_CACHE)
def _parse_name_addr(value: str) -> NameAddr:
    return NameAddr.parse(value)


class _Message:
    """Typed accessors shared by requests and responses (valid after `parse`)."""

    headers: Headers
    body: bytes

    def _one(self, name: str) -> str:
        value = self.headers.get(name)
        if value is None:
            raise SipParseError(f"missing {name}")
        return value

    @property
    def call_id(self) -> str:
        return self._one("Call-ID")

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self._one("CSeq"))

    @property
    def vias(self) -> list[Via]:
        return [Via.parse(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        return _parse_via(self._one("Via"))

    @property
    def branch(self) -> str | None:
        return self.top_via.branch

    @property
    def from_(self) -> NameAddr:
        return _parse_name_addr(self._one("From"))

    @property
    def to(self) -> NameAddr:
        return _parse_name_addr(self._one("To"))

    @property
    def from_tag(self) -> str | None:
        return self.from_.tag

    @property
    def to_tag(self) -> str | None:
        return self.to.tag

    @property
    def contacts(self) -> list[NameAddr]:
        return [na for line in self.headers.lines("Contact") if line != "*" for na in parse_name_addrs(line)]

    @property
    def content_type(self) -> str | None:
        """The media type, lower-cased, without parameters (`application/sdp`)."""
        value = self.headers.get("Content-Type")
        return value.split(";", 1)[0].strip().lower() if value is not None else None

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return int(value) if value is not None else None

    def _serialize(self, start: str) -> bytes:
        lines = [start]
        has_length = False
        for name, value in self.headers:
            if name.lower() in ("content-length", "l"):
                value, has_length = str(len(self.body)), True
            lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass(eq=True)
class SipRequest(_Message):
    method: str
    uri: Uri
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @classmethod
    def parse(cls, data: bytes, *, max_size: int = MAX_MESSAGE, max_headers: int = MAX_HEADERS) -> SipRequest:
        """`parse()` for a datagram that must hold a request (a response is a 400 here)."""
        message = parse(data, max_size=max_size, max_headers=max_headers)
        if not isinstance(message, SipRequest):
            raise SipParseError("expected a request")
        return message

    def __bytes__(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {VERSION}")

    @property
    def sip_uri(self) -> SipUri:
        """The Request-URI as a SipUri; UnsupportedUriScheme (416) when it is opaque."""
        if isinstance(self.uri, str):
            raise UnsupportedUriScheme(f"unsupported URI scheme {self.uri.partition(':')[0][:32]!r}")
        return self.uri


@dataclass(eq=True)
class SipResponse(_Message):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @classmethod
    def parse(cls, data: bytes, *, max_size: int = MAX_MESSAGE, max_headers: int = MAX_HEADERS) -> SipResponse:
        """`parse()` for a datagram that must hold a response."""
        message = parse(data, max_size=max_size, max_headers=max_headers)
        if not isinstance(message, SipResponse):
            raise SipParseError("expected a response")
        return message

    def __bytes__(self) -> bytes:
        return self._serialize(f"{VERSION} {self.status} {self.reason}")


def _check_version(version: str) -> None:
    if version.upper() != VERSION:
        if re.fullmatch(r"SIP/[0-9]+\.[0-9]+", version, re.IGNORECASE):
            raise SipParseError("Version Not Supported", status=505)
        raise SipParseError("bad SIP version")


def _start_line(start: str) -> tuple[str, Uri] | tuple[int, str]:
    if start[:4].upper() == "SIP/":
        version, _, rest = start.partition(" ")
        _check_version(version)
        code, _, reason = rest.partition(" ")
        if not re.fullmatch(r"[1-6][0-9][0-9]", code):
            raise SipParseError("bad status line")
        return int(code), reason
    parts = start.split(" ")
    if len(parts) != 3 or not TOKEN_RE.fullmatch(parts[0]) or not parts[1]:
        raise SipParseError("bad request line")
    _check_version(parts[2])
    try:
        uri = parse_uri(parts[1])
    except SipParseError:
        raise SipParseError("bad Request-URI") from None
    return parts[0], uri


def _validate(headers: Headers, method: str | None) -> None:
    for single in _SINGLE:
        if headers.count(single.name) > 1:
            raise SipParseError(f"multiple {single.name}")
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not headers.get_all(name):
            raise SipParseError(f"missing {name}")
    for via in headers.get_all("Via"):
        Via.parse(via)
    for name in ("From", "To"):
        try:
            NameAddr.parse(headers.lines(name)[0])
        except (SipParseError, UnsupportedUriScheme):
            raise SipParseError(f"bad {name}") from None
    if not _CALL_ID_RE.fullmatch(headers.lines("Call-ID")[0]):
        raise SipParseError("bad Call-ID")
    _, cseq_method = parse_cseq(headers.lines("CSeq")[0])
    if method is not None and cseq_method != method:
        raise SipParseError("CSeq method mismatch")
    max_forwards = headers.lines("Max-Forwards")
    if max_forwards and not (_DIGITS_RE.fullmatch(max_forwards[0]) and int(max_forwards[0]) <= 255):
        raise SipParseError("bad Max-Forwards")


def parse(data: bytes, *, max_size: int = MAX_MESSAGE, max_headers: int = MAX_HEADERS) -> SipRequest | SipResponse:
    """One SIP message from one datagram (or one framed stream message); raises only SipError."""
    if len(data) > max_size:
        raise MessageTooLarge()
    bounds = find_head_end(data)
    if bounds is None:
        raise SipParseError("missing empty line after headers")
    start, fields = split_head(bytes(data[: bounds[0]]), max_headers)
    headers = Headers(fields)
    first = _start_line(start)
    rest = bytes(data[bounds[1] :])
    length = content_length(headers)
    if length is not None and length > len(rest):
        raise SipParseError("Content-Length mismatch")
    body = rest if length is None else rest[:length]
    if isinstance(first[0], int):
        _validate(headers, None)
        return SipResponse(first[0], str(first[1]), headers, body)
    _validate(headers, first[0])
    return SipRequest(first[0], first[1], headers, body)


def sipfrag_status(body: bytes) -> tuple[int, str]:
    """The status line of a message/sipfrag body (RFC 3515 §2.4.5 NOTIFY after REFER)."""
    line = _LINE_RE.split(body.decode("utf-8", errors="replace"), maxsplit=1)[0]
    if not line[:4].upper() == "SIP/" or _CONTROL_RE.search(line):
        raise SipParseError("bad sipfrag status line")
    first = _start_line(line)
    assert isinstance(first[0], int)
    return first[0], str(first[1])


def make_response(
    request: SipRequest,
    status: int,
    reason: str | None = None,
    to_tag: str | None = None,
    extra_headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> SipResponse:
    """A response per RFC 3261 §8.2.6: Via (all, in order), From, Call-ID, CSeq copied; To copied with
    `to_tag` added when it has none (never on 100, §8.2.6.2); Record-Route copied on 101-299 to a
    dialog-creating request (§12.1.1); Timestamp echoed on 100 (§8.2.6.1)."""
    headers = Headers()
    for name, value in request.headers:
        key = canonical(name).lower()
        if key in ("via", "from", "call-id", "cseq"):
            headers.add(name, value)
        elif key == "to":
            to = NameAddr.parse(value)
            if to_tag is not None and to.tag is None and status != 100:
                value = str(to.with_param("tag", to_tag))
            headers.add(name, value)
        elif (key == "record-route" and request.method in DIALOG_CREATING and 101 <= status <= 299) or (
            key == "timestamp" and status == 100
        ):
            headers.add(name, value)
    for name, value in extra_headers:
        headers.add(name, value)
    return SipResponse(status, reason if reason is not None else REASONS.get(status, ""), headers, body)
