"""One RTP session over UDP: the asyncio shell over the sans-I/O RTP pieces.

The work is done by two synchronous helpers that take bytes and ``now`` and never touch a socket or a
clock, and ``RtpEndpoint`` only carries their results out:

* ``MediaReceiver`` - every datagram on the RTP port: ``classify`` (RTCP and non-RTP on the RTP port are
  dropped), ``RtpPacket.parse`` (malformed → counted, never raised), symmetric RTP latching, then by payload
  type: the negotiated telephone-event PT → ``DtmfReceiver`` → digits; the audio PT → ``JitterBuffer``;
  comfort noise (PT 13) and any other PT (SIPp sends PT 97 filler) → counted and ignored.
* ``MediaSender`` - a bounded outbound buffer of 20 ms frames (full → the oldest is dropped), RFC 4733
  events, and the RTP header arithmetic: one sequence number per packet sent, the timestamp derived from
  the pacing tick index (so it advances with wall time across silence), the marker bit on the first packet
  of each talkspurt (RFC 3551 §4.1) and of each telephone event.

Symmetric RTP (RFC 4961; the "latching" of NAT traversal practice): the remote address from SDP is only
where we start sending. The source address of the first valid packet (it parses and carries the audio or
telephone-event PT, and the expected SSRC when one was signalled) becomes the remote address, and its SSRC
is locked; after that, packets from other addresses are counted (``foreign``) and dropped. RTCP latches to
its own source the same way; until an RTCP packet arrives it goes to the RTP remote's port + 1.

Pacing (rule 6): tick ``n`` fires at ``start + n * 20 ms`` of ``loop.time()``; a tick that is late by more
than a frame skips ahead to the current tick instead of bursting. The lateness of each tick is recorded
(``pacing_p50_ms`` / ``pacing_p99_ms``). A talkspurt does not wait for the grid: audio queued while the
sender is idle goes out at once, as tick ``n``, and the grid moves to it (``epoch`` with it), so a reply's
first packet leaves up to 20 ms sooner; its marker bit tells the peer to re-align. Received audio plays out
from the consumer's own deadline clock in ``audio()``, which runs sooner by whatever slack the jitter buffer
finds (``take_slack``); ``playout_tick`` is the pacing tick of the frame it yielded last.

Recording: while ``tap`` is set, the pacer hands it every audio frame that really left (decoded back to PCM,
with its tick), and ``SipCallLeg.audio`` the frames received; see ``telephony.recording``.

Tasks: the pacer and the RTCP reporter are the endpoint's only tasks; ``close()`` cancels and awaits both,
closes both sockets and returns the port to its pool.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from telephony.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from telephony.errors import RtpError
from telephony.recording import RecordingTap
from telephony.rtp.dtmf import DtmfDigit, DtmfReceiver, dtmf_packets
from telephony.rtp.jitter import JitterBuffer
from telephony.rtp.packet import PacketKind, RtpPacket, classify
from telephony.rtp.ports import PortPool, bind_pair
from telephony.rtp.rtcp import (
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    parse_compound,
    serialize_compound,
)
from telephony.rtp.seq import seq_add, ts_add

__all__ = ["EndpointStats", "MediaReceiver", "MediaSender", "RtpEndpoint"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
PTIME = 0.020
SAMPLES = 160  # 20 ms at 8 kHz
QUIET_PEAK = 328  # -40 dBFS: a received frame this quiet holds no speech worth keeping over a lower delay
PT_PCMU, PT_PCMA, PT_CN = 0, 8, 13
_NTP_EPOCH = 2208988800

_CODECS: dict[int, tuple[Callable[[bytes], NDArray[np.int16]], Callable[[NDArray[np.int16]], bytes]]] = {
    PT_PCMU: (ulaw_decode, ulaw_encode),
    PT_PCMA: (alaw_decode, alaw_encode),
}


@dataclass
class EndpointStats:
    packets_sent: int = 0
    bytes_sent: int = 0  # payload octets, as in the SR octet count
    packets_received: int = 0
    bytes_received: int = 0
    malformed: int = 0
    ignored: int = 0  # unknown payload types
    comfort_noise: int = 0
    foreign: int = 0  # from an address other than the latched one
    dropped_outbound: int = 0  # oldest frames dropped from the full outbound buffer
    cleared_outbound: int = 0
    lost: int = 0
    jitter_ms: float = 0.0
    late: int = 0
    concealed: int = 0
    rtcp_sent: int = 0
    rtcp_received: int = 0
    remote_fraction_lost: float = 0.0  # as reported by the peer's RTCP
    remote_cumulative_lost: int = 0
    pacing_p50_ms: float = 0.0
    pacing_p99_ms: float = 0.0
    pacing_skipped: int = 0


class MediaReceiver:
    """Receive side of one RTP session. Sans-I/O: ``datagram(data, addr, now)`` returns completed digits."""

    def __init__(
        self,
        stats: EndpointStats,
        *,
        audio_pt: int = PT_PCMU,
        dtmf_pt: int | None = 101,
        remote: Address | None = None,
        expected_ssrc: int | None = None,
    ) -> None:
        self.stats = stats
        self.audio_pt, self.dtmf_pt = audio_pt, dtmf_pt
        self.remote = remote
        self.latched = False
        self.ssrc = expected_ssrc
        self.decode = _CODECS[audio_pt][0]
        self.jitter = JitterBuffer(is_quiet=self._quiet)
        self.reception = ReceptionStats()
        self.dtmf = DtmfReceiver()

    def _quiet(self, payload: bytes) -> bool:
        """A frame the jitter buffer may drop to shrink its delay: no sample above QUIET_PEAK."""
        return int(np.max(np.abs(self.decode(payload).astype(np.int32)), initial=0)) <= QUIET_PEAK

    def datagram(self, data: bytes, addr: Address, now: float) -> list[DtmfDigit]:
        st = self.stats
        if classify(data) is not PacketKind.RTP:
            st.malformed += 1
            return []
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            st.malformed += 1
            return []
        pt = packet.payload_type
        if pt == PT_CN:
            st.comfort_noise += 1
            return []
        if pt != self.audio_pt and pt != self.dtmf_pt:
            st.ignored += 1
            return []
        if not self.latched:
            if self.ssrc is not None and packet.ssrc != self.ssrc:
                st.foreign += 1
                return []
            self.remote, self.ssrc, self.latched = addr, packet.ssrc, True
        elif addr != self.remote or packet.ssrc != self.ssrc:
            st.foreign += 1
            return []
        st.packets_received += 1
        st.bytes_received += len(packet.payload)
        self.reception.receive(packet.sequence_number, packet.timestamp, now)
        if pt == self.dtmf_pt:
            try:
                return self.dtmf.receive_packet(packet, now)
            except RtpError:
                st.malformed += 1
                return []
        self.jitter.push(packet.sequence_number, packet.timestamp, packet.payload, now, packet.ssrc)
        return []

    def playout(self, now: float) -> NDArray[np.int16]:
        frame = self.jitter.pop(now)
        return frame.pcm(self.decode)

    def catch_up(self, now: float) -> list[NDArray[np.int16]]:
        """What arrived before the consumer started, beyond the target delay (`JitterBuffer.catch_up`)."""
        return [frame.pcm(self.decode) for frame in self.jitter.catch_up(now)]

    def refresh(self) -> None:
        st, js = self.stats, self.jitter.stats
        st.lost = self.reception.lost
        st.jitter_ms = self.reception.jitter_ms
        st.late = js.late
        st.concealed = js.concealed


class MediaSender:
    """Send side of one RTP session. Sans-I/O: ``tick(n)`` returns the packet for pacing tick ``n``, if any."""

    def __init__(
        self, stats: EndpointStats, *, ssrc: int, audio_pt: int = PT_PCMU, dtmf_pt: int | None = 101, capacity: int = 50
    ) -> None:
        self.stats = stats
        self.ssrc, self.audio_pt, self.dtmf_pt = ssrc, audio_pt, dtmf_pt
        self.decode, self.encode = _CODECS[audio_pt]  # decode: what left, back to PCM, for a recording
        self.frames: deque[bytes] = deque()
        self.capacity = capacity
        self._carry = np.zeros(0, dtype=np.int16)
        self._dtmf: deque[tuple[int, RtpPacket]] = deque()  # (tick index, packet)
        rng = random.Random()
        self.seq = rng.randrange(1 << 16)
        self.ts0 = rng.randrange(1 << 32)
        self.last_ts = self.ts0
        self._talking = False
        self.last_tick = 0
        self.audio_frames_sent = 0  # the playback position: 20 ms frames that really left
        self.paused = False  # hold the queue where it is (a possible barge-in); audio resumes from there

    def enqueue(self, pcm: NDArray[np.int16]) -> None:
        audio = np.asarray(pcm, dtype=np.int16).ravel()
        if len(self._carry):  # the common case (whole 20 ms frames, as an echo or TTS at 8 kHz) skips the copy
            audio = np.concatenate((self._carry, audio))
        whole = len(audio) // SAMPLES * SAMPLES
        self._carry = audio[whole:]
        for i in range(0, whole, SAMPLES):
            if len(self.frames) >= self.capacity:
                self.frames.popleft()
                self.stats.dropped_outbound += 1
            self.frames.append(self.encode(audio[i : i + SAMPLES]))

    def clear(self) -> int:
        n = len(self.frames)
        self.frames.clear()
        self._carry = np.zeros(0, dtype=np.int16)
        self.stats.cleared_outbound += n
        return n

    def queue_dtmf(self, digit: str, duration_ms: int) -> None:
        if self.dtmf_pt is None:
            raise RtpError("no telephone-event payload type negotiated")
        start = max(self.last_tick + 1, self._dtmf[-1][0] + 1 if self._dtmf else 0)
        ts = ts_add(self.ts0, start * SAMPLES)
        for sp in dtmf_packets(
            digit, payload_type=self.dtmf_pt, ssrc=self.ssrc, first_sequence=0, timestamp=ts, duration_ms=duration_ms
        ):
            self._dtmf.append((start + round(sp.offset / PTIME), sp.packet))

    @property
    def idle(self) -> bool:
        """Nothing is being sent or waiting to be: audio queued now starts a talkspurt."""
        return not self._talking and not self.frames and not self._dtmf

    def tick(self, n: int) -> RtpPacket | None:
        self.last_tick = n
        if self._dtmf and self._dtmf[0][0] <= n:
            packet = self._dtmf.popleft()[1]
            self._talking = False  # audio after an event starts a new talkspurt
        elif self._dtmf:
            return None  # audio waits until the event is over
        elif self.frames and not self.paused:
            ts = ts_add(self.ts0, n * SAMPLES)
            packet = RtpPacket(self.audio_pt, 0, ts, self.ssrc, not self._talking, self.frames.popleft())
            self._talking = True
            self.audio_frames_sent += 1
        else:
            self._talking = False
            return None
        packet.sequence_number = self.seq
        self.seq = seq_add(self.seq, 1)
        self.last_ts = packet.timestamp
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(packet.payload)
        return packet


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.on_datagram(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable before the peer binds: ignore
        pass


def _percentile(values: deque[float], q: float) -> float:
    return float(np.quantile(np.fromiter(values, dtype=np.float64), q)) if values else 0.0


def _resolve(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class RtpEndpoint:
    """Use ``await RtpEndpoint.open(pool, ...)``; ``close()`` when the call ends."""

    def __init__(
        self,
        pool: PortPool,
        port: int,
        rtp_sock: socket.socket,
        rtcp_sock: socket.socket,
        *,
        remote: Address | None,
        audio_pt: int,
        dtmf_pt: int | None,
        rtcp_interval: float,
        out_capacity: int,
        expected_ssrc: int | None,
    ) -> None:
        self.pool, self.port = pool, port
        self._rtp_sock, self._rtcp_sock = rtp_sock, rtcp_sock
        self.stats = EndpointStats()
        self.receiver = MediaReceiver(
            self.stats, audio_pt=audio_pt, dtmf_pt=dtmf_pt, remote=remote, expected_ssrc=expected_ssrc
        )
        self.sender = MediaSender(
            self.stats, ssrc=random.getrandbits(32), audio_pt=audio_pt, dtmf_pt=dtmf_pt, capacity=out_capacity
        )
        self.rtcp_interval = rtcp_interval
        self.rtcp_remote: Address | None = None
        self._rtcp_latched = False
        self._digits: asyncio.Queue[DtmfDigit] = asyncio.Queue(maxsize=32)
        self._pacing: deque[float] = deque(maxlen=2000)
        self._loop = asyncio.get_running_loop()
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sent = asyncio.Event()  # set after every tick, for tests and for playback tracking
        # While the idle pacer waits for its next tick: resolved True when audio is queued (a talkspurt: send it
        # now), False by the tick's timer. One future and one timer per idle tick, no task or exception.
        self._idle_wait: asyncio.Future[bool] | None = None
        self.epoch = self._loop.time()  # when pacing tick 0 is due (reset as the pacer starts)
        self.playout_tick = 0  # the pacing tick of the received frame `audio()` yielded last
        self.tap: RecordingTap | None = None  # the call's recorder, while it is being recorded
        self.sending = True  # False while the peer holds the call (RFC 3264 §8.4): frames go nowhere
        self.closed = False

    @classmethod
    async def open(
        cls,
        pool: PortPool,
        host: str = "127.0.0.1",
        *,
        remote: Address | None = None,
        audio_pt: int = PT_PCMU,
        dtmf_pt: int | None = 101,
        rtcp_interval: float = 5.0,
        out_capacity: int = 50,
        expected_ssrc: int | None = None,
    ) -> RtpEndpoint:
        port, rtp_sock, rtcp_sock = bind_pair(pool, host)
        self = cls(
            pool,
            port,
            rtp_sock,
            rtcp_sock,
            remote=remote,
            audio_pt=audio_pt,
            dtmf_pt=dtmf_pt,
            rtcp_interval=rtcp_interval,
            out_capacity=out_capacity,
            expected_ssrc=expected_ssrc,
        )
        try:
            self._rtp, _ = await self._loop.create_datagram_endpoint(lambda: _Protocol(self._on_rtp), sock=rtp_sock)
            self._rtcp, _ = await self._loop.create_datagram_endpoint(lambda: _Protocol(self._on_rtcp), sock=rtcp_sock)
        except BaseException:
            await self.close()
            raise
        self.epoch = self._loop.time()
        self._tasks.add(asyncio.create_task(self._pace(), name=f"rtp-pace-{port}"))
        self._tasks.add(asyncio.create_task(self._report(), name=f"rtcp-{port}"))
        return self

    # ------------------------------------------------------------------------------------------- receive
    @property
    def remote(self) -> Address | None:
        return self.receiver.remote

    def set_remote(self, remote: Address, rtcp: Address | None = None) -> None:
        """The remote RTP (and, from ``a=rtcp``, RTCP) address from SDP; ignored once the source has latched."""
        if not self.receiver.latched:
            self.receiver.remote = remote
        if rtcp is not None and not self._rtcp_latched:
            self.rtcp_remote = rtcp

    def retarget(self, remote: Address) -> None:
        """A re-INVITE moved the peer's media (RFC 3264 §8.3.1): send there and latch afresh on what comes."""
        rx = self.receiver
        rx.remote, rx.latched, rx.ssrc = remote, False, None
        self._rtcp_latched, self.rtcp_remote = False, None

    def configure(self, *, codec: str, audio_pt: int, dtmf_pt: int | None, sending: bool = True) -> None:
        """The codec and payload types the offer/answer settled on (before media flows, or on a re-INVITE)."""
        pair = _CODECS.get({"PCMU": PT_PCMU, "PCMA": PT_PCMA}.get(codec.upper(), -1))
        if pair is None:
            raise RtpError(f"no codec {codec!r}")
        rx, tx = self.receiver, self.sender
        rx.audio_pt, rx.dtmf_pt, rx.decode = audio_pt, dtmf_pt, pair[0]
        tx.audio_pt, tx.dtmf_pt, tx.decode, tx.encode = audio_pt, dtmf_pt, pair[0], pair[1]
        self.sending = sending

    @property
    def local_address(self) -> Address:
        host, port = self._rtp_sock.getsockname()[:2]
        return str(host), int(port)

    def _on_rtp(self, data: bytes, addr: Address) -> None:
        for digit in self.receiver.datagram(data, addr, self._loop.time()):
            self._put_digit(digit)

    def _put_digit(self, digit: DtmfDigit) -> None:
        if self._digits.full():
            self._digits.get_nowait()
        self._digits.put_nowait(digit)

    async def next_digit(self) -> DtmfDigit:
        return await self._digits.get()

    async def digits(self) -> AsyncIterator[DtmfDigit]:
        while True:
            yield await self._digits.get()

    async def audio(self) -> AsyncIterator[NDArray[np.int16]]:
        """20 ms frames of 8 kHz int16 PCM (concealment included), paced from the consumer's own deadlines; first,
        at once, what arrived before the consumer started beyond the jitter buffer's delay (the caller's first
        words, when a pipeline starts reading after the call was answered)."""
        start = self._loop.time()
        for pcm in self.receiver.catch_up(start):
            yield pcm
        start = self._loop.time()
        n = 0
        while not self.closed:
            n += 1
            deadline = start + n * PTIME
            now = self._loop.time()
            if now - deadline > PTIME:  # consumer fell behind: skip ahead, don't burst
                n = math.floor((now - start) / PTIME)
                deadline = start + n * PTIME
            await asyncio.sleep(max(0.0, deadline - now))
            self.playout_tick = round((deadline - self.epoch) / PTIME)
            # Played as of its deadline: when the loop is late, packets that waited for it are not slack.
            yield self.receiver.playout(deadline)
            start -= self.receiver.jitter.take_slack()  # packets wait less: play them sooner

    # ---------------------------------------------------------------------------------------------- send
    def send_audio(self, pcm: NDArray[np.int16]) -> None:
        """Queue 8 kHz int16 PCM; it goes out in 20 ms packets. Full buffer → the oldest frames are dropped."""
        idle = self.sender.idle
        self.sender.enqueue(pcm)
        wake = self._idle_wait
        if idle and self.sender.frames and not self.sender.paused and wake is not None and not wake.done():
            wake.set_result(True)

    def clear_buffer(self) -> int:
        """Barge-in: drop every queued frame at once; returns how many were dropped."""
        return self.sender.clear()

    @property
    def buffered_frames(self) -> int:
        return len(self.sender.frames)

    def send_dtmf(self, digit: str, duration_ms: int = 100) -> None:
        self.sender.queue_dtmf(digit, duration_ms)

    async def wait_tick(self) -> None:
        """Wait for the next pacing tick to have run."""
        self._sent.clear()
        await self._sent.wait()

    async def _pace(self) -> None:
        start = self.epoch
        n = 0
        while True:
            deadline = start + n * PTIME
            now = self._loop.time()
            if now < deadline and await self._talkspurt_before(deadline - now):
                now = self._loop.time()
                start = self.epoch = now - n * PTIME  # the grid moves to this talkspurt's first packet
                deadline = now
            elif now < deadline:
                now = self._loop.time()
            late = now - deadline
            if late > PTIME:  # skip ahead to the current tick rather than burst
                skip = math.floor(late / PTIME)
                n += skip
                self.stats.pacing_skipped += skip
                late -= skip * PTIME
            self._pacing.append(late)
            packet = self.sender.tick(n)
            remote = self.receiver.remote
            if packet is not None and remote is not None and self._rtp is not None and self.sending:
                self._rtp.sendto(bytes(packet), remote)
                if self.tap is not None and packet.payload_type == self.sender.audio_pt:
                    self._record(packet.payload, n)
            for digit in self.receiver.dtmf.tick(now):
                self._put_digit(digit)
            self._sent.set()
            n += 1

    async def _talkspurt_before(self, wait_s: float) -> bool:
        """Sleep ``wait_s`` (until the next tick); True, sooner, when a talkspurt's first audio is queued."""
        if not self.sender.idle:
            await asyncio.sleep(wait_s)
            return False
        wake: asyncio.Future[bool] = self._loop.create_future()
        self._idle_wait = wake
        timer = self._loop.call_later(wait_s, _resolve, wake, False)
        try:
            return await wake
        finally:
            timer.cancel()
            self._idle_wait = None

    def _record(self, payload: bytes, tick: int) -> None:
        assert self.tap is not None
        try:
            self.tap.agent_frame(self.sender.decode(payload), tick)
        except Exception:  # a broken recorder must not stop the call's audio
            log.exception("RTP %d: the recorder failed; recording stopped", self.port)
            self.tap = None

    # ---------------------------------------------------------------------------------------------- RTCP
    def _on_rtcp(self, data: bytes, addr: Address) -> None:
        try:
            packets = parse_compound(data)
        except RtpError:
            self.stats.malformed += 1
            return
        if not self._rtcp_latched:
            self.rtcp_remote, self._rtcp_latched = addr, True
        self.stats.rtcp_received += 1
        me = self.sender.ssrc
        for p in packets:
            if isinstance(p, SenderReport):
                self.receiver.reception.sender_report_received(p, self._loop.time())
            if isinstance(p, SenderReport | ReceiverReport):
                for block in p.reports:
                    if block.ssrc == me:
                        self.stats.remote_fraction_lost = block.fraction_lost / 256
                        self.stats.remote_cumulative_lost = block.cumulative_lost

    def rtcp_report(self, now_wall: float) -> bytes:
        """The compound report to send now: an SR when we have sent media, an RR otherwise."""
        blocks: list[ReportBlock] = []
        rx = self.receiver
        if rx.ssrc is not None and rx.reception.received:
            blocks.append(rx.reception.report_block(rx.ssrc, self._loop.time()))
        packet: RtcpPacket
        if self.stats.packets_sent:
            ntp = int((now_wall + _NTP_EPOCH) * (1 << 32))
            packet = SenderReport(
                self.sender.ssrc, ntp, self.sender.last_ts, self.stats.packets_sent, self.stats.bytes_sent, blocks
            )
        else:
            packet = ReceiverReport(self.sender.ssrc, blocks)
        return serialize_compound([packet])

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.rtcp_interval * random.uniform(0.5, 1.5))  # RFC 3550 §6.3.1 randomization
            target = self.rtcp_remote
            if target is None and self.receiver.remote is not None:
                host, port = self.receiver.remote
                target = (host, port + 1)
            if target is not None and self._rtcp is not None:
                self._rtcp.sendto(self.rtcp_report(time.time()), target)
                self.stats.rtcp_sent += 1

    # ------------------------------------------------------------------------------------------- summary
    def snapshot(self) -> EndpointStats:
        """Stats with the derived figures (loss, jitter, late, concealed, pacing percentiles) brought up to date."""
        self.receiver.refresh()
        self.stats.pacing_p50_ms = 1000 * _percentile(self._pacing, 0.50)
        self.stats.pacing_p99_ms = 1000 * _percentile(self._pacing, 0.99)
        return self.stats

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self._rtp_sock.close()
        self._rtcp_sock.close()
        self.pool.release(self.port)

    async def __aenter__(self) -> RtpEndpoint:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
