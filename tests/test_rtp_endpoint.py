"""Two real RtpEndpoints over loopback, optionally through a seeded lossy UDP relay (STYLE rule 10)."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from numpy.typing import NDArray

from telephony.rtp.endpoint import RtpEndpoint
from telephony.rtp.packet import RtpPacket
from telephony.rtp.ports import PortPool, PortsExhausted, bind_pair

Address = tuple[str, int]
HOST = "127.0.0.1"


def tone(seconds: float, hz: float = 1000.0, amplitude: float = 8000.0) -> NDArray[np.int16]:
    t = np.arange(int(8000 * seconds)) / 8000
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def peak_hz(pcm: NDArray[np.int16]) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64) * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / 8000)[int(np.argmax(spectrum))])


@pytest.fixture
def pool() -> PortPool:
    base = random.Random().randrange(20000, 60000, 2)
    return PortPool(base, base + 200)


class Relay:
    """A UDP relay between two endpoints with seeded loss, duplication and reordering (one packet held back)."""

    def __init__(self, seed: int, loss: float = 0.0, dup: float = 0.0, reorder: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.seen = self.dropped = self.duplicated = self.reordered = 0
        self.a_side: asyncio.DatagramTransport | None = None
        self.b_side: asyncio.DatagramTransport | None = None
        self.a_peer: Address | None = None
        self.b_target: Address | None = None
        self._held: bytes | None = None
        self.count_changed = asyncio.Event()

    async def start(self, b_target: Address) -> tuple[Address, Address]:
        loop = asyncio.get_running_loop()
        self.b_target = b_target
        relay = self

        class FromA(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Address) -> None:
                relay.a_peer = addr
                relay.forward(data)

        class FromB(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Address) -> None:
                if relay.a_peer is not None and relay.a_side is not None:
                    relay.a_side.sendto(data, relay.a_peer)

        self.a_side, _ = await loop.create_datagram_endpoint(FromA, local_addr=(HOST, 0))
        self.b_side, _ = await loop.create_datagram_endpoint(FromB, local_addr=(HOST, 0))
        return self.a_side.get_extra_info("sockname")[:2], self.b_side.get_extra_info("sockname")[:2]

    def forward(self, data: bytes) -> None:
        assert self.b_side is not None and self.b_target is not None
        self.seen += 1
        self.count_changed.set()
        r = self.rng.random()
        if r < self.loss:
            self.dropped += 1
            return
        if r < self.loss + self.reorder and self._held is None:
            self._held = data
            self.reordered += 1
            return
        self.b_side.sendto(data, self.b_target)
        if self._held is not None:
            self.b_side.sendto(self._held, self.b_target)
            self._held = None
        if r > 1 - self.dup:
            self.duplicated += 1
            self.b_side.sendto(data, self.b_target)

    def close(self) -> None:
        for t in (self.a_side, self.b_side):
            if t is not None:
                t.close()


async def pair(pool: PortPool, **kw: float) -> tuple[RtpEndpoint, RtpEndpoint]:
    a = await RtpEndpoint.open(pool, HOST, **kw)  # type: ignore[arg-type]
    b = await RtpEndpoint.open(pool, HOST, remote=a.local_address, **kw)  # type: ignore[arg-type]
    a.set_remote(b.local_address)  # as if from B's SDP answer
    return a, b


async def collect(ep: RtpEndpoint, stop: asyncio.Event, frames: list[NDArray[np.int16]]) -> None:
    async for frame in ep.audio():
        frames.append(frame)
        if stop.is_set():
            return


async def until(ep: RtpEndpoint, cond: Callable[[], bool], limit_s: float = 3.0) -> None:
    """Wait on ``ep``'s pacing ticks until ``cond()`` holds (bounded, so a regression fails instead of hanging)."""
    async with asyncio.timeout(limit_s):
        while not cond():
            await ep.wait_tick()


async def wait_until_sent(ep: RtpEndpoint) -> None:
    """Wait (on pacing ticks) until the outbound buffer is empty, then one tick for the last packet to land."""
    await until(ep, lambda: ep.buffered_frames == 0, limit_s=10)
    await ep.wait_tick()
    await ep.wait_tick()


@pytest.fixture
async def endpoints(pool: PortPool) -> AsyncIterator[tuple[RtpEndpoint, RtpEndpoint]]:
    a, b = await pair(pool, rtcp_interval=0.1)
    yield a, b
    await a.close()
    await b.close()


