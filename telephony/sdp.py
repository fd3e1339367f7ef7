"""Session descriptions (RFC 4566) and the offer/answer model (RFC 3264), sans-I/O.

``SessionDescription.parse(body)`` keeps every line: the known ones as fields, ``a=`` lines as an
ordered attribute list (``rtpmap``/``fmtp``/``ptime``/``maxptime`` and the direction are read through
properties), other lines by type. ``str()``/``bytes()`` write them back in RFC 4566 §5 order with the
line ending the body used, so a well-formed body round-trips byte for byte.

``negotiate(offer, capabilities)`` is a pure function returning the answer (RFC 3264 §6): one audio
stream accepted with our most preferred common codec plus telephone-event on the offer's own payload
type; every other m-line rejected with port 0; direction answered per §6.1 (and the RFC 2543
``c=0.0.0.0`` hold treated as the offerer not receiving). Errors are ``SdpError``: 400 for a malformed
body, 488 when there is nothing we can answer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from telephony.errors import SdpError

__all__ = [
    "G722",
    "PCMA",
    "PCMU",
    "TELEPHONE_EVENT",
    "Attribute",
    "AudioParams",
    "Capabilities",
    "Codec",
    "Connection",
    "Direction",
    "Media",
    "Negotiation",
    "Origin",
    "RtpMap",
    "SessionDescription",
    "build_offer",
    "negotiate",
]


class Direction(enum.Enum):
    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)

    @classmethod
    def of(cls, sends: bool, receives: bool) -> Direction:
        if sends:
            return cls.SENDRECV if receives else cls.SENDONLY
        return cls.RECVONLY if receives else cls.INACTIVE


_DIRECTIONS = {d.value: d for d in Direction}


@dataclass(frozen=True)
class RtpMap:
    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    def __str__(self) -> str:
        chan = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{chan}"


def _int(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise SdpError(f"bad {what}: {text!r}") from None
    if value < 0:
        raise SdpError(f"bad {what}: {text!r}")
    return value


def _parse_rtpmap(value: str) -> RtpMap:
    pt, _, enc = value.partition(" ")
    parts = enc.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0]:
        raise SdpError(f"bad rtpmap: {value!r}")
    channels = _int(parts[2], "rtpmap channels") if len(parts) == 3 else None
    return RtpMap(_int(pt, "rtpmap payload type"), parts[0], _int(parts[1], "rtpmap clock rate"), channels)


def _parse_fmtp(value: str) -> tuple[int, str]:
    pt, _, params = value.partition(" ")
    return _int(pt, "fmtp payload type"), params


# Attributes with a structured value: name -> parser (validates on parse; the raw text is kept).
ATTRIBUTES: dict[str, Callable[[str], object]] = {
    "rtpmap": _parse_rtpmap,
    "fmtp": _parse_fmtp,
    "ptime": lambda v: _int(v, "ptime"),
    "maxptime": lambda v: _int(v, "maxptime"),
}

# RFC 3551 static payload types (audio) used when an offer omits the rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, RtpMap] = {
    0: RtpMap(0, "PCMU", 8000),
    3: RtpMap(3, "GSM", 8000),
    4: RtpMap(4, "G723", 8000),
    8: RtpMap(8, "PCMA", 8000),
    9: RtpMap(9, "G722", 8000),
    13: RtpMap(13, "CN", 8000),
    18: RtpMap(18, "G729", 8000),
}


@dataclass
class Attribute:
    name: str
    value: str | None = None  # None for a property attribute (a=sendrecv)

    @classmethod
    def parse(cls, text: str) -> Attribute:
        name, sep, value = text.partition(":")
        if not name:
            raise SdpError(f"bad attribute: {text!r}")
        attr = cls(name, value if sep else None)
        parser = ATTRIBUTES.get(name)
        if parser is not None:
            if not sep:
                raise SdpError(f"attribute {name} needs a value")
            parser(value)
        return attr

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass
class Origin:
    username: str
    session_id: str
    session_version: int
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, text: str) -> Origin:
        parts = text.split(" ")
        if len(parts) != 6:
            raise SdpError(f"bad o= line: {text!r}")
        return cls(parts[0], parts[1], _int(parts[2], "session version"), parts[5], parts[3], parts[4])

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@dataclass
class Connection:
    address: str
    nettype: str = "IN"
    addrtype: str = "IP4"

    @classmethod
    def parse(cls, text: str) -> Connection:
        parts = text.split(" ")
        if len(parts) != 3 or not parts[2]:
            raise SdpError(f"bad c= line: {text!r}")
        return cls(parts[2], parts[0], parts[1])

    @property
    def is_hold(self) -> bool:
        """RFC 2543 hold: the offerer asks not to be sent media."""
        return self.address.split("/")[0] in ("0.0.0.0", "::")

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.address}"


class _WithAttributes:
    attributes: list[Attribute]

    def attribute_values(self, name: str) -> list[str]:
        return [a.value or "" for a in self.attributes if a.name == name]

    @property
    def direction(self) -> Direction | None:
        """The direction attribute present here, or None (inherit / default sendrecv)."""
        for a in self.attributes:
            if a.value is None and a.name in _DIRECTIONS:
                return _DIRECTIONS[a.name]
        return None


@dataclass
class Media(_WithAttributes):
    media: str
    port: int
    proto: str
    formats: list[str]
    port_count: int | None = None
    connection: Connection | None = None
    attributes: list[Attribute] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)  # i= b= k= in order

    @classmethod
    def parse_m_line(cls, text: str) -> Media:
        parts = text.split(" ")
        if len(parts) < 4:
            raise SdpError(f"bad m= line: {text!r}")
        port, sep, count = parts[1].partition("/")
        if _int(port, "media port") > 65535:
            raise SdpError(f"bad media port: {port!r}")
        return cls(
            media=parts[0],
            port=_int(port, "media port"),
            port_count=_int(count, "port count") if sep else None,
            proto=parts[2],
            formats=parts[3:],
        )

    @property
    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats if f.isascii() and f.isdigit()]

    @property
    def rtpmaps(self) -> dict[int, RtpMap]:
        maps = {}
        for v in self.attribute_values("rtpmap"):
            m = _parse_rtpmap(v)
            maps[m.payload_type] = m
        return maps

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The rtpmap for a payload type, falling back to the RFC 3551 static table."""
        return self.rtpmaps.get(payload_type) or STATIC_PAYLOAD_TYPES.get(payload_type)

    @property
    def fmtp(self) -> dict[int, str]:
        return dict(_parse_fmtp(v) for v in self.attribute_values("fmtp"))

    @property
    def ptime(self) -> int | None:
        values = self.attribute_values("ptime")
        return int(values[0]) if values else None

    @property
    def maxptime(self) -> int | None:
        values = self.attribute_values("maxptime")
        return int(values[0]) if values else None

    def _m_line(self) -> str:
        port = f"{self.port}/{self.port_count}" if self.port_count is not None else str(self.port)
        return " ".join([self.media, port, self.proto, *self.formats])


