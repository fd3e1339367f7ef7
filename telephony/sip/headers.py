"""SIP header fields as data (RFC 3261 §7.3, §20), and the ordered, case-insensitive `Headers`.

`HEADERS` is the table, declared once: canonical name, compact form (§7.3.3 and the RFCs that
registered one), whether comma-joined values may be split into separate values (§7.3.1: only for
fields whose grammar is a comma-separated list; never for WWW-Authenticate, Authorization and the
other challenge/credential fields, nor for Date-like fields whose values contain commas), and whether
the field may occur at most once (a second line is a 400, RFC 4475 §3.1.2.19).

`Headers` keeps every field line exactly as received (name as written, value with surrounding
whitespace removed and folding already undone) so serialization reproduces the input. Lookups are
case-insensitive and accept either the full or the compact name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from telephony.sip.errors import SipParseError


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    name: str
    compact: str | None = None
    split: bool = False  # comma-joined values are a list and may be split
    single: bool = False  # at most one field line


HEADERS: tuple[HeaderSpec, ...] = (
    HeaderSpec("Accept", split=True),
    HeaderSpec("Accept-Encoding", split=True),
    HeaderSpec("Accept-Language", split=True),
    HeaderSpec("Alert-Info", split=True),
    HeaderSpec("Allow", split=True),
    HeaderSpec("Allow-Events", "u", split=True),
    HeaderSpec("Authentication-Info"),
    HeaderSpec("Authorization"),
    HeaderSpec("Call-ID", "i", single=True),
    HeaderSpec("Call-Info", split=True),
    HeaderSpec("Contact", "m", split=True),
    HeaderSpec("Content-Disposition", single=True),
    HeaderSpec("Content-Encoding", "e", split=True),
    HeaderSpec("Content-Language", split=True),
    HeaderSpec("Content-Length", "l", single=True),
    HeaderSpec("Content-Type", "c", single=True),
    HeaderSpec("CSeq", single=True),
    HeaderSpec("Date", single=True),
    HeaderSpec("Error-Info", split=True),
    HeaderSpec("Event", "o", single=True),
    HeaderSpec("Expires", single=True),
    HeaderSpec("From", "f", single=True),
    HeaderSpec("In-Reply-To", split=True),
    HeaderSpec("Max-Forwards", single=True),
    HeaderSpec("MIME-Version", single=True),
    HeaderSpec("Min-Expires", single=True),
    HeaderSpec("Min-SE", single=True),
    HeaderSpec("Organization", single=True),
    HeaderSpec("Path", split=True),
    HeaderSpec("Priority", single=True),
    HeaderSpec("Proxy-Authenticate"),
    HeaderSpec("Proxy-Authorization"),
    HeaderSpec("Proxy-Require", split=True),
    HeaderSpec("RAck", single=True),
    HeaderSpec("Reason", split=True),
    HeaderSpec("Record-Route", split=True),
    HeaderSpec("Refer-To", "r", single=True),
    HeaderSpec("Referred-By", "b", single=True),
    HeaderSpec("Reply-To", single=True),
    HeaderSpec("Require", split=True),
    HeaderSpec("Retry-After", single=True),
    HeaderSpec("Route", split=True),
    HeaderSpec("RSeq", single=True),
    HeaderSpec("Server", single=True),
    HeaderSpec("Service-Route", split=True),
    HeaderSpec("Session-Expires", "x", single=True),
    HeaderSpec("Subject", "s", single=True),
    HeaderSpec("Subscription-State", single=True),
    HeaderSpec("Supported", "k", split=True),
    HeaderSpec("Timestamp", single=True),
    HeaderSpec("To", "t", single=True),
    HeaderSpec("Unsupported", split=True),
    HeaderSpec("User-Agent", single=True),
    HeaderSpec("Via", "v", split=True),
    HeaderSpec("Warning", split=True),
    HeaderSpec("WWW-Authenticate"),
)

_BY_KEY: dict[str, HeaderSpec] = {}
for _spec in HEADERS:
    _BY_KEY[_spec.name.lower()] = _spec
    if _spec.compact:
        _BY_KEY[_spec.compact] = _spec

TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def spec(name: str) -> HeaderSpec | None:
    """The table row for a full or compact name, any case; None for an unknown header."""
    return _BY_KEY.get(name.lower())


def canonical(name: str) -> str:
    """The canonical spelling of a known header (compact forms expanded); unknown names unchanged."""
    found = spec(name)
    return found.name if found else name


@functools.lru_cache(maxsize=1024)
def _key(name: str) -> str:
    """The comparison key of a header name (compact forms folded into full names). Cached: the same few
    dozen names recur in every message, and parsing looks each up many times (bounded, so a flood of
    made-up names only evicts)."""
    found = spec(name)
    return found.name.lower() if found else name.lower()


def split_top_level(value: str, sep: str) -> list[str]:
    """Split on `sep` outside quoted strings (with backslash escapes) and <...>; parts are stripped.

    Raises SipParseError on an unterminated quoted string or unbalanced angle brackets.
    """
    if '"' not in value and "<" not in value and ">" not in value:  # the common case: nothing to skip over
        return [part.strip() for part in value.split(sep)]
    parts: list[str] = []
    start = 0
    quoted = False
    angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            if angle:
                raise SipParseError("nested '<'")
            angle = True
        elif ch == ">":
            if not angle:
                raise SipParseError("unbalanced '>'")
            angle = False
        elif ch == sep and not angle:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    if quoted:
        raise SipParseError("unterminated quoted string")
    if angle:
        raise SipParseError("unterminated '<'")
    parts.append(value[start:].strip())
    return parts


Params = tuple[tuple[str, str | None], ...]


def parse_params(text: str, what: str) -> Params:
    """`;name[=value]` pairs (RFC 3261 generic-param), tolerating LWS around ';' and '='.

    `text` starts at the first ';' (or is empty). Names keep their case; values keep quotes.
    """
    text = text.strip()
    if not text:
        return ()
    if not text.startswith(";"):
        raise SipParseError(f"bad {what} parameters")
    out: list[tuple[str, str | None]] = []
    for part in split_top_level(text[1:], ";"):
        name, eq, value = part.partition("=")
        name = name.strip()
        if not TOKEN_RE.fullmatch(name):
            raise SipParseError(f"bad {what} parameter")
        if eq:
            value = value.strip()
            if not value or not (TOKEN_RE.fullmatch(value) or _is_quoted(value) or _HOSTISH.fullmatch(value)):
                raise SipParseError(f"bad {what} parameter value")
            out.append((name, value))
        else:
            out.append((name, None))
    return tuple(out)


_HOSTISH = re.compile(r"\[[0-9A-Fa-f:.]+\]")  # an IPv6 reference as a param value (received=[::1])


def _is_quoted(value: str) -> bool:
    return len(value) >= 2 and value[0] == '"' and value[-1] == '"' and split_top_level(value, ";") == [value]


def format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def get_param(params: Params, name: str) -> str | None:
    """The value of a parameter (case-insensitive name); '' for a flag, None when absent."""
    lowered = name.lower()
    for k, v in params:
        if k.lower() == lowered:
            return "" if v is None else v
    return None


class Headers:
    """Ordered, case-insensitive multi-dict of header field lines.

    `items()` are the field lines as stored. `get_all()` yields values, splitting comma-joined lines
    for list-valued headers, so `Via: a, b` and two `Via:` lines read the same.
    """

    __slots__ = ("_items", "_keys")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(n, v) for n, v in items]
        self._keys: list[str] = [_key(n) for n, _ in self._items]  # kept in step with _items

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _key(name) in self._keys

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __hash__(self) -> int:
        raise TypeError("Headers is mutable")

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def copy(self) -> Headers:
        return Headers(self._items)

    def count(self, name: str) -> int:
        """How many field lines carry this header (compact and full names alike)."""
        return self._keys.count(_key(name))

    def lines(self, name: str) -> list[str]:
        """The raw value of each field line with this name, unsplit."""
        key = _key(name)
        return [item[1] for k, item in zip(self._keys, self._items, strict=True) if k == key]

    def get_all(self, name: str) -> list[str]:
        found = spec(name)
        values = self.lines(name)
        if not (found and found.split):
            return values
        return [part for value in values for part in split_top_level(value, ",") if part]

    def get(self, name: str, default: str | None = None) -> str | None:
        values = self.get_all(name)
        return values[0] if values else default

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))
        self._keys.append(_key(name))

    def replace(self, name: str, value: str) -> None:
        """Set a single line: replaces the first line in place (keeping its spelling), drops the rest."""
        key = _key(name)
        out: list[tuple[str, str]] = []
        done = False
        for n, v in self._items:
            if _key(n) != key:
                out.append((n, v))
            elif not done:
                out.append((n, value))
                done = True
        if not done:
            out.append((name, value))
        self._items = out
        self._keys = [_key(n) for n, _ in out]

    def remove(self, name: str) -> int:
        key = _key(name)
        before = len(self._items)
        self._items = [(n, v) for n, v in self._items if _key(n) != key]
        self._keys = [_key(n) for n, _ in self._items]
        return before - len(self._items)


_VIA_RE = re.compile(
    r"SIP\s*/\s*2\.0\s*/\s*(?P<transport>[A-Za-z0-9\-.!%*_+`'~]+)\s+"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:\s*:\s*(?P<port>\d{1,5}))?\s*(?P<params>;.*)?",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (RFC 3261 §20.42): `SIP/2.0/UDP host:port;branch=z9hG4bK...;rport;received=...`."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @classmethod
    def parse(cls, value: str) -> Via:
        m = _VIA_RE.fullmatch(value.strip())
        if not m:
            raise SipParseError("bad Via")
        port = int(m["port"]) if m["port"] else None
        if port is not None and port > 65535:
            raise SipParseError("bad Via port")
        return cls(m["transport"].upper(), m["host"], port, parse_params(m["params"] or "", "Via"))

    def __str__(self) -> str:
        hostport = self.host if self.port is None else f"{self.host}:{self.port}"
        return f"SIP/2.0/{self.transport} {hostport}{format_params(self.params)}"

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def received(self) -> str | None:
        return self.param("received")

    @property
    def rport(self) -> int | None:
        """The rport value filled in by a server (RFC 3581); None when absent or still a bare flag."""
        value = self.param("rport")
        return int(value) if value and value.isdigit() else None

    @property
    def wants_rport(self) -> bool:
        return self.param("rport") is not None
