"""RTCP packets (RFC 3550 §6) and sans-I/O reception statistics (RFC 3550 §6.4, A.3, A.8).

Every RTCP packet starts with the common header::

    |V=2|P|  count  |      PT       |   length (32-bit words - 1)   |

``parse_compound(data)`` splits a compound datagram into ``SenderReport`` (200), ``ReceiverReport``
(201), ``SourceDescription`` (202), ``Bye`` (203) and ``UnknownRtcp`` (anything else, kept opaque so
it re-serializes unchanged). ``serialize_compound(packets)`` is the inverse. Malformed input raises
``RtpError`` only. Packet padding (P bit) is accepted and dropped; it is not written back.

``ReceptionStats`` is fed ``(seq, rtp timestamp, arrival seconds)`` per packet and produces the
figures of a report block: received, expected, cumulative lost, fraction lost since the last report,
and interarrival jitter (A.8). Time is passed in; it reads no clock.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from telephony.errors import RtpError
from telephony.rtp.seq import SequenceExtender, seq_add, ts_diff

__all__ = [
    "Bye",
    "ReceiverReport",
    "ReceptionStats",
    "ReportBlock",
    "RtcpPacket",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "UnknownRtcp",
    "parse_compound",
    "serialize_compound",
]

PT_SR, PT_RR, PT_SDES, PT_BYE = 200, 201, 202, 203
SDES_CNAME = 1

_COMMON = struct.Struct("!BBH")
_SR_INFO = struct.Struct("!IIIIII")  # ssrc, ntp sec, ntp frac, rtp ts, packets, octets
_BLOCK = struct.Struct("!IB3sIIII")
_LOST_MIN, _LOST_MAX = -(1 << 23), (1 << 23) - 1
MAX_DROPOUT = 3000  # RFC 3550 A.1: largest forward jump taken as loss
MAX_MISORDER = 100  # ... and largest backward step taken as reordering


@dataclass
class ReportBlock:
    ssrc: int
    fraction_lost: int = 0  # fixed point /256
    cumulative_lost: int = 0  # signed 24 bit (duplicates can make it negative)
    highest_sequence: int = 0  # extended: cycles << 16 | seq
    jitter: int = 0  # RTP timestamp units
    lsr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    dlsr: int = 0  # delay since that SR, 1/65536 s

    @classmethod
    def parse(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        return cls(ssrc, fraction, int.from_bytes(lost, "big", signed=True), highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = max(_LOST_MIN, min(_LOST_MAX, self.cumulative_lost)).to_bytes(3, "big", signed=True)
        return _BLOCK.pack(self.ssrc, self.fraction_lost, lost, self.highest_sequence, self.jitter, self.lsr, self.dlsr)


def _blocks(body: bytes, pos: int, count: int) -> tuple[list[ReportBlock], bytes]:
    if len(body) < pos + count * _BLOCK.size:
        raise RtpError(f"RTCP report count {count} beyond packet length")
    blocks = [ReportBlock.parse(body, pos + i * _BLOCK.size) for i in range(count)]
    return blocks, bytes(body[pos + count * _BLOCK.size :])


def _header(count: int, pt: int, body_len: int) -> bytes:
    if count > 31:
        raise RtpError("RTCP count field is 5 bits")
    if body_len % 4:
        raise RtpError("RTCP body must be a multiple of 4 octets")
    return _COMMON.pack(0x80 | count, pt, body_len // 4)


@dataclass
class SenderReport:
    ssrc: int
    ntp_timestamp: int = 0  # 64-bit NTP format
    rtp_timestamp: int = 0
    packet_count: int = 0
    octet_count: int = 0
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""  # profile-specific, kept opaque

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SenderReport:
        if len(body) < _SR_INFO.size:
            raise RtpError("RTCP SR too short")
        ssrc, sec, frac, rtp_ts, packets, octets = _SR_INFO.unpack_from(body)
        reports, ext = _blocks(body, _SR_INFO.size, count)
        return cls(ssrc, (sec << 32) | frac, rtp_ts, packets, octets, reports, ext)

    def __bytes__(self) -> bytes:
        body = _SR_INFO.pack(
            self.ssrc,
            self.ntp_timestamp >> 32,
            self.ntp_timestamp & 0xFFFFFFFF,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        )
        body += b"".join(bytes(r) for r in self.reports) + self.extension
        return _header(len(self.reports), PT_SR, len(body)) + body

    @property
    def lsr(self) -> int:
        """The middle 32 bits of the NTP timestamp, as echoed in LSR (RFC 3550 §6.4.1)."""
        return (self.ntp_timestamp >> 16) & 0xFFFFFFFF


@dataclass
class ReceiverReport:
    ssrc: int
    reports: list[ReportBlock] = field(default_factory=list)
    extension: bytes = b""

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> ReceiverReport:
        if len(body) < 4:
            raise RtpError("RTCP RR too short")
        (ssrc,) = struct.unpack_from("!I", body)
        reports, ext = _blocks(body, 4, count)
        return cls(ssrc, reports, ext)

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(r) for r in self.reports) + self.extension
        return _header(len(self.reports), PT_RR, len(body)) + body


@dataclass
class SdesChunk:
    ssrc: int
    items: list[tuple[int, bytes]] = field(default_factory=list)  # (type, value); 1 = CNAME

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None

    def __bytes__(self) -> bytes:
        out = struct.pack("!I", self.ssrc)
        for kind, value in self.items:
            if not 0 < kind < 256 or len(value) > 255:
                raise RtpError("bad SDES item")
            out += bytes([kind, len(value)]) + value
        out += b"\x00"  # end of items, then pad to a 32-bit boundary
        return out + bytes(-len(out) % 4)


@dataclass
class SourceDescription:
    chunks: list[SdesChunk] = field(default_factory=list)

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> SourceDescription:
        chunks, pos = [], 0
        for _ in range(count):
            if len(body) < pos + 4:
                raise RtpError("RTCP SDES chunk truncated")
            (ssrc,) = struct.unpack_from("!I", body, pos)
            pos += 4
            chunk = SdesChunk(ssrc)
            while True:
                if pos >= len(body):
                    raise RtpError("RTCP SDES items not terminated")
                kind = body[pos]
                if kind == 0:
                    pos += 1
                    pos += -pos % 4
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise RtpError("RTCP SDES item truncated")
                length = body[pos + 1]
                chunk.items.append((kind, bytes(body[pos + 2 : pos + 2 + length])))
                pos += 2 + length
            chunks.append(chunk)
        return cls(chunks)

    def __bytes__(self) -> bytes:
        body = b"".join(bytes(c) for c in self.chunks)
        return _header(len(self.chunks), PT_SDES, len(body)) + body


@dataclass
class Bye:
    sources: list[int] = field(default_factory=list)
    reason: bytes | None = None

    @classmethod
    def parse_body(cls, count: int, body: bytes) -> Bye:
        if len(body) < 4 * count:
            raise RtpError("RTCP BYE source count beyond packet length")
        sources = list(struct.unpack_from(f"!{count}I", body))
        reason = None
        pos = 4 * count
        if pos < len(body):
            length = body[pos]
            if pos + 1 + length > len(body):
                raise RtpError("RTCP BYE reason truncated")
            reason = bytes(body[pos + 1 : pos + 1 + length])
        return cls(sources, reason)

    def __bytes__(self) -> bytes:
        body = b"".join(struct.pack("!I", s) for s in self.sources)
        if self.reason is not None:
            if len(self.reason) > 255:
                raise RtpError("BYE reason longer than 255 octets")
            body += bytes([len(self.reason)]) + self.reason
            body += bytes(-len(body) % 4)
        return _header(len(self.sources), PT_BYE, len(body)) + body


@dataclass
class UnknownRtcp:
    packet_type: int
    count: int
    body: bytes

    def __bytes__(self) -> bytes:
        return _header(self.count, self.packet_type, len(self.body)) + self.body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp

_PARSERS: dict[int, Callable[[int, bytes], RtcpPacket]] = {
    PT_SR: SenderReport.parse_body,
    PT_RR: ReceiverReport.parse_body,
    PT_SDES: SourceDescription.parse_body,
    PT_BYE: Bye.parse_body,
}


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """All RTCP packets in one datagram, in order."""
    packets: list[RtcpPacket] = []
    pos = 0
    if not data:
        raise RtpError("empty RTCP datagram")
    while pos < len(data):
        if len(data) < pos + _COMMON.size:
            raise RtpError("RTCP header truncated")
        b0, pt, words = _COMMON.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtpError(f"bad RTCP version {b0 >> 6}")
        end = pos + 4 * (words + 1)
        if end > len(data):
            raise RtpError("RTCP length beyond datagram")
        body = bytes(data[pos + _COMMON.size : end])
        if b0 & 0x20:
            if not body or body[-1] == 0 or body[-1] > len(body):
                raise RtpError("invalid RTCP padding")
            body = body[: -body[-1]]
        count = b0 & 0x1F
        parser = _PARSERS.get(pt)
        packets.append(parser(count, body) if parser else UnknownRtcp(pt, count, body))
        pos = end
    return packets


def serialize_compound(packets: list[RtcpPacket]) -> bytes:
    return b"".join(bytes(p) for p in packets)


# --- reception statistics -------------------------------------------------------------------------


@dataclass
class ReceptionStats:
    """Per-source receive statistics (RFC 3550 A.3, A.8), sans-I/O.

    ``jitter`` is in RTP timestamp units (as a float; report blocks carry it truncated). A jump of
    more than ``MAX_DROPOUT`` ahead or ``MAX_MISORDER`` back is dropped unless the next packet
    follows it, in which case the source restarted its sequence and the counts start again (A.1).
    """

    clock_rate: int = 8000
    received: int = 0
    jitter: float = 0.0
    _ext: SequenceExtender = field(default_factory=SequenceExtender)
    _base: int = 0
    _last_ts: int | None = None
    _last_arrival: float = 0.0
    _expected_prior: int = 0
    _received_prior: int = 0
    _last_sr: int = 0
    _last_sr_at: float | None = None

    _bad_seq: int | None = None

    def receive(self, seq: int, timestamp: int, arrival: float) -> bool:
        """Count one packet; False when it is dropped as a sequence jump awaiting confirmation."""
        delta = self._ext.delta(seq)
        if self.received and not -MAX_MISORDER <= delta < MAX_DROPOUT:
            if seq != self._bad_seq:
                self._bad_seq = seq_add(seq, 1)
                return False
            self._restart()
        self._bad_seq = None
        ext = self._ext.extend(seq)
        if self.received == 0:
            self._base = ext
        self.received += 1
        if self._last_ts is not None:
            # D(i,j) = (Rj - Ri) - (Sj - Si), in timestamp units; the RTP difference via ts_diff.
            d = (arrival - self._last_arrival) * self.clock_rate - ts_diff(timestamp, self._last_ts)
            self.jitter += (abs(d) - self.jitter) / 16
        self._last_ts = timestamp
        self._last_arrival = arrival
        return True

    def _restart(self) -> None:
        self._ext = SequenceExtender()
        self.received = self._expected_prior = self._received_prior = 0
        self._last_ts = None

    @property
    def jitter_ms(self) -> float:
        return 1000.0 * self.jitter / self.clock_rate

    @property
    def extended_highest(self) -> int:
        return self._ext.highest or 0

    @property
    def expected(self) -> int:
        return 0 if self.received == 0 else self.extended_highest - self._base + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (negative when duplicates arrived), clamped to 24 bits signed."""
        return max(_LOST_MIN, min(_LOST_MAX, self.expected - self.received))

    def fraction_lost(self) -> int:
        """Fraction lost since the last report, fixed point /256, without starting a new interval."""
        expected_interval = self.expected - self._expected_prior
        lost_interval = expected_interval - (self.received - self._received_prior)
        if expected_interval == 0 or lost_interval <= 0:
            return 0
        return min(255, (lost_interval << 8) // expected_interval)

    def sender_report_received(self, sr: SenderReport, now: float) -> None:
        self._last_sr = sr.lsr
        self._last_sr_at = now

    def report_block(self, ssrc: int, now: float) -> ReportBlock:
        """A report block for source ``ssrc``; starts a new interval for ``fraction_lost``."""
        fraction = self.fraction_lost()
        self._expected_prior = self.expected
        self._received_prior = self.received
        dlsr = 0
        if self._last_sr_at is not None:
            dlsr = max(0, min(0xFFFFFFFF, int((now - self._last_sr_at) * 65536)))
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=fraction,
            cumulative_lost=self.lost,
            highest_sequence=self.extended_highest & 0xFFFFFFFF,
            jitter=min(0xFFFFFFFF, int(self.jitter)),
            lsr=self._last_sr,
            dlsr=dlsr,
        )