# RFC 4566 §5 order of the session-level lines we keep generically, relative to c= and t=.
_BEFORE_C = "iuep"
_BEFORE_T = "b"
_AFTER_T = "rzk"


@dataclass
class SessionDescription(_WithAttributes):
    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    timing: list[str] = field(default_factory=lambda: ["0 0"])
    media: list[Media] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)  # i u e p b r z k, in order
    version: int = 0
    line_ending: str = "\r\n"

    @classmethod
    def parse(cls, body: bytes | str) -> SessionDescription:
        if isinstance(body, bytes):
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError:
                raise SdpError("SDP body is not UTF-8") from None
        line_ending = "\r\n" if "\r\n" in body else "\n"
        raw = body.split("\n")
        if raw and raw[-1] == "":
            raw.pop()
        fields: dict[str, str] = {}
        timing: list[str] = []
        attributes: list[Attribute] = []
        lines: list[tuple[str, str]] = []
        connection: Connection | None = None
        media: list[Media] = []
        for n, line in enumerate(raw):
            line = line.removesuffix("\r")
            if len(line) < 2 or line[1] != "=":
                raise SdpError(f"bad SDP line {n + 1}: {line!r}")
            kind, value = line[0], line[2:]
            if n == 0 and kind != "v":
                raise SdpError("SDP must start with v=")
            if kind == "m":
                media.append(Media.parse_m_line(value))
            elif media:
                cur = media[-1]
                if kind == "c":
                    cur.connection = Connection.parse(value)
                elif kind == "a":
                    cur.attributes.append(Attribute.parse(value))
                else:
                    cur.lines.append((kind, value))
            elif kind in "vos":
                if kind in fields:
                    raise SdpError(f"duplicate {kind}= line")
                fields[kind] = value
            elif kind == "c":
                connection = Connection.parse(value)
            elif kind == "t":
                timing.append(value)
            elif kind == "a":
                attributes.append(Attribute.parse(value))
            else:
                lines.append((kind, value))
        for required in "vos":
            if required not in fields:
                raise SdpError(f"SDP without {required}= line")
        if not timing:
            raise SdpError("SDP without t= line")
        if fields["v"] != "0":
            raise SdpError(f"unsupported SDP version {fields['v']!r}")
        return cls(
            version=0,
            origin=Origin.parse(fields["o"]),
            session_name=fields["s"],
            connection=connection,
            timing=timing,
            media=media,
            attributes=attributes,
            lines=lines,
            line_ending=line_ending,
        )

    def _lines(self) -> list[str]:
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        out += [f"{k}={v}" for k, v in self.lines if k in _BEFORE_C]
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out += [f"{k}={v}" for k, v in self.lines if k in _BEFORE_T]
        out += [f"t={t}" for t in self.timing]
        out += [f"{k}={v}" for k, v in self.lines if k not in _BEFORE_C + _BEFORE_T]
        out += [f"a={a}" for a in self.attributes]
        for m in self.media:
            out.append(f"m={m._m_line()}")
            out += [f"{k}={v}" for k, v in m.lines if k == "i"]
            if m.connection is not None:
                out.append(f"c={m.connection}")
            out += [f"{k}={v}" for k, v in m.lines if k != "i"]
            out += [f"a={a}" for a in m.attributes]
        return out

    def __str__(self) -> str:
        return "".join(line + self.line_ending for line in self._lines())

    def __bytes__(self) -> bytes:
        return str(self).encode("utf-8")

    def connection_for(self, media: Media) -> Connection | None:
        return media.connection or self.connection

    def direction_for(self, media: Media) -> Direction:
        return media.direction or self.direction or Direction.SENDRECV


