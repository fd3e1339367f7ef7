"""The one error tree of the SIP message layer.

    SipError                      anything this package refuses; `status` is the response to answer with
    ├── SipParseError             400 (or 505 for a bad SIP version): the bytes are not a valid SIP message;
    │                             `reason` names what was wrong ("bad request line", "missing Call-ID",
    │                             "Content-Length mismatch", ...) and goes into the 400's reason phrase
    │   └── FramingError          a TCP stream lost its framing (missing/bad Content-Length, garbage
    │                             before a start line); the stream cannot be resynchronized, so the
    │                             transport answers if it can and closes the connection
    ├── MessageTooLarge           513 Message Too Large (whole message / too many headers) or
    │                             413 Request Entity Too Large (body); also fatal on a stream
    └── UnsupportedUriScheme      416: a well-formed message whose URI scheme is not sip, sips or tel

Every parser in `telephony.sip` raises only these; anything else escaping a parser is a bug (the
Hypothesis mutation tests in tests/test_sip_message.py hold that line).
"""

from __future__ import annotations


class SipError(Exception):
    """Base of every error raised by `telephony.sip`; `status` and `reason` form the response to send."""

    status: int = 500
    default_reason: str = "Server Internal Error"

    def __init__(self, reason: str | None = None, *, status: int | None = None) -> None:
        self.reason = reason or self.default_reason
        if status is not None:
            self.status = status
        super().__init__(f"{self.status} {self.reason}")


class SipParseError(SipError):
    """The bytes are not a valid SIP message (RFC 3261 §25); answer 400 with `reason` as the phrase."""

    status = 400
    default_reason = "Bad Request"


class FramingError(SipParseError):
    """A stream's message boundaries are lost (RFC 3261 §18.3): close the connection after answering."""


class MessageTooLarge(SipError):
    """Past a size limit: 513 for the message or its header count, 413 for an oversized body."""

    status = 513
    default_reason = "Message Too Large"


class UnsupportedUriScheme(SipError):
    """A URI whose scheme this stack does not speak (RFC 3261 §8.2.2.1: answer 416)."""

    status = 416
    default_reason = "Unsupported URI Scheme"
