"""SIP transactions (RFC 3261 §17) as sans-I/O state machines, and the layer that matches messages to them.

Four machines, one per figure of RFC 3261 §17, each driven by `handle(input, now) -> list[Action]`:

    INVITE client      Figure 5, §17.1.1   Calling -> Proceeding -> Completed -> Terminated
    non-INVITE client  Figure 6, §17.1.2   Trying  -> Proceeding -> Completed -> Terminated
    INVITE server      Figure 7, §17.2.1   Proceeding -> Completed -> Confirmed -> Terminated
    non-INVITE server  Figure 8, §17.2.2   Trying  -> Proceeding -> Completed -> Terminated

Inputs are `Received(message)` (from the transport), `TuSend(response)` (the transaction user hands a
response to a server transaction), `TimerFired(name)` and `TransportFailed()` (§17.1.4/§17.2.4). Each
input is classified into an `Event` (a request retransmission, an ACK, a 1xx/2xx/3xx-6xx response
received or sent by the TU, a named timer, a transport error) and the pair `(state, event)` is looked
up in the machine's table, which is data: `(state, event) -> (steps, next_state)`. The steps (send,
resend, ACK, deliver to the TU, start/back off/cancel a timer, report a timeout or transport error)
become `Send`, `Deliver`, `StartTimer`, `CancelTimer`, `TimedOut`, `TransportError` and `Terminated`
actions; the machine never touches a socket or a clock, `now` is passed in.

Timers (§17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2, Table 4 of §A), from `TimerConfig` (T1=0.5 s, T2=4 s,
T4=5 s by default):

    A  INVITE request retransmit   T1, doubling without cap      unreliable transport only
    B  INVITE transaction timeout  64*T1
    D  wait for response retrans.  32 s unreliable, 0 reliable
    E  non-INVITE retransmit       T1, doubling to T2 (T2 in Proceeding)   unreliable only
    F  non-INVITE timeout          64*T1
    G  INVITE final response retr. T1, doubling to T2             unreliable only
    H  wait for ACK                64*T1
    I  wait for ACK retransmits    T4 unreliable, 0 reliable
    J  wait for request retrans.   64*T1 unreliable, 0 reliable
    K  wait for response retrans.  T4 unreliable, 0 reliable
    L  server Accepted (RFC 6026)  64*T1
    M  client Accepted (RFC 6026)  64*T1

A zero-length timer is not started: its row fires at once, so over a reliable transport Completed
(or Confirmed) is left in the same `handle` call. A timer that fires when it is no longer running (a
stale wake-up from the shell) is ignored.

Unknown pairs. What the RFC tells a transaction to absorb is in the tables as explicit rows with no
steps (a 1xx or 2xx in the INVITE client's Completed state, a response in the non-INVITE client's
Completed state, an ACK or request retransmission in Confirmed, a final response the TU passes in the
non-INVITE server's Completed state - §17.2.2 says it MUST be discarded). Every other *received*
message or timer pair is ignored too: the RFC drops stray messages (§18.1.2, §18.2.2) and a peer must
not be able to crash us. A pair driven by the TU that is not in the table (a response sent to a
client transaction, a response after the final one, anything after Terminated) is a programming
error of the TU and raises `TransactionError`. Once Terminated, a machine emits no further actions.

2xx to INVITE. Per RFC 3261 (§17.2.1) the INVITE server transaction is destroyed as soon as the TU
sends a 2xx: the TU (the dialog layer) retransmits the 2xx until the ACK arrives (§13.3.1.4), and that
ACK, having its own branch, reaches the TU as a stray request, not this transaction. Likewise the
INVITE client transaction terminates on the first 2xx, and 2xx retransmissions reach the UAC core as
stray responses that it ACKs itself (§13.2.2.4). With `rfc6026=True` both INVITE machines instead
enter RFC 6026's Accepted state on a 2xx (timers L and M, 64*T1 on any transport): the client passes
2xx retransmissions up, the server absorbs INVITE retransmissions, sends the TU's 2xx retransmissions
and passes up ACKs that match it.

The `TransactionLayer` keeps the transactions of one transport (reliable or not): it matches incoming
messages by the keys of §17.1.3 (responses: top Via branch + CSeq method) and §17.2.3 (requests: top
Via branch with the z9hG4bK magic cookie + sent-by + method, ACK matching its INVITE, CANCEL its own
transaction), creates server transactions for new requests, absorbs retransmissions, keeps the timers
(`next_deadline()` / `on_timers(now)` for the asyncio shell) and forgets terminated transactions.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import Enum, auto

from telephony.sip.errors import SipError
from telephony.sip.headers import Headers
from telephony.sip.message import SipRequest, SipResponse, make_response

MAGIC_COOKIE = "z9hG4bK"
Message = SipRequest | SipResponse


class TransactionError(SipError):
    """The TU drove a transaction through a pair its table does not have (a programming error)."""

    status = 500
    default_reason = "Transaction state error"


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 §17.1.1.1 timer values, in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    message: Message


@dataclass(frozen=True, slots=True)
class TuSend:
    message: SipResponse


@dataclass(frozen=True, slots=True)
class TimerFired:
    name: str


@dataclass(frozen=True, slots=True)
class TransportFailed:
    pass


Input = Received | TuSend | TimerFired | TransportFailed

# --- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    message: Message


@dataclass(frozen=True, slots=True)
class StartTimer:
    name: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class Deliver:
    message: Message


@dataclass(frozen=True, slots=True)
class TimedOut:
    pass


@dataclass(frozen=True, slots=True)
class TransportError:
    pass


@dataclass(frozen=True, slots=True)
class Terminated:
    pass


Action = Send | StartTimer | CancelTimer | Deliver | TimedOut | TransportError | Terminated

# --- the tables ---------------------------------------------------------------------------------


class State(Enum):
    CALLING = auto()
    TRYING = auto()
    PROCEEDING = auto()
    COMPLETED = auto()
    CONFIRMED = auto()
    ACCEPTED = auto()  # RFC 6026 only
    TERMINATED = auto()


class Event(Enum):
    REQUEST = auto()  # a (retransmitted) request received by a server transaction
    ACK = auto()
    RESPONSE_1XX = auto()  # received by a client transaction
    RESPONSE_2XX = auto()
    RESPONSE_FINAL = auto()  # 300-699
    TU_1XX = auto()  # passed down by the TU to a server transaction
    TU_2XX = auto()
    TU_FINAL = auto()
    TIMER_A = auto()
    TIMER_B = auto()
    TIMER_D = auto()
    TIMER_E = auto()
    TIMER_F = auto()
    TIMER_G = auto()
    TIMER_H = auto()
    TIMER_I = auto()
    TIMER_J = auto()
    TIMER_K = auto()
    TIMER_L = auto()
    TIMER_M = auto()
    TRANSPORT_ERROR = auto()


TU_EVENTS = frozenset({Event.TU_1XX, Event.TU_2XX, Event.TU_FINAL})


class Do(Enum):
    SEND = auto()  # send the TU's response and remember it as the one to retransmit
    RESEND = auto()  # retransmit the request (client) or the last response (server)
    ACK = auto()  # build the ACK for a 3xx-6xx (§17.1.1.3), send it and remember it
    RESEND_ACK = auto()
    DELIVER = auto()  # pass the received message up to the TU
    TIMEOUT = auto()
    TRANSPORT_ERROR = auto()


@dataclass(frozen=True, slots=True)
class Start:
    timer: str


@dataclass(frozen=True, slots=True)
class Backoff:
    """Restart a retransmit timer with its interval doubled (capped at T2 for E and G)."""

    timer: str


@dataclass(frozen=True, slots=True)
class AtT2:
    """Restart a retransmit timer with the interval T2 (timer E in Proceeding, §17.1.2.2)."""

    timer: str


@dataclass(frozen=True, slots=True)
class Cancel:
    timer: str


Step = Do | Start | Backoff | AtT2 | Cancel
Row = tuple[tuple[Step, ...], State]
Table = dict[tuple[State, Event], Row]

S, E_ = State, Event
_FAIL: Row = ((Do.TRANSPORT_ERROR,), S.TERMINATED)

# Figure 5. Entry (TU passes the INVITE): send it, start A (unreliable) and B, state Calling.
INVITE_CLIENT: Table = {
    (S.CALLING, E_.TIMER_A): ((Do.RESEND, Backoff("A")), S.CALLING),
    (S.CALLING, E_.TIMER_B): ((Do.TIMEOUT,), S.TERMINATED),
    (S.CALLING, E_.RESPONSE_1XX): ((Cancel("A"), Cancel("B"), Do.DELIVER), S.PROCEEDING),
    (S.CALLING, E_.RESPONSE_2XX): ((Do.DELIVER,), S.TERMINATED),
    (S.CALLING, E_.RESPONSE_FINAL): ((Cancel("A"), Cancel("B"), Do.ACK, Do.DELIVER, Start("D")), S.COMPLETED),
    (S.CALLING, E_.TRANSPORT_ERROR): _FAIL,
    (S.PROCEEDING, E_.RESPONSE_1XX): ((Do.DELIVER,), S.PROCEEDING),
    (S.PROCEEDING, E_.RESPONSE_2XX): ((Do.DELIVER,), S.TERMINATED),
    (S.PROCEEDING, E_.RESPONSE_FINAL): ((Do.ACK, Do.DELIVER, Start("D")), S.COMPLETED),
    (S.PROCEEDING, E_.TRANSPORT_ERROR): _FAIL,
    (S.COMPLETED, E_.RESPONSE_FINAL): ((Do.RESEND_ACK,), S.COMPLETED),
    (S.COMPLETED, E_.RESPONSE_1XX): ((), S.COMPLETED),
    (S.COMPLETED, E_.RESPONSE_2XX): ((), S.COMPLETED),
    (S.COMPLETED, E_.TIMER_D): ((), S.TERMINATED),
    (S.COMPLETED, E_.TRANSPORT_ERROR): _FAIL,
}

# Figure 6. Entry: send the request, start E (unreliable) and F, state Trying.
NON_INVITE_CLIENT: Table = {
    (S.TRYING, E_.TIMER_E): ((Do.RESEND, Backoff("E")), S.TRYING),
    (S.TRYING, E_.TIMER_F): ((Do.TIMEOUT,), S.TERMINATED),
    (S.TRYING, E_.RESPONSE_1XX): ((Do.DELIVER,), S.PROCEEDING),
    (S.TRYING, E_.RESPONSE_2XX): ((Cancel("E"), Cancel("F"), Do.DELIVER, Start("K")), S.COMPLETED),
    (S.TRYING, E_.RESPONSE_FINAL): ((Cancel("E"), Cancel("F"), Do.DELIVER, Start("K")), S.COMPLETED),
    (S.TRYING, E_.TRANSPORT_ERROR): _FAIL,
    (S.PROCEEDING, E_.TIMER_E): ((Do.RESEND, AtT2("E")), S.PROCEEDING),
    (S.PROCEEDING, E_.TIMER_F): ((Do.TIMEOUT,), S.TERMINATED),
    (S.PROCEEDING, E_.RESPONSE_1XX): ((Do.DELIVER,), S.PROCEEDING),
    (S.PROCEEDING, E_.RESPONSE_2XX): ((Cancel("E"), Cancel("F"), Do.DELIVER, Start("K")), S.COMPLETED),
    (S.PROCEEDING, E_.RESPONSE_FINAL): ((Cancel("E"), Cancel("F"), Do.DELIVER, Start("K")), S.COMPLETED),
    (S.PROCEEDING, E_.TRANSPORT_ERROR): _FAIL,
    (S.COMPLETED, E_.RESPONSE_1XX): ((), S.COMPLETED),
    (S.COMPLETED, E_.RESPONSE_2XX): ((), S.COMPLETED),
    (S.COMPLETED, E_.RESPONSE_FINAL): ((), S.COMPLETED),
    (S.COMPLETED, E_.TIMER_K): ((), S.TERMINATED),
}

# Figure 7. Entry (an INVITE arrives): send 100 Trying, pass the INVITE up, state Proceeding.
INVITE_SERVER: Table = {
    (S.PROCEEDING, E_.REQUEST): ((Do.RESEND,), S.PROCEEDING),
    (S.PROCEEDING, E_.TU_1XX): ((Do.SEND,), S.PROCEEDING),
    (S.PROCEEDING, E_.TU_2XX): ((Do.SEND,), S.TERMINATED),
    (S.PROCEEDING, E_.TU_FINAL): ((Do.SEND, Start("G"), Start("H")), S.COMPLETED),
    (S.PROCEEDING, E_.TRANSPORT_ERROR): _FAIL,
    (S.COMPLETED, E_.REQUEST): ((Do.RESEND,), S.COMPLETED),
    (S.COMPLETED, E_.TIMER_G): ((Do.RESEND, Backoff("G")), S.COMPLETED),
    (S.COMPLETED, E_.TIMER_H): ((Do.TIMEOUT,), S.TERMINATED),
    (S.COMPLETED, E_.ACK): ((Cancel("G"), Cancel("H"), Start("I")), S.CONFIRMED),
    (S.COMPLETED, E_.TRANSPORT_ERROR): _FAIL,
    (S.CONFIRMED, E_.REQUEST): ((), S.CONFIRMED),
    (S.CONFIRMED, E_.ACK): ((), S.CONFIRMED),
    (S.CONFIRMED, E_.TIMER_I): ((), S.TERMINATED),
}

# RFC 6026 §7 (opt-in): a 2xx moves an INVITE transaction to Accepted for 64*T1 instead of ending it,
# so 2xx retransmissions (client) and INVITE retransmissions (server) are still matched and absorbed.
INVITE_CLIENT_6026: Table = {
    **INVITE_CLIENT,
    (S.CALLING, E_.RESPONSE_2XX): ((Cancel("A"), Cancel("B"), Do.DELIVER, Start("M")), S.ACCEPTED),
    (S.PROCEEDING, E_.RESPONSE_2XX): ((Do.DELIVER, Start("M")), S.ACCEPTED),
    (S.ACCEPTED, E_.RESPONSE_2XX): ((Do.DELIVER,), S.ACCEPTED),
    (S.ACCEPTED, E_.TIMER_M): ((), S.TERMINATED),
}
INVITE_SERVER_6026: Table = {
    **INVITE_SERVER,
    (S.PROCEEDING, E_.TU_2XX): ((Do.SEND, Start("L")), S.ACCEPTED),
    (S.ACCEPTED, E_.REQUEST): ((), S.ACCEPTED),
    (S.ACCEPTED, E_.ACK): ((Do.DELIVER,), S.ACCEPTED),
    (S.ACCEPTED, E_.TU_2XX): ((Do.SEND,), S.ACCEPTED),
    (S.ACCEPTED, E_.TIMER_L): ((), S.TERMINATED),
}

# Figure 8. Entry (a request arrives): pass it up, state Trying.
NON_INVITE_SERVER: Table = {
    (S.TRYING, E_.REQUEST): ((), S.TRYING),
    (S.TRYING, E_.TU_1XX): ((Do.SEND,), S.PROCEEDING),
    (S.TRYING, E_.TU_2XX): ((Do.SEND, Start("J")), S.COMPLETED),
    (S.TRYING, E_.TU_FINAL): ((Do.SEND, Start("J")), S.COMPLETED),
    (S.PROCEEDING, E_.REQUEST): ((Do.RESEND,), S.PROCEEDING),
    (S.PROCEEDING, E_.TU_1XX): ((Do.SEND,), S.PROCEEDING),
    (S.PROCEEDING, E_.TU_2XX): ((Do.SEND, Start("J")), S.COMPLETED),
    (S.PROCEEDING, E_.TU_FINAL): ((Do.SEND, Start("J")), S.COMPLETED),
    (S.PROCEEDING, E_.TRANSPORT_ERROR): _FAIL,
    (S.COMPLETED, E_.REQUEST): ((Do.RESEND,), S.COMPLETED),
    (S.COMPLETED, E_.TU_2XX): ((), S.COMPLETED),
    (S.COMPLETED, E_.TU_FINAL): ((), S.COMPLETED),
    (S.COMPLETED, E_.TIMER_J): ((), S.TERMINATED),
    (S.COMPLETED, E_.TRANSPORT_ERROR): _FAIL,
}


def _timer_interval(name: str, cfg: TimerConfig, reliable: bool) -> float | None:
    """name -> (interval over an unreliable transport, over a reliable one; None = not started)."""
    table: dict[str, tuple[float, float | None]] = {
        "A": (cfg.t1, None),
        "B": (64 * cfg.t1, 64 * cfg.t1),
        "D": (32.0, 0.0),
        "E": (cfg.t1, None),
        "F": (64 * cfg.t1, 64 * cfg.t1),
        "G": (cfg.t1, None),
        "H": (64 * cfg.t1, 64 * cfg.t1),
        "I": (cfg.t4, 0.0),
        "J": (64 * cfg.t1, 0.0),
        "K": (cfg.t4, 0.0),
        "L": (64 * cfg.t1, 64 * cfg.t1),
        "M": (64 * cfg.t1, 64 * cfg.t1),
    }
    unreliable, over_reliable = table[name]
    return over_reliable if reliable else unreliable


def classify(item: Input) -> Event:
    if isinstance(item, TimerFired):
        return Event[f"TIMER_{item.name}"]
    if isinstance(item, TransportFailed):
        return Event.TRANSPORT_ERROR
    message = item.message
    if isinstance(message, SipRequest):
        return Event.ACK if message.method == "ACK" else Event.REQUEST
    prefix = "TU" if isinstance(item, TuSend) else "RESPONSE"
    kind = "1XX" if message.status < 200 else "2XX" if message.status < 300 else "FINAL"
    return Event[f"{prefix}_{kind}"]


# --- the machine --------------------------------------------------------------------------------


class Transaction:
    """One transaction; `kind` picks the table. Build with `client()` / `server()` and call `start()`."""

    def __init__(
        self, table: Table, initial: State, request: SipRequest, *, reliable: bool, timers: TimerConfig, server: bool
    ) -> None:
        self.table = table
        self.state = initial
        self.request = request
        self.reliable = reliable
        self.timers = timers
        self.is_server = server
        self.last_response: SipResponse | None = None
        self.ack: SipRequest | None = None
        self._interval: dict[str, float] = {}
        self.running: dict[str, float] = {}  # timer -> deadline

    @classmethod
    def client(
        cls, request: SipRequest, *, reliable: bool = False, timers: TimerConfig | None = None, rfc6026: bool = False
    ) -> Transaction:
        invite = request.method == "INVITE"
        table, initial = (
            (INVITE_CLIENT_6026 if rfc6026 else INVITE_CLIENT, State.CALLING)
            if invite
            else (NON_INVITE_CLIENT, State.TRYING)
        )
        return cls(table, initial, request, reliable=reliable, timers=timers or TimerConfig(), server=False)

    @classmethod
    def server(
        cls, request: SipRequest, *, reliable: bool = False, timers: TimerConfig | None = None, rfc6026: bool = False
    ) -> Transaction:
        invite = request.method == "INVITE"
        table, initial = (
            (INVITE_SERVER_6026 if rfc6026 else INVITE_SERVER, State.PROCEEDING)
            if invite
            else (NON_INVITE_SERVER, State.TRYING)
        )
        return cls(table, initial, request, reliable=reliable, timers=timers or TimerConfig(), server=True)

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def start(self, now: float) -> list[Action]:
        """The entry actions of each figure: a client sends its request and starts A+B or E+F; an INVITE
        server answers 100 Trying (§17.2.1) and passes the INVITE up; a non-INVITE server passes it up."""
        out: list[Action] = []
        if not self.is_server:
            out.append(Send(self.request))
            for name in ("A", "B") if self.is_invite else ("E", "F"):
                self._start(name, now, out)
            return out
        if self.is_invite:
            self.last_response = make_response(self.request, 100)
            out.append(Send(self.last_response))
        out.append(Deliver(self.request))
        return out

    def handle(self, item: Input, now: float) -> list[Action]:
        event = classify(item)
        row = self.table.get((self.state, event))
        if row is None:
            if event in TU_EVENTS:
                raise TransactionError(f"{event.name} in state {self.state.name}")
            return []  # a stray message or a stale timer: dropped (see the module docstring)
        if isinstance(item, TimerFired):
            if item.name not in self.running:
                return []
            del self.running[item.name]
        steps, next_state = row
        out: list[Action] = []
        zero: list[str] = []
        for step in steps:
            self._step(step, item, now, out, zero)
        self.state = next_state
        if next_state is State.TERMINATED:
            out.extend(CancelTimer(name) for name in sorted(self.running))
            self.running.clear()
            out.append(Terminated())
            return out
        for name in zero:
            self.running[name] = now
            out.extend(self.handle(TimerFired(name), now))
        return out

    def _step(self, step: Step, item: Input, now: float, out: list[Action], zero: list[str]) -> None:
        if isinstance(step, Start):
            if _timer_interval(step.timer, self.timers, self.reliable) == 0.0:
                zero.append(step.timer)
            else:
                self._start(step.timer, now, out)
        elif isinstance(step, Backoff):
            interval = self._interval[step.timer] * 2
            if step.timer != "A":
                interval = min(interval, self.timers.t2)
            self._arm(step.timer, interval, now, out)
        elif isinstance(step, AtT2):
            self._arm(step.timer, self.timers.t2, now, out)
        elif isinstance(step, Cancel):
            if self.running.pop(step.timer, None) is not None:
                out.append(CancelTimer(step.timer))
        elif step is Do.SEND:
            assert isinstance(item, TuSend)
            self.last_response = item.message
            out.append(Send(item.message))
        elif step is Do.RESEND:
            message: Message | None = self.last_response if self.is_server else self.request
            if message is not None:
                out.append(Send(message))
        elif step is Do.ACK:
            assert isinstance(item, Received) and isinstance(item.message, SipResponse)
            self.ack = make_ack(self.request, item.message)
            out.append(Send(self.ack))
        elif step is Do.RESEND_ACK:
            if self.ack is not None:
                out.append(Send(self.ack))
        elif step is Do.DELIVER:
            assert isinstance(item, Received)
            out.append(Deliver(item.message))
        elif step is Do.TIMEOUT:
            out.append(TimedOut())
        elif step is Do.TRANSPORT_ERROR:
            out.append(TransportError())

    def _start(self, name: str, now: float, out: list[Action]) -> None:
        interval = _timer_interval(name, self.timers, self.reliable)
        if interval is not None:
            self._arm(name, interval, now, out)

    def _arm(self, name: str, interval: float, now: float, out: list[Action]) -> None:
        self._interval[name] = interval
        self.running[name] = now + interval
        out.append(StartTimer(name, now + interval))


def make_ack(request: SipRequest, response: SipResponse) -> SipRequest:
    """The ACK for a 3xx-6xx to `request` (RFC 3261 §17.1.1.3): Request-URI, Call-ID, From, CSeq number
    and Route of the INVITE, To of the response, one Via (the INVITE's top Via), Max-Forwards 70."""
    headers = Headers()
    headers.add("Via", request.headers.get_all("Via")[0])
    for line in request.headers.lines("Route"):
        headers.add("Route", line)
    headers.add("Max-Forwards", "70")
    headers.add("From", request.headers.lines("From")[0])
    headers.add("To", response.headers.lines("To")[0])
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq[0]} ACK")
    return SipRequest("ACK", request.uri, headers)


