"""UDP and TCP on one SIP port (RFC 3261 §18): the only module of `telephony.sip` that touches sockets.

Thin by design: a datagram is handed up as bytes; a TCP stream is cut into messages by `StreamFramer`
and each message (or `Rejected` one) is handed up with the `Peer` it came from. `send(data, peer)`
writes a datagram, or onto the connection to that peer, opening one when there is none (a request we
originate towards a TCP peer that has not connected to us). A connection whose framing is lost gets the
error answer when one can be built, then is closed; keep-alive pings (CRLFCRLF) get a CRLF pong
(RFC 5626 §4.4.1). Nothing a peer sends can raise out of here: the callbacks are the UA's problem, and
an exception in one is logged and the message dropped so the other calls carry on.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Coroutine

from telephony.sip.errors import SipError
from telephony.sip.framing import Rejected, StreamFramer
from telephony.sip.message import SipRequest, SipResponse
from telephony.sip.salvage import error_response
from telephony.sip.ua_types import Peer

log = logging.getLogger(__name__)

Inbound = bytes | SipRequest | SipResponse | Rejected
OnMessage = Callable[[Inbound, Peer], None]
MAX_CONNECTIONS = 1024
READ_CHUNK = 65536


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: SipTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip(b"\r\n"):
            return  # a CRLF keep-alive datagram
        self.owner.deliver(data, Peer("UDP", _host(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable from a vanished peer
        log.debug("sip udp error: %s", exc)


_PICKS = 8  # ports the OS picks for UDP before giving up on one free for TCP too


class SipTransport:
    def __init__(self, host: str, port: int, on_message: OnMessage) -> None:
        self.host, self.port = host, port
        self.on_message = on_message
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._conns: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._connecting: dict[tuple[str, int], list[bytes]] = {}  # data waiting for a connection to open
        self._tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    async def start(self) -> None:
        """Bind UDP then TCP on the same port (port 0: the OS picks one for UDP and TCP follows it; when that
        port is taken for TCP, as by another program's outgoing connection, another is picked)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        requested = self.port
        for attempt in range(1, _PICKS + 1):
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, requested), family=family
            )
            self.port = int(self._udp.get_extra_info("sockname")[1])
            try:
                self._server = await asyncio.start_server(self._accepted, self.host, self.port, family=family)
                return
            except OSError:
                self._udp.close()
                if requested != 0 or attempt == _PICKS:
                    raise

    def deliver(self, item: Inbound, peer: Peer) -> None:
        try:
            self.on_message(item, peer)
        except Exception:  # a bug above must not take the listener (and every other call) down
            log.exception("sip: dropping a message from %s:%s that raised", peer.host, peer.port)

    def send(self, data: bytes, peer: Peer) -> None:
        if self.closed:
            return
        if peer.transport == "UDP":
            if self._udp is not None:
                self._udp.sendto(data, (peer.host, peer.port))
            return
        writer = self._conns.get((peer.host, peer.port))
        if writer is not None and not writer.is_closing():
            writer.write(data)
            return
        waiting = self._connecting.get((peer.host, peer.port))
        if waiting is not None:
            waiting.append(data)
            return
        self._connecting[(peer.host, peer.port)] = [data]
        self._spawn(self._connect_and_send(peer))

    async def close(self) -> None:
        self.closed = True
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for writer in list(self._conns.values()):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # --- TCP -----------------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._serve(reader, writer)

    async def _connect_and_send(self, peer: Peer) -> None:
        key = (peer.host, peer.port)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(peer.host, peer.port), 5.0)
        except (OSError, TimeoutError) as exc:
            log.warning("sip: cannot connect to %s:%s over TCP: %s", peer.host, peer.port, exc)
            return  # the transaction's timer reports the failure
        finally:
            waiting = self._connecting.pop(key, [])
        for data in waiting:
            writer.write(data)
        await self._serve(reader, writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        addr = writer.get_extra_info("peername")
        key = (_host(str(addr[0])), int(addr[1]))
        if len(self._conns) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._conns[key] = writer
        peer = Peer("TCP", *key)
        framer = StreamFramer()
        try:
            while not self.closed:
                chunk = await reader.read(READ_CHUNK)
                if not chunk:
                    break
                try:
                    items = framer.feed(chunk)
                except SipError as error:
                    items = []
                    self._fail_stream(framer, chunk, error, writer)
                for _ in range(framer.take_pings()):
                    writer.write(b"\r\n")
                for item in items:
                    self.deliver(item, peer)
                if framer.error is not None:
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            if self._conns.get(key) is writer:
                del self._conns[key]
            writer.close()

    def _fail_stream(self, framer: StreamFramer, chunk: bytes, error: SipError, writer: asyncio.StreamWriter) -> None:
        """Framing lost: answer the broken message if it is readable enough, then the loop closes."""
        reply = error_response(chunk, error)
        if reply is not None:
            writer.write(reply)
        framer.error = error


def _host(host: str) -> str:
    """An IPv4-mapped IPv6 source (::ffff:a.b.c.d on a dual-stack socket) as the IPv4 address."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host
