"""Outbound HTTP to addresses a tenant names (knowledge URLs, webhook skills) without reaching inside.

A tenant-supplied URL must not make the server fetch its own loopback, the private network it sits on,
link-local addresses (169.254.169.254 is the cloud metadata service) or any other non-public range. The
check runs where the connection is made: `guarded_client()` returns an httpx client whose transport
resolves each host, refuses the connection unless *every* address is public, and connects to the address
it checked, so a DNS answer that changes between check and connect (rebinding) cannot slip through.
Redirects go through the same transport, so each hop is checked too.

Hosts an operator trusts are listed in FLOWYTE_FETCH_ALLOW_HOSTS (comma-separated host names or IP
literals); they are exempt, which is how tests reach their loopback server.

    BlockedAddress(ValueError)   the URL or one of its addresses is not allowed; the message says why
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

ALLOW_HOSTS_ENV = "FLOWYTE_FETCH_ALLOW_HOSTS"
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data"})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(ValueError):
    pass


def allow_hosts_from_env() -> frozenset[str]:
    return normalize_hosts(os.environ.get(ALLOW_HOSTS_ENV, "").split(","))


def normalize_hosts(hosts: Iterable[str]) -> frozenset[str]:
    return frozenset(h.strip().lower().strip("[]") for h in hosts if h.strip())


def is_public(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; raises BlockedAddress for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BlockedAddress("must be an http or https URL")
    if parts.username or parts.password:
        raise BlockedAddress("must not carry credentials")
    host = (parts.hostname or "").lower()
    if not host:
        raise BlockedAddress("has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise BlockedAddress("has an invalid port") from None
    return parts.scheme, host, port


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


async def vetted_address(host: str, port: int, allow_hosts: frozenset[str]) -> str:
    """The address to connect to for `host`: checked to be public unless the host is allow-listed."""
    name = host.lower().strip("[]")
    literal = literal_address(name)
    if name in allow_hosts:
        return str(literal) if literal is not None else name
    if name in METADATA_HOSTS or name.endswith((".internal", ".local", ".localhost")) or name == "localhost":
        raise BlockedAddress(f"{host} is an internal host name")
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            infos = await anyio.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise BlockedAddress(f"cannot resolve {host}: {error}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise BlockedAddress(f"cannot resolve {host}")
    blocked = [a for a in addresses if not is_public(a)]
    if blocked and literal is not None:
        raise BlockedAddress(f"{host} is a private or reserved address")
    if blocked:
        raise BlockedAddress(f"{host} resolves to a private or reserved address ({blocked[0]})")
    return str(addresses[0])


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, allow_hosts: frozenset[str]) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_hosts = allow_hosts

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await vetted_address(host, port, self._allow_hosts)
        # TLS still verifies the certificate against `host`: httpcore passes the origin's name as SNI.
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_client(
    allow_hosts: frozenset[str] | None = None, *, timeout: float = 15.0, max_redirects: int = 5
) -> httpx.AsyncClient:
    """An httpx client that only connects to public addresses (or allow-listed hosts); no proxies."""
    hosts = allow_hosts_from_env() if allow_hosts is None else allow_hosts
    transport = httpx.AsyncHTTPTransport(retries=0)
    pool: Any = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(), network_backend=_GuardedBackend(hosts), max_connections=10
    )
    transport._pool = pool  # httpx offers no public way to choose the network backend
    return httpx.AsyncClient(
        transport=transport,
        timeout=timeout,
        follow_redirects=True,
        max_redirects=max_redirects,
        trust_env=False,
        headers={"User-Agent": "FlowyteBot/1.0 (+knowledge ingestion)"},
    )
