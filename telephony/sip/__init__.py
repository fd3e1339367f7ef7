"""Sans-I/O SIP (RFC 3261) message layer: parse and serialize requests, responses, URIs and headers.

No sockets, clocks or asyncio here: bytes in, dataclasses out, and back. Errors: see errors.py.
"""

from telephony.sip.errors import FramingError, MessageTooLarge, SipError, SipParseError, UnsupportedUriScheme
from telephony.sip.framing import Rejected, StreamFramer
from telephony.sip.headers import HEADERS, Headers, HeaderSpec, Via
from telephony.sip.message import SipRequest, SipResponse, make_response, parse, sipfrag_status
from telephony.sip.uri import NameAddr, SipUri

__all__ = [
    "HEADERS",
    "FramingError",
    "HeaderSpec",
    "Headers",
    "MessageTooLarge",
    "NameAddr",
    "Rejected",
    "SipError",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "StreamFramer",
    "UnsupportedUriScheme",
    "Via",
    "make_response",
    "parse",
    "sipfrag_status",
]
