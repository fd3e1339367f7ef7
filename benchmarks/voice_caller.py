"""A scripted phone for benchmarks/voice_latency.py: one SIP call over UDP, paced μ-law RTP out, every RTP
packet in timestamped on arrival.

Signalling is the test phone's (tests/test_sip_ua_support.py `Phone`: INVITE with a PCMU/PCMA offer, ACK,
BYE), written to a UDP socket; a BYE or any other request from the edge is answered 200. Media uses the
product's own pieces: `telephony.codecs.g711` to encode and decode, `telephony.rtp.packet.RtpPacket` to
write and read packets.

Like a real phone the caller sends a packet every 20 ms for the whole call, from deadlines
(``start + n * 20 ms``): speech while `speak()` has frames queued, μ-law silence otherwise. `speak()`
returns when the last speech packet has left, with the `time.perf_counter()` instants of the first and
the last speech packets. Every RTP packet from the edge is kept as an `Arrival` (its perf_counter time
taken in the datagram callback, and whether it carries sound), so the benchmark can find when the
agent's audio started and stopped relative to what the caller sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from telephony.codecs.g711 import ulaw_decode, ulaw_encode
from telephony.errors import RtpError
from telephony.rtp.packet import RtpPacket
from telephony.sip.message import SipRequest, SipResponse, make_response, parse
from telephony.sip.ua_types import Peer
from tests.test_sip_ua_support import OFFER, Phone

HOST = "127.0.0.1"
FRAME = 160  # 20 ms at 8 kHz
PTIME = 0.020
SILENCE = bytes([0xFF]) * FRAME  # μ-law zero
SOUND_PEAK = 256  # a frame whose peak is above this (of 32767, about -42 dBFS) carries sound
PCMU = 0


def trim(pcm: NDArray[np.int16], floor: int = 300) -> NDArray[np.int16]:
    """``pcm`` cut to whole 20 ms frames from the first to the last frame with a sample above ``floor``:
    the first frame sent is the speech onset and the last one the last frame of speech."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > floor)
    if not len(loud):
        return pcm[:0]
    first, last = int(loud[0]) // FRAME, int(loud[-1]) // FRAME
    out = pcm[first * FRAME : (last + 1) * FRAME]
    return np.pad(out, (0, (-len(out)) % FRAME)).astype(np.int16)


@dataclass(frozen=True)
class Arrival:
    at: float  # time.perf_counter() in the datagram callback
    sound: bool  # the decoded frame's peak is above SOUND_PEAK


@dataclass(frozen=True)
class Spoken:
    first: float  # perf_counter when the first speech packet left
    last: float  # ... and the last


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, caller: Caller, kind: str) -> None:
        self.caller, self.kind = caller, kind

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self.kind == "rtp":
            self.caller.rtp_received(data, time.perf_counter())
        else:
            self.caller.sip_received(data)


@dataclass
class _Utterance:
    frames: deque[bytes]
    done: asyncio.Future[Spoken]
    first: float | None = None