# --- offer / answer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codec:
    """A codec we can run. ``payload_type`` is the static PT or, for dynamic ones, the PT we offer."""

    name: str
    clock_rate: int
    payload_type: int
    fmtp: str | None = None

    def matches(self, rtpmap: RtpMap) -> bool:
        return rtpmap.encoding.lower() == self.name.lower() and rtpmap.clock_rate == self.clock_rate


PCMU = Codec("PCMU", 8000, 0)
PCMA = Codec("PCMA", 8000, 8)
G722 = Codec("G722", 8000, 9)  # RFC 3551 §4.5.2: RTP clock 8000 although sampled at 16 kHz
TELEPHONE_EVENT = Codec("telephone-event", 8000, 101, "0-16")


@dataclass(frozen=True)
class Capabilities:
    """What we offer or accept: codecs in preference order and where our media socket listens."""

    address: str
    port: int
    codecs: tuple[Codec, ...] = (PCMU, PCMA)
    telephone_event: Codec | None = TELEPHONE_EVENT
    ptime: int = 20
    direction: Direction = Direction.SENDRECV
    username: str = "flowyte"
    session_id: str = "0"
    session_version: int = 0
    session_name: str = "flowyte"


@dataclass(frozen=True)
class AudioParams:
    """What was agreed for the audio stream, for the media layer."""

    remote_address: str
    remote_port: int
    codec: Codec  # carries the payload type to send and receive
    telephone_event_pt: int | None
    ptime: int
    direction: Direction  # our direction: sends = we send media, receives = we expect media


@dataclass(frozen=True)
class Negotiation:
    answer: SessionDescription
    audio: AudioParams