async def test_tone_through_ulaw_and_rtcp(endpoints: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    a, b = endpoints
    frames: list[NDArray[np.int16]] = []
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(collect(b, stop, frames))
        a.send_audio(tone(0.6))
        await wait_until_sent(a)
        await asyncio.sleep(0.15)  # wall time for the jitter buffer to play the tail and for RTCP to go round
        stop.set()
    pcm = np.concatenate(frames)
    loud = pcm[np.abs(pcm) > 1000]
    assert len(loud) > 0.4 * 8000 * 0.6 / 2
    assert abs(peak_hz(pcm) - 1000) <= 10
    await until(a, lambda: a.stats.rtcp_received > 0 and b.stats.rtcp_received > 0)
    sa, sb = a.snapshot(), b.snapshot()
    assert sa.packets_sent == 30 and sb.packets_received == 30
    assert sb.bytes_received == 30 * 160 and sa.bytes_sent == 30 * 160
    assert sb.lost == 0 and sa.remote_cumulative_lost == 0
    print(f"pacing error p50={sa.pacing_p50_ms:.3f} ms p99={sa.pacing_p99_ms:.3f} ms")
    assert sa.pacing_p99_ms < 20


async def test_audio_that_arrived_before_the_reader_started_is_not_lost(
    endpoints: tuple[RtpEndpoint, RtpEndpoint],
) -> None:
    """The caller speaks as soon as the call is answered, before the voice pipeline reads: the first read
    hands that backlog over at once instead of the jitter buffer dropping it to keep its delay."""
    a, b = endpoints
    a.send_audio(tone(0.6, hz=500))
    await wait_until_sent(a)  # all 30 packets are in b's jitter buffer, nobody reading yet
    assert b.stats.packets_received == 30
    frames: list[NDArray[np.int16]] = []
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(collect(b, stop, frames))
        await asyncio.sleep(0.2)
        stop.set()
    pcm = np.concatenate(frames)
    assert np.count_nonzero(np.abs(pcm) > 1000) > 0.9 * 8000 * 0.6 / 2, "the tone, whole"
    assert b.receiver.jitter.stats.shrunk == 0 and b.receiver.jitter.stats.played == 30


async def test_loss_reorder_duplication_through_relay(pool: PortPool) -> None:
    relay = Relay(seed=7, loss=0.15, dup=0.05, reorder=0.05)
    b = await RtpEndpoint.open(pool, HOST, rtcp_interval=0.1)
    to_b, from_b_side = await relay.start(b.local_address)
    a = await RtpEndpoint.open(pool, HOST, remote=to_b, rtcp_interval=0.1)
    b.set_remote(from_b_side, rtcp=(HOST, a.port + 1))  # RTCP goes direct, not through the relay
    a.set_remote(to_b, rtcp=(HOST, b.port + 1))
    try:
        frames: list[NDArray[np.int16]] = []
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(collect(b, stop, frames))
            a.send_audio(tone(1.0))
            async with asyncio.timeout(5):
                while relay.seen < 50:
                    relay.count_changed.clear()
                    await relay.count_changed.wait()
            await asyncio.sleep(0.15)
            stop.set()
        sb = b.snapshot()
        assert relay.dropped > 0 and relay.duplicated > 0 and relay.reordered > 0
        assert sb.packets_received == 50 - relay.dropped + relay.duplicated
        assert 0 < sb.lost <= relay.dropped
        assert b.receiver.jitter.stats.lost > 0
        assert sb.concealed >= b.receiver.jitter.stats.lost
        assert abs(peak_hz(np.concatenate(frames)) - 1000) <= 10
        # the sender learns of the loss from B's reception report
        await until(a, lambda: a.stats.remote_cumulative_lost == sb.lost)
        print(f"relay: dropped={relay.dropped} dup={relay.duplicated} reordered={relay.reordered}; "
              f"B lost={sb.lost} concealed={sb.concealed} late={sb.late} jitter={sb.jitter_ms:.2f} ms")
    finally:
        await a.close()
        await b.close()
        relay.close()


async def test_symmetric_rtp_latches_to_real_source(pool: PortPool) -> None:
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    advertised = sink.getsockname()  # what A's SDP claimed; A really sends from its own port
    a = await RtpEndpoint.open(pool, HOST)
    b = await RtpEndpoint.open(pool, HOST, remote=advertised)
    a.set_remote(b.local_address)
    try:
        assert a.local_address != advertised
        a.send_audio(tone(0.1))
        await until(b, lambda: b.receiver.latched)
        assert b.remote == a.local_address
        b.send_audio(tone(0.1))
        await wait_until_sent(b)
        assert a.snapshot().packets_received == 5
        # after latching, media from another address is not accepted
        stray = RtpPacket(0, 1, 1, b.receiver.ssrc or 0, payload=bytes(160))
        sink.sendto(bytes(stray), b.local_address)
        await until(b, lambda: b.stats.foreign > 0)
        assert b.remote == a.local_address
    finally:
        sink.close()
        await a.close()
        await b.close()


async def test_malformed_filler_and_comfort_noise_ignored(endpoints: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    a, b = endpoints
    junk = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    junk.bind((HOST, 0))
    try:
        for data in (
            b"\x00\x01",  # not RTP
            b"\x80\x00\x00",  # truncated header
            bytes([0xA0, 0]) + bytes(10) + b"\xff",  # bad padding
            bytes(RtpPacket(97, 1, 1, 99, payload=b"filler")),  # SIPp filler
            bytes(RtpPacket(13, 2, 2, 99, payload=b"\x40")),  # comfort noise
        ):
            junk.sendto(data, b.local_address)
        await until(b, lambda: b.stats.malformed + b.stats.ignored + b.stats.comfort_noise >= 5)
        assert not b.receiver.latched  # filler did not hijack the latch
        assert (b.stats.malformed, b.stats.ignored, b.stats.comfort_noise) == (3, 1, 1)
        frames: list[NDArray[np.int16]] = []
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(collect(b, stop, frames))
            a.send_audio(tone(0.4))
            await a.wait_tick()
            junk.sendto(bytes(RtpPacket(97, 3, 3, 99, payload=b"filler")), b.local_address)
            await wait_until_sent(a)
            await asyncio.sleep(0.15)
            stop.set()
        sb = b.snapshot()
        assert b.remote == a.local_address
        assert sb.packets_received == 20 and sb.lost == 0
        assert abs(peak_hz(np.concatenate(frames)) - 1000) <= 10
    finally:
        junk.close()


async def test_dtmf_received_as_one_digit(endpoints: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    a, b = endpoints
    a.send_dtmf("5", duration_ms=100)
    digit = await asyncio.wait_for(b.next_digit(), 2.0)
    assert digit.digit == "5" and digit.duration_ms == 100
    a.send_dtmf("#", duration_ms=60)
    digit = await asyncio.wait_for(b.next_digit(), 2.0)
    assert digit.digit == "#" and digit.duration_ms == 60
    assert b._digits.empty()


async def test_clear_buffer_stops_audio_within_a_frame(endpoints: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    a, _ = endpoints
    a.send_audio(tone(1.0))
    for _ in range(3):
        await a.wait_tick()
    assert a.clear_buffer() > 30
    sent = a.stats.packets_sent
    for _ in range(3):
        await a.wait_tick()
    assert a.stats.packets_sent <= sent + 1
    assert a.buffered_frames == 0


async def test_outbound_buffer_is_bounded(pool: PortPool) -> None:
    a = await RtpEndpoint.open(pool, HOST, out_capacity=10)
    try:
        a.send_audio(tone(1.0))
        assert a.buffered_frames == 10
        assert a.stats.dropped_outbound == 40
    finally:
        await a.close()


async def test_timestamp_follows_wall_time_across_silence(endpoints: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    a, _ = endpoints
    seen: list[RtpPacket] = []
    original = a.sender.tick

    def spy(n: int) -> RtpPacket | None:
        p = original(n)
        if p is not None:
            seen.append(RtpPacket.parse(bytes(p)))
        return p

    a.sender.tick = spy  # type: ignore[method-assign]
    a.send_audio(tone(0.04))
    await wait_until_sent(a)
    for _ in range(5):
        await a.wait_tick()
    a.send_audio(tone(0.04))
    await wait_until_sent(a)
    assert [p.marker for p in seen] == [True, False, True, False]
    seqs = [p.sequence_number for p in seen]
    assert [(s - seqs[0]) % 65536 for s in seqs] == [0, 1, 2, 3]
    gap = (seen[2].timestamp - seen[1].timestamp) % (1 << 32)
    assert gap % 160 == 0 and gap >= 160 * 6


async def test_a_talkspurt_leaves_at_once_and_the_grid_follows_it(endpoints: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    """Audio queued while the sender is idle does not wait for the next 20 ms tick (a reply's first packet
    would sit there for up to a frame): it leaves now, with the marker bit, and the next one 20 ms later."""
    a, _ = endpoints
    loop = asyncio.get_running_loop()
    sent: list[tuple[float, RtpPacket]] = []
    original = a.sender.tick

    def spy(n: int) -> RtpPacket | None:
        p = original(n)
        if p is not None:
            sent.append((loop.time(), RtpPacket.parse(bytes(p))))
        return p

    a.sender.tick = spy  # type: ignore[method-assign]
    await a.wait_tick()
    await asyncio.sleep(0.004)  # the grid's next tick is ~16 ms away
    old_epoch = a.epoch
    next_tick = old_epoch + math.ceil((loop.time() - old_epoch) / 0.020) * 0.020
    queued = loop.time()
    a.send_audio(tone(0.06))
    await wait_until_sent(a)
    (first_at, first), (second_at, second), _ = sent
    assert first.marker and not second.marker
    assert first_at < next_tick - 0.005, f"sent {1000 * (first_at - queued):.1f} ms after it was queued"
    assert a.epoch != old_epoch
    assert second_at - first_at == pytest.approx(0.020, abs=0.008)
    assert (second.timestamp - first.timestamp) % (1 << 32) == 160


async def test_a_late_consumer_is_not_taken_for_slack(endpoints: tuple[RtpEndpoint, RtpEndpoint]) -> None:
    """A busy event loop pops late, sometimes by more than a frame; the packets that waited for it are not
    slack in the buffer (waits count from each frame's deadline), so the playout clock does not run ahead of
    the packets, and nothing is dropped."""
    a, b = endpoints
    got: list[NDArray[np.int16]] = []
    stop = asyncio.Event()

    async def busy_consumer() -> None:
        async for frame in b.audio():
            got.append(frame)
            time.sleep(0.012 if len(got) % 4 else 0.045)  # noqa: ASYNC251 - the loop blocked (a model, a GC pause)
            if stop.is_set():
                return

    consumer = asyncio.create_task(busy_consumer())
    for _ in range(4):  # 3.2 s of audio, never more than the 1 s outbound buffer at once
        a.send_audio(tone(0.8))
        await until(a, lambda: a.buffered_frames < 10)
    await wait_until_sent(a)
    await asyncio.sleep(0.2)
    stop.set()
    await consumer
    stats = b.receiver.jitter.stats
    assert stats.received == 160
    assert stats.shrunk <= 1 and stats.played >= 159  # the initial delay's extra frame at most


def test_port_pool_exhaustion_and_release() -> None:
    p = PortPool(40001, 40008)  # even ports with their RTCP companion inside: 40002, 40004, 40006
    got = [p.allocate() for _ in range(3)]
    assert sorted(got) == [40002, 40004, 40006]
    with pytest.raises(PortsExhausted) as exc:
        p.allocate()
    assert exc.value.status == 503
    p.release(40004)
    p.release(40004)  # idempotent
    assert p.allocate() == 40004
    assert p.in_use == 3 and p.available == 0


def test_bind_pair_skips_ports_taken_elsewhere(pool: PortPool) -> None:
    first = pool.allocate()
    pool.release(first)
    rest = pool.available - 1
    for _ in range(rest):  # rotate so `first` is next
        pool.release(pool.allocate())
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind((HOST, first))
    try:
        port, rtp, rtcp = bind_pair(pool, HOST)
        assert port != first and port % 2 == 0
        assert rtcp.getsockname()[1] == port + 1
        assert pool.in_use == 1
        rtp.close()
        rtcp.close()
        pool.release(port)
    finally:
        squatter.close()


async def test_close_leaves_no_tasks_and_releases_port(pool: PortPool) -> None:
    before = asyncio.all_tasks()
    a, b = await pair(pool, rtcp_interval=0.05)
    a.send_audio(tone(0.2))
    await a.wait_tick()
    assert pool.in_use == 2
    await a.close()
    await b.close()
    await a.close()  # idempotent
    assert pool.in_use == 0
    assert asyncio.all_tasks() == before
