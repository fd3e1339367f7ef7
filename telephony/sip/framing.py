"""Cutting SIP messages out of a TCP/TLS byte stream (RFC 3261 §18.3, §7.5; RFC 5626 §4.4.1).

On a stream, Content-Length is mandatory: the head runs to the first empty line and the body is
exactly Content-Length bytes after it. CR/LF bytes between messages are skipped; each CRLFCRLF among
them is an RFC 5626 keep-alive ping, counted so the transport can answer each with one CRLF pong
(`take_pings()`).

Two kinds of failure:

* the framing holds but the message is invalid (missing Call-ID, CSeq mismatch, ...): `feed` yields a
  `Rejected(data, error)` in its place and goes on; the transport answers `error.status` if it can;
* the framing is lost (no or bad Content-Length, a head that is not header lines, a message past the
  size limit): nothing after it can be trusted, so the framer is broken for good. `feed` returns the
  messages completed before the failure, if any, and raises the error (a FramingError or
  MessageTooLarge) then or, if it had messages to return, on the next call; `error` is set at once.
  The transport answers if it can and closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from telephony.sip.errors import FramingError, MessageTooLarge, SipError, SipParseError
from telephony.sip.headers import Headers
from telephony.sip.message import (
    MAX_HEADERS,
    MAX_MESSAGE,
    SipRequest,
    SipResponse,
    content_length,
    find_head_end,
    parse,
    split_head,
)

_CRLF = b"\r\n"
_PING = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A correctly framed message that failed to parse; the stream itself is still in step."""

    data: bytes
    error: SipError


Framed = SipRequest | SipResponse | Rejected


class StreamFramer:
    def __init__(self, max_size: int = MAX_MESSAGE, max_headers: int = MAX_HEADERS) -> None:
        self._buf = bytearray()
        self._max_size = max_size
        self._max_headers = max_headers
        self._pings = 0
        self.error: SipError | None = None

    def take_pings(self) -> int:
        """Keep-alive pings seen since the last call (answer each with one CRLF)."""
        pings, self._pings = self._pings, 0
        return pings

    def feed(self, data: bytes) -> list[Framed]:
        if self.error is not None:
            raise self.error
        self._buf += data
        out: list[Framed] = []
        try:
            while self._skip_keepalives():
                message = self._next()
                if message is None:
                    break
                out.append(message)
        except SipError as exc:
            self.error = exc
            self._buf.clear()
            if not out:
                raise
        return out

    def _skip_keepalives(self) -> bool:
        """Drop CR/LF before a start line; False when nothing else is buffered yet."""
        buf = self._buf
        run = 0
        while run < len(buf) and buf[run] in _CRLF:
            run += 1
        if run < len(buf):
            self._pings += bytes(buf[:run]).count(_PING)
            del buf[:run]
            return True
        last = buf.rfind(_PING)
        if last >= 0:
            self._pings += bytes(buf[: last + 4]).count(_PING)
            del buf[: last + 4]
        if len(buf) > 3:
            del buf[:-3]
        return False

    def _next(self) -> Framed | None:
        buf = self._buf
        bounds = find_head_end(buf)
        if bounds is None:
            if len(buf) > self._max_size:
                raise MessageTooLarge()
            return None
        if bounds[1] > self._max_size:
            raise MessageTooLarge()
        try:
            _, fields = split_head(bytes(buf[: bounds[0]]), self._max_headers)
            length = content_length(Headers(fields))
        except SipParseError as exc:
            raise FramingError(exc.reason) from None
        if length is None:
            raise FramingError("missing Content-Length")
        total = bounds[1] + length
        if total > self._max_size:
            raise MessageTooLarge()
        if len(buf) < total:
            return None
        chunk = bytes(buf[:total])
        del buf[:total]
        try:
            return parse(chunk, max_size=self._max_size, max_headers=self._max_headers)
        except SipError as exc:
            return Rejected(chunk, exc)
