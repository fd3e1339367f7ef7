"""Call admission (telephony.sip.admission): the source allowlist and the per-source INVITE token bucket.

Time is an injected `now`; nothing sleeps.
"""

from __future__ import annotations

import math
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.sip.admission import (
    LOOPBACK_ONLY,
    InviteRateLimiter,
    SourceAllowlist,
    parse_address,
    parse_allowlist,
)

# -- allowlist ------------------------------------------------------------------------------------


def test_loopback_only_default() -> None:
    allow = SourceAllowlist(LOOPBACK_ONLY)
    for host in ("127.0.0.1", "127.9.8.7", "::1", "[::1]", "::ffff:127.0.0.1", "[::ffff:127.0.0.1]"):
        assert allow.allows(host), host
    for host in ("128.0.0.1", "10.0.0.1", "::2", "2001:db8::1", "::ffff:10.0.0.1", "localhost", "", "not an ip"):
        assert not allow.allows(host), host
    assert not allow.allows_all


def test_cidrs_and_bare_addresses() -> None:
    allow = SourceAllowlist(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "fe80::1"])
    assert allow.allows("10.255.255.255") and allow.allows("10.0.0.0")
    assert not allow.allows("11.0.0.0")
    assert allow.allows("192.0.2.7") and not allow.allows("192.0.2.8")
    assert allow.allows("2001:db8:ffff::5") and allow.allows("2001:DB8::1") and not allow.allows("2001:db9::1")
    assert allow.allows("[2001:db8::1]") and allow.allows("fe80::1") and not allow.allows("fe80::2")
    assert allow.allows("fe80::1%eth0")  # a zone id does not change the address
    assert allow.allows("::ffff:10.1.2.3") and allow.allows("::FFFF:192.0.2.7")
    assert not allow.allows("::ffff:11.1.2.3")


def test_ipv4_mapped_network_entries_match_ipv4() -> None:
    allow = SourceAllowlist(["::ffff:10.0.0.0/104", "[2001:db8::]/48"])
    assert allow.allows("10.2.3.4") and allow.allows("::ffff:10.2.3.4") and not allow.allows("11.0.0.1")
    assert allow.allows("2001:db8:0:1::1") and not allow.allows("2001:db8:1::1")


@pytest.mark.parametrize("spec", ["any", " ANY ", "0.0.0.0/0, ::/0"])
def test_any_allows_all(spec: str) -> None:
    allow = parse_allowlist(spec)
    assert allow.allows_all
    for host in ("8.8.8.8", "2606:4700::1111", "::ffff:1.2.3.4", "127.0.0.1", "::"):
        assert allow.allows(host), host
    assert not allow.allows("example.com")  # still only addresses


def test_only_ipv4_any_does_not_allow_ipv6() -> None:
    allow = parse_allowlist("0.0.0.0/0")
    assert not allow.allows_all and allow.allows("203.0.113.9") and not allow.allows("2001:db8::1")
    assert allow.allows("::ffff:203.0.113.9")


def test_parse_allowlist() -> None:
    allow = parse_allowlist(" 10.0.0.0/8 ,192.0.2.1, ,2001:db8::/32,")
    assert [str(n) for n in allow.networks] == ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]
    assert parse_allowlist("127.0.0.1, 127.0.0.1").networks == parse_allowlist("127.0.0.1").networks


@pytest.mark.parametrize(
    "bad", ["10.0.0.0/33", "10.0.0.1/8", "300.1.1.1", "example.com", "2001:db8::/129", "10.0.0.0/-1", "anyone", "::g"]
)
def test_bad_entries_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match=f"bad allowlist entry '{bad}'"):
        parse_allowlist(f"127.0.0.1, {bad}, ::1")


@pytest.mark.parametrize("empty", ["", " ", ",", " , ,"])
def test_empty_allowlist_option_is_an_error(empty: str) -> None:
    with pytest.raises(ValueError, match="empty allowlist"):
        parse_allowlist(empty)


def test_parse_address() -> None:
    assert str(parse_address("[::ffff:192.0.2.1]")) == "192.0.2.1"
    assert parse_address("sip.example.com") is None
    assert parse_address("[::1") is None


# -- rate limiter ---------------------------------------------------------------------------------


def test_burst_then_refusal_then_refill() -> None:
    limiter = InviteRateLimiter(rate_per_second=2.0, burst=3)
    now = 100.0
    assert [limiter.admit("198.51.100.7", now) for _ in range(3)] == [None, None, None]
    wait = limiter.admit("198.51.100.7", now)
    assert wait == pytest.approx(0.5)
    assert wait is not None and math.ceil(wait) == 1  # Retry-After: 1
    assert limiter.admit("198.51.100.7", now + 0.25) == pytest.approx(0.25)  # refusals cost nothing
    assert limiter.admit("198.51.100.7", now + 0.5) is None
    assert limiter.admit("198.51.100.7", now + 0.5) is not None
    after_idle = [limiter.admit("198.51.100.7", now + 100) for _ in range(4)]
    assert after_idle[:3] == [None, None, None] and after_idle[3] is not None  # refilled, but capped at burst


