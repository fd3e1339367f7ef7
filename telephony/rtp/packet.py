"""RTP packets (RFC 3550 §5.1) and the RTP/RTCP demultiplexer for a shared socket (RFC 5761 §4).

::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    |                           timestamp                           |
    |           synchronization source (SSRC) identifier            |
    |            contributing source (CSRC) identifiers  ...        |
    |   header extension: profile (16) | length in words (16) | ... |
    |   payload ...                            | padding | pad count |

Sans-I/O: ``RtpPacket.parse(data)`` and ``bytes(packet)``. Every malformed input raises ``RtpError``.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from telephony.errors import RtpError

__all__ = ["HeaderExtension", "PacketKind", "RtpPacket", "classify"]

_HEADER = struct.Struct("!BBHII")
_EXT_HEADER = struct.Struct("!HH")
RTP_VERSION = 2


class PacketKind(enum.Enum):
    RTP = "rtp"
    RTCP = "rtcp"
    OTHER = "other"  # STUN, DTLS, garbage: not version 2


def classify(data: bytes) -> PacketKind:
    """Tell RTP from RTCP on a muxed socket (RFC 5761 §4): RTCP uses packet types 192–223,
    which as an RTP marker+PT byte are PT 64–95; SR..APP (200–204) are 72–76."""
    if len(data) < 2 or data[0] >> 6 != RTP_VERSION:
        return PacketKind.OTHER
    return PacketKind.RTCP if 192 <= data[1] <= 223 else PacketKind.RTP


@dataclass
class HeaderExtension:
    """The RFC 3550 §5.3.1 header extension, kept opaque: profile word and body (multiple of 4)."""

    profile: int
    data: bytes = b""


@dataclass
class RtpPacket:
    payload_type: int = 0
    sequence_number: int = 0
    timestamp: int = 0
    ssrc: int = 0
    marker: bool = False
    payload: bytes = b""
    csrc: list[int] = field(default_factory=list)
    extension: HeaderExtension | None = None
    padding_size: int = 0  # total padding octets incl. the trailing count; 0 = no padding
    version: int = RTP_VERSION

    @property
    def padding(self) -> bool:
        return self.padding_size > 0

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < _HEADER.size:
            raise RtpError(f"RTP packet too short: {len(data)} bytes")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        version = b0 >> 6
        if version != RTP_VERSION:
            raise RtpError(f"bad RTP version {version}")
        cc = b0 & 0x0F
        pos = _HEADER.size + 4 * cc
        if len(data) < pos:
            raise RtpError(f"RTP CSRC count {cc} beyond packet length {len(data)}")
        csrc = list(struct.unpack_from(f"!{cc}I", data, _HEADER.size))
        extension = None
        if b0 & 0x10:
            if len(data) < pos + _EXT_HEADER.size:
                raise RtpError("RTP header extension truncated")
            profile, words = _EXT_HEADER.unpack_from(data, pos)
            pos += _EXT_HEADER.size
            if len(data) < pos + 4 * words:
                raise RtpError("RTP header extension longer than packet")
            extension = HeaderExtension(profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        end = len(data)
        padding_size = 0
        if b0 & 0x20:
            padding_size = data[-1]
            if padding_size == 0 or padding_size > end - pos:
                raise RtpError(f"invalid RTP padding length {padding_size}")
            end -= padding_size
        return cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            marker=bool(b1 & 0x80),
            payload=bytes(data[pos:end]),
            csrc=csrc,
            extension=extension,
            padding_size=padding_size,
            version=version,
        )

    def __bytes__(self) -> bytes:
        if len(self.csrc) > 15:
            raise RtpError("at most 15 CSRCs")
        b0 = (self.version << 6) | (0x20 if self.padding_size else 0) | (0x10 if self.extension else 0)
        b0 |= len(self.csrc)
        b1 = (0x80 if self.marker else 0) | (self.payload_type & 0x7F)
        out = [_HEADER.pack(b0, b1, self.sequence_number, self.timestamp, self.ssrc)]
        out.extend(struct.pack("!I", c) for c in self.csrc)
        if self.extension is not None:
            ext = self.extension
            if len(ext.data) % 4:
                raise RtpError("RTP header extension body must be a multiple of 4 octets")
            out.append(_EXT_HEADER.pack(ext.profile, len(ext.data) // 4))
            out.append(ext.data)
        out.append(self.payload)
        if self.padding_size:
            if not 0 < self.padding_size < 256:
                raise RtpError(f"invalid RTP padding length {self.padding_size}")
            out.append(bytes(self.padding_size - 1) + bytes([self.padding_size]))
        return b"".join(out)
