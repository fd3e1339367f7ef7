"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966) and name-addr / addr-spec values (§20.10).

Parsing keeps text as written (escapes stay escaped, case is kept) so `str(SipUri.parse(s)) == s`
for every URI this accepts; `user_unescaped` gives the decoded user part. URIs with any other scheme
are opaque strings: a message naming one still parses, and `parse_uri(..., strict=True)` raises
UnsupportedUriScheme (416) for the element that has to act on it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from urllib.parse import unquote

from telephony.sip.errors import SipParseError, UnsupportedUriScheme
from telephony.sip.headers import Params, format_params, get_param, parse_params, split_top_level

_ESC = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_USER_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})+")
_PASSWORD_RE = re.compile(rf"(?:[{_UNRESERVED}&=+$,]|{_ESC})*")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_PARAM_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})+")
_HNAME_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})+")
_HVALUE_RE = re.compile(rf"(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})*")
_TEL_RE = re.compile(r"[0-9A-Fa-f*#+\-.()pPwW]+")
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_OPAQUE_RE = re.compile(r"[^\s<>\"]+")
SCHEMES = ("sip", "sips", "tel")


def _check_host(host: str) -> None:
    if host.startswith("["):
        if not host.endswith("]"):
            raise SipParseError("bad IPv6 reference")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SipParseError("bad IPv6 reference") from None
    elif not _HOSTNAME_RE.fullmatch(host) or ".." in host:
        raise SipParseError("bad host")


def split_hostport(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            raise SipParseError("bad IPv6 reference")
        port_text = rest[1:] if rest else None
    else:
        host, colon, after = text.partition(":")
        port_text = after if colon else None
    _check_host(host)
    if port_text is None:
        return host, None
    if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        raise SipParseError("bad port")
    return host, int(port_text)


def _uri_params(text: str) -> Params:
    out: list[tuple[str, str | None]] = []
    for part in text.split(";")[1:] if text else []:
        name, eq, value = part.partition("=")
        if not _PARAM_RE.fullmatch(name) or (eq and not _PARAM_RE.fullmatch(value)):
            raise SipParseError("bad URI parameter")
        out.append((name, value if eq else None))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class SipUri:
    """`sip:user:password@host:port;params?headers`, or `tel:+number;params` (host empty)."""

    scheme: str
    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> SipUri:
        scheme, colon, rest = text.partition(":")
        if not colon or scheme.lower() not in SCHEMES:
            if colon and _SCHEME_RE.fullmatch(scheme):
                raise UnsupportedUriScheme(f"unsupported URI scheme {scheme[:32]!r}")
            raise SipParseError("bad URI")
        if scheme.lower() == "tel":
            number, _, ptext = rest.partition(";")
            if not _TEL_RE.fullmatch(number):
                raise SipParseError("bad tel URI")
            return cls(scheme, "", number, params=_uri_params(";" + ptext if ptext else ""))
        user: str | None = None
        password: str | None = None
        at = rest.find("@")
        if at >= 0:
            userinfo, rest = rest[:at], rest[at + 1 :]
            user, pcolon, ptext = userinfo.partition(":")
            if not _USER_RE.fullmatch(user):
                raise SipParseError("bad URI user")
            if pcolon:
                if not _PASSWORD_RE.fullmatch(ptext):
                    raise SipParseError("bad URI password")
                password = ptext
        rest, qmark, htext = rest.partition("?")
        headers: list[tuple[str, str]] = []
        if qmark:
            for pair in htext.split("&"):
                hname, eq, hvalue = pair.partition("=")
                if not eq or not _HNAME_RE.fullmatch(hname) or not _HVALUE_RE.fullmatch(hvalue):
                    raise SipParseError("bad URI header")
                headers.append((hname, hvalue))
        hostport, semi, ptext = rest.partition(";")
        host, port = split_hostport(hostport)
        return cls(scheme, host, user, password, port, _uri_params(semi + ptext), tuple(headers))

    def __str__(self) -> str:
        if self.scheme.lower() == "tel":
            return f"{self.scheme}:{self.user}{format_params(self.params)}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        out.append(format_params(self.params))
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers))
        return "".join(out)

    @property
    def secure(self) -> bool:
        return self.scheme.lower() == "sips"

    @property
    def user_unescaped(self) -> str | None:
        return None if self.user is None else unquote(self.user, errors="surrogateescape")

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def with_params(self, **params: str | None) -> SipUri:
        kept = tuple((k, v) for k, v in self.params if k.lower() not in {p.lower() for p in params})
        return replace(self, params=kept + tuple(params.items()))


Uri = SipUri | str  # str: an absoluteURI of a scheme we do not interpret (kept opaque)


