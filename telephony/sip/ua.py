"""The SIP user-agent core (RFC 3261 §8, §12-15, RFC 3515 REFER, RFC 3311 UPDATE, RFC 6086 INFO): inbound
calls, without I/O.

Bytes come in with the `Peer` they came from and `now`; `Transmit` effects go out for the shell to
send, and call events (`IncomingCall`, `CallConfirmed`, `CallEnded`, `MediaOffer`, `DtmfRelay`,
`TransferUpdate`) go up to the call layer, which answers with commands (`ring`, `answer`, `reject`,
`hangup`, `accept_offer`, `refer`). Timers are kept here and in the transaction layers; the shell calls
`on_timers(now)` at `next_deadline()`.

One inbound call is a small machine, a table like the transactions' (`_CALL_TABLE`):

    OFFERED   --ring-->     OFFERED     180 Ringing
    OFFERED   --answer-->   ANSWERED    200 OK with SDP, retransmitted (T1 doubling to T2) until the ACK
    OFFERED   --reject-->   ENDED       the final status the call layer chose (404, 480, 488, 503...)
    OFFERED   --cancel-->   ENDED       200 to the CANCEL, 487 to the INVITE
    ANSWERED  --ack-->      CONFIRMED
    ANSWERED  --timeout-->  ENDED       no ACK after 64*T1: BYE (§13.3.1.4)
    ANSWERED, CONFIRMED --bye-->     ENDED   200 to the peer's BYE
    ANSWERED, CONFIRMED --hangup-->  ENDED   our BYE

A command for a call that is not in the table's state (a hang-up racing the peer's BYE) is a no-op:
the call layer is asynchronous and cannot be asked to know the peer's last move.

What is answered without the call layer: OPTIONS (200 with Allow/Accept/Supported), CANCEL of an
unknown transaction and in-dialog requests of unknown dialogs (481), out-of-order CSeq (500), a re-INVITE
while one is pending (491), methods we know but refuse (405 with Allow) and unknown ones (501), an
unsupported Require (420), a body that is not SDP (415), Max-Forwards 0 (483); admission refusals
before the call layer sees the INVITE: source not allowed (403), over the per-source rate or the call
capacity (503 with Retry-After), missing or wrong digest credentials (401 with a challenge). A message
that fails to parse is answered 400 when it is a request whose routing headers can be read
(salvage.py), otherwise dropped; no input raises out of `receive`.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from enum import Enum
from urllib.parse import unquote

from telephony.sip.dialog import Dialog
from telephony.sip.errors import SipError, SipParseError
from telephony.sip.headers import Via
from telephony.sip.message import SipRequest, SipResponse, make_response, parse, sipfrag_status
from telephony.sip.salvage import error_response
from telephony.sip.transaction import (
    MAGIC_COOKIE,
    Deliver,
    Key,
    Output,
    Send,
    Terminated,
    TimedOut,
    TransactionLayer,
    TransportError,
    server_key,
)
from telephony.sip.ua_types import (
    ALLOW,
    KNOWN_NOT_ALLOWED,
    AuthOutcome,
    CallConfirmed,
    CallEnded,
    CallInfo,
    DtmfRelay,
    Effect,
    IncomingCall,
    MediaOffer,
    Peer,
    TransferUpdate,
    Transmit,
    Transport,
    UaConfig,
)
from telephony.sip.uri import NameAddr, SipUri, refer_target

DTMF_SIGNALS = {str(d): str(d) for d in range(10)} | {"*": "*", "#": "#", "10": "*", "11": "#"}
DTMF_SIGNALS |= {c: c for c in "ABCD"} | {c.lower(): c for c in "ABCD"}
SDP = "application/sdp"
Refusal = tuple[int, str | None, list[tuple[str, str]]]  # status, reason phrase, extra headers


class CallState(Enum):
    OFFERED = "offered"
    ANSWERED = "answered"
    CONFIRMED = "confirmed"
    ENDED = "ended"


S = CallState
_CALL_TABLE: dict[tuple[CallState, str], CallState] = {
    (S.OFFERED, "ring"): S.OFFERED,
    (S.OFFERED, "answer"): S.ANSWERED,
    (S.OFFERED, "reject"): S.ENDED,
    (S.OFFERED, "cancel"): S.ENDED,
    (S.ANSWERED, "ack"): S.CONFIRMED,
    (S.ANSWERED, "timeout"): S.ENDED,
    (S.ANSWERED, "bye"): S.ENDED,
    (S.ANSWERED, "hangup"): S.ENDED,
    (S.CONFIRMED, "ack"): S.CONFIRMED,  # the ACK of a re-INVITE's 2xx, or a retransmitted ACK
    (S.CONFIRMED, "bye"): S.ENDED,
    (S.CONFIRMED, "hangup"): S.ENDED,
}


@dataclass
class _Pending:
    """An offer/answer exchange the peer started (re-INVITE or UPDATE) that awaits our answer."""

    request: SipRequest
    peer: Peer


@dataclass
class _Retransmit:
    """A 2xx to an INVITE, resent until its ACK (§13.3.1.4)."""

    response: SipResponse
    cseq: int
    interval: float
    next_at: float | None  # None over TCP: no retransmission, only the give-up timer
    give_up_at: float


@dataclass
class Call:
    info: CallInfo
    invite: SipRequest
    peer: Peer
    invite_key: Key
    local_tag: str
    contact: str
    state: CallState = CallState.OFFERED
    dialog: Dialog | None = None
    pending: _Pending | None = None  # re-INVITE / UPDATE awaiting accept_offer
    unacked: _Retransmit | None = None
    offered_in_2xx: bool = False  # our 2xx carried the offer (offerless INVITE): the ACK has the answer

    @property
    def call_id(self) -> str:
        return self.info.call_id


class UserAgent:
    def __init__(self, config: UaConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self.layers: dict[Transport, TransactionLayer] = {
            "UDP": TransactionLayer(reliable=False, timers=config.timers, rfc6026=True),
            "TCP": TransactionLayer(reliable=True, timers=config.timers, rfc6026=True),
        }
        self.calls: dict[str, Call] = {}
        self._server_peer: dict[Key, Peer] = {}
        self._client: dict[Key, tuple[str, str, Peer]] = {}  # client tx -> (Call-ID, method, destination)
        self._timers: list[tuple[float, int, str, str]] = []  # (at, seq, Call-ID, "2xx" | "ack")
        self._seq = 0

    # --- input ---------------------------------------------------------------------------------
    def receive(self, data: bytes, peer: Peer, now: float) -> list[Effect]:
        """One datagram, or one framed message from a stream."""
        try:
            message = parse(data)
        except SipError as error:
            return self.reject_malformed(data, error, peer)
        return self.receive_message(message, peer, now)

    def reject_malformed(self, data: bytes, error: SipError, peer: Peer) -> list[Effect]:
        reply = error_response(data, error)
        return [Transmit(reply, peer)] if reply is not None else []

    def receive_message(self, message: SipRequest | SipResponse, peer: Peer, now: float) -> list[Effect]:
        try:
            # An ACK never starts a transaction (§17.1.1.3: the ACK for a 2xx has a branch of its own and goes to
            # the dialog), so nothing would ever end an entry for it; the ACK for a 3xx-6xx shares its INVITE's key.
            if isinstance(message, SipRequest) and message.method != "ACK":
                self._server_peer.setdefault(server_key(message), peer)
            return self._run(self.layers[peer.transport].receive(message, now), peer.transport, peer, now)
        except SipError as error:  # a header the parser let through but a handler cannot read
            return self.reject_malformed(bytes(message), SipParseError(error.reason), peer)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (layer.next_deadline() for layer in self.layers.values()) if d is not None]
        while self._timers and not self._timer_live(self._timers[0]):
            heapq.heappop(self._timers)
        if self._timers:
            deadlines.append(self._timers[0][0])
        return min(deadlines) if deadlines else None

    def on_timers(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        for transport, layer in self.layers.items():
            out += self._run(layer.on_timers(now), transport, None, now)
        while self._timers and self._timers[0][0] <= now:
            entry = heapq.heappop(self._timers)
            if self._timer_live(entry):
                out += self._fire(entry[2], entry[3], now)
        return out

    def held(self) -> dict[str, int]:
        """How many entries each of the agent's tables holds: all zero once every call and transaction has ended
        and its timers have run out (what a long-running edge must not accumulate)."""
        return {
            "calls": len(self.calls), "server_peers": len(self._server_peer), "client_transactions": len(self._client),
            "timers": len(self._timers),
            **{f"{transport} transactions": len(layer.transactions) for transport, layer in self.layers.items()},
        }  # fmt: skip

    # --- commands from the call layer ----------------------------------------------------------
    def ring(self, call_id: str, now: float) -> list[Effect]:
        call = self._in_state(call_id, "ring")
        if call is None:
            return []
        return self._respond(call.invite, call.peer, 180, now, to_tag=call.local_tag, contact=call.contact)

    def answer(self, call_id: str, sdp: bytes, now: float) -> list[Effect]:
        """200 OK with our SDP: the answer to the INVITE's offer, or our offer when it had none."""
        call = self._in_state(call_id, "answer")
        if call is None:
            return []
        call.dialog = Dialog.as_uas(call.invite, call.local_tag, call.contact)
        call.offered_in_2xx = not call.invite.body
        response = self._response(call.invite, 200, to_tag=call.local_tag, contact=call.contact, sdp=sdp)
        out = self._send_response(response, call.peer, now)
        self._start_2xx(call, response, now)
        return out

    def reject(
        self,
        call_id: str,
        status: int,
        now: float,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> list[Effect]:
        call = self._in_state(call_id, "reject")
        if call is None:
            return []
        del self.calls[call_id]
        return self._respond(call.invite, call.peer, status, now, reason=reason, to_tag=call.local_tag, headers=headers)

    def hangup(self, call_id: str, now: float) -> list[Effect]:
        """End the call from our side: BYE once answered, 480 while still offered."""
        call = self.calls.get(call_id)
        if call is None or call.state is CallState.ENDED:
            return []
        if call.state is CallState.OFFERED:
            return self.reject(call_id, 480, now)
        self._transition(call, "hangup")
        del self.calls[call_id]
        return self._send_in_dialog(call, "BYE", now)

    def accept_offer(self, call_id: str, sdp: bytes, now: float) -> list[Effect]:
        """200 with our SDP to the pending re-INVITE/UPDATE (the answer, or our offer when it had none)."""
        call = self.calls.get(call_id)
        if call is None or call.pending is None:
            return []
        pending, call.pending = call.pending, None
        response = self._response(pending.request, 200, contact=call.contact, sdp=sdp)
        out = self._send_response(response, pending.peer, now)
        if pending.request.method == "INVITE":
            call.offered_in_2xx = not pending.request.body
            self._start_2xx(call, response, now)
        return out

    def reject_offer(self, call_id: str, status: int, now: float) -> list[Effect]:
        """Refuse the pending re-INVITE/UPDATE (488 Not Acceptable Here): the session stays as it was."""
        call = self.calls.get(call_id)
        if call is None or call.pending is None:
            return []
        pending, call.pending = call.pending, None
        return self._respond(pending.request, pending.peer, status, now)

    def refer(
        self,
        call_id: str,
        target: str,
        now: float,
        *,
        domain: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> list[Effect]:
        """Ask the caller to call `target` (RFC 3515); progress comes back as TransferUpdate events.

        `target` is a URI or a phone number; a number goes to `domain`, else to the caller's own domain
        (the host of its From URI: the trunk that sent the call routes the transfer)."""
        call = self.calls.get(call_id)
        if call is None or call.state is not CallState.CONFIRMED or call.dialog is None:
            return [TransferUpdate(call_id, 481, final=True)]
        remote = call.dialog.remote_uri.uri
        try:
            refer_to = refer_target(target, domain or (remote.host if isinstance(remote, SipUri) else None))
        except SipParseError:
            return [TransferUpdate(call_id, 484, final=True)]  # Address Incomplete: nothing to send
        referred_by = str(NameAddr(call.dialog.local_uri.uri))
        extra = [("Refer-To", f"<{refer_to}>"), ("Referred-By", referred_by), *(headers or ())]
        return self._send_in_dialog(call, "REFER", now, headers=extra)

    # --- transaction outputs -------------------------------------------------------------------
    def _run(self, outputs: list[Output], transport: Transport, peer: Peer | None, now: float) -> list[Effect]:
        out: list[Effect] = []
        for item in outputs:
            key, action = item.key, item.action
            if isinstance(action, Send):
                dest = self._destination(key, peer)
                if dest is not None:
                    out.append(Transmit(bytes(action.message), dest))
            elif isinstance(action, Deliver):
                source = self._destination(key, peer)
                if isinstance(action.message, SipRequest) and source is not None:
                    out += self._on_request(action.message, source, now)
                elif isinstance(action.message, SipResponse) and key is not None:
                    out += self._on_response(key, action.message)
            elif isinstance(action, TimedOut | TransportError) and key is not None:
                out += self._on_client_failure(key, 408 if isinstance(action, TimedOut) else 503)
            elif isinstance(action, Terminated) and key is not None:
                self._server_peer.pop(key, None)
                self._client.pop(key, None)
        return out

    def _destination(self, key: Key | None, peer: Peer | None) -> Peer | None:
        if key is not None and key[0] == "client":
            found = self._client.get(key)
            return found[2] if found else peer
        if key is not None and key in self._server_peer:
            return self._server_peer[key]
        return peer

    # --- requests ------------------------------------------------------------------------------
    def _on_request(self, request: SipRequest, peer: Peer, now: float) -> list[Effect]:
        method = request.method
        if method == "ACK":
            return self._on_ack(request)
        if method == "CANCEL":
            return self._on_cancel(request, peer, now)
        if request.to_tag is not None:
            return self._in_dialog(request, peer, now)
        if method == "INVITE":
            return self._on_invite(request, peer, now)
        if method == "OPTIONS":
            return self._respond(request, peer, 200, now, headers=self._capabilities())
        if method in ("BYE", "INFO", "UPDATE", "NOTIFY"):
            return self._respond(request, peer, 481, now)
        status = 405 if method in KNOWN_NOT_ALLOWED else 501
        return self._respond(request, peer, status, now, headers=[("Allow", ", ".join(ALLOW))])

    def _on_invite(self, request: SipRequest, peer: Peer, now: float) -> list[Effect]:
        refusal = self._admission(request, peer, now)
        if refusal is not None:
            status, reason, headers = refusal
            return self._respond(request, peer, status, now, reason=reason, headers=headers)
        info = CallInfo(
            call_id=request.call_id,
            dialed=_user(request.uri) or _user(request.to.uri),
            caller=_user(request.from_.uri),
            caller_name=request.from_.display,
            source=peer,
            asserted_identity=request.headers.get("P-Asserted-Identity"),
        )
        call = Call(
            info=info,
            invite=request,
            peer=peer,
            invite_key=server_key(request),
            local_tag=f"{self._rng.getrandbits(64):016x}",
            contact=self._contact(peer.transport),
        )
        self.calls[call.call_id] = call
        return [IncomingCall(info, request.body or None)]

    def _admission(self, request: SipRequest, peer: Peer, now: float) -> Refusal | None:
        cfg = self.config
        if cfg.allowlist is not None and not cfg.allowlist.allows(peer.host):
            return 403, "Source Not Allowed", []
        if cfg.rate_limit is not None:
            wait = cfg.rate_limit.admit(peer.host, now)
            if wait is not None:
                return 503, "Too Many Calls From This Source", [("Retry-After", str(max(1, math.ceil(wait))))]
        if request.max_forwards == 0:
            return 483, None, []
        required = [t.strip() for line in request.headers.get_all("Require") for t in line.split(",") if t.strip()]
        if required:
            return 420, None, [("Unsupported", ", ".join(required))]
        if request.body and request.content_type != SDP:
            return 415, None, [("Accept", SDP)]
        contacts = request.contacts
        if not contacts or not isinstance(contacts[0].uri, SipUri) or not contacts[0].uri.host:
            return 400, "Missing Contact", []
        if request.call_id in self.calls:
            return 482, None, []  # the same call arriving by a second path (§8.2.2.2 merged request)
        if cfg.auth is not None:
            outcome, challenge = cfg.auth.verify(request, now)
            if outcome is AuthOutcome.MALFORMED:
                return 400, "Bad Authorization", []
            if outcome is AuthOutcome.CHALLENGE:
                return 401, None, challenge
        if sum(1 for c in self.calls.values() if c.state is not CallState.ENDED) >= cfg.max_calls:
            return 503, "Over Capacity", [("Retry-After", str(cfg.retry_after))]
        return None

    def _on_cancel(self, cancel: SipRequest, peer: Peer, now: float) -> list[Effect]:
        target = self.layers[peer.transport].cancel_target(cancel)
        call = next((c for c in self.calls.values() if c.invite_key == target), None) if target else None
        if call is None:
            return self._respond(cancel, peer, 481, now)
        out = self._respond(cancel, peer, 200, now)
        if self._in_state(call.call_id, "cancel") is not None:
            del self.calls[call.call_id]
            out += self._respond(call.invite, call.peer, 487, now, to_tag=call.local_tag)
            out.append(CallEnded(call.call_id, "cancelled"))
        return out

    def _on_ack(self, ack: SipRequest) -> list[Effect]:
        call = self.calls.get(ack.call_id)
        if call is None or call.unacked is None or ack.cseq[0] != call.unacked.cseq:
            return []  # a stray or retransmitted ACK: nothing to do (§17.2.1 absorbs non-2xx ACKs)
        call.unacked = None
        first = call.state is CallState.ANSWERED
        self._transition(call, "ack")
        answer = ack.body if call.offered_in_2xx and ack.body else None
        call.offered_in_2xx = False
        if first:
            return [CallConfirmed(call.call_id, answer)]
        return [MediaOffer(call.call_id, answer, "ACK")] if answer else []

    def _in_dialog(self, request: SipRequest, peer: Peer, now: float) -> list[Effect]:
        call = self.calls.get(request.call_id)
        dialog = call.dialog if call else None
        if call is None or dialog is None or request.to_tag != call.local_tag or request.from_tag != dialog.remote_tag:
            return self._respond(request, peer, 481, now)
        if not dialog.accepts(request):
            return self._respond(request, peer, 500, now, reason="CSeq Out Of Order")
        method = request.method
        if method == "BYE":
            self._transition(call, "bye")
            del self.calls[call.call_id]
            return [*self._respond(request, peer, 200, now), CallEnded(call.call_id, "remote hangup")]
        if method in ("INVITE", "UPDATE"):
            return self._on_reoffer(call, dialog, request, peer, now)
        if method == "INFO":
            return self._on_info(call, request, peer, now)
        if method == "NOTIFY":
            return self._on_notify(call, request, peer, now)
        if method == "OPTIONS":
            return self._respond(request, peer, 200, now, headers=self._capabilities())
        status = 405 if method in KNOWN_NOT_ALLOWED else 501
        return self._respond(request, peer, status, now, headers=[("Allow", ", ".join(ALLOW))])

    def _on_reoffer(self, call: Call, dialog: Dialog, request: SipRequest, peer: Peer, now: float) -> list[Effect]:
        if call.pending is not None or (request.method == "INVITE" and call.unacked is not None):
            return self._respond(request, peer, 491, now)  # §14.2: one offer/answer at a time
        if request.body and request.content_type != SDP:
            return self._respond(request, peer, 415, now, headers=[("Accept", SDP)])
        if request.method == "UPDATE" and not request.body:
            return self._respond(request, peer, 200, now, headers=[("Contact", call.contact)])  # a refresh
        dialog.update_target(request)
        call.pending = _Pending(request, peer)
        return [MediaOffer(call.call_id, request.body or None, request.method)]

    def _on_info(self, call: Call, request: SipRequest, peer: Peer, now: float) -> list[Effect]:
        kind = request.content_type
        if not request.body:
            return self._respond(request, peer, 200, now)  # an empty INFO is a keep-alive probe
        if kind not in ("application/dtmf-relay", "application/dtmf"):
            return self._respond(request, peer, 415, now, headers=[("Accept", "application/dtmf-relay")])
        parsed = _parse_dtmf(request.body, relay=kind == "application/dtmf-relay")
        if parsed is None:
            return self._respond(request, peer, 400, now, reason="Bad DTMF Body")
        return [*self._respond(request, peer, 200, now), DtmfRelay(call.call_id, parsed[0], parsed[1])]

    def _on_notify(self, call: Call, request: SipRequest, peer: Peer, now: float) -> list[Effect]:
        event = (request.headers.get("Event") or "").split(";", 1)[0].strip().lower()
        if event != "refer":
            return self._respond(request, peer, 489, now)
        try:
            status, _ = sipfrag_status(request.body)
        except SipParseError:
            return self._respond(request, peer, 400, now, reason="Bad sipfrag")
        state = (request.headers.get("Subscription-State") or "").split(";", 1)[0].strip().lower()
        final = status >= 200 or state == "terminated"
        return [*self._respond(request, peer, 200, now), TransferUpdate(call.call_id, status, final)]

    # --- responses to our requests -------------------------------------------------------------
    def _on_response(self, key: Key, response: SipResponse) -> list[Effect]:
        found = self._client.get(key)
        if found is None:
            return []
        call_id, method, _ = found
        if method != "REFER" or response.status < 200:
            return []  # BYE's answer changes nothing: the call already ended on our side
        if response.status < 300:
            return [TransferUpdate(call_id, response.status, final=False)]
        return [TransferUpdate(call_id, response.status, final=True)]

    def _on_client_failure(self, key: Key, status: int) -> list[Effect]:
        found = self._client.get(key)
        if found is None or found[1] != "REFER":
            return []
        return [TransferUpdate(found[0], status, final=True)]

    # --- the 2xx retransmission timer (§13.3.1.4) ----------------------------------------------
    def _start_2xx(self, call: Call, response: SipResponse, now: float) -> None:
        t = self.config.timers
        reliable = call.peer.transport == "TCP"
        call.unacked = _Retransmit(
            response, response.cseq[0], t.t1, None if reliable else now + t.t1, give_up_at=now + 64 * t.t1
        )
        if call.unacked.next_at is not None:
            self._arm(call.unacked.next_at, call.call_id, "2xx")
        self._arm(call.unacked.give_up_at, call.call_id, "ack")

    def _arm(self, at: float, call_id: str, kind: str) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (at, self._seq, call_id, kind))

    def _timer_live(self, entry: tuple[float, int, str, str]) -> bool:
        at, _, call_id, kind = entry
        call = self.calls.get(call_id)
        if call is None or call.unacked is None:
            return False
        return at == (call.unacked.next_at if kind == "2xx" else call.unacked.give_up_at)

    def _fire(self, call_id: str, kind: str, now: float) -> list[Effect]:
        call = self.calls[call_id]
        unacked = call.unacked
        assert unacked is not None
        if kind == "2xx":
            unacked.interval = min(unacked.interval * 2, self.config.timers.t2)
            unacked.next_at = now + unacked.interval
            self._arm(unacked.next_at, call_id, "2xx")
            return [Transmit(bytes(unacked.response), call.peer)]
        call.unacked = None
        if call.state is CallState.ANSWERED:
            self._transition(call, "timeout")
            del self.calls[call_id]
            return [*self._send_in_dialog(call, "BYE", now), CallEnded(call_id, "no ACK")]
        return []  # a re-INVITE's 2xx never acknowledged: the session goes on as it was

    # --- sending -------------------------------------------------------------------------------
    def _response(
        self,
        request: SipRequest,
        status: int,
        *,
        reason: str | None = None,
        to_tag: str | None = None,
        contact: str | None = None,
        sdp: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> SipResponse:
        extra = list(headers or ())
        if contact is not None:
            extra.append(("Contact", contact))
        if request.method in ("INVITE", "UPDATE") and 200 <= status < 300:
            extra += [("Allow", ", ".join(ALLOW)), ("Supported", "replaces")]
        extra.append(("Server", self.config.user_agent))
        if sdp is not None:
            extra.append(("Content-Type", SDP))
        return make_response(request, status, reason, to_tag, extra, sdp or b"")

    def _respond(
        self,
        request: SipRequest,
        peer: Peer,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        to_tag: str | None = None,
        contact: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> list[Effect]:
        if to_tag is None and status > 100 and request.to_tag is None:
            to_tag = f"{self._rng.getrandbits(64):016x}"  # §8.2.6.2: every non-100 response has a To tag
        response = self._response(request, status, reason=reason, to_tag=to_tag, contact=contact, headers=headers)
        return self._send_response(response, peer, now)

    def _send_response(self, response: SipResponse, peer: Peer, now: float) -> list[Effect]:
        layer = self.layers[peer.transport]
        if server_key(response) not in layer.transactions:
            return [Transmit(bytes(response), peer)]  # its transaction is gone (2xx already sent): send as is
        return self._run(layer.respond(response, now), peer.transport, peer, now)

    def _send_in_dialog(
        self, call: Call, method: str, now: float, *, headers: list[tuple[str, str]] | None = None
    ) -> list[Effect]:
        dialog = call.dialog
        assert dialog is not None
        transport = call.peer.transport
        branch = f"{MAGIC_COOKIE}{self._rng.getrandbits(64):016x}"
        via = str(Via(transport, self.config.host, self.config.port, (("branch", branch), ("rport", None))))
        request = dialog.request(method, via, headers=[("User-Agent", self.config.user_agent), *(headers or ())])
        if transport == "TCP":
            dest = call.peer  # reuse the connection the call came in on (RFC 5923 spirit)
        else:
            hop = dialog.next_hop()
            dest = Peer("UDP", hop.host.strip("[]"), hop.port or 5060)
        outputs = self.layers[transport].send_request(request, now)
        key = outputs[0].key if outputs else None
        if key is not None:
            self._client[key] = (call.call_id, method, dest)
        return self._run(outputs, transport, dest, now)

    # --- helpers -------------------------------------------------------------------------------
    def _contact(self, transport: Transport) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        suffix = ";transport=tcp" if transport == "TCP" else ""
        return f"<sip:{host}:{self.config.port}{suffix}>"

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ", ".join(ALLOW)), ("Accept", SDP), ("Supported", "replaces")]

    def _in_state(self, call_id: str, event: str) -> Call | None:
        call = self.calls.get(call_id)
        if call is None or (call.state, event) not in _CALL_TABLE:
            return None
        self._transition(call, event)
        return call

    def _transition(self, call: Call, event: str) -> None:
        call.state = _CALL_TABLE[(call.state, event)]


def _user(uri: SipUri | str) -> str:
    if isinstance(uri, SipUri) and uri.user is not None:
        return unquote(uri.user).split(";", 1)[0]
    return ""


def _parse_dtmf(body: bytes, *, relay: bool) -> tuple[str, int] | None:
    """`Signal=5\\r\\nDuration=160` (application/dtmf-relay) or `5` (application/dtmf)."""
    text = body.decode("utf-8", errors="replace").strip()
    if not relay:
        digit = DTMF_SIGNALS.get(text)
        return (digit, 250) if digit else None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    digit = DTMF_SIGNALS.get(fields.get("signal", ""))
    duration = fields.get("duration", "250")
    if digit is None or not duration.isdigit():
        return None
    return digit, min(int(duration), 60_000)
