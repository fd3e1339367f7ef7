"""RTP port allocation (sans-I/O pool) and binding of the RTP/RTCP socket pair.

RFC 3550 §11: RTP uses an even port and RTCP the next odd one. ``PortPool(start, end)`` hands out the
even ports of ``[start, end)`` round-robin (so a just-released port is the last to be reused, which keeps
stragglers of the previous call out of the next one), never twice while in use, and raises
``PortsExhausted`` when none is free; the SIP layer answers that INVITE with ``status`` (503).

``bind_pair(pool, host)`` is the only I/O here: it binds UDP sockets on ``port`` and ``port + 1``,
skipping (and releasing) ports that another process already holds.
"""

from __future__ import annotations

import errno
import socket
from collections import deque

from telephony.errors import TelephonyError

__all__ = ["PortPool", "PortsExhausted", "bind_pair"]


class PortsExhausted(TelephonyError):
    """No free RTP port in the pool: answer the INVITE with 503 Service Unavailable."""

    def __init__(self, message: str, status: int = 503) -> None:
        super().__init__(message)
        self.status = status


class PortPool:
    def __init__(self, start: int, end: int) -> None:
        first = start + (start % 2)  # round up to even
        if not 0 < first < end <= 65536:
            raise ValueError(f"bad RTP port range [{start}, {end})")
        # a port is usable only when its RTCP companion (port + 1) is inside the range too
        self._free: deque[int] = deque(p for p in range(first, end, 2) if p + 1 < end)
        if not self._free:
            raise ValueError(f"RTP port range [{start}, {end}) holds no even/odd pair")
        self._in_use: set[int] = set()
        self.capacity = len(self._free)

    def allocate(self) -> int:
        if not self._free:
            raise PortsExhausted(f"all {self.capacity} RTP ports are in use")
        port = self._free.popleft()
        self._in_use.add(port)
        return port

    def release(self, port: int) -> None:
        """Return ``port`` to the pool; releasing a port not in use is a no-op (idempotent hang-up)."""
        if port in self._in_use:
            self._in_use.remove(port)
            self._free.append(port)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def available(self) -> int:
        return len(self._free)


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_pair(pool: PortPool, host: str = "0.0.0.0") -> tuple[int, socket.socket, socket.socket]:
    """Allocate a port and bind (rtp, rtcp) UDP sockets on it; ports taken by other processes are
    skipped. Raises ``PortsExhausted`` when every free port in the pool is taken."""
    busy: list[int] = []
    try:
        for _ in range(pool.available):
            port = pool.allocate()
            try:
                rtp = _bind(host, port)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    pool.release(port)
                    raise
                busy.append(port)
                continue
            try:
                rtcp = _bind(host, port + 1)
            except OSError as exc:
                rtp.close()
                if exc.errno != errno.EADDRINUSE:
                    pool.release(port)
                    raise
                busy.append(port)
                continue
            return port, rtp, rtcp
        raise PortsExhausted(f"no bindable RTP port pair among {pool.capacity} ports")
    finally:
        for port in busy:  # back to the pool (at the end of the rotation): the other process may leave
            pool.release(port)