def parse_uri(text: str, *, strict: bool = False) -> Uri:
    """A SipUri for sip/sips/tel; any other well-formed absoluteURI stays an opaque string."""
    scheme, colon, _ = text.partition(":")
    if colon and scheme.lower() not in SCHEMES and _SCHEME_RE.fullmatch(scheme):
        if strict:
            raise UnsupportedUriScheme(f"unsupported URI scheme {scheme[:32]!r}")
        if not _OPAQUE_RE.fullmatch(text) or text.endswith(":"):
            raise SipParseError("bad URI")
        return text
    return SipUri.parse(text)


def _unquote_display(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1], flags=re.DOTALL)


def _quote_display(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_DISPLAY_TOKENS_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*")


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route/Refer-To value: `"Display" <uri>;params` or bare `uri;params`.

    `display` is the decoded display name (None when absent); `quoted` says whether it is written as a
    quoted-string; `bracketed` whether the URI is in <...> (forced when needed to stay unambiguous).
    """

    uri: Uri
    display: str | None = None
    params: Params = ()
    quoted: bool = True
    bracketed: bool = True

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        text = value.strip()
        display: str | None = None
        quoted = True  # the flag only matters with a display name; token display names clear it
        if text.startswith('"'):
            end = _quoted_end(text)
            display, text = _unquote_display(text[: end + 1]), text[end + 1 :].lstrip()
            if not text.startswith("<"):
                raise SipParseError("display name without <URI>")
        elif not _starts_with_scheme(text):
            lt = text.find("<")
            if lt < 0:
                raise SipParseError("bad name-addr")
            token_part = text[:lt].strip()
            if token_part:
                if not _DISPLAY_TOKENS_RE.fullmatch(token_part):
                    raise SipParseError("bad display name")
                display, quoted = token_part, False
            text = text[lt:]
        if text.startswith("<"):
            gt = text.find(">")
            if gt < 0:
                raise SipParseError("unterminated '<'")
            uri_text, rest = text[1:gt], text[gt + 1 :]
            return cls(parse_uri(uri_text), display, parse_params(rest, "header"), quoted, True)
        uri_text, semi, rest = text.partition(";")
        if "?" in uri_text or "," in uri_text:
            raise SipParseError("addr-spec must be in <...>")
        return cls(parse_uri(uri_text.strip()), None, parse_params(semi + rest, "header"), quoted, False)

    def __str__(self) -> str:
        uri = str(self.uri)
        needs_brackets = self.bracketed or self.display is not None or any(c in uri for c in ";,?")
        out = f"<{uri}>" if needs_brackets else uri
        if self.display is not None:
            token = not self.quoted and _DISPLAY_TOKENS_RE.fullmatch(self.display)
            out = f"{self.display if token else _quote_display(self.display)} {out}"
        return out + format_params(self.params)

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def with_param(self, name: str, value: str | None) -> NameAddr:
        kept = tuple((k, v) for k, v in self.params if k.lower() != name.lower())
        return replace(self, params=(*kept, (name, value)))


def _starts_with_scheme(text: str) -> bool:
    m = re.match(r"[A-Za-z][A-Za-z0-9+\-.]*:", text)
    return bool(m) and "<" not in text[: m.end()] if m else False


def _quoted_end(text: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    raise SipParseError("unterminated quoted string")


def parse_name_addrs(value: str) -> list[NameAddr]:
    """A comma-separated list (Contact, Route, Record-Route) of name-addr values."""
    return [NameAddr.parse(part) for part in split_top_level(value, ",")]


_PHONE_RE = re.compile(r"\+?[0-9]{3,20}")


def refer_target(destination: str, domain: str | None) -> str:
    """The Refer-To URI for a transfer destination.

    A URI (`sip:`, `sips:`, `tel:`) is used as given. A phone number, as agents store them (E.164), becomes
    `sip:<number>@<domain>;user=phone` (RFC 3261 §19.1.6; `domain` is `host[:port]`) so that the trunk
    the call came from routes it, or `tel:<number>` when no domain is known. Anything else raises
    `SipParseError`.
    """
    text = destination.strip()
    if _starts_with_scheme(text):
        try:
            SipUri.parse(text)  # sip, sips or tel: what a transferee can call
        except UnsupportedUriScheme as exc:
            raise SipParseError(str(exc)) from None
        return text
    if not _PHONE_RE.fullmatch(text):
        raise SipParseError(f"not a transfer destination: {text[:40]!r}")
    if not domain:
        return f"tel:{text}"
    host, port = split_hostport(domain)
    return str(SipUri("sip", host, text, port=port, params=(("user", "phone"),)))
