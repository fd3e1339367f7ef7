"""Telephony media errors: the one error tree for SDP and RTP.

SIP message errors live in ``telephony/sip/errors.py``; this tree covers the media side only::

    TelephonyError                 base of every media error raised by telephony
    ├── SdpError                   an SDP body that is malformed or cannot be answered
    │                              .status: SIP status to answer the INVITE with
    │                                 400 Bad Request        malformed body
    │                                 488 Not Acceptable Here no common codec / nothing to answer
    └── RtpError                   a malformed RTP, RTCP or RFC 4733 telephone-event packet

Parsers raise only these (never ``struct.error``, ``IndexError`` or ``ValueError``), so the layer
above can drop a bad datagram with a single ``except RtpError``.
"""

from __future__ import annotations

__all__ = ["RtpError", "SdpError", "TelephonyError"]


class TelephonyError(Exception):
    """Base class of every media error raised by the telephony package."""


class SdpError(TelephonyError):
    """A session description that is malformed (400) or cannot be answered (488)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class RtpError(TelephonyError):
    """A malformed RTP, RTCP or telephone-event packet."""
