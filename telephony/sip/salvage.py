"""An error response to a request that could not be parsed (RFC 3261 §21.4.1 400, §21.5.14 505, 513).

A message that fails to parse still deserves an answer when it is a request whose routing headers are
readable: the sender's transaction then stops retransmitting and the operator sees why. The response
copies Via, From, To, Call-ID and CSeq lines verbatim (§8.2.6.2) from the raw head, without trusting
the rest. Responses and ACKs are never answered (§17.1.1.3, §18.1.2), nor is anything whose five
routing headers cannot be found: then the datagram is dropped, which is all a sender of garbage gets.
"""

from __future__ import annotations

import re

from telephony.sip.errors import SipError

# Compact forms (RFC 3261 §7.3.3) of the five headers a response copies.
_COPIED = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To", "call-id": "Call-ID"}
_COPIED |= {"i": "Call-ID", "cseq": "CSeq"}
_REQUIRED = ("Via", "From", "To", "Call-ID", "CSeq")
_SAFE_LINE = re.compile(r"[\x20-\x7e\t\x80-\xff]*")
_MAX_LINES = 200


def error_response(data: bytes, error: SipError) -> bytes | None:
    """The raw bytes of `error.status` answering `data`, or None when it must not or cannot be answered."""
    text = data[: 64 * 1024].decode("latin-1")
    head = re.split(r"\r?\n\r?\n", text, maxsplit=1)[0]
    lines = re.split(r"\r?\n", head)
    start = lines[0]
    method = start.split(" ", 1)[0].upper()
    if not start or start[:4].upper() == "SIP/" or method == "ACK" or not re.fullmatch(r"[A-Za-z]+", method):
        return None
    copied: list[tuple[str, str]] = []
    for line in lines[1:_MAX_LINES]:
        name, colon, value = line.partition(":")
        canonical = _COPIED.get(name.strip().lower())
        if colon and canonical and _SAFE_LINE.fullmatch(value):
            copied.append((canonical, value.strip()))
    present = {name for name, _ in copied}
    if any(name not in present for name in _REQUIRED):
        return None
    if sum(1 for name, _ in copied if name != "Via") != 4:  # one each of From, To, Call-ID, CSeq
        return None
    reason = re.sub(r"[^\x20-\x7e]", "?", error.reason)[:100]
    out = [f"SIP/2.0 {error.status} {reason}"]
    out += [f"{name}: {value}" for name, value in copied]
    out.append("Content-Length: 0")
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")