def _addrtype(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _origin(caps: Capabilities) -> Origin:
    return Origin(caps.username, caps.session_id, caps.session_version, caps.address, "IN", _addrtype(caps.address))


def _rejected(m: Media) -> Media:
    return Media(m.media, 0, m.proto, list(m.formats) or ["0"])


def _audio_attributes(codec: Codec, te: Codec | None, ptime: int, direction: Direction) -> list[Attribute]:
    attrs = [Attribute("rtpmap", f"{codec.payload_type} {codec.name}/{codec.clock_rate}")]
    if codec.fmtp:
        attrs.append(Attribute("fmtp", f"{codec.payload_type} {codec.fmtp}"))
    if te is not None:
        attrs.append(Attribute("rtpmap", f"{te.payload_type} {te.name}/{te.clock_rate}"))
        if te.fmtp:
            attrs.append(Attribute("fmtp", f"{te.payload_type} {te.fmtp}"))
    attrs.append(Attribute("ptime", str(ptime)))
    attrs.append(Attribute(direction.value))
    return attrs


def _event_set(spec: str) -> set[int]:
    """RFC 4733 §7.1.1 event list such as ``0-15,66`` as a set; malformed parts are ignored."""
    events: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        lo, sep, hi = part.partition("-")
        hi = hi if sep else lo
        if lo.isascii() and lo.isdigit() and hi.isascii() and hi.isdigit() and int(hi) < 256:
            events.update(range(int(lo), int(hi) + 1))
    return events


def _event_spec(events: set[int]) -> str:
    ranges: list[list[int]] = []
    for e in sorted(events):
        if ranges and ranges[-1][1] == e - 1:
            ranges[-1][1] = e
        else:
            ranges.append([e, e])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def _pick_telephone_event(m: Media, caps: Capabilities) -> Codec | None:
    """telephone-event on the offer's own payload type, its event list cut to the events we handle."""
    ours = caps.telephone_event
    if ours is None:
        return None
    for pt in m.payload_types:
        rtpmap = m.rtpmap(pt)
        if rtpmap is None or not ours.matches(rtpmap):
            continue
        offered_events = m.fmtp.get(pt)
        if offered_events is None or ours.fmtp is None:
            return replace(ours, payload_type=pt)
        common = _event_set(offered_events) & _event_set(ours.fmtp)
        return replace(ours, payload_type=pt, fmtp=_event_spec(common)) if common else None
    return None


def _pick(m: Media, caps: Capabilities) -> tuple[Codec, Codec | None] | None:
    """Our most preferred codec that the offer lists, on the offer's payload type."""
    for codec in caps.codecs:
        for pt in m.payload_types:
            rtpmap = m.rtpmap(pt)
            if rtpmap is not None and codec.matches(rtpmap):
                return replace(codec, payload_type=pt), _pick_telephone_event(m, caps)
    return None


def negotiate(offer: SessionDescription, capabilities: Capabilities) -> Negotiation:
    """Answer an offer (RFC 3264 §6): accept the first audio RTP/AVP stream with a common codec."""
    caps = capabilities
    answer_media: list[Media] = []
    audio: AudioParams | None = None
    for m in offer.media:
        if audio is not None or m.media != "audio" or m.proto != "RTP/AVP" or m.port == 0:
            answer_media.append(_rejected(m))
            continue
        picked = _pick(m, caps)
        conn = offer.connection_for(m)
        if picked is None or conn is None:
            answer_media.append(_rejected(m))
            continue
        codec, te = picked
        offer_dir = offer.direction_for(m)
        offerer_receives = offer_dir.receives and not conn.is_hold
        direction = Direction.of(
            sends=offerer_receives and caps.direction.sends,
            receives=offer_dir.sends and caps.direction.receives,
        )
        ptime = m.ptime or caps.ptime
        if m.maxptime is not None and m.maxptime < ptime:
            ptime = m.maxptime
        formats = [str(codec.payload_type)] + ([str(te.payload_type)] if te else [])
        answer_media.append(
            Media("audio", caps.port, "RTP/AVP", formats, attributes=_audio_attributes(codec, te, ptime, direction))
        )
        audio = AudioParams(
            remote_address=conn.address.split("/")[0],
            remote_port=m.port,
            codec=codec,
            telephone_event_pt=te.payload_type if te else None,
            ptime=ptime,
            direction=direction,
        )
    if audio is None:
        raise SdpError("no common audio codec", status=488)
    answer = SessionDescription(
        origin=_origin(caps),
        session_name=caps.session_name,
        connection=Connection(caps.address, "IN", _addrtype(caps.address)),
        timing=list(offer.timing),
        media=answer_media,
        line_ending="\r\n",
    )
    return Negotiation(answer, audio)


def build_offer(capabilities: Capabilities, direction: Direction | None = None) -> SessionDescription:
    """An offer for an outgoing INVITE or a re-INVITE (bump ``session_version`` for the latter;
    ``direction=Direction.SENDONLY`` or ``INACTIVE`` puts the call on hold, RFC 3264 §8.4)."""
    caps = capabilities
    chosen = direction or caps.direction
    te = caps.telephone_event
    formats = [str(c.payload_type) for c in caps.codecs] + ([str(te.payload_type)] if te else [])
    attrs: list[Attribute] = []
    for c in caps.codecs:
        attrs.append(Attribute("rtpmap", f"{c.payload_type} {c.name}/{c.clock_rate}"))
        if c.fmtp:
            attrs.append(Attribute("fmtp", f"{c.payload_type} {c.fmtp}"))
    if te is not None:
        attrs.append(Attribute("rtpmap", f"{te.payload_type} {te.name}/{te.clock_rate}"))
        if te.fmtp:
            attrs.append(Attribute("fmtp", f"{te.payload_type} {te.fmtp}"))
    attrs += [Attribute("ptime", str(caps.ptime)), Attribute(chosen.value)]
    return SessionDescription(
        origin=_origin(caps),
        session_name=caps.session_name,
        connection=Connection(caps.address, "IN", _addrtype(caps.address)),
        timing=["0 0"],
        media=[Media("audio", caps.port, "RTP/AVP", formats, attributes=attrs)],
    )
