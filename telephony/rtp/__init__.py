"""RTP media: packets, wraparound helpers, RTCP, RFC 4733 telephone events. Sans-I/O throughout."""

from telephony.errors import RtpError
from telephony.rtp.packet import HeaderExtension, PacketKind, RtpPacket, classify

__all__ = ["HeaderExtension", "PacketKind", "RtpError", "RtpPacket", "classify"]
