"""SIP digest authentication, server side (telephony.sip.digest).

The client half of every exchange is computed here, independently, with hashlib straight from the
RFC 2617 §3.2.2 / RFC 7616 §3.4.1 formulas; the module's own helpers are only used where a test is
about them (the RFC 2617 §3.5 worked example). Requests are parsed from real message bytes.
"""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.sip import SipRequest, SipResponse
from telephony.sip.digest import (
    AuthResult,
    AuthStatus,
    DigestAuthenticator,
    DigestCredentials,
    digest_response,
    parse_authorization,
)

REALM = "voice.example.com"
SECRET = b"0123456789abcdef-test-secret"
URI = "sip:agent@voice.example.com"
T0 = 1_700_000_000.0


def _invite(authorization: list[str] | None = None, uri: str = URI, method: str = "INVITE") -> SipRequest:
    head = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds",
        "Max-Forwards: 70",
        "To: <sip:agent@voice.example.com>",
        "From: Alice <sip:alice@example.org>;tag=1928301774",
        "Call-ID: a84b4c76e66710@pc33.example.org",
        f"CSeq: 314159 {method}",
        "Contact: <sip:alice@198.51.100.7>",
        *(f"Authorization: {line}" for line in authorization or []),
        "Content-Length: 0",
    ]
    return SipRequest.parse(("\r\n".join(head) + "\r\n\r\n").encode())


def _h(algorithm: str, text: str) -> str:
    name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm.upper().removesuffix("-SESS")]
    return hashlib.new(name, text.encode()).hexdigest()


def _client_answer(
    challenge: str,
    *,
    username: str = "alice",
    password: str = "s3cret pass",
    method: str = "INVITE",
    uri: str = URI,
    cnonce: str = "0a4f113b",
    nc: str = "00000001",
    use_qop: bool = True,
) -> str:
    """What a UAC sends back for one WWW-Authenticate value: written from the RFCs, not the module."""
    fields: dict[str, str] = {}
    for name, quoted, token in re.findall(r'(\w+)=(?:"([^"]*)"|([^,\s]+))', challenge):
        fields[name.lower()] = quoted or token
    algorithm, realm, nonce = fields["algorithm"], fields["realm"], fields["nonce"]
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if use_qop:
        response = _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        extra = f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        response = _h(algorithm, f"{ha1}:{nonce}:{ha2}")
        extra = ""
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm={algorithm}, opaque="{fields["opaque"]}"{extra}'
    )


def _auth(**kwargs: object) -> DigestAuthenticator:
    options: dict[str, object] = {"nonce_ttl": 300.0}
    options.update(kwargs)
    return DigestAuthenticator(
        REALM,
        [DigestCredentials("alice", "s3cret pass", REALM), DigestCredentials("bob", "hunter2", REALM)],
        SECRET,
        **options,  # type: ignore[arg-type]
    )


def _challenge_for(auth: DigestAuthenticator, algorithm: str, now: float = T0) -> str:
    lines = [value for _, value in auth.challenge(now) if f"algorithm={algorithm}," in value]
    assert len(lines) == 1
    return lines[0]


# -- the pure hash function -----------------------------------------------------------------------