# --- the layer ----------------------------------------------------------------------------------

# A client key is (branch, method); a server key is (branch, sent-by, method) - §17.1.3, §17.2.3.
Key = tuple[str, ...]


def client_key(message: Message) -> Key:
    branch = message.branch or ""
    method = message.cseq[1]
    return ("client", branch, "INVITE" if method == "ACK" else method)


def server_key(request: SipRequest | SipResponse) -> Key:
    """§17.2.3: branch (with the magic cookie) + sent-by + method, ACK counting as INVITE. A request
    without the cookie (RFC 2543) is keyed by Call-ID, CSeq number, From tag and the whole top Via."""
    via = request.top_via
    method = request.cseq[1]
    method = "INVITE" if method == "ACK" else method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        port = via.port or (5061 if via.transport == "TLS" else 5060)  # §18.2.1 default ports
        return ("server", branch, f"{via.host.lower()}:{port}", method)
    return ("server-2543", request.call_id, str(request.cseq[0]), request.from_tag or "", str(via), method)


@dataclass(frozen=True, slots=True)
class Output:
    """An action of the transaction `key` (None: a stray message for the TU core, §18.1.2/§18.2.2)."""

    key: Key | None
    action: Action


@dataclass
class TransactionLayer:
    """All the transactions over one transport; timers are kept here, so the shell only sees
    `Send`, `Deliver`, `TimedOut`, `TransportError` and `Terminated` outputs."""

    reliable: bool = False
    timers: TimerConfig = field(default_factory=TimerConfig)
    rfc6026: bool = False
    transactions: dict[Key, Transaction] = field(default_factory=dict, init=False)
    _heap: list[tuple[float, Key, str]] = field(default_factory=list, init=False, repr=False)

    def send_request(self, request: SipRequest, now: float) -> list[Output]:
        """Start a client transaction (the TU sends a request). ACK is not a transaction: it is sent as is."""
        if request.method == "ACK":
            return [Output(None, Send(request))]
        if not (request.branch or "").startswith(MAGIC_COOKIE):
            raise TransactionError("a new request needs a z9hG4bK branch")
        key = client_key(request)
        if key in self.transactions:
            raise TransactionError("branch already in use")
        tx = Transaction.client(request, reliable=self.reliable, timers=self.timers, rfc6026=self.rfc6026)
        return self._run(key, tx, None, now)

    def receive(self, message: Message, now: float) -> list[Output]:
        if isinstance(message, SipResponse):
            key = client_key(message)
            found = self.transactions.get(key)
            if found is None:
                return [Output(None, Deliver(message))]
            return self._run(key, found, Received(message), now)
        key = server_key(message)
        found = self.transactions.get(key)
        if found is not None:
            if message.method == "ACK" and not found.is_invite:
                return [Output(None, Deliver(message))]
            return self._run(key, found, Received(message), now)
        if message.method == "ACK":
            return [Output(None, Deliver(message))]  # the ACK for a 2xx: the dialog's, not ours
        tx = Transaction.server(message, reliable=self.reliable, timers=self.timers, rfc6026=self.rfc6026)
        return self._run(key, tx, None, now)

    def respond(self, response: SipResponse, now: float) -> list[Output]:
        """The TU sends a response; it goes through its server transaction (TransactionError if none)."""
        key = server_key(response)
        found = self.transactions.get(key)
        if found is None:
            raise TransactionError("no server transaction for this response")
        return self._run(key, found, TuSend(response), now)

    def transport_failed(self, key: Key, now: float) -> list[Output]:
        found = self.transactions.get(key)
        if found is None:
            return []
        return self._run(key, found, TransportFailed(), now)

    def cancel_target(self, cancel: SipRequest) -> Key | None:
        """The INVITE server transaction a CANCEL refers to (§9.2: same branch and sent-by)."""
        key = server_key(cancel)
        target = (*key[:-1], "INVITE")
        return target if target in self.transactions else None

    def next_deadline(self) -> float | None:
        while self._heap and not self._live(self._heap[0]):
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def on_timers(self, now: float) -> list[Output]:
        out: list[Output] = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if not self._live(entry):
                continue
            _, key, name = entry
            out.extend(self._fire(key, name, now))
        return out

    def _fire(self, key: Key, name: str, now: float) -> list[Output]:
        tx = self.transactions[key]
        return self._run(key, tx, TimerFired(name), now)

    def _live(self, entry: tuple[float, Key, str]) -> bool:
        at, key, name = entry
        tx = self.transactions.get(key)
        return tx is not None and tx.running.get(name) == at

    def _run(self, key: Key, tx: Transaction, item: Input | None, now: float) -> list[Output]:
        """Start `tx` (item None) or feed it `item`; keep its timers, forget it once terminated."""
        self.transactions[key] = tx
        out: list[Output] = []
        for action in tx.start(now) if item is None else tx.handle(item, now):
            if isinstance(action, StartTimer):
                heapq.heappush(self._heap, (action.at, key, action.name))
            elif not isinstance(action, CancelTimer):
                out.append(Output(key, action))
        if tx.terminated:
            del self.transactions[key]
        return out
