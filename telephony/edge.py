"""The SIP/RTP edge: the user-agent core, the SIP transport, the RTP port pool and one task per call.

For every INVITE the UA admits, the edge asks the `router` what to do with the call (`Admit` with the
handler that will run it, or `Refuse` with a status: 404 unknown number, 480 not ready...), opens an RTP
endpoint, answers the SDP offer (488 when nothing is in common, 503 when the port range is used up) and
runs the handler with a `SipCallLeg`. When the handler returns, the call is hung up if it is still up
and its endpoint closed. A handler that raises is logged and the call hung up; the other calls carry on.

Only this module and the transport do I/O: the UA's effects are carried out in `_apply`, and its
timers run from one task that sleeps until `next_deadline()` (woken early when new effects may have
moved it). The clock is the event loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from telephony.call import SipCallLeg
from telephony.errors import SdpError
from telephony.rtp.endpoint import RtpEndpoint
from telephony.rtp.ports import PortPool, PortsExhausted
from telephony.sdp import PCMA, PCMU, Capabilities, Codec, Negotiation, SessionDescription, build_offer, negotiate
from telephony.sip.framing import Rejected
from telephony.sip.transaction import TimerConfig
from telephony.sip.transport import Inbound, SipTransport
from telephony.sip.ua import UserAgent
from telephony.sip.ua_types import (
    CallConfirmed,
    CallEnded,
    CallInfo,
    DtmfRelay,
    Effect,
    IncomingCall,
    InviteAuth,
    MediaOffer,
    Peer,
    RateLimit,
    SourcePolicy,
    TransferUpdate,
    Transmit,
    UaConfig,
)

log = logging.getLogger(__name__)

Headers = list[tuple[str, str]]
CallHandler = Callable[[SipCallLeg], Awaitable[None]]


@dataclass(frozen=True)
class Admit:
    handler: CallHandler
    ring: bool = True  # send 180 Ringing while the endpoint opens


@dataclass(frozen=True)
class Refuse:
    status: int
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


CallRouter = Callable[[CallInfo], Awaitable[Admit | Refuse]]


@dataclass
class EdgeConfig:
    bind_host: str = "127.0.0.1"
    sip_port: int = 5060
    media_address: str | None = None  # written into SDP c= and SIP Contact; default the bind address
    rtp_ports: tuple[int, int] = (20000, 20999)
    codecs: tuple[Codec, ...] = (PCMU, PCMA)
    allowlist: SourcePolicy | None = None
    rate_limit: RateLimit | None = None
    auth: InviteAuth | None = None
    max_calls: int = 500
    # Where a transfer to a phone number is sent (sip:<number>@<this>); default the caller's own domain.
    transfer_domain: str | None = None
    route_timeout: float = 5.0
    timers: TimerConfig = field(default_factory=TimerConfig)

    @property
    def advertised(self) -> str:
        if self.media_address:
            return self.media_address
        return "127.0.0.1" if self.bind_host in ("0.0.0.0", "") else self.bind_host


class SipEdge:
    def __init__(self, config: EdgeConfig, router: CallRouter) -> None:
        self.config = config
        self.router = router
        self.pool = PortPool(*config.rtp_ports)
        self.transport = SipTransport(config.bind_host, config.sip_port, self._on_inbound)
        self.ua: UserAgent | None = None
        self.legs: dict[str, SipCallLeg] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None
        self._offers: dict[str, Capabilities] = {}  # per call: what our SDP says (port, session version)
        self._media_targets: dict[str, tuple[str, int]] = {}  # per call: the peer's media address in its SDP

    @property
    def port(self) -> int:
        return self.transport.port

    async def start(self) -> None:
        await self.transport.start()
        cfg = self.config
        self.ua = UserAgent(
            UaConfig(
                host=cfg.advertised,
                port=self.transport.port,
                timers=cfg.timers,
                allowlist=cfg.allowlist,
                rate_limit=cfg.rate_limit,
                auth=cfg.auth,
                max_calls=cfg.max_calls,
            )
        )
        self._timer_task = asyncio.create_task(self._run_timers(), name="sip-timers")
        log.info("sip edge on %s:%s (udp+tcp), rtp %s-%s", cfg.bind_host, self.port, *cfg.rtp_ports)

    async def wait_idle(self) -> None:
        """Until every call running now (and any it leads to) has finished on its own."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        for leg in list(self.legs.values()):
            await leg.hangup()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
        await self.transport.close()

    async def __aenter__(self) -> SipEdge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the UA's effects ----------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _on_inbound(self, item: Inbound, peer: Peer) -> None:
        ua = self.ua
        if ua is None:
            return
        if isinstance(item, bytes):
            effects = ua.receive(item, peer, self._now())
        elif isinstance(item, Rejected):
            effects = ua.reject_malformed(item.data, item.error, peer)
        else:
            effects = ua.receive_message(item, peer, self._now())
        self._apply(effects)

    def _apply(self, effects: list[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Transmit):
                self.transport.send(effect.data, effect.peer)
            elif isinstance(effect, IncomingCall):
                self._spawn(self._run_call(effect.info, effect.offer), effect.info.call_id)
            else:
                self._signal(effect)
        self._wake.set()

    def _signal(self, event: Effect) -> None:
        leg = self.legs.get(getattr(event, "call_id", ""))
        if isinstance(event, CallEnded):
            self._offers.pop(event.call_id, None)
            self._media_targets.pop(event.call_id, None)
            if leg is not None:
                leg.on_ended(event.reason)
        elif leg is None:
            return
        elif isinstance(event, CallConfirmed):
            if event.answer is not None:
                self._take_answer(leg, event.answer)
            leg.on_confirmed()
        elif isinstance(event, MediaOffer):
            self._reoffer(leg, event)
        elif isinstance(event, DtmfRelay):
            leg.on_info_digit(event.digit, event.duration_ms)
        elif isinstance(event, TransferUpdate):
            leg.on_transfer(event.status, event.final)

    async def _run_timers(self) -> None:
        assert self.ua is not None
        while True:
            deadline = self.ua.next_deadline()
            self._wake.clear()
            timeout = None if deadline is None else max(0.0, deadline - self._now())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._apply(self.ua.on_timers(self._now()))

    def _spawn(self, coro: Awaitable[None], call_id: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(f"call-{call_id[:24]}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- Signalling, for the legs --------------------------------------------------------------
    def hangup_call(self, call_id: str) -> None:
        if self.ua is not None:
            self._apply(self.ua.hangup(call_id, self._now()))

    def refer_call(self, call_id: str, target: str) -> None:
        if self.ua is not None:
            self._apply(self.ua.refer(call_id, target, self._now(), domain=self.config.transfer_domain))

    # --- one call ------------------------------------------------------------------------------
    def _reject(self, call_id: str, status: int, reason: str | None = None, headers: Headers | None = None) -> None:
        assert self.ua is not None
        self._apply(self.ua.reject(call_id, status, self._now(), reason, headers))

    def _alive(self, call_id: str) -> bool:
        return self.ua is not None and call_id in self.ua.calls

    async def _run_call(self, info: CallInfo, offer: bytes | None) -> None:
        assert self.ua is not None
        call_id = info.call_id
        try:
            decision = await asyncio.wait_for(self.router(info), self.config.route_timeout)
        except Exception:
            log.exception("sip: routing %s failed", info.dialed)
            self._reject(call_id, 503, "Routing Failed", [("Retry-After", "5")])
            return
        if isinstance(decision, Refuse):
            self._reject(call_id, decision.status, decision.reason, list(decision.headers))
            return
        if not self._alive(call_id):
            return  # cancelled while routing
        if decision.ring:
            self._apply(self.ua.ring(call_id, self._now()))
        try:
            endpoint = await RtpEndpoint.open(self.pool, self.config.bind_host)
        except (PortsExhausted, OSError):
            log.warning("sip: no RTP port for %s", call_id)
            self._reject(call_id, 503, "Media Ports Exhausted", [("Retry-After", "5")])
            return
        caps = Capabilities(self.config.advertised, endpoint.port, codecs=self.config.codecs)
        leg: SipCallLeg | None = None
        try:
            try:
                answer, inband = self._first_answer(call_id, endpoint, caps, offer)
            except SdpError as error:
                self._reject(call_id, error.status, str(error)[:80])
                return
            if not self._alive(call_id):
                return
            leg = SipCallLeg(info, endpoint, self, inband_dtmf=inband)
            self.legs[call_id] = leg
            self._offers[call_id] = caps
            self._apply(self.ua.answer(call_id, answer, self._now()))
            try:
                await decision.handler(leg)
            except Exception:
                log.exception("sip: the handler of call %s raised; hanging up", call_id)
            await leg.hangup()
        finally:
            self.legs.pop(call_id, None)
            self._offers.pop(call_id, None)
            self._media_targets.pop(call_id, None)
            if leg is not None:
                await leg.close()
            else:
                await endpoint.close()

    def _first_answer(
        self, call_id: str, endpoint: RtpEndpoint, caps: Capabilities, offer: bytes | None
    ) -> tuple[bytes, bool]:
        """Our SDP for the 200 OK, and whether digits must be detected in-band (no telephone-event)."""
        if offer is None:
            return bytes(build_offer(caps)), False  # the ACK will carry the answer
        negotiation = negotiate(SessionDescription.parse(offer), caps)
        _configure(endpoint, negotiation)
        self._media_targets[call_id] = (negotiation.audio.remote_address, negotiation.audio.remote_port)
        return bytes(negotiation.answer), negotiation.audio.telephone_event_pt is None

    def _take_answer(self, leg: SipCallLeg, answer: bytes) -> None:
        """The SDP answer in an ACK (after our offer in the 2xx). Negotiating it as if it were an offer
        reads the same things out of it: the peer's address, codec and telephone-event type."""
        caps = self._offers.get(leg.call_id)
        try:
            if caps is not None:
                _configure(leg.endpoint, negotiate(SessionDescription.parse(answer), caps))
        except SdpError as error:
            log.warning("sip: unusable SDP answer in ACK for %s: %s", leg.call_id, error)

    def _reoffer(self, leg: SipCallLeg, event: MediaOffer) -> None:
        assert self.ua is not None
        caps = self._offers.get(leg.call_id)
        if caps is None:
            return
        caps = replace(caps, session_version=caps.session_version + 1)
        self._offers[leg.call_id] = caps
        if event.method == "ACK":
            self._take_answer(leg, event.offer or b"")
            return
        if event.offer is None:
            self._apply(self.ua.accept_offer(leg.call_id, bytes(build_offer(caps)), self._now()))
            return
        try:
            negotiation = negotiate(SessionDescription.parse(event.offer), caps)
        except SdpError:
            self._apply(self.ua.reject_offer(leg.call_id, 488, self._now()))
            return
        before = self._media_targets.get(leg.call_id)
        _configure(leg.endpoint, negotiation)
        target = (negotiation.audio.remote_address, negotiation.audio.remote_port)
        if before is not None and target != before and negotiation.audio.direction.sends:
            leg.endpoint.retarget(target)  # the peer moved its media, not just its direction
        self._media_targets[leg.call_id] = target
        leg.on_media_update(sending=negotiation.audio.direction.sends)
        self._apply(self.ua.accept_offer(leg.call_id, bytes(negotiation.answer), self._now()))


def _configure(endpoint: RtpEndpoint, negotiation: Negotiation) -> None:
    audio = negotiation.audio
    endpoint.configure(
        codec=audio.codec.name,
        audio_pt=audio.codec.payload_type,
        dtmf_pt=audio.telephone_event_pt,
        sending=audio.direction.sends,
    )
    if audio.remote_address not in ("0.0.0.0", "::") and audio.remote_port:
        endpoint.set_remote((audio.remote_address, audio.remote_port))
