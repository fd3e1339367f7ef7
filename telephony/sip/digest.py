"""SIP digest authentication of inbound requests, server side (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760).

A request without credentials gets a 401 whose WWW-Authenticate lines (one per algorithm, SHA-256
first, RFC 8760 §2.4) carry a nonce; the client repeats the request with an Authorization header
holding `response = KD(H(A1), nonce:nc:cnonce:qop:H(A2))` (qop=auth) or `KD(H(A1), nonce:H(A2))`
(RFC 2069, no qop), where A1 = `username:realm:password` (for -sess: `H(that):nonce:cnonce`) and
A2 = `method:digest-uri`. `check()` recomputes it and says what to answer:

    OK         the credentials are right                              go on; `username` names the caller
    MISSING    no Authorization header                                401 + challenge()
    STALE      right password, but the nonce is too old               401 + challenge(stale=True) (§3.2.1)
    FAILED     wrong password or user, forged nonce, other realm/URI  401 + a fresh challenge; see `reason`
    MALFORMED  the Authorization header cannot be parsed              400

Nonces are stateless: base64url(timestamp || HMAC-SHA256(secret, realm || timestamp)). Nothing is stored,
so they survive a restart and any number of workers sharing the secret accept each other's. For that
`now` must be wall-clock time (time.time()), passed in; this module never reads a clock.

Replay: nonce-count reuse is NOT tracked (that needs a table per nonce, which stateless nonces avoid),
so a captured request can be replayed until its nonce expires (`nonce_ttl`); shorten it or use TLS
if that matters. Not supported: `userhash` and qop=auth-int (RFC 7616), Proxy-Authorization.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from telephony.sip.message import SipRequest, SipResponse, make_response
from telephony.sip.ua_types import AuthOutcome

# Algorithm name (upper case, RFC 7616 §3.3) -> hashlib name. Strongest first: the challenge order.
HASHES: dict[str, str] = {"SHA-256": "sha256", "SHA-256-SESS": "sha256", "MD5": "md5", "MD5-SESS": "md5"}
_CANONICAL = {"SHA-256": "SHA-256", "SHA-256-SESS": "SHA-256-sess", "MD5": "MD5", "MD5-SESS": "MD5-sess"}
_STAMP = struct.Struct("!d")
_TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
_SCHEME_RE = re.compile(rf"\s*({_TOKEN})(?:\s+|$)")
_PARAM_RE = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TOKEN}))\s*(?:,|$)", re.DOTALL)
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_UNESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_REQUIRED = ("username", "realm", "nonce", "uri", "response")

PasswordLookup = Callable[[str], str | None]


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """One account: `username` may call in with `password` in `realm`."""

    username: str
    password: str
    realm: str


Credentials = PasswordLookup | DigestCredentials | Iterable[DigestCredentials]


class AuthStatus(Enum):
    OK = "ok"
    MISSING = "missing"
    STALE = "stale"
    FAILED = "failed"
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True)
class AuthResult:
    status: AuthStatus
    reason: str = ""
    username: str | None = None  # set on OK (and on STALE/FAILED once the header named one)

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK

    @property
    def answer_status(self) -> int | None:
        """The SIP status to answer with: None on OK, 400 on MALFORMED, otherwise 401."""
        if self.status is AuthStatus.OK:
            return None
        return 400 if self.status is AuthStatus.MALFORMED else 401


def hash_hex(algorithm: str, text: str) -> str:
    """H(text) of RFC 7616 §3.4.1, lower-case hex; `algorithm` any case, with or without -sess."""
    return hashlib.new(HASHES[algorithm.upper()], _utf8(text), usedforsecurity=False).hexdigest()


def digest_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The request-digest of RFC 2617 §3.2.2.1 / RFC 7616 §3.4.1 for qop=auth or no qop (RFC 2069)."""
    ha1 = hash_hex(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = hash_hex(algorithm, f"{ha1}:{nonce}:{cnonce or ''}")
    ha2 = hash_hex(algorithm, f"{method}:{uri}")
    if qop is None:
        return hash_hex(algorithm, f"{ha1}:{nonce}:{ha2}")
    return hash_hex(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def parse_authorization(value: str) -> tuple[str, dict[str, str]] | None:
    """(scheme, {lower-cased name: unquoted value}), or None when unparseable (also for a repeated name).

    Quoted strings may hold commas and backslash escapes; empty list elements are skipped."""
    m = _SCHEME_RE.match(value)
    if not m:
        return None
    params: dict[str, str] = {}
    pos = _skip_gap(value, m.end())
    while pos < len(value):
        p = _PARAM_RE.match(value, pos)
        if not p:
            return None
        name = p[1].lower()
        if name in params:
            return None
        params[name] = _UNESCAPE_RE.sub(r"\1", p[2]) if p[2] is not None else p[3]
        pos = _skip_gap(value, p.end())
    return m[1], params


def _skip_gap(value: str, pos: int) -> int:  # past whitespace and empty list elements (RFC 9110 §5.6.1)
    return len(value) - len(value[pos:].lstrip(" \t,"))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(_utf8(a), _utf8(b))


def _lookup(credentials: Credentials, realm: str) -> PasswordLookup:
    if callable(credentials):
        return credentials
    accounts = [credentials] if isinstance(credentials, DigestCredentials) else list(credentials)
    table: Mapping[str, str] = {c.username: c.password for c in accounts if c.realm == realm}
    if len(table) != len(accounts):
        raise ValueError(f"credentials for another realm than {realm!r}, or a username given twice")
    return table.get


class DigestAuthenticator:
    """Challenges and checks digest credentials for one realm; holds no per-client state."""

    def __init__(
        self,
        realm: str,
        credentials: Credentials,
        secret: bytes,
        nonce_ttl: float = 300.0,
        algorithms: Iterable[str] = ("SHA-256", "MD5"),
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        if nonce_ttl <= 0:
            raise ValueError("nonce_ttl must be positive")
        chosen = tuple(dict.fromkeys(a.upper() for a in algorithms))
        unknown = set(chosen) - HASHES.keys()
        if unknown or not chosen:
            raise ValueError(f"unsupported digest algorithms: {sorted(unknown) or 'none given'}")
        self.realm = realm
        self.nonce_ttl = nonce_ttl
        # Challenges go out in this order (RFC 8760 §2.4: preference order); many clients read only the first.
        self.algorithms: tuple[str, ...] = chosen
        self._passwords = _lookup(credentials, realm)
        self._secret = secret
        self._opaque = _b64(hmac.new(secret, b"opaque\x00" + _utf8(realm), hashlib.sha256).digest()[:12])

    def _mac(self, stamp: bytes) -> bytes:
        return hmac.new(self._secret, b"nonce\x00" + _utf8(self.realm) + b"\x00" + stamp, hashlib.sha256).digest()

    def make_nonce(self, now: float) -> str:
        stamp = _STAMP.pack(now)
        return _b64(stamp + self._mac(stamp))

    def nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since this authenticator issued `nonce`; None when it did not (bad encoding or MAC)."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) != _STAMP.size + hashlib.sha256().digest_size:
            return None
        stamp, mac = raw[: _STAMP.size], raw[_STAMP.size :]
        if not hmac.compare_digest(mac, self._mac(stamp)):
            return None
        issued: float = _STAMP.unpack(stamp)[0]
        return now - issued

    def challenge(self, now: float, stale: bool = False) -> list[tuple[str, str]]:
        """WWW-Authenticate header lines for a 401, one per algorithm, strongest first."""
        nonce = self.make_nonce(now)
        tail = ", stale=true" if stale else ""
        return [
            (
                "WWW-Authenticate",
                f"Digest realm={_quote(self.realm)}, nonce={_quote(nonce)}, opaque={_quote(self._opaque)}, "
                f'algorithm={_CANONICAL[alg]}, qop="auth"{tail}',
            )
            for alg in self.algorithms
        ]

    def check(self, request: SipRequest, now: float) -> AuthResult:
        """Verify the request's Authorization header for this realm (see the module docstring)."""
        lines = request.headers.lines("Authorization")
        if not lines:
            return AuthResult(AuthStatus.MISSING, "no Authorization header")
        digests = [p for p in map(parse_authorization, lines) if p is not None and p[0].lower() == "digest"]
        if not digests:
            return AuthResult(AuthStatus.MALFORMED, "unparseable Authorization header")
        mine = [params for _, params in digests if params.get("realm") == self.realm]
        if not mine:
            if any("realm" not in params for _, params in digests):
                return AuthResult(AuthStatus.MALFORMED, "Authorization without realm")
            return AuthResult(AuthStatus.FAILED, "realm mismatch")
        return self._verify(mine[0], request, now)

    def _verify(self, params: dict[str, str], request: SipRequest, now: float) -> AuthResult:
        missing = [name for name in _REQUIRED if name not in params]
        if missing:
            return AuthResult(AuthStatus.MALFORMED, f"Authorization without {', '.join(missing)}")
        username = params["username"]
        algorithm = params.get("algorithm", "MD5").upper()
        qop, nc, cnonce = params.get("qop"), params.get("nc"), params.get("cnonce")
        if qop is not None and (nc is None or cnonce is None or not _NC_RE.fullmatch(nc)):
            return AuthResult(AuthStatus.MALFORMED, "qop without a valid nc and cnonce", username)
        if algorithm.endswith("-SESS") and cnonce is None:
            return AuthResult(AuthStatus.MALFORMED, "-sess algorithm without cnonce", username)
        if algorithm not in self.algorithms:
            return AuthResult(AuthStatus.FAILED, f"algorithm {algorithm[:32]!r} not offered", username)
        if qop is not None and qop.lower() != "auth":
            return AuthResult(AuthStatus.FAILED, f"qop {qop[:32]!r} not offered", username)
        if params["uri"] != str(request.uri):
            return AuthResult(AuthStatus.FAILED, "digest-uri does not match the Request-URI", username)
        if "opaque" in params and not _same(params["opaque"], self._opaque):
            return AuthResult(AuthStatus.FAILED, "opaque mismatch", username)
        age = self.nonce_age(params["nonce"], now)
        if age is None:
            return AuthResult(AuthStatus.FAILED, "nonce not issued here", username)
        password = self._passwords(username)
        if password is None:
            return AuthResult(AuthStatus.FAILED, "unknown user", username)
        uri, nonce, method = params["uri"], params["nonce"], request.method
        expected = digest_response(algorithm, username, self.realm, password, method, uri, nonce, qop, nc, cnonce)
        if not _same(params["response"].lower(), expected):
            return AuthResult(AuthStatus.FAILED, "wrong response (password)", username)
        if not 0.0 <= age <= self.nonce_ttl:  # a nonce "from the future" means the clock stepped back
            return AuthResult(AuthStatus.STALE, "nonce expired", username)
        return AuthResult(AuthStatus.OK, "", username)

    def verify(self, request: object, now: float) -> tuple[AuthOutcome, list[tuple[str, str]]]:
        """The user agent's `InviteAuth` view of `check()`: OK, 400, or a 401 with this challenge."""
        if not isinstance(request, SipRequest):
            return AuthOutcome.MALFORMED, []
        result = self.check(request, now)
        if result.ok:
            return AuthOutcome.OK, []
        if result.status is AuthStatus.MALFORMED:
            return AuthOutcome.MALFORMED, []
        return AuthOutcome.CHALLENGE, self.challenge(now, stale=result.status is AuthStatus.STALE)

    def response_for(
        self, request: SipRequest, result: AuthResult, now: float, to_tag: str | None = None
    ) -> SipResponse | None:
        """The 401 (with a challenge) or 400 to send for a failed `check()`; None when it passed."""
        status = result.answer_status
        if status is None:
            return None
        if status == 400:
            return make_response(request, 400, f"Bad Request ({result.reason})", to_tag)
        challenge = self.challenge(now, stale=result.status is AuthStatus.STALE)
        return make_response(request, 401, None, to_tag, challenge)
