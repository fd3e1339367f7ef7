"""A scripted SIP phone for driving the sans-I/O user agent with real message bytes (no sockets)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from telephony.sip.message import SipRequest, SipResponse, parse
from telephony.sip.ua import UserAgent
from telephony.sip.ua_types import CallEvent, Effect, Peer, Transmit, UaConfig

PHONE = Peer("UDP", "127.0.0.1", 5070)
OFFER = (
    b"v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)


def split(effects: list[Effect]) -> tuple[list[SipRequest | SipResponse], list[CallEvent]]:
    sent = [parse(e.data) for e in effects if isinstance(e, Transmit)]
    events = [e for e in effects if not isinstance(e, Transmit)]
    return sent, events


def statuses(effects: list[Effect]) -> list[int]:
    return [m.status for m in split(effects)[0] if isinstance(m, SipResponse)]


@dataclass
class Phone:
    """The caller's side of one dialog, writing requests as a real phone would."""

    call_id: str = "call-1@127.0.0.1"
    from_tag: str = "caller-tag"
    cseq: int = 1
    to_tag: str | None = None
    branches: int = 0
    peer: Peer = PHONE
    record_route: list[str] = field(default_factory=list)

    def branch(self) -> str:
        self.branches += 1
        return f"z9hG4bK-{self.call_id.split('@')[0]}-{self.branches}"

    def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: str = "",
        branch: str | None = None,
        cseq: int | None = None,
        to_tag: str | None = None,
    ) -> bytes:
        tag = to_tag if to_tag is not None else self.to_tag
        to = "<sip:+15550100@127.0.0.1>" + (f";tag={tag}" if tag else "")
        number = cseq if cseq is not None else self.cseq
        lines = [
            f"{method} sip:+15550100@127.0.0.1:5060 SIP/2.0",
            f"Via: SIP/2.0/{self.peer.transport} {self.peer.host}:{self.peer.port}"
            f";branch={branch or self.branch()};rport",
            "Max-Forwards: 70",
            f'From: "Ada Caller" <sip:+14155550123@127.0.0.1>;tag={self.from_tag}',
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {number} {method}",
            f"Contact: <sip:caller@{self.peer.host}:{self.peer.port}>",
            *[f"Record-Route: {rr}" for rr in self.record_route],
        ]
        if extra:
            lines.append(extra)
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def invite(self, **kw: str) -> bytes:
        return self.request("INVITE", body=OFFER, content_type="application/sdp", **kw)  # type: ignore[arg-type]

    def next(self, method: str, **kw: object) -> bytes:
        self.cseq += 1
        return self.request(method, **kw)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0


def run_timers(ua: UserAgent, clock: Clock, until: float) -> list[Effect]:
    """Advance the clock to `until`, firing every timer on its deadline."""
    out: list[Effect] = []
    while True:
        deadline = ua.next_deadline()
        if deadline is None or deadline > until:
            break
        clock.now = max(clock.now, deadline)
        out += ua.on_timers(clock.now)
    clock.now = until
    return out


def new_ua(**config: object) -> UserAgent:
    return UserAgent(UaConfig(host="127.0.0.1", port=5060, **config), rng=random.Random(7))  # type: ignore[arg-type]
