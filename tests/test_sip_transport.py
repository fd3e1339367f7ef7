"""The SIP transport's binding: UDP and TCP on one port."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from telephony.sip.transport import SipTransport


async def test_a_picked_port_taken_for_tcp_is_given_up_for_another(monkeypatch: pytest.MonkeyPatch) -> None:
    """Port 0: the OS picks a UDP port and TCP follows it, but another socket may hold that port for TCP (CI once
    lost a test to a PostgreSQL client's outgoing connection on it). The transport picks again."""
    real_start_server = asyncio.start_server
    squatters: list[socket.socket] = []
    tried: list[int] = []

    async def first_port_taken(*args: Any, **kwargs: Any) -> asyncio.Server:
        host, port = args[1], args[2]
        tried.append(port)
        if len(tried) == 1:  # really take the port for TCP, so the real bind below really fails
            squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            squatter.bind((host, port))
            squatter.listen()
            squatters.append(squatter)
        return await real_start_server(*args, **kwargs)

    monkeypatch.setattr(asyncio, "start_server", first_port_taken)
    transport = SipTransport("127.0.0.1", 0, lambda message, peer: None)
    try:
        await transport.start()
        assert len(tried) == 2 and transport.port == tried[1] != tried[0]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.connect(("127.0.0.1", transport.port))  # TCP listens on the port UDP holds
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(OSError):
            udp.bind(("127.0.0.1", transport.port))
    finally:
        await transport.close()
        for squatter in squatters:
            squatter.close()


async def test_a_configured_port_taken_for_tcp_is_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        transport = SipTransport("127.0.0.1", port, lambda message, peer: None)
        with pytest.raises(OSError):
            await transport.start()
