"""RFC 3261 §17 transactions (telephony.sip.transaction): every transition of Figures 5-8, the
retransmission schedules under an injected `now`, reliable-transport timers, the TransactionLayer's
matching, and Hypothesis over every state x input.

Messages are real bytes parsed with telephony.sip.message; time only moves through `now`.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.sip.message import SipRequest, SipResponse, make_response
from telephony.sip.transaction import (
    INVITE_CLIENT,
    INVITE_SERVER,
    NON_INVITE_CLIENT,
    NON_INVITE_SERVER,
    TU_EVENTS,
    Action,
    CancelTimer,
    Deliver,
    Input,
    Received,
    Send,
    StartTimer,
    State,
    Terminated,
    TimedOut,
    TimerConfig,
    TimerFired,
    Transaction,
    TransactionError,
    TransportError,
    TransportFailed,
    TuSend,
    classify,
)

BRANCH = "z9hG4bK776asdhds"


def _req(
    method: str, branch: str = BRANCH, cseq_method: str | None = None, host: str = "pc33.atlanta.com"
) -> SipRequest:
    lines = [
        f"{method} sip:bob@biloxi.com SIP/2.0",
        f"Via: SIP/2.0/UDP {host};branch={branch}",
        "Max-Forwards: 70",
        "To: Bob <sip:bob@biloxi.com>",
        "From: Alice <sip:alice@atlanta.com>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.atlanta.com",
        f"CSeq: 314159 {cseq_method or method}",
        "Route: <sip:proxy.atlanta.com;lr>",
        "Contact: <sip:alice@pc33.atlanta.com>",
        "Content-Length: 0",
    ]
    return SipRequest.parse(("\r\n".join(lines) + "\r\n\r\n").encode())


def _resp(request: SipRequest, status: int) -> SipResponse:
    raw = bytes(make_response(request, status, to_tag=None if status == 100 else "a6c85cf"))
    return SipResponse.parse(raw)


INVITE = _req("INVITE")
OPTIONS = _req("OPTIONS")
UDP, TCP = False, True


def sends(actions: list[Action]) -> list[bytes]:
    return [bytes(a.message) for a in actions if isinstance(a, Send)]


def timers(actions: list[Action]) -> dict[str, float]:
    return {a.name: a.at for a in actions if isinstance(a, StartTimer)}


def client(request: SipRequest, reliable: bool = UDP) -> tuple[Transaction, list[Action]]:
    tx = Transaction.client(request, reliable=reliable)
    return tx, tx.start(0.0)


def server(request: SipRequest, reliable: bool = UDP) -> tuple[Transaction, list[Action]]:
    tx = Transaction.server(request, reliable=reliable)
    return tx, tx.start(0.0)


# --- INVITE client, Figure 5 ----------------------------------------------------------------------


def test_invite_client_start_sends_and_starts_a_and_b() -> None:
    tx, actions = client(INVITE)
    assert sends(actions) == [bytes(INVITE)]
    assert timers(actions) == {"A": 0.5, "B": 32.0}
    assert tx.state is State.CALLING


def test_timer_a_doubles_until_b() -> None:
    tx, actions = client(INVITE)
    fired = []
    at = timers(actions)["A"]
    while True:
        out = tx.handle(TimerFired("A"), at)
        assert sends(out) == [bytes(INVITE)]
        fired.append(at)
        at = timers(out)["A"]
        if at > 32.0:
            break
    assert fired == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # intervals 0.5, 1, 2, 4, 8, 16
    out = tx.handle(TimerFired("B"), 32.0)
    assert TimedOut() in out and out[-1] == Terminated() and CancelTimer("A") in out
    assert tx.state is State.TERMINATED
    assert tx.handle(TimerFired("A"), at) == []


def test_invite_client_calling_1xx_then_2xx() -> None:
    tx, _ = client(INVITE)
    ringing = _resp(INVITE, 180)
    out = tx.handle(Received(ringing), 0.1)
    assert out == [CancelTimer("A"), CancelTimer("B"), Deliver(ringing)]
    assert tx.state is State.PROCEEDING
    assert tx.handle(Received(ringing), 0.2) == [Deliver(ringing)]
    ok = _resp(INVITE, 200)
    assert tx.handle(Received(ok), 0.3) == [Deliver(ok), Terminated()]
    assert tx.handle(Received(ok), 0.4) == []


def test_invite_client_calling_2xx_terminates() -> None:
    tx, _ = client(INVITE)
    ok = _resp(INVITE, 200)
    out = tx.handle(Received(ok), 0.1)
    assert out[0] == Deliver(ok) and out[-1] == Terminated()
    assert {a.name for a in out if isinstance(a, CancelTimer)} == {"A", "B"}


@pytest.mark.parametrize("first", [None, 183])
def test_invite_client_non_2xx_acked_and_absorbed(first: int | None) -> None:
    tx, _ = client(INVITE)
    if first:
        tx.handle(Received(_resp(INVITE, first)), 0.1)
    busy = _resp(INVITE, 486)
    out = tx.handle(Received(busy), 1.0)
    assert Deliver(busy) in out and tx.state is State.COMPLETED
    assert timers(out) == {"D": 33.0}
    [ack_bytes] = sends(out)
    ack = SipRequest.parse(ack_bytes)
    assert ack.method == "ACK" and str(ack.uri) == "sip:bob@biloxi.com"
    assert ack.cseq == (314159, "ACK") and ack.branch == BRANCH and len(ack.vias) == 1
    assert ack.to_tag == "a6c85cf" and ack.from_tag == "1928301774" and ack.call_id == INVITE.call_id
    assert ack.headers.lines("Route") == ["<sip:proxy.atlanta.com;lr>"]
    # A retransmitted final response is absorbed and re-ACKed, not delivered again.
    assert sends(tx.handle(Received(busy), 2.0)) == [ack_bytes]
    assert tx.handle(Received(_resp(INVITE, 180)), 2.0) == []
    assert tx.handle(Received(_resp(INVITE, 200)), 2.0) == []
    assert tx.handle(TimerFired("D"), 33.0) == [Terminated()]


def test_invite_client_reliable_no_a_and_d_zero() -> None:
    tx, actions = client(INVITE, TCP)
    assert timers(actions) == {"B": 32.0}
    out = tx.handle(Received(_resp(INVITE, 404)), 1.0)
    assert len(sends(out)) == 1 and out[-1] == Terminated() and "D" not in timers(out)
    assert tx.state is State.TERMINATED


@pytest.mark.parametrize("prelude", [[], [180], [404]])
def test_invite_client_transport_error(prelude: list[int]) -> None:
    tx, _ = client(INVITE)
    for status in prelude:
        tx.handle(Received(_resp(INVITE, status)), 0.1)
    out = tx.handle(TransportFailed(), 0.2)
    assert TransportError() in out and out[-1] == Terminated()


def test_client_rejects_tu_responses() -> None:
    tx, _ = client(INVITE)
    with pytest.raises(TransactionError):
        tx.handle(TuSend(_resp(INVITE, 200)), 0.1)


# --- non-INVITE client, Figure 6 ------------------------------------------------------------------


def test_timer_e_capped_at_t2_then_f() -> None:
    tx, actions = client(OPTIONS)
    assert timers(actions) == {"E": 0.5, "F": 32.0}
    at, intervals = 0.5, []
    for _ in range(6):
        out = tx.handle(TimerFired("E"), at)
        assert sends(out) == [bytes(OPTIONS)]
        nxt = timers(out)["E"]
        intervals.append(nxt - at)
        at = nxt
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    out = tx.handle(TimerFired("F"), 32.0)
    assert TimedOut() in out and out[-1] == Terminated()


def test_timer_e_in_proceeding_is_t2() -> None:
    tx, _ = client(OPTIONS)
    trying = _resp(OPTIONS, 100)
    assert tx.handle(Received(trying), 0.1) == [Deliver(trying)]
    assert tx.state is State.PROCEEDING
    out = tx.handle(TimerFired("E"), 0.5)
    assert sends(out) == [bytes(OPTIONS)] and timers(out) == {"E": 4.5}
    assert tx.handle(Received(trying), 0.6) == [Deliver(trying)]
    out = tx.handle(TimerFired("F"), 32.0)
    assert TimedOut() in out and out[-1] == Terminated()


@pytest.mark.parametrize("status", [200, 404])
@pytest.mark.parametrize("via_proceeding", [False, True])
def test_non_invite_client_final_then_k(status: int, via_proceeding: bool) -> None:
    tx, _ = client(OPTIONS)
    if via_proceeding:
        tx.handle(Received(_resp(OPTIONS, 100)), 0.1)
    final = _resp(OPTIONS, status)
    out = tx.handle(Received(final), 1.0)
    assert Deliver(final) in out and timers(out) == {"K": 6.0} and sends(out) == []
    assert {a.name for a in out if isinstance(a, CancelTimer)} == {"E", "F"}
    assert tx.handle(Received(final), 2.0) == []
    assert tx.handle(Received(_resp(OPTIONS, 100)), 2.0) == []
    assert tx.handle(TimerFired("K"), 6.0) == [Terminated()]


def test_non_invite_client_reliable() -> None:
    tx, actions = client(OPTIONS, TCP)
    assert timers(actions) == {"F": 32.0}
    ok = _resp(OPTIONS, 200)
    assert tx.handle(Received(ok), 1.0) == [CancelTimer("F"), Deliver(ok), Terminated()]


@pytest.mark.parametrize("prelude", [[], [100]])
def test_non_invite_client_transport_error(prelude: list[int]) -> None:
    tx, _ = client(OPTIONS)
    for status in prelude:
        tx.handle(Received(_resp(OPTIONS, status)), 0.1)
    out = tx.handle(TransportFailed(), 0.2)
    assert TransportError() in out and out[-1] == Terminated()


# --- INVITE server, Figure 7 ----------------------------------------------------------------------


def test_invite_server_start_sends_100_and_delivers() -> None:
    tx, actions = server(INVITE)
    [trying] = sends(actions)
    assert SipResponse.parse(trying).status == 100
    assert actions[-1] == Deliver(INVITE) and tx.state is State.PROCEEDING
    # Retransmitted INVITE: the last provisional is re-sent, nothing goes up.
    assert sends(tx.handle(Received(INVITE), 0.5)) == [trying]
    ringing = _resp(INVITE, 180)
    assert tx.handle(TuSend(ringing), 0.6) == [Send(ringing)]
    assert tx.handle(Received(INVITE), 0.7) == [Send(ringing)]


def test_invite_server_2xx_terminates() -> None:
    tx, _ = server(INVITE)
    ok = _resp(INVITE, 200)
    assert tx.handle(TuSend(ok), 1.0) == [Send(ok), Terminated()]
    assert tx.handle(Received(INVITE), 1.1) == []
    with pytest.raises(TransactionError):
        tx.handle(TuSend(ok), 1.2)


def test_timer_g_capped_at_t2_then_h() -> None:
    tx, _ = server(INVITE)
    busy = _resp(INVITE, 486)
    out = tx.handle(TuSend(busy), 0.0)
    assert out[0] == Send(busy) and timers(out) == {"G": 0.5, "H": 32.0}
    assert tx.state is State.COMPLETED
    at, intervals = 0.5, []
    for _ in range(6):
        out = tx.handle(TimerFired("G"), at)
        assert out[0] == Send(busy)
        nxt = timers(out)["G"]
        intervals.append(nxt - at)
        at = nxt
    assert intervals == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert tx.handle(Received(INVITE), at) == [Send(busy)]
    with pytest.raises(TransactionError):
        tx.handle(TuSend(_resp(INVITE, 500)), at)
    out = tx.handle(TimerFired("H"), 32.0)
    assert TimedOut() in out and out[-1] == Terminated()


def test_invite_server_ack_confirms_then_i() -> None:
    tx, _ = server(INVITE)
    busy = _resp(INVITE, 486)
    tx.handle(TuSend(busy), 0.0)
    ack = _req("ACK", cseq_method="ACK")
    out = tx.handle(Received(ack), 0.2)
    assert out == [CancelTimer("G"), CancelTimer("H"), StartTimer("I", 5.2)]
    assert tx.state is State.CONFIRMED
    assert tx.handle(Received(ack), 0.3) == []  # ACK retransmissions absorbed
    assert tx.handle(Received(INVITE), 0.3) == []
    assert tx.handle(TimerFired("G"), 0.5) == []  # cancelled timer: stale wake-up ignored
    assert tx.handle(TimerFired("I"), 5.2) == [Terminated()]


def test_invite_server_reliable() -> None:
    tx, _ = server(INVITE, TCP)
    busy = _resp(INVITE, 486)
    out = tx.handle(TuSend(busy), 0.0)
    assert timers(out) == {"H": 32.0}
    out = tx.handle(Received(_req("ACK", cseq_method="ACK")), 0.2)
    assert out == [CancelTimer("H"), Terminated()]


@pytest.mark.parametrize("final", [False, True])
def test_invite_server_transport_error(final: bool) -> None:
    tx, _ = server(INVITE)
    if final:
        tx.handle(TuSend(_resp(INVITE, 486)), 0.0)
    out = tx.handle(TransportFailed(), 0.1)
    assert TransportError() in out and out[-1] == Terminated()


# --- non-INVITE server, Figure 8 ------------------------------------------------------------------


def test_non_invite_server_trying_absorbs_and_proceeding_resends() -> None:
    tx, actions = server(OPTIONS)
    assert actions == [Deliver(OPTIONS)] and tx.state is State.TRYING
    assert tx.handle(Received(OPTIONS), 0.1) == []
    trying = _resp(OPTIONS, 100)
    assert tx.handle(TuSend(trying), 0.2) == [Send(trying)]
    assert tx.state.name == "PROCEEDING"
    assert tx.handle(Received(OPTIONS), 0.3) == [Send(trying)]
    assert tx.handle(TuSend(trying), 0.4) == [Send(trying)]
    ok = _resp(OPTIONS, 200)
    assert tx.handle(TuSend(ok), 1.0) == [Send(ok), StartTimer("J", 33.0)]
    assert tx.handle(Received(OPTIONS), 2.0) == [Send(ok)]
    assert tx.handle(TuSend(_resp(OPTIONS, 500)), 2.0) == []  # §17.2.2: discarded
    assert tx.handle(TimerFired("J"), 33.0) == [Terminated()]


@pytest.mark.parametrize("status", [200, 404])
def test_non_invite_server_trying_final(status: int) -> None:
    tx, _ = server(OPTIONS)
    final = _resp(OPTIONS, status)
    assert tx.handle(TuSend(final), 1.0) == [Send(final), StartTimer("J", 33.0)]
    assert tx.state is State.COMPLETED
    with pytest.raises(TransactionError):
        tx.handle(TuSend(_resp(OPTIONS, 100)), 1.0)


def test_non_invite_server_reliable_j_zero() -> None:
    tx, _ = server(OPTIONS, TCP)
    ok = _resp(OPTIONS, 200)
    assert tx.handle(TuSend(ok), 1.0) == [Send(ok), Terminated()]


@pytest.mark.parametrize("prelude", [[100], [200]])
def test_non_invite_server_transport_error(prelude: list[int]) -> None:
    tx, _ = server(OPTIONS)
    for status in prelude:
        tx.handle(TuSend(_resp(OPTIONS, status)), 0.1)
    out = tx.handle(TransportFailed(), 0.2)
    assert TransportError() in out and out[-1] == Terminated()


def test_custom_timer_config() -> None:
    tx = Transaction.client(INVITE, timers=TimerConfig(t1=0.1, t2=1.0, t4=2.0))
    assert timers(tx.start(10.0)) == {"A": 10.1, "B": 16.4}


# --- Hypothesis: every state x input --------------------------------------------------------------

ACK = _req("ACK", cseq_method="ACK")


def _inputs(request: SipRequest) -> list[Input]:
    return [
        Received(request),
        Received(ACK),
        *(Received(_resp(request, s)) for s in (100, 180, 200, 486)),
        *(TuSend(_resp(request, s)) for s in (100, 180, 200, 486)),
        *(TimerFired(n) for n in "ABDEFGHIJK"),
        TransportFailed(),
    ]


_KINDS = [(True, INVITE), (False, INVITE), (True, OPTIONS), (False, OPTIONS)]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(_KINDS),
    st.booleans(),
    st.lists(st.tuples(st.integers(0, 20), st.floats(0, 100)), max_size=25),
)
def test_random_inputs_only_raise_transaction_error(
    kind: tuple[bool, SipRequest], reliable: bool, steps: list[tuple[int, float]]
) -> None:
    is_server, request = kind
    tx = Transaction.server(request, reliable=reliable) if is_server else Transaction.client(request, reliable=reliable)
    tx.start(0.0)
    inputs = _inputs(request)
    now = 0.0
    for index, dt in steps:
        now += dt
        was_terminated = tx.terminated
        try:
            out = tx.handle(inputs[index], now)
        except TransactionError:
            assert isinstance(inputs[index], TuSend)
            continue
        if was_terminated:
            assert out == []
        if Terminated() in out:
            assert out[-1] == Terminated() and out.count(Terminated()) == 1
            assert tx.terminated and tx.running == {}


# How to bring each machine into each state from its entry state: inputs to apply at t=0.
_PATHS: dict[tuple[bool, str], dict[State, list[Input]]] = {
    (False, "INVITE"): {
        State.CALLING: [],
        State.PROCEEDING: [Received(_resp(INVITE, 180))],
        State.COMPLETED: [Received(_resp(INVITE, 486))],
        State.TERMINATED: [Received(_resp(INVITE, 200))],
    },
    (False, "OPTIONS"): {
        State.TRYING: [],
        State.PROCEEDING: [Received(_resp(OPTIONS, 100))],
        State.COMPLETED: [Received(_resp(OPTIONS, 200))],
        State.TERMINATED: [TimerFired("F")],
    },
    (True, "INVITE"): {
        State.PROCEEDING: [],
        State.COMPLETED: [TuSend(_resp(INVITE, 486))],
        State.CONFIRMED: [TuSend(_resp(INVITE, 486)), Received(ACK)],
        State.TERMINATED: [TuSend(_resp(INVITE, 200))],
    },
    (True, "OPTIONS"): {
        State.TRYING: [],
        State.PROCEEDING: [TuSend(_resp(OPTIONS, 100))],
        State.COMPLETED: [TuSend(_resp(OPTIONS, 200))],
        State.TERMINATED: [TuSend(_resp(OPTIONS, 200)), TimerFired("J")],
    },
}


@pytest.mark.parametrize("kind", _KINDS)
def test_every_state_x_input(kind: tuple[bool, SipRequest]) -> None:
    """Each (state, input): either a table row, an ignored stray/stale input (no actions), or - for a
    TU response only - TransactionError; no actions at all once Terminated."""
    is_server, request = kind
    table = {
        (False, "INVITE"): INVITE_CLIENT,
        (False, "OPTIONS"): NON_INVITE_CLIENT,
        (True, "INVITE"): INVITE_SERVER,
        (True, "OPTIONS"): NON_INVITE_SERVER,
    }[(is_server, request.method)]
    for state, path in _PATHS[(is_server, request.method)].items():
        for item in _inputs(request):
            make = Transaction.server if is_server else Transaction.client
            tx = make(request)
            tx.start(0.0)
            for step in path:
                tx.handle(step, 0.0 if not isinstance(step, TimerFired) else tx.running.get(step.name, 0.0))
            assert tx.state is state
            event = classify(item)
            try:
                out = tx.handle(item, 0.0 if not isinstance(item, TimerFired) else tx.running.get(item.name, 0.0))
            except TransactionError:
                assert event in TU_EVENTS and (state, event) not in table
                continue
            if state is State.TERMINATED or (state, event) not in table:
                assert out == [], (state, item)


# --- RFC 6026 Accepted (opt-in) --------------------------------------------------------------------


def test_rfc6026_client_accepted_passes_2xx_retransmissions() -> None:
    tx = Transaction.client(INVITE, rfc6026=True)
    tx.start(0.0)
    ok = _resp(INVITE, 200)
    out = tx.handle(Received(ok), 1.0)
    assert Deliver(ok) in out and timers(out) == {"M": 33.0} and tx.state is State.ACCEPTED
    assert tx.handle(Received(ok), 2.0) == [Deliver(ok)]
    assert tx.handle(Received(_resp(INVITE, 486)), 2.0) == []
    assert tx.handle(TimerFired("M"), 33.0) == [Terminated()]


def test_rfc6026_server_accepted() -> None:
    tx = Transaction.server(INVITE, reliable=TCP, rfc6026=True)
    tx.start(0.0)
    ok = _resp(INVITE, 200)
    assert tx.handle(TuSend(ok), 1.0) == [Send(ok), StartTimer("L", 33.0)]
    assert tx.handle(Received(INVITE), 1.5) == []  # absorbed, not re-answered
    assert tx.handle(TuSend(ok), 2.0) == [Send(ok)]  # the TU's 2xx retransmission
    assert tx.handle(Received(ACK), 2.5) == [Deliver(ACK)]
    with pytest.raises(TransactionError):
        tx.handle(TuSend(_resp(INVITE, 486)), 3.0)
    assert tx.handle(TimerFired("L"), 33.0) == [Terminated()]


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.booleans(), st.lists(st.tuples(st.integers(0, 20), st.floats(0, 100)), max_size=25))
def test_rfc6026_random_inputs(is_server: bool, reliable: bool, steps: list[tuple[int, float]]) -> None:
    make = Transaction.server if is_server else Transaction.client
    tx = make(INVITE, reliable=reliable, rfc6026=True)
    tx.start(0.0)
    inputs = [*_inputs(INVITE), TimerFired("L"), TimerFired("M")]
    now = 0.0
    for index, dt in steps:
        now += dt
        was_terminated = tx.terminated
        try:
            out = tx.handle(inputs[index], now)
        except TransactionError:
            assert isinstance(inputs[index], TuSend)
            continue
        assert not was_terminated or out == []
