"""TransactionLayer (telephony.sip.transaction): matching by RFC 3261 §17.1.3 / §17.2.3 keys,
retransmission absorption, ACK and CANCEL matching, timers through next_deadline()/on_timers(now),
and forgetting terminated transactions. Real message bytes; time moves only through `now`.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.sip.message import SipRequest, SipResponse, make_response
from telephony.sip.transaction import (
    Deliver,
    Output,
    Send,
    Terminated,
    TimedOut,
    TransactionError,
    TransactionLayer,
    TransportError,
    server_key,
)


def _req(method: str, branch: str = "z9hG4bK74bf9", cseq_method: str | None = None, port: int = 5060) -> SipRequest:
    text = (
        f"{method} sip:bob@192.0.2.4 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:{port};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: Alice <sip:alice@example.com>;tag=9fxced76sl\r\n"
        "To: Bob <sip:bob@example.com>\r\n"
        "Call-ID: 3848276298220188511@atlanta.example.com\r\n"
        f"CSeq: 2 {cseq_method or method}\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return SipRequest.parse(text.encode())


def _resp(request: SipRequest, status: int) -> SipResponse:
    return SipResponse.parse(bytes(make_response(request, status, to_tag="314159")))


def actions(out: list[Output]) -> list[object]:
    return [o.action for o in out]


def sent(out: list[Output]) -> list[bytes]:
    return [bytes(o.action.message) for o in out if isinstance(o.action, Send)]


def test_server_invite_retransmission_absorbed_and_non_2xx_ack_matched() -> None:
    layer = TransactionLayer()
    invite = _req("INVITE")
    out = layer.receive(invite, 0.0)
    assert [SipResponse.parse(b).status for b in sent(out)] == [100]
    assert Deliver(invite) in actions(out)
    key = out[0].key
    assert key is not None and len(layer.transactions) == 1
    # Retransmitted INVITE: the 100 is re-sent, the TU sees nothing.
    again = layer.receive(_req("INVITE"), 0.5)
    assert [SipResponse.parse(b).status for b in sent(again)] == [100]
    assert not any(isinstance(a, Deliver) for a in actions(again))
    busy = _resp(invite, 486)
    assert sent(layer.respond(busy, 1.0)) == [bytes(busy)]
    assert layer.next_deadline() == 1.5  # timer G
    assert sent(layer.on_timers(1.5)) == [bytes(busy)]
    assert layer.next_deadline() == 2.5
    # The ACK for the 486 has the INVITE's branch: it matches and is absorbed.
    assert layer.receive(_req("ACK", cseq_method="ACK"), 2.0) == []
    assert layer.next_deadline() == 7.0  # timer I = T4
    assert layer.on_timers(6.9) == []
    assert actions(layer.on_timers(7.0)) == [Terminated()]
    assert layer.transactions == {} and layer.next_deadline() is None


def test_server_2xx_terminates_and_ack_for_2xx_goes_to_tu() -> None:
    layer = TransactionLayer()
    invite = _req("INVITE")
    layer.receive(invite, 0.0)
    ok = _resp(invite, 200)
    out = layer.respond(ok, 0.1)
    assert actions(out) == [Send(ok), Terminated()] and layer.transactions == {}
    ack = _req("ACK", branch="z9hG4bKnewbranch", cseq_method="ACK")
    assert layer.receive(ack, 0.2) == [Output(None, Deliver(ack))]


def test_sent_by_and_method_distinguish_server_transactions() -> None:
    layer = TransactionLayer()
    layer.receive(_req("INVITE"), 0.0)
    layer.receive(_req("INVITE", port=5070), 0.0)  # same branch, other sent-by
    cancel = _req("CANCEL")  # same branch, method CANCEL: its own transaction
    out = layer.receive(cancel, 0.0)
    assert Deliver(cancel) in actions(out)
    assert len(layer.transactions) == 3
    assert layer.cancel_target(cancel) == ("server", "z9hG4bK74bf9", "192.0.2.1:5060", "INVITE")
    assert layer.cancel_target(_req("CANCEL", branch="z9hG4bKother")) is None
    ok = _resp(cancel, 200)
    assert actions(layer.respond(ok, 0.1)) == [Send(ok)]
    assert len(layer.transactions) == 3  # CANCEL server transaction waits for timer J


def test_client_invite_non_2xx_and_stray_response() -> None:
    layer = TransactionLayer()
    invite = _req("INVITE", branch="z9hG4bKclient1")
    out = layer.send_request(invite, 0.0)
    assert sent(out) == [bytes(invite)] and layer.next_deadline() == 0.5
    assert sent(layer.on_timers(0.5)) == [bytes(invite)]
    assert layer.next_deadline() == 1.5
    busy = _resp(invite, 486)
    out = layer.receive(busy, 1.0)
    [ack] = [SipRequest.parse(b) for b in sent(out)]
    assert ack.method == "ACK" and Deliver(busy) in actions(out)
    assert layer.next_deadline() == 33.0  # timer D; A and B no longer count
    assert sent(layer.receive(busy, 2.0)) == [bytes(ack)]
    # A response matching no transaction (other branch, or CANCEL's CSeq method) goes to the core.
    stray = _resp(_req("INVITE", branch="z9hG4bKunknown"), 200)
    assert layer.receive(stray, 2.0) == [Output(None, Deliver(stray))]
    assert actions(layer.on_timers(33.0)) == [Terminated()]
    assert layer.transactions == {}


def test_client_timeout_schedule() -> None:
    layer = TransactionLayer()
    layer.send_request(_req("OPTIONS", branch="z9hG4bKopt"), 0.0)
    fired = []
    while (at := layer.next_deadline()) is not None:
        out = layer.on_timers(at)
        fired.append((at, [type(a).__name__ for a in actions(out)]))
    assert fired[:4] == [(0.5, ["Send"]), (1.5, ["Send"]), (3.5, ["Send"]), (7.5, ["Send"])]
    assert fired[4][0] == 11.5  # capped at T2
    assert fired[-1] == (32.0, ["TimedOut", "Terminated"])
    assert layer.transactions == {}


def test_reliable_layer_has_no_retransmissions() -> None:
    layer = TransactionLayer(reliable=True)
    invite = _req("INVITE", branch="z9hG4bKtcp")
    layer.send_request(invite, 0.0)
    assert layer.next_deadline() == 32.0
    assert actions(layer.on_timers(32.0))[-2:] == [TimedOut(), Terminated()]
    options = _req("OPTIONS")
    layer.receive(options, 0.0)
    ok = _resp(options, 200)
    assert actions(layer.respond(ok, 0.0)) == [Send(ok), Terminated()]
    assert layer.transactions == {}


def test_transport_failure_and_errors() -> None:
    layer = TransactionLayer()
    out = layer.send_request(_req("OPTIONS", branch="z9hG4bKfail"), 0.0)
    key = out[0].key
    assert key is not None
    assert actions(layer.transport_failed(key, 0.1)) == [TransportError(), Terminated()]
    assert layer.transport_failed(key, 0.2) == [] and layer.next_deadline() is None
    with pytest.raises(TransactionError):
        layer.send_request(_req("OPTIONS", branch="nocookie"), 0.0)
    layer.send_request(_req("OPTIONS", branch="z9hG4bKdup"), 0.0)
    with pytest.raises(TransactionError):
        layer.send_request(_req("OPTIONS", branch="z9hG4bKdup"), 0.0)
    with pytest.raises(TransactionError):
        layer.respond(_resp(_req("BYE"), 200), 0.0)
    ack = _req("ACK", cseq_method="ACK")
    assert layer.send_request(ack, 0.0) == [Output(None, Send(ack))]


def test_rfc2543_request_without_cookie_still_matches_retransmission() -> None:
    layer = TransactionLayer()
    bye = _req("BYE", branch="oldstyle1")
    layer.receive(bye, 0.0)
    ok = _resp(bye, 200)
    layer.respond(ok, 0.1)
    assert sent(layer.receive(_req("BYE", branch="oldstyle1"), 0.2)) == [bytes(ok)]


_REQUESTS = [_req("INVITE"), _req("ACK", cseq_method="ACK"), _req("OPTIONS"), _req("CANCEL"), _req("BYE", branch="x")]
_CLIENT = [_req("INVITE", branch="z9hG4bKc1"), _req("OPTIONS", branch="z9hG4bKc2")]
_RESPONSES = [_resp(r, s) for r in _CLIENT for s in (100, 200, 486)]
_OPS = st.one_of(
    st.tuples(
        st.just("receive"), st.sampled_from([*_REQUESTS, *(_resp(r, s) for r in _CLIENT for s in (100, 200, 486))])
    ),
    st.tuples(st.just("respond"), st.sampled_from([_resp(r, s) for r in _REQUESTS for s in (100, 180, 200, 486)])),
    st.tuples(st.just("send"), st.sampled_from(_CLIENT)),
    st.tuples(st.just("timers"), st.none()),
)


@settings(max_examples=300, deadline=None)
@given(st.booleans(), st.lists(st.tuples(_OPS, st.floats(0, 40)), max_size=30))
def test_random_layer_operations(reliable: bool, ops: list[tuple[tuple[str, object], float]]) -> None:
    """Any interleaving raises only TransactionError (TU misuse), terminated transactions are forgotten
    and deadlines never go backwards past `now`."""
    layer = TransactionLayer(reliable=reliable)
    now = 0.0
    for (op, arg), dt in ops:
        now += dt
        try:
            if op == "receive":
                assert isinstance(arg, SipRequest | SipResponse)
                out = layer.receive(arg, now)
            elif op == "respond":
                assert isinstance(arg, SipResponse)
                out = layer.respond(arg, now)
            elif op == "send":
                assert isinstance(arg, SipRequest)
                out = layer.send_request(arg, now)
            else:
                out = layer.on_timers(now)
        except TransactionError:
            assert op in ("respond", "send")
            continue
        for item in out:
            if isinstance(item.action, Terminated):
                assert item.key not in layer.transactions
        assert all(not tx.terminated for tx in layer.transactions.values())
        deadline = layer.next_deadline()
        assert deadline is None or deadline > now or op != "timers"


def test_sent_by_default_port_and_host_case() -> None:
    """§17.2.3 compares sent-by: a missing port is the transport's default (§18.2.1)."""
    explicit = _req("OPTIONS")
    implicit = SipRequest.parse(bytes(explicit).replace(b"192.0.2.1:5060", b"192.0.2.1"))
    assert server_key(explicit) == server_key(implicit)
    assert server_key(explicit) != server_key(_req("OPTIONS", port=5070))