def test_rfc2617_worked_example() -> None:
    assert (
        digest_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc7616_sha256_example() -> None:
    # RFC 7616 §3.9.1 (the erratum-corrected password "Circle of Life").
    assert (
        digest_response(
            algorithm="SHA-256",
            username="Mufasa",
            realm="http-auth@example.org",
            password="Circle of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop="auth",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


# -- challenges -----------------------------------------------------------------------------------


def test_challenge_lines_follow_the_configured_preference() -> None:
    lines = _auth(algorithms=("SHA-256", "MD5")).challenge(T0)
    assert [name for name, _ in lines] == ["WWW-Authenticate", "WWW-Authenticate"]
    assert "algorithm=SHA-256," in lines[0][1] and "algorithm=MD5," in lines[1][1]
    # Deployed equipment often reads only the first challenge and knows only MD5 (tests/test_sip_edge_peers.py).
    auth = _auth(algorithms=("MD5", "SHA-256"))
    lines = auth.challenge(T0)
    assert "algorithm=MD5," in lines[0][1] and "algorithm=SHA-256," in lines[1][1]
    for _, value in lines:
        assert value.startswith(f'Digest realm="{REALM}", nonce="')
        assert 'qop="auth"' in value and "opaque=" in value and "stale" not in value
    assert all(value.endswith(", stale=true") for _, value in auth.challenge(T0, stale=True))


def test_nonce_survives_a_restart_and_needs_no_table() -> None:
    challenge = _challenge_for(_auth(), "SHA-256")
    restarted = _auth()
    result = restarted.check(_invite([_client_answer(challenge)]), T0 + 10)
    assert result == AuthResult(AuthStatus.OK, "", "alice")


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5", "SHA-256-sess", "MD5-sess"])
@pytest.mark.parametrize("use_qop", [True, False])
def test_round_trip(algorithm: str, use_qop: bool) -> None:
    auth = _auth(algorithms=("SHA-256", "MD5", "SHA-256-sess", "MD5-sess"))
    request = _invite()
    missing = auth.check(request, T0)
    assert missing.status is AuthStatus.MISSING
    challenge_response = auth.response_for(request, missing, T0, to_tag="uas-1")
    assert isinstance(challenge_response, SipResponse) and challenge_response.status == 401
    assert challenge_response.to_tag == "uas-1"
    challenges = challenge_response.headers.lines("WWW-Authenticate")
    (challenge,) = [c for c in challenges if f"algorithm={algorithm}," in c]
    answer = _client_answer(challenge, use_qop=use_qop)
    if not use_qop and algorithm.endswith("-sess"):
        answer += ', cnonce="0a4f113b"'  # -sess needs a cnonce even without qop
    retry = _invite([answer])
    result = auth.check(retry, T0 + 2)
    assert result.ok and result.username == "alice", result
    assert result.answer_status is None and auth.response_for(retry, result, T0 + 2) is None


def test_md5_is_the_default_algorithm_when_absent() -> None:
    auth = _auth()
    answer = _client_answer(_challenge_for(auth, "MD5")).replace(", algorithm=MD5", "")
    assert auth.check(_invite([answer]), T0).ok


def test_algorithm_not_offered_fails() -> None:
    answer = _client_answer(_challenge_for(_auth(), "MD5"))
    result = _auth(algorithms=("SHA-256",)).check(_invite([answer]), T0)
    assert result.status is AuthStatus.FAILED and "algorithm" in result.reason


def test_other_methods_hash_their_own_method() -> None:
    auth = _auth()
    answer = _client_answer(_challenge_for(auth, "SHA-256"), method="OPTIONS")
    assert auth.check(_invite([answer], method="OPTIONS"), T0).ok
    assert auth.check(_invite([answer], method="INVITE"), T0).status is AuthStatus.FAILED


def test_case_insensitive_names_escapes_and_commas_in_quotes() -> None:
    user = 'we"ird, user'
    auth = DigestAuthenticator(REALM, lambda name: "pw" if name == user else None, SECRET)
    nonce_line = _challenge_for(auth, "SHA-256")
    nonce = re.findall(r'nonce="([^"]*)"', nonce_line)[0]
    ha1 = _h("SHA-256", f"{user}:{REALM}:pw")
    ha2 = _h("SHA-256", f"INVITE:{URI}")
    response = _h("SHA-256", f"{ha1}:{nonce}:0000000a:xyz:auth:{ha2}")
    header = (
        f'DIGEST UserName="we\\"ird, user" ,, REALM="{REALM}",Nonce="{nonce}", URI="{URI}", '
        f'Response="{response.upper()}", Algorithm=sha-256, QOP=auth, NC=0000000a, CNonce="xyz", future=thing'
    )
    assert auth.check(_invite([header]), T0).ok


def test_picks_the_credentials_for_our_realm() -> None:
    auth = _auth()
    other = 'Digest username="x", realm="elsewhere", nonce="n", uri="sip:x", response="00"'
    mine = _client_answer(_challenge_for(auth, "SHA-256"))
    assert auth.check(_invite([other, mine]), T0).ok
    assert auth.check(_invite([other]), T0).status is AuthStatus.FAILED


# -- failures -------------------------------------------------------------------------------------


def _status(auth: DigestAuthenticator, answer: str, now: float = T0, uri: str = URI) -> AuthResult:
    return auth.check(_invite([answer], uri=uri), now)


def test_wrong_password_and_unknown_user() -> None:
    auth = _auth()
    challenge = _challenge_for(auth, "SHA-256")
    wrong = _status(auth, _client_answer(challenge, password="guess"))
    assert wrong.status is AuthStatus.FAILED and wrong.username == "alice"
    unknown = _status(auth, _client_answer(challenge, username="mallory"))
    assert unknown.status is AuthStatus.FAILED and unknown.reason == "unknown user"
    response = auth.response_for(_invite(), wrong, T0)
    assert response is not None and response.status == 401
    assert all("stale" not in line for line in response.headers.lines("WWW-Authenticate"))


def test_expired_nonce_is_stale_only_with_the_right_password() -> None:
    auth = _auth(nonce_ttl=60.0)
    challenge = _challenge_for(auth, "SHA-256")
    assert _status(auth, _client_answer(challenge), T0 + 60).ok
    stale = _status(auth, _client_answer(challenge), T0 + 61)
    assert stale.status is AuthStatus.STALE
    assert _status(auth, _client_answer(challenge, password="guess"), T0 + 61).status is AuthStatus.FAILED
    assert _status(auth, _client_answer(challenge), T0 - 5).status is AuthStatus.STALE  # clock stepped back
    response = auth.response_for(_invite(), stale, T0 + 61)
    assert response is not None and response.status == 401
    assert all(line.endswith("stale=true") for line in response.headers.lines("WWW-Authenticate"))


def test_tampered_nonce_fails() -> None:
    auth = _auth()
    challenge = _challenge_for(auth, "SHA-256")
    nonce = re.findall(r'nonce="([^"]*)"', challenge)[0]
    flipped = [nonce[:i] + ("A" if nonce[i] != "A" else "B") + nonce[i + 1 :] for i in (0, 5, len(nonce) // 2, -3)]
    for forged in flipped:
        result = _status(auth, _client_answer(challenge.replace(nonce, forged)))
        assert result.status is AuthStatus.FAILED and result.reason == "nonce not issued here"
    for junk in ("", "dcd98b7102dd2f0e8b11d0f600bfb0c093", "!!!", "é"):
        assert _status(auth, _client_answer(challenge.replace(nonce, junk))).status is AuthStatus.FAILED
    other_secret = DigestAuthenticator(REALM, lambda _: "s3cret pass", b"another secret, 16+ bytes")
    assert _status(other_secret, _client_answer(challenge)).status is AuthStatus.FAILED


def test_uri_mismatch_fails() -> None:
    auth = _auth()
    answer = _client_answer(_challenge_for(auth, "SHA-256"), uri="sip:other@voice.example.com")
    result = _status(auth, answer)
    assert result.status is AuthStatus.FAILED and "Request-URI" in result.reason
    # Compared as given: the same URI spelled differently is a mismatch too.
    spelled = _client_answer(_challenge_for(auth, "SHA-256"), uri="sip:agent@VOICE.example.com")
    assert _status(auth, spelled).status is AuthStatus.FAILED
    assert _status(auth, spelled, uri="sip:agent@VOICE.example.com").ok


def test_realm_and_opaque_mismatch_fail() -> None:
    auth = _auth()
    challenge = _challenge_for(auth, "SHA-256")
    assert _status(auth, _client_answer(challenge.replace(REALM, "evil.example"))).status is AuthStatus.FAILED
    opaque = re.findall(r'opaque="([^"]*)"', challenge)[0]
    result = _status(auth, _client_answer(challenge.replace(opaque, "x" + opaque)))
    assert result.status is AuthStatus.FAILED and result.reason == "opaque mismatch"


@pytest.mark.parametrize(
    "header",
    [
        "Digest",
        "Basic YWxpY2U6cHc=",
        'Digest username="alice"',
        'Digest username="alice" realm="r"',
        'Digest username="alice, realm="r"',
        f'Digest username="a", username="b", realm="{REALM}", nonce="n", uri="{URI}", response="0"',
        f'Digest username="a", realm="{REALM}", nonce="n", uri="{URI}", response="0", qop=auth',
        f'Digest username="a", realm="{REALM}", nonce="n", uri="{URI}", response="0", qop=auth, nc=1, cnonce="c"',
    ],
)
def test_malformed_headers(header: str) -> None:
    auth = _auth()
    request = _invite([header])
    result = auth.check(request, T0)
    assert result.status is AuthStatus.MALFORMED, result
    response = auth.response_for(request, result, T0)
    assert response is not None and response.status == 400


def test_parse_authorization() -> None:
    assert parse_authorization('Digest a="x\\"y, z", B=tok,, c=""') == ("Digest", {"a": 'x"y, z', "b": "tok", "c": ""})
    assert parse_authorization("Digest a=b c=d") is None
    assert parse_authorization('Digest a="open') is None


def test_bad_configuration() -> None:
    with pytest.raises(ValueError, match="realm"):
        DigestAuthenticator(REALM, DigestCredentials("a", "b", "other"), SECRET)
    with pytest.raises(ValueError, match="secret"):
        DigestAuthenticator(REALM, DigestCredentials("a", "b", REALM), b"short")
    with pytest.raises(ValueError, match="algorithms"):
        DigestAuthenticator(REALM, DigestCredentials("a", "b", REALM), SECRET, algorithms=("SHA-1",))


_HEADER_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\r\n"), max_size=200
)
_PIECES = st.sampled_from(
    ["Digest ", "username=", '"alice"', "realm=", f'"{REALM}"', "nonce=", "uri=", f'"{URI}"', "response=",
     "qop=auth", "nc=00000001", 'cnonce="c"', "algorithm=SHA-256", ", ", ",", "=", '"', "\\", " ", "é"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.one_of(_HEADER_TEXT.map(str.strip), st.lists(_PIECES, max_size=30).map("".join)))
def test_random_headers_never_raise(header: str) -> None:
    auth = _auth()
    request = _invite([header.strip()]) if header.strip() else _invite()
    result = auth.check(request, T0)
    if header.strip():
        assert result.status in (AuthStatus.MALFORMED, AuthStatus.FAILED), result
    auth.response_for(request, result, T0)
