"""The user-agent core, driven with real message bytes and an injected clock (no sockets)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telephony.sip.message import SipRequest, SipResponse, parse
from telephony.sip.ua import UserAgent
from telephony.sip.ua_types import (
    AuthOutcome,
    CallConfirmed,
    CallEnded,
    DtmfRelay,
    IncomingCall,
    MediaOffer,
    Peer,
    TransferUpdate,
    Transmit,
)
from tests.test_sip_ua_support import OFFER, PHONE, Clock, Phone, new_ua, run_timers, split, statuses

ANSWER = b"v=0\r\no=flowyte 0 0 IN IP4 127.0.0.1\r\ns=flowyte\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


def established(ua: UserAgent, phone: Phone, clock: Clock, *, ack: bool = True) -> str:
    """INVITE -> answer -> (ACK); returns our To tag, which the phone now uses."""
    effects = ua.receive(phone.invite(), phone.peer, clock.now)
    incoming = [e for e in effects if isinstance(e, IncomingCall)]
    assert len(incoming) == 1
    sent, _ = split(ua.answer(phone.call_id, ANSWER, clock.now))
    ok = sent[0]
    assert isinstance(ok, SipResponse) and ok.status == 200
    phone.to_tag = ok.to_tag
    if ack:
        assert [type(e) for e in ua.receive(phone.request("ACK"), phone.peer, clock.now)] == [CallConfirmed]
    assert phone.to_tag is not None
    return phone.to_tag


def test_invite_is_tried_rung_and_answered_with_sdp_contact_and_tag() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    effects = ua.receive(phone.invite(), PHONE, clock.now)
    sent, events = split(effects)
    assert [m.status for m in sent if isinstance(m, SipResponse)] == [100]
    (incoming,) = events
    assert isinstance(incoming, IncomingCall)
    assert incoming.info.dialed == "+15550100"
    assert incoming.info.caller == "+14155550123"
    assert incoming.info.caller_name == "Ada Caller"
    assert incoming.offer == OFFER
    ringing = split(ua.ring(phone.call_id, clock.now))[0][0]
    assert isinstance(ringing, SipResponse) and ringing.status == 180 and ringing.to_tag
    ok = split(ua.answer(phone.call_id, ANSWER, clock.now))[0][0]
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert ok.to_tag == ringing.to_tag, "one dialog: the 180 and the 200 carry the same To tag"
    assert ok.body == ANSWER and ok.content_type == "application/sdp"
    assert ok.contacts[0].uri.host == "127.0.0.1"  # type: ignore[union-attr]
    assert "BYE" in ok.headers.get_all("Allow")


def test_2xx_is_retransmitted_with_backoff_until_the_ack() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock, ack=False)
    start = clock.now
    assert statuses(run_timers(ua, clock, start + 6.0)) == [200] * 3  # T1=0.5 doubling: at 0.5, 1.5 and 3.5 s
    assert statuses(run_timers(ua, clock, start + 8.0)) == [200]  # then capped at T2=4 s: 7.5 s
    ack = ua.receive(phone.request("ACK"), PHONE, clock.now)
    assert [type(e) for e in ack] == [CallConfirmed]
    assert statuses(run_timers(ua, clock, start + 60)) == [], "the ACK stops the retransmissions"


def test_no_ack_within_64_t1_ends_the_call_with_a_bye() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock, ack=False)
    effects = run_timers(ua, clock, clock.now + 33)
    sent, events = split(effects)
    byes = [m for m in sent if isinstance(m, SipRequest) and m.method == "BYE"]
    assert {m.branch for m in byes} == {byes[0].branch}, "one BYE (retransmitted by its transaction)"
    assert byes[0].to_tag == phone.from_tag
    assert CallEnded(phone.call_id, "no ACK") in events
    assert phone.call_id not in ua.calls


def test_invite_retransmission_does_not_start_a_second_call() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    invite = phone.invite(branch="z9hG4bK-same")
    ua.receive(invite, PHONE, clock.now)
    again = ua.receive(invite, PHONE, clock.now + 0.5)
    assert statuses(again) == [100] and not split(again)[1]
    ua.answer(phone.call_id, ANSWER, clock.now)
    after = ua.receive(invite, PHONE, clock.now + 1)
    assert not split(after)[1], "absorbed by the RFC 6026 Accepted state"


def test_cancel_before_answer_gives_200_and_487_and_ends_the_call() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    ua.receive(phone.invite(branch="z9hG4bK-inv"), PHONE, clock.now)
    effects = ua.receive(phone.request("CANCEL", branch="z9hG4bK-inv"), PHONE, clock.now)
    sent, events = split(effects)
    assert sorted((m.status, m.cseq[1]) for m in sent if isinstance(m, SipResponse)) == [
        (200, "CANCEL"),
        (487, "INVITE"),
    ]
    assert events == [CallEnded(phone.call_id, "cancelled")]
    ack = phone.request("ACK", branch="z9hG4bK-inv", to_tag=sent[-1].to_tag)
    assert ua.receive(ack, PHONE, clock.now) == [], "the ACK of the 487 is absorbed by its transaction"
    assert ua.answer(phone.call_id, ANSWER, clock.now) == [], "answering a cancelled call is a no-op"


def test_cancel_of_unknown_transaction_is_481() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    assert statuses(ua.receive(phone.request("CANCEL"), PHONE, clock.now)) == [481]


def test_bye_from_the_caller_ends_the_call_and_a_second_one_is_481() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock)
    effects = ua.receive(phone.next("BYE"), PHONE, clock.now)
    assert statuses(effects) == [200]
    assert split(effects)[1] == [CallEnded(phone.call_id, "remote hangup")]
    assert statuses(ua.receive(phone.next("BYE"), PHONE, clock.now)) == [481]
    assert ua.hangup(phone.call_id, clock.now) == [], "hanging up an ended call is a no-op"


def test_finished_calls_and_requests_leave_nothing_behind_once_their_timers_run_out() -> None:
    """A long-running edge answers calls for weeks: every table must empty (the ACK of each 2xx, with a branch no
    transaction owns, once left an entry for its sender per call)."""
    ua, clock = new_ua(), Clock()
    for n in range(3):
        caller_hangs_up = Phone(call_id=f"caller-bye-{n}@127.0.0.1")
        established(ua, caller_hangs_up, clock)
        assert statuses(ua.receive(caller_hangs_up.next("BYE"), PHONE, clock.now)) == [200]
        we_hang_up = Phone(call_id=f"our-bye-{n}@127.0.0.1")
        established(ua, we_hang_up, clock)
        (bye,) = split(ua.hangup(we_hang_up.call_id, clock.now))[0]
        assert isinstance(bye, SipRequest) and bye.method == "BYE"
        ua.receive(bytes(SipResponse(200, "OK", bye.headers.copy())), PHONE, clock.now)
        cancelled = Phone(call_id=f"cancelled-{n}@127.0.0.1")
        ua.receive(cancelled.invite(branch=f"z9hG4bK-cancelled-{n}"), PHONE, clock.now)
        sent = split(ua.receive(cancelled.request("CANCEL", branch=f"z9hG4bK-cancelled-{n}"), PHONE, clock.now))[0]
        ua.receive(cancelled.request("ACK", branch=f"z9hG4bK-cancelled-{n}", to_tag=sent[-1].to_tag), PHONE, clock.now)
        assert statuses(ua.receive(Phone(call_id=f"ping-{n}@127.0.0.1").request("OPTIONS"), PHONE, clock.now)) == [200]
    assert ua.held()["calls"] == 0
    run_timers(ua, clock, clock.now + 64 * ua.config.timers.t1 + 1)  # the longest: 64*T1 (Timers B, H, J, L)
    assert set(ua.held().values()) == {0}, ua.held()


def test_our_bye_follows_the_route_set_to_the_first_proxy() -> None:
    ua, clock = new_ua(), Clock()
    phone = Phone(record_route=["<sip:10.0.0.9:5080;lr>", "<sip:10.0.0.8;lr>"])
    tag = established(ua, phone, clock)
    effects = ua.hangup(phone.call_id, clock.now)
    (bye,) = [e for e in effects if isinstance(e, Transmit)]
    assert bye.peer == Peer("UDP", "10.0.0.9", 5080), "the next hop is the first Route"
    request = parse(bye.data)
    assert isinstance(request, SipRequest) and request.method == "BYE"
    assert str(request.uri) == "sip:caller@127.0.0.1:5070", "loose routing keeps the remote target as Request-URI"
    assert request.headers.get_all("Route") == ["<sip:10.0.0.9:5080;lr>", "<sip:10.0.0.8;lr>"]
    assert request.from_tag == tag and request.to_tag == phone.from_tag
    assert request.cseq == (2, "BYE")


def test_options_is_answered_with_what_we_allow_and_accept() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    (reply,) = split(ua.receive(phone.request("OPTIONS"), PHONE, clock.now))[0]
    assert isinstance(reply, SipResponse) and reply.status == 200
    assert "INVITE" in reply.headers.get_all("Allow") and reply.headers.get("Accept") == "application/sdp"


def test_unknown_methods_are_501_and_known_refused_ones_405_both_with_allow() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    for method, status in (("FROBNICATE", 501), ("REGISTER", 405), ("SUBSCRIBE", 405)):
        (reply,) = split(ua.receive(phone.request(method), PHONE, clock.now))[0]
        assert isinstance(reply, SipResponse) and reply.status == status
        assert "INVITE" in reply.headers.get_all("Allow")


def test_hold_reinvite_is_offered_up_answered_and_acked() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock)
    hold = OFFER.replace(b"a=sendrecv", b"a=sendonly")
    effects = ua.receive(phone.next("INVITE", body=hold, content_type="application/sdp"), PHONE, clock.now)
    assert statuses(effects) == [100]
    assert split(effects)[1] == [MediaOffer(phone.call_id, hold, "INVITE")]
    busy = ua.receive(phone.next("UPDATE", body=hold, content_type="application/sdp"), PHONE, clock.now)
    assert statuses(busy) == [491], "one offer/answer at a time"
    ok = split(ua.accept_offer(phone.call_id, ANSWER, clock.now))[0][0]
    assert isinstance(ok, SipResponse) and ok.status == 200 and ok.body == ANSWER
    assert statuses(run_timers(ua, clock, clock.now + 0.6)) == [200], "re-INVITE 2xx retransmitted until ACK"
    assert ua.receive(phone.request("ACK", cseq=phone.cseq - 1), PHONE, clock.now) == []
    assert phone.call_id in ua.calls


def test_update_with_sdp_is_offered_up_and_answered_200() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock)
    effects = ua.receive(phone.next("UPDATE", body=OFFER, content_type="application/sdp"), PHONE, clock.now)
    assert split(effects)[1] == [MediaOffer(phone.call_id, OFFER, "UPDATE")]
    assert statuses(ua.accept_offer(phone.call_id, ANSWER, clock.now)) == [200]


def test_info_dtmf_relay_becomes_a_digit() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock)
    body = b"Signal=5\r\nDuration=160\r\n"
    effects = ua.receive(phone.next("INFO", body=body, content_type="application/dtmf-relay"), PHONE, clock.now)
    assert statuses(effects) == [200] and split(effects)[1] == [DtmfRelay(phone.call_id, "5", 160)]
    star = ua.receive(phone.next("INFO", body=b"Signal=10\r\nDuration=100", content_type="application/dtmf-relay"),
                      PHONE, clock.now)  # fmt: skip
    assert split(star)[1] == [DtmfRelay(phone.call_id, "*", 100)]
    bad = ua.receive(phone.next("INFO", body=b"Signal=Z", content_type="application/dtmf-relay"), PHONE, clock.now)
    assert statuses(bad) == [400]
    other = ua.receive(phone.next("INFO", body=b"{}", content_type="application/json"), PHONE, clock.now)
    assert statuses(other) == [415]


def test_refer_reports_202_then_each_notify_until_the_final_one() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock)
    (refer_tx,) = [e for e in ua.refer(phone.call_id, "sip:+15550199@127.0.0.1:5099", clock.now)]
    assert isinstance(refer_tx, Transmit)
    refer = parse(refer_tx.data)
    assert isinstance(refer, SipRequest) and refer.method == "REFER"
    assert refer.headers.get("Refer-To") == "<sip:+15550199@127.0.0.1:5099>"
    assert refer.headers.get("Referred-By") == "<sip:+15550100@127.0.0.1>"
    accepted = SipResponse(202, "Accepted", refer.headers.copy())
    accepted.headers.replace("To", str(refer.to))
    events = split(ua.receive(bytes(accepted), PHONE, clock.now))[1]
    assert events == [TransferUpdate(phone.call_id, 202, final=False)]
    for frag, state, expected in (
        (b"SIP/2.0 100 Trying\r\n", "active;expires=60", TransferUpdate(phone.call_id, 100, final=False)),
        (b"SIP/2.0 200 OK\r\n", "terminated;reason=noresource", TransferUpdate(phone.call_id, 200, final=True)),
    ):
        notify = phone.next(
            "NOTIFY", body=frag, content_type="message/sipfrag",
            extra=f"Event: refer\r\nSubscription-State: {state}",
        )  # fmt: skip
        effects = ua.receive(notify, PHONE, clock.now)
        assert statuses(effects) == [200] and split(effects)[1] == [expected]


def refer_to(ua: UserAgent, call_id: str, target: str, now: float, domain: str | None = None) -> str | None:
    (refer_tx,) = ua.refer(call_id, target, now, domain=domain)
    assert isinstance(refer_tx, Transmit)
    refer = parse(refer_tx.data)
    assert isinstance(refer, SipRequest)
    return refer.headers.get("Refer-To")


def test_a_transfer_to_a_phone_number_goes_to_the_transfer_domain_or_the_callers() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock)
    # The caller's From is sip:+14155550123@127.0.0.1: with no domain configured, its trunk routes the number.
    assert refer_to(ua, phone.call_id, "+14155550199", clock.now) == "<sip:+14155550199@127.0.0.1;user=phone>"
    configured = refer_to(ua, phone.call_id, "+14155550199", clock.now, domain="trunk.example.com:5080")
    assert configured == "<sip:+14155550199@trunk.example.com:5080;user=phone>"
    assert refer_to(ua, phone.call_id, "tel:+14155550199", clock.now) == "<tel:+14155550199>"
    assert ua.refer(phone.call_id, "the manager", clock.now) == [TransferUpdate(phone.call_id, 484, True)]


def test_refer_that_is_never_answered_times_out_as_408() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock)
    ua.refer(phone.call_id, "sip:desk@127.0.0.1", clock.now)
    events = split(run_timers(ua, clock, clock.now + 40))[1]
    assert events == [TransferUpdate(phone.call_id, 408, final=True)]


def test_refer_before_the_call_is_up_fails_at_once() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    ua.receive(phone.invite(), PHONE, clock.now)
    assert ua.refer(phone.call_id, "sip:desk@127.0.0.1", clock.now) == [TransferUpdate(phone.call_id, 481, True)]


def test_in_dialog_request_with_wrong_tag_is_481_and_old_cseq_500() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock)
    assert statuses(ua.receive(phone.next("BYE", to_tag="not-ours"), PHONE, clock.now)) == [481]
    phone.cseq += 5
    ua.receive(phone.request("OPTIONS"), PHONE, clock.now)
    assert statuses(ua.receive(phone.request("INFO", cseq=2), PHONE, clock.now)) == [500]


class Deny:
    def allows(self, host: str) -> bool:
        return host == "10.1.1.1"


class OneCallPerSource:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    def admit(self, host: str, now: float) -> float | None:
        if host in self.seen:
            return 1.2
        self.seen.add(host)
        return None


class Challenge:
    def verify(self, request: object, now: float) -> tuple[AuthOutcome, list[tuple[str, str]]]:
        assert isinstance(request, SipRequest)
        if request.headers.get("Authorization") == 'Digest username="ok"':
            return AuthOutcome.OK, []
        return AuthOutcome.CHALLENGE, [("WWW-Authenticate", 'Digest realm="flowyte", nonce="n"')]


def test_admission_refusals_carry_the_right_status() -> None:
    clock = Clock()
    assert statuses(new_ua(allowlist=Deny()).receive(Phone().invite(), PHONE, clock.now))[-1] == 403
    limited = new_ua(rate_limit=OneCallPerSource())
    limited.receive(Phone(call_id="a").invite(), PHONE, clock.now)
    (refusal,) = [m for m in split(limited.receive(Phone(call_id="b").invite(), PHONE, clock.now))[0]
                  if isinstance(m, SipResponse) and m.status == 503]  # fmt: skip
    assert refusal.headers.get("Retry-After") == "2"
    full = new_ua(max_calls=1)
    full.receive(Phone(call_id="a").invite(), PHONE, clock.now)
    assert statuses(full.receive(Phone(call_id="b").invite(), PHONE, clock.now))[-1] == 503
    plain = new_ua()
    assert statuses(plain.receive(Phone(call_id="r").invite(extra="Require: 100rel"), PHONE, clock.now))[-1] == 420
    assert statuses(plain.receive(Phone(call_id="m").invite(extra="Max-Forwards: 0"), PHONE, clock.now))[-1] in (
        400, 483)  # fmt: skip
    text = Phone(call_id="t").request("INVITE", body=b"hello", content_type="text/plain")
    assert statuses(plain.receive(text, PHONE, clock.now))[-1] == 415


def test_digest_challenge_then_accepted_with_credentials() -> None:
    ua, clock = new_ua(auth=Challenge()), Clock()
    (challenge,) = [m for m in split(ua.receive(Phone().invite(), PHONE, clock.now))[0]
                    if isinstance(m, SipResponse) and m.status == 401]  # fmt: skip
    assert challenge.headers.get("WWW-Authenticate") == 'Digest realm="flowyte", nonce="n"'
    retry = Phone(call_id="call-2").invite(extra='Authorization: Digest username="ok"')
    assert any(isinstance(e, IncomingCall) for e in ua.receive(retry, PHONE, clock.now))


def test_offerless_invite_gets_our_offer_and_the_ack_carries_the_answer() -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    (incoming,) = split(ua.receive(phone.request("INVITE"), PHONE, clock.now))[1]
    assert isinstance(incoming, IncomingCall) and incoming.offer is None
    ok = split(ua.answer(phone.call_id, ANSWER, clock.now))[0][0]
    phone.to_tag = ok.to_tag
    ack = phone.request("ACK", body=OFFER, content_type="application/sdp")
    assert ua.receive(ack, PHONE, clock.now) == [CallConfirmed(phone.call_id, OFFER)]


def test_tcp_calls_do_not_retransmit_the_2xx_but_still_give_up_without_ack() -> None:
    tcp = Peer("TCP", "127.0.0.1", 5070)
    ua, phone, clock = new_ua(), Phone(peer=tcp), Clock()
    established(ua, phone, clock, ack=False)
    effects = run_timers(ua, clock, clock.now + 33)
    assert not [s for s in statuses(effects) if s == 200]
    assert CallEnded(phone.call_id, "no ACK") in split(effects)[1]
    assert all(e.peer == tcp for e in effects if isinstance(e, Transmit)), "BYE goes back on the connection"


def test_unparseable_request_gets_400_when_its_headers_can_be_read() -> None:
    ua, clock = new_ua(), Clock()
    bad = Phone().invite().replace(b"INVITE sip:+15550100@127.0.0.1:5060 SIP/2.0", b"INVITE sip:<bad> SIP/2.0")
    (reply,) = ua.receive(bad, PHONE, clock.now)
    assert isinstance(reply, Transmit) and reply.data.startswith(b"SIP/2.0 400 ")
    assert b"Call-ID: call-1@127.0.0.1" in reply.data
    assert ua.receive(b"\x00\xff garbage", PHONE, clock.now) == []
    assert ua.receive(b"SIP/2.0 200 OK\r\nVia: nonsense\r\n\r\n", PHONE, clock.now) == []


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_messages_never_raise_and_the_call_in_progress_carries_on(data: st.DataObject) -> None:
    ua, phone, clock = new_ua(), Phone(), Clock()
    established(ua, phone, clock)
    templates = [
        phone.invite(),
        phone.request("BYE"),
        phone.request("INFO", body=b"Signal=1", content_type="application/dtmf-relay"),
        phone.request("NOTIFY", body=b"SIP/2.0 200 OK", content_type="message/sipfrag", extra="Event: refer"),
    ]
    for _ in range(5):
        raw = bytearray(data.draw(st.sampled_from(templates)))
        for _ in range(data.draw(st.integers(1, 6))):
            i = data.draw(st.integers(0, len(raw) - 1))
            action = data.draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
            if action == "flip":
                raw[i] = data.draw(st.integers(0, 255))
            elif action == "delete":
                del raw[i]
            elif action == "insert":
                raw[i:i] = data.draw(
                    st.sampled_from([b"\r\n", b";", b":", b"<", b"\x00", b"\xff", b",", b"9999999999"])
                )
            else:
                del raw[i:]
            if not raw:
                raw = bytearray(b"x")
        for effect in ua.receive(bytes(raw), PHONE, clock.now):
            if isinstance(effect, Transmit) and not effect.data.startswith(b"SIP/2.0 400 "):
                parse(effect.data)  # what we send is valid SIP, but a 400 copies the broken headers as they came
        ua.on_timers(clock.now)
    if phone.call_id in ua.calls:  # a mutation may have been a well-formed BYE for this very call
        assert statuses(ua.receive(phone.next("BYE", cseq=10_000), PHONE, clock.now)) == [200]


def test_the_real_digest_authenticator_challenges_then_admits_a_correct_answer() -> None:
    import hashlib

    from telephony.sip.digest import DigestAuthenticator, DigestCredentials

    auth = DigestAuthenticator("flowyte", DigestCredentials("trunk", "s3cret", "flowyte"), b"k" * 32)
    ua, clock = new_ua(auth=auth), Clock()
    (challenge,) = [m for m in split(ua.receive(Phone().invite(), PHONE, clock.now))[0]
                    if isinstance(m, SipResponse) and m.status == 401]  # fmt: skip
    header = next(v for v in challenge.headers.get_all("WWW-Authenticate") if "MD5" in v)
    nonce = header.split('nonce="', 1)[1].split('"', 1)[0]
    uri = "sip:+15550100@127.0.0.1:5060"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    answer = md5(f"{md5('trunk:flowyte:s3cret')}:{nonce}:{md5('INVITE:' + uri)}")
    creds = (
        f'Authorization: Digest username="trunk", realm="flowyte", nonce="{nonce}", uri="{uri}", response="{answer}"'
    )
    retry = Phone(call_id="call-2").invite(extra=creds)
    assert any(isinstance(e, IncomingCall) for e in ua.receive(retry, PHONE, clock.now))
    wrong = Phone(call_id="call-3").invite(extra=creds.replace(answer, "0" * 32))
    assert 401 in statuses(ua.receive(wrong, PHONE, clock.now))
