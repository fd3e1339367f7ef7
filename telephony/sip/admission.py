"""Who may start a call: a source-address allowlist and a per-source INVITE rate limit. No I/O, no clock.

SourceAllowlist. A SIP port on the open internet is scanned within minutes, and every INVITE that
gets through costs a call: STT, LLM and TTS time. So the default is loopback only (`LOOPBACK_ONLY`):
an operator opens the port to their trunk provider's networks, or explicitly to "any" (then pair it
with digest authentication, telephony/sip/digest.py). Addresses are compared as addresses, never as
text, so `::ffff:127.0.0.1` (what a dual-stack socket reports for an IPv4 peer) matches 127.0.0.0/8.

InviteRateLimiter. Even an allowed or authenticated source can loop or flood. A token bucket per
source admits `burst` INVITEs at once and `rate_per_second` on average; a refused INVITE is answered
503 with `Retry-After: ceil(wait)` (RFC 3261 §21.5.4), which well-behaved peers honour. Buckets:

* IPv6 sources are keyed by their /64 (`ipv6_prefix`): one host owns a whole /64, so per-address
  buckets would cost an attacker nothing to sidestep. IPv4-mapped IPv6 addresses count as their IPv4.
* Memory is bounded: at most `max_sources` buckets, the least recently seen evicted first. An evicted
  source only regains a full burst, and a bucket idle for `burst / rate` seconds is full anyway.
* `now` is any non-decreasing clock in seconds (pass time.monotonic()); a step back counts as no time.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK_ONLY: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
ANY: tuple[str, ...] = ("0.0.0.0/0", "::/0")


def parse_address(host: str) -> Address | None:
    """An IP address from a transport or Via host (`[v6]` brackets and zone ids allowed); None otherwise.

    IPv4-mapped IPv6 addresses come back as the IPv4 address they carry.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _network(entry: str) -> Network:
    text = entry.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::]/32 or [::1]
        inner, _, rest = text[1:].partition("]")
        text = inner + rest
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"bad allowlist entry {entry!r}: {exc}") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped  # ::ffff:10.0.0.0/104 is 10.0.0.0/8
        if mapped is not None:
            return ipaddress.IPv4Network(f"{mapped}/{network.prefixlen - 96}")
    return network


class SourceAllowlist:
    """The networks INVITEs may come from; `"any"` (or 0.0.0.0/0 plus ::/0) allows every address."""

    __slots__ = ("_v4", "_v6", "networks")

    def __init__(self, networks: Iterable[str]) -> None:
        found: list[Network] = []
        for entry in networks:
            if entry.strip().lower() == "any":
                found.extend(_network(n) for n in ANY)
            else:
                found.append(_network(entry))
        self.networks: tuple[Network, ...] = tuple(dict.fromkeys(found))
        self._v4 = tuple(n for n in self.networks if isinstance(n, ipaddress.IPv4Network))
        self._v6 = tuple(n for n in self.networks if isinstance(n, ipaddress.IPv6Network))

    @property
    def allows_all(self) -> bool:
        return any(n.prefixlen == 0 for n in self._v4) and any(n.prefixlen == 0 for n in self._v6)

    def allows(self, host: str) -> bool:
        """Whether an INVITE from `host` (an IP address as text) may start a call; hostnames never do."""
        address = parse_address(host)
        if isinstance(address, ipaddress.IPv4Address):
            return any(address in n for n in self._v4)
        if isinstance(address, ipaddress.IPv6Address):
            return any(address in n for n in self._v6)
        return False

    def __repr__(self) -> str:
        return f"SourceAllowlist({[str(n) for n in self.networks]!r})"


def parse_allowlist(text: str) -> SourceAllowlist:
    """A comma-separated CLI option (`10.0.0.0/8, 2001:db8::/32, 192.0.2.7` or `any`).

    Raises ValueError naming the bad entry; an option with no entries at all is an error too, since
    an empty allowlist would silently refuse every call.
    """
    entries = [part.strip() for part in text.split(",") if part.strip()]
    if not entries:
        raise ValueError("empty allowlist: give networks, or 'any' to accept every source")
    return SourceAllowlist(entries)


class InviteRateLimiter:
    """A token bucket per source: `admit()` spends one token or says how long until one is there."""

    __slots__ = ("_buckets", "burst", "ipv6_prefix", "max_sources", "rate")

    def __init__(self, rate_per_second: float, burst: int, max_sources: int = 10000, ipv6_prefix: int = 64) -> None:
        if not rate_per_second > 0:
            raise ValueError("rate_per_second must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if max_sources < 1:
            raise ValueError("max_sources must be at least 1")
        if not 0 <= ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be 0..128")
        self.rate = float(rate_per_second)
        self.burst = burst
        self.max_sources = max_sources
        self.ipv6_prefix = ipv6_prefix
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last seen)

    def __len__(self) -> int:
        return len(self._buckets)

    def source_key(self, host: str) -> str:
        """The bucket a host draws from: its IPv4 address, its IPv6 /`ipv6_prefix`, or the host text."""
        address = parse_address(host)
        if isinstance(address, ipaddress.IPv6Address):
            bare = ipaddress.IPv6Address(int(address))  # drop any zone id
            return str(ipaddress.IPv6Network((bare, self.ipv6_prefix), strict=False))
        if address is not None:
            return str(address)
        return host.strip().lower()

    def admit(self, host: str, now: float) -> float | None:
        """None when the INVITE is admitted, else the seconds until a token will be available."""
        key = self.source_key(host)
        entry = self._buckets.pop(key, None)
        if entry is None:
            tokens, last = float(self.burst), now
        else:
            tokens, last = entry
            if now > last:
                tokens = min(float(self.burst), tokens + (now - last) * self.rate)
                last = now
        wait: float | None
        if tokens >= 1.0:
            tokens -= 1.0
            wait = None
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, last)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)
        return wait
