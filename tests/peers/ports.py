"""Free loopback ports chosen by the OS.

The port is released before the peer binds it, so another process could take it in between; the window
is tiny and every caller retries nothing: a collision shows up as the peer failing to bind, loudly.
``free_port`` checks UDP and TCP together (SIP listens on both); ``free_rtp_port`` returns an even port
whose ``port + 1`` (RTCP) and ``port + 2`` (SIPp's second media port) are free as well.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["free_port", "free_rtp_port", "is_listening", "wait_listening"]

HOST = "127.0.0.1"


def _bindable(port: int, kinds: tuple[socket.SocketKind, ...], host: str) -> bool:
    socks: list[socket.socket] = []
    try:
        for kind in kinds:
            sock = socket.socket(socket.AF_INET, kind)
            socks.append(sock)
            sock.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        for sock in socks:
            sock.close()


def free_port(host: str = HOST, *, tcp: bool = True, span: int = 1) -> int:
    """A port free for UDP (and TCP unless ``tcp=False``) on ``host``, with the ``span - 1`` ports after
    it free as well (baresip listens for TLS on its SIP port + 1)."""
    kinds = (socket.SOCK_DGRAM, socket.SOCK_STREAM) if tcp else (socket.SOCK_DGRAM,)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port + span <= 65536 and all(_bindable(p, kinds, host) for p in range(port, port + span)):
            return port
    raise OSError(f"no run of {span} free ports found in 100 attempts")


def free_rtp_port(host: str = HOST, span: int = 4) -> int:
    """An even UDP port with ``span - 1`` free ports after it."""
    for _ in range(200):
        port = free_port(host, tcp=False)
        port -= port % 2
        if port >= 1024 and all(_bindable(p, (socket.SOCK_DGRAM,), host) for p in range(port, port + span)):
            return port
    raise OSError(f"no free run of {span} UDP ports found")


def is_listening(port: int, proto: str = "udp") -> bool:
    """Whether some socket is bound to ``port`` (any local address), read from /proc/net/<proto>."""
    needle = f":{port:04X}"
    try:
        lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(len(fields) > 1 and fields[1].endswith(needle) for fields in (line.split() for line in lines))


def wait_listening(port: int, *, proto: str = "udp", timeout: float = 5.0, alive: Callable[[], bool]) -> None:
    """Block until ``port`` is bound. A peer announces nothing when it is ready, so this polls the
    kernel's socket table every 20 ms; ``alive()`` false (the peer exited) or the timeout raise."""
    deadline = time.monotonic() + timeout
    while not is_listening(port, proto):
        if not alive():
            raise RuntimeError(f"peer exited before binding {proto} port {port}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing bound {proto} port {port} within {timeout} s")
        time.sleep(0.02)
