"""What the user-agent core (ua.py) takes and gives: its configuration, the peers it talks to, the
effects the asyncio shell carries out and the call events the layer above reacts to."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal, Protocol

from telephony.sip.transaction import TimerConfig

Transport = Literal["UDP", "TCP"]

# Methods we answer (Allow, RFC 3261 §20.5). REFER is sent, never accepted: we are not a transfer target.
ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "INFO", "UPDATE", "NOTIFY")
# Methods we know but do not accept (405 with Allow); any other method is 501 Not Implemented.
KNOWN_NOT_ALLOWED = frozenset({"REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "REFER", "PRACK"})


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes: over UDP an address, over TCP the connection to it."""

    transport: Transport
    host: str
    port: int


class SourcePolicy(Protocol):
    def allows(self, host: str) -> bool: ...


class RateLimit(Protocol):
    def admit(self, host: str, now: float) -> float | None:
        """None when admitted, else seconds until the source may try again."""
        ...


class AuthOutcome(Enum):
    OK = "ok"
    CHALLENGE = "challenge"  # 401 with a challenge (no credentials, stale nonce, wrong credentials)
    MALFORMED = "malformed"  # 400


class InviteAuth(Protocol):
    """Digest authentication of inbound INVITEs (digest.py adapts to this)."""

    def verify(self, request: object, now: float) -> tuple[AuthOutcome, list[tuple[str, str]]]:
        """The outcome and, for CHALLENGE, the WWW-Authenticate header lines to send with the 401."""
        ...


@dataclass
class UaConfig:
    host: str  # the address we write into Via and Contact (the media address is the call layer's)
    port: int
    user_agent: str = "flowyte"
    timers: TimerConfig = field(default_factory=TimerConfig)
    allowlist: SourcePolicy | None = None
    rate_limit: RateLimit | None = None
    auth: InviteAuth | None = None
    max_calls: int = 500
    retry_after: int = 5  # seconds, in a 503 when over capacity


# --- effects for the shell ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transmit:
    data: bytes
    peer: Peer


# --- events for the call layer -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallInfo:
    call_id: str
    dialed: str  # the user part of the Request-URI (the number called), unescaped
    caller: str  # the user part of From (the caller's number), unescaped; "" when anonymous
    caller_name: str | None  # the display name of From
    source: Peer
    asserted_identity: str | None = None  # P-Asserted-Identity (RFC 3325) when a trunk sends one


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A new INVITE passed admission: answer with `ring`/`answer`/`reject` on the user agent."""

    info: CallInfo
    offer: bytes | None  # the SDP offer; None for an offerless INVITE (our 200 then carries the offer)


@dataclass(frozen=True, slots=True)
class CallConfirmed:
    """The ACK for our 2xx arrived: media may flow both ways."""

    call_id: str
    answer: bytes | None = None  # the SDP answer in the ACK, after an offerless INVITE


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    reason: str  # "remote hangup", "cancelled", "no ACK", ...


@dataclass(frozen=True, slots=True)
class MediaOffer:
    """A re-INVITE or UPDATE (hold, resume, a new address): answer with `accept_offer`/`reject_offer`.
    `offer` None is a re-INVITE without SDP: our 200 then carries an offer and the ACK the answer."""

    call_id: str
    offer: bytes | None
    method: str


@dataclass(frozen=True, slots=True)
class DtmfRelay:
    """A digit by SIP INFO (application/dtmf-relay or application/dtmf)."""

    call_id: str
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class TransferUpdate:
    """Progress of a REFER we sent: 202 (accepted, final False), then each NOTIFY's sipfrag status; a
    final one is >= 200 from a NOTIFY, or a failure (REFER refused, timed out, subscription ended)."""

    call_id: str
    status: int
    final: bool


CallEvent = IncomingCall | CallConfirmed | CallEnded | MediaOffer | DtmfRelay | TransferUpdate
Effect = Transmit | CallEvent