@dataclass
class Caller:
    """One call from a UDP phone to ``edge_port``, dialing ``number`` with caller id ``caller_id``."""

    edge_port: int
    number: str
    caller_id: str
    arrivals: list[Arrival] = field(default_factory=list)
    bye_from_edge: bool = False

    def __post_init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._responses: asyncio.Queue[SipResponse] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._speech: deque[_Utterance] = deque()
        self._sip: asyncio.DatagramTransport | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._remote_rtp: tuple[str, int] | None = None
        self._pacer: asyncio.Task[None] | None = None
        self._ssrc = secrets.randbits(32)
        self.phone: Phone | None = None

    # --- signalling --------------------------------------------------------------------------------
    async def dial(self, within: float = 10.0) -> None:
        """INVITE, wait for the 200, ACK, and start sending RTP (silence until `speak`)."""
        sip_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sip_sock.bind((HOST, 0))
        rtp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp_sock.bind((HOST, 0))
        self._sip, _ = await self._loop.create_datagram_endpoint(lambda: _Datagrams(self, "sip"), sock=sip_sock)
        self._rtp, _ = await self._loop.create_datagram_endpoint(lambda: _Datagrams(self, "rtp"), sock=rtp_sock)
        rtp_port = rtp_sock.getsockname()[1]
        self.phone = Phone(call_id=f"bench-{secrets.token_hex(6)}@{HOST}", from_tag=secrets.token_hex(4),
                           peer=Peer("UDP", HOST, sip_sock.getsockname()[1]))  # fmt: skip
        offer = OFFER.replace(b"m=audio 40000", f"m=audio {rtp_port}".encode())
        self._send_sip(self.phone.request("INVITE", body=offer, content_type="application/sdp"))
        ok = await self._final("INVITE", within)
        if ok.status != 200:
            raise RuntimeError(f"call to {self.number} refused: {ok.status} {ok.reason}")
        self.phone.to_tag = ok.to_tag
        self._remote_rtp = _sdp_audio_address(ok.body)
        self._send_sip(self.phone.request("ACK"))
        self._pacer = asyncio.create_task(self._pace(), name=f"caller-rtp-{rtp_port}")

    async def hangup(self, within: float = 5.0) -> None:
        """BYE (unless the edge already hung up), then stop sending and close both sockets."""
        try:
            if self.phone is not None and not self.bye_from_edge:
                self._send_sip(self.phone.next("BYE"))
                await self._final("BYE", within)
        finally:
            if self._pacer is not None:
                self._pacer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._pacer
            for transport in (self._sip, self._rtp):
                if transport is not None:
                    transport.close()

    def _send_sip(self, data: bytes) -> None:
        assert self._sip is not None
        # The test phone dials +15550100 from +14155550123: put in this call's numbers.
        data = data.replace(b"+15550100", self.number.encode()).replace(b"+14155550123", self.caller_id.encode())
        self._sip.sendto(data, (HOST, self.edge_port))

    def sip_received(self, data: bytes) -> None:
        try:
            message = parse(data)
        except Exception:
            return
        if isinstance(message, SipResponse):
            if message.cseq[1] == "INVITE" and message.status == 200 and self.phone and self.phone.to_tag:
                self._send_sip(self.phone.request("ACK"))  # a retransmitted 200: ACK it again
            self._responses.put_nowait(message)
        elif isinstance(message, SipRequest) and message.method != "ACK":
            if message.method == "BYE":
                self.bye_from_edge = True
            assert self._sip is not None
            self._sip.sendto(bytes(make_response(message, 200)), (HOST, self.edge_port))

    async def _final(self, method: str, within: float) -> SipResponse:
        assert self.phone is not None
        async with asyncio.timeout(within):
            while True:
                response = await self._responses.get()
                if response.status >= 200 and response.cseq == (self.phone.cseq, method):
                    return response

    # --- media out ---------------------------------------------------------------------------------
    def speak(self, pcm: NDArray[np.int16]) -> asyncio.Future[Spoken]:
        """Queue 8 kHz speech (whole 20 ms frames, see `trim`); resolves when its last packet has left."""
        payload = ulaw_encode(pcm)
        frames = deque(payload[i : i + FRAME] for i in range(0, len(payload), FRAME))
        done: asyncio.Future[Spoken] = self._loop.create_future()
        self._speech.append(_Utterance(frames, done))
        return done

    async def _pace(self) -> None:
        assert self._rtp is not None and self._remote_rtp is not None
        start = self._loop.time()
        n = 0
        while True:
            deadline = start + n * PTIME
            now = self._loop.time()
            if now < deadline:
                await asyncio.sleep(deadline - now)
            utterance = self._speech[0] if self._speech else None
            payload = utterance.frames.popleft() if utterance is not None else SILENCE
            packet = RtpPacket(PCMU, n & 0xFFFF, (n * FRAME) & 0xFFFFFFFF, self._ssrc, n == 0, payload)
            self._rtp.sendto(bytes(packet), self._remote_rtp)
            sent = time.perf_counter()
            if utterance is not None:
                if utterance.first is None:
                    utterance.first = sent
                if not utterance.frames:
                    self._speech.popleft()
                    if not utterance.done.done():
                        utterance.done.set_result(Spoken(utterance.first, sent))
            n += 1

    # --- media in ----------------------------------------------------------------------------------
    def rtp_received(self, data: bytes, at: float) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            return
        if packet.payload_type != PCMU:
            return
        peak = int(np.max(np.abs(ulaw_decode(packet.payload).astype(np.int32)))) if packet.payload else 0
        self.arrivals.append(Arrival(at, peak > SOUND_PEAK))
        self._arrived.set()

    async def _next_arrival(self, until: float) -> bool:
        """Wait for the next RTP packet until perf_counter ``until``; False when none came."""
        self._arrived.clear()
        try:
            async with asyncio.timeout(max(0.0, until - time.perf_counter())):
                await self._arrived.wait()
            return True
        except TimeoutError:
            return False

    async def agent_sound(self, after: float, within: float) -> float | None:
        """When the first packet carrying sound arrived after ``after`` (perf_counter), or None."""
        until = time.perf_counter() + within
        seen = 0
        while True:
            for arrival in self.arrivals[seen:]:
                if arrival.at > after and arrival.sound:
                    return arrival.at
            seen = len(self.arrivals)
            if not await self._next_arrival(until):
                return None

    async def agent_quiet(self, gap: float, within: float) -> float | None:
        """Wait until no RTP packet has come for ``gap`` seconds; when the last one arrived (None: never quiet
        within ``within`` seconds, or nothing ever arrived)."""
        until = time.perf_counter() + within
        while time.perf_counter() < until:
            last = self.arrivals[-1].at if self.arrivals else None
            if last is None:
                if not await self._next_arrival(until):
                    return None
                continue
            if not await self._next_arrival(min(until, last + gap)) and time.perf_counter() >= last + gap:
                return last
        return None


def _sdp_audio_address(sdp: bytes) -> tuple[str, int]:
    """The connection address and audio port of an SDP answer."""
    host, port = HOST, 0
    for line in sdp.decode(errors="replace").splitlines():
        if line.startswith("c=IN IP4 "):
            host = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    if not port:
        raise RuntimeError("the answer has no audio stream")
    return host, port