def test_slow_rate_gives_long_retry_after() -> None:
    limiter = InviteRateLimiter(rate_per_second=0.25, burst=1)
    assert limiter.admit("192.0.2.1", 0.0) is None
    wait = limiter.admit("192.0.2.1", 1.0)
    assert wait is not None and math.ceil(wait) == 3  # 0.75 of a token missing at 0.25 per second


def test_sources_are_independent() -> None:
    limiter = InviteRateLimiter(rate_per_second=1.0, burst=1)
    assert limiter.admit("192.0.2.1", 0.0) is None
    assert limiter.admit("192.0.2.1", 0.0) is not None
    assert limiter.admit("192.0.2.2", 0.0) is None
    assert limiter.admit("2001:db8:1::1", 0.0) is None


def test_ipv6_shares_a_bucket_per_64_and_mapped_counts_as_ipv4() -> None:
    limiter = InviteRateLimiter(rate_per_second=1.0, burst=1)
    assert limiter.admit("2001:db8:0:1::1", 0.0) is None
    assert limiter.admit("[2001:db8:0:1:ffff::9]", 0.0) is not None
    assert limiter.admit("2001:db8:0:2::1", 0.0) is None
    assert limiter.admit("192.0.2.1", 0.0) is None
    assert limiter.admit("::ffff:192.0.2.1", 0.0) is not None
    per_address = InviteRateLimiter(rate_per_second=1.0, burst=1, ipv6_prefix=128)
    assert per_address.admit("2001:db8::1", 0.0) is None and per_address.admit("2001:db8::2", 0.0) is None


def test_clock_stepping_back_adds_no_tokens() -> None:
    limiter = InviteRateLimiter(rate_per_second=1.0, burst=1)
    assert limiter.admit("192.0.2.1", 10.0) is None
    assert limiter.admit("192.0.2.1", 5.0) is not None
    assert limiter.admit("192.0.2.1", 10.5) is not None
    assert limiter.admit("192.0.2.1", 11.0) is None


def test_memory_is_bounded_with_20k_sources() -> None:
    limiter = InviteRateLimiter(rate_per_second=1.0, burst=1, max_sources=1000)
    for i in range(20_000):
        assert limiter.admit(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", float(i) / 1000) is None
        assert len(limiter) <= 1000
    assert len(limiter) == 1000
    # The most recent sources are kept (and still limited); the oldest were evicted.
    assert limiter.admit("10.0.78.31", 20.0) is not None  # i = 19999
    assert limiter.admit("10.0.0.0", 20.0) is None


def test_recently_seen_sources_survive_eviction() -> None:
    limiter = InviteRateLimiter(rate_per_second=0.001, burst=1, max_sources=3)
    assert limiter.admit("192.0.2.1", 0.0) is None
    limiter.admit("192.0.2.2", 0.0)
    limiter.admit("192.0.2.1", 0.0)  # seen again: now the most recent
    limiter.admit("192.0.2.3", 0.0)
    limiter.admit("192.0.2.4", 0.0)  # evicts 192.0.2.2, the least recently seen
    assert limiter.admit("192.0.2.1", 0.0) is not None
    assert limiter.admit("192.0.2.2", 0.0) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"rate_per_second": 0.0}, {"rate_per_second": -1.0}, {"burst": 0}, {"max_sources": 0}, {"ipv6_prefix": 129}],
)
def test_bad_limiter_settings(kwargs: dict[str, float]) -> None:
    settings_: dict[str, float] = {"rate_per_second": 1.0, "burst": 1}
    settings_.update(kwargs)
    with pytest.raises(ValueError):
        InviteRateLimiter(**settings_)  # type: ignore[arg-type]


_HOSTS = st.sampled_from(["192.0.2.1", "192.0.2.2", "2001:db8::1", "::ffff:192.0.2.1", "2001:db8::2", "sip.example"])


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(min_value=0.01, max_value=50.0),
    burst=st.integers(min_value=1, max_value=10),
    events=st.lists(st.tuples(_HOSTS, st.floats(min_value=0.0, max_value=5.0)), max_size=200),
)
def test_admitted_never_exceeds_burst_plus_rate_times_elapsed(
    rate: float, burst: int, events: list[tuple[str, float]]
) -> None:
    limiter = InviteRateLimiter(rate_per_second=rate, burst=burst)
    now = 0.0
    first: dict[str, float] = {}
    admitted: defaultdict[str, int] = defaultdict(int)
    for host, step in events:
        now += step
        key = limiter.source_key(host)
        first.setdefault(key, now)
        wait = limiter.admit(host, now)
        if wait is None:
            admitted[key] += 1
        else:
            assert wait > 0
        assert admitted[key] <= burst + rate * (now - first[key]) + 1e-9
