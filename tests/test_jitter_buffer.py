"""Jitter buffer under simulated arrival patterns, with time passed in (no clocks, no sleeps)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.codecs.g711 import ulaw_decode
from telephony.rtp.jitter import Frame, FrameKind, JitterBuffer

PTIME = 0.020


def payload(seq: int) -> bytes:
    return bytes([seq & 0xFF]) * 160


def simulate(
    n: int,
    *,
    first_seq: int = 1000,
    first_ts: int = 5000,
    delay: Callable[[int], float] = lambda k: 0.05,
    drop: Callable[[int], bool] = lambda k: False,
    copies: int = 1,
    extra_ticks: int = 30,
    jb: JitterBuffer | None = None,
) -> tuple[JitterBuffer, list[Frame]]:
    """Packet k is sent at k*20 ms and arrives after delay(k); pops tick every 20 ms from t=0."""
    jb = jb or JitterBuffer()
    arrivals = sorted((k * PTIME + delay(k), k) for k in range(n) for _ in range(copies) if not drop(k))
    frames: list[Frame] = []
    i = 0
    for tick in range(n + extra_ticks + 20):
        now = tick * PTIME + 1e-9
        while i < len(arrivals) and arrivals[i][0] <= now:
            _, k = arrivals[i]
            jb.push((first_seq + k) & 0xFFFF, (first_ts + 160 * k) & 0xFFFFFFFF, payload(first_seq + k), arrivals[i][0])
            i += 1
        frames.append(jb.pop(now))
    return jb, frames


def audio_seqs(frames: list[Frame]) -> list[int]:
    return [f.seq for f in frames if f.kind is FrameKind.AUDIO and f.seq is not None]


def assert_all_accounted(jb: JitterBuffer, frames: list[Frame], expected: list[int], max_shrunk: int = 3) -> None:
    """Every expected packet was played in order, or dropped on purpose to bring the delay down."""
    played = audio_seqs(frames)
    assert [s for s in expected if s in set(played)] == played
    assert len(played) + jb.stats.shrunk == len(expected)
    assert jb.stats.shrunk <= max_shrunk


def test_in_order_plays_everything_once_at_min_delay() -> None:
    jb, frames = simulate(300)
    assert_all_accounted(jb, frames, list(range(1000, 1300)))
    assert jb.stats.lost == jb.stats.late == jb.stats.duplicates == 0
    assert jb.stats.target_delay_s == pytest.approx(jb.min_delay_s)
    first = next(i for i, f in enumerate(frames) if f.kind is FrameKind.AUDIO)
    played = frames[first : first + 300 - jb.stats.shrunk]
    assert all(f.kind is FrameKind.AUDIO for f in played)
    assert all(f.samples == 160 for f in frames)


def test_reordering_is_absorbed() -> None:
    # odd packets overtake even ones by 15 ms
    jb, frames = simulate(300, delay=lambda k: 0.05 + (0.015 if k % 2 == 0 else 0.0))
    assert_all_accounted(jb, frames, list(range(1000, 1300)))
    assert jb.stats.lost == 0 and jb.stats.late == 0


def test_loss_burst_is_concealed_repeat_then_silence() -> None:
    lost = set(range(100, 105))
    jb, frames = simulate(300, drop=lambda k: k in lost)
    assert_all_accounted(jb, frames, [s for s in range(1000, 1300) if s - 1000 not in lost])
    assert jb.stats.lost == 5
    gap = [f for f in frames if f.seq is not None and 1100 <= f.seq <= 1104]
    assert [f.kind for f in gap] == [FrameKind.REPEAT] + [FrameKind.SILENCE] * 4
    assert gap[0].payload == payload(1099) and gap[0].gain == 0.5
    assert np.array_equal(gap[0].pcm(ulaw_decode), np.rint(ulaw_decode(payload(1099)) * 0.5).astype(np.int16))
    assert not gap[1].pcm(ulaw_decode).any() and len(gap[1].pcm(ulaw_decode)) == 160


def spike(k: int, start: int, extra: float) -> float:
    """A queueing spike: packet ``start`` is held ``extra`` seconds and the ones behind it queue up behind it."""
    if k < start:
        return 0.05
    return 0.05 + max(0.0, extra - PTIME * (k - start))


def test_jitter_spike_raises_the_delay_and_loses_nothing() -> None:
    jb, frames = simulate(140, delay=lambda k: spike(k, 100, 0.12) + (0.01 if k % 3 == 0 else 0.0))
    assert_all_accounted(jb, frames, list(range(1000, 1140)), max_shrunk=8)
    assert jb.stats.late == 0 and jb.stats.lost == 0
    spike_gap = [f for f in frames if f.kind is not FrameKind.AUDIO and f.seq == 1100]
    assert len(spike_gap) >= 3  # waited through the spike (delay grew) instead of declaring packets lost


def test_sustained_jitter_raises_the_target() -> None:
    rng = np.random.default_rng(7)
    delays = 0.05 + rng.uniform(0, 0.08, 600)
    jb, _frames = simulate(600, delay=lambda k: float(delays[k]))
    assert 0.07 <= jb.stats.target_delay_s <= jb.max_delay_s
    assert jb.stats.late + jb.stats.lost < 0.05 * 600
    assert jb.stats.jitter_s > 0.01


def test_delay_comes_back_down_after_the_spike() -> None:
    jb, frames = simulate(700, delay=lambda k: spike(k, 100, 0.15))
    assert jb.stats.lost == 0 and jb.stats.late == 0
    assert_all_accounted(jb, frames, list(range(1000, 1700)), max_shrunk=10)
    assert jb.stats.shrunk > 0
    assert jb.stats.target_delay_s <= 0.04


def test_sequence_wraparound_at_65535() -> None:
    jb, frames = simulate(200, first_seq=65500, first_ts=0xFFFFFF00)
    expected = [(65500 + k) & 0xFFFF for k in range(200)]
    assert_all_accounted(jb, frames, expected)
    assert jb.stats.resyncs == 0 and jb.stats.lost == 0


def test_duplicates_are_dropped_and_counted() -> None:
    jb, frames = simulate(100, copies=2, delay=lambda k: 0.05)
    assert_all_accounted(jb, frames, list(range(1000, 1100)))
    assert jb.stats.duplicates == 100


def test_late_packets_are_dropped_and_counted() -> None:
    # packet 50 arrives 400 ms late, long after its turn; 51.. are on time
    jb, frames = simulate(200, delay=lambda k: 0.45 if k == 50 else 0.05)
    assert 1050 not in audio_seqs(frames)
    assert jb.stats.late == 1 and jb.stats.lost == 1


def test_resync_on_ssrc_change_and_confirmed_sequence_jump() -> None:
    jb = JitterBuffer()
    for k in range(10):
        jb.push(k, 160 * k, payload(k), k * PTIME, ssrc=1)
        jb.pop(k * PTIME + 0.1)
    jb.push(30000, 999, payload(1), 0.20, ssrc=1)  # one stray packet far away: held on probation only
    assert jb.stats.resyncs == 0
    jb.push(10, 1600, payload(10), 0.20, ssrc=1)
    jb.push(40000, 999, payload(1), 0.21, ssrc=1)  # a jump confirmed by the next packet
    jb.push(40001, 1159, payload(2), 0.22, ssrc=1)
    assert jb.stats.resyncs == 1
    out = [jb.pop(0.3 + i * PTIME) for i in range(3)]
    assert [f.seq for f in out if f.kind is FrameKind.AUDIO] == [40000, 40001]
    jb.push(7, 12345, payload(2), 0.4, ssrc=2)  # new SSRC: at once
    assert jb.stats.resyncs == 2
    jb.push(40002, 1319, payload(3), 0.41, ssrc=1)  # straggler from the old SSRC
    assert jb.stats.resyncs == 2 and jb.stats.late == 1
    out = [jb.pop(0.5 + i * PTIME) for i in range(3)]
    assert [f.seq for f in out if f.kind is FrameKind.AUDIO] == [7]


def test_timestamp_jump_with_continuous_sequence_resyncs_after_confirmation() -> None:
    jb = JitterBuffer()
    for k in range(5):
        jb.push(k, 160 * k, payload(k), k * PTIME)
    jb.push(5, 10_000_000, payload(5), 0.1)
    assert jb.stats.resyncs == 0
    jb.push(6, 10_000_160, payload(6), 0.12)
    assert jb.stats.resyncs == 1


def test_resync_after_long_silence() -> None:
    jb = JitterBuffer()
    for k in range(5):
        jb.push(k, 160 * k, payload(k), k * PTIME)
    jb.push(5, 160 * 500, payload(5), 5.0)
    assert jb.stats.resyncs == 1


def test_a_consumer_that_starts_late_gets_the_backlog_at_once_then_plays_at_the_target_delay() -> None:
    late, shedding = JitterBuffer(), JitterBuffer()
    for jb in (late, shedding):
        for k in range(30):  # 600 ms arrived before the first read
            jb.push(1000 + k, 5000 + 160 * k, payload(1000 + k), k * PTIME)
    now = 30 * PTIME
    target = round(late.stats.target_delay_s / PTIME)
    burst = late.catch_up(now)
    assert [f.seq for f in burst] == list(range(1000, 1030 - target))
    assert all(f.kind is FrameKind.AUDIO for f in burst)
    frames = []
    for tick in range(40):
        t = now + tick * PTIME
        if tick < 30:
            k = 30 + tick
            late.push(1000 + k, 5000 + 160 * k, payload(1000 + k), t)
        frames.append(late.pop(t))
    assert audio_seqs(burst + frames) == list(range(1000, 1060)), "every packet, in order"
    assert late.stats.shrunk == late.stats.lost == 0
    assert late.catch_up(now + 2.0) == [], "nothing queued beyond the target"
    shedding.pop(now)  # without it, the first pop finds 600 ms queued and sheds it down to the target
    assert shedding.stats.shrunk == 30 - target


def test_a_steady_stream_starts_at_its_target_and_never_sheds_a_frame() -> None:
    """Started above the measured target, the buffer would come down by dropping a frame while the caller may
    already be talking (the SIPp speech test lost 20-40 ms inside its first second that way)."""
    jb, frames = simulate(100, delay=lambda k: 0.001)
    assert jb.stats.shrunk == 0 and audio_seqs(frames) == list(range(1000, 1100))


def test_given_is_quiet_the_delay_comes_down_only_by_dropping_quiet_frames() -> None:
    # talkspurts of 30 frames, pauses of 10 (the payload's byte is its seq's low byte: quiet when in a pause)
    seqs = range(1000, 1240)  # fewer than 256: the low byte names the packet
    loud = {s for s in seqs if (s - 1000) % 40 < 30}

    def run(is_quiet: Callable[[bytes], bool] | None) -> tuple[JitterBuffer, list[Frame]]:
        # a 150 ms spike raises the delay; once it leaves the window the delay comes down by dropping frames
        jb = JitterBuffer(is_quiet=is_quiet, window=32)
        return simulate(240, delay=lambda k: spike(k, 60, 0.15), jb=jb)

    _, plain_frames = run(None)
    quiet_bytes = {s & 0xFF for s in seqs if s not in loud}
    aware, aware_frames = run(lambda payload: payload[0] in quiet_bytes)
    assert set(seqs) - set(audio_seqs(plain_frames)) & loud, "without the predicate, the shrink cuts speech"
    kept = audio_seqs(aware_frames)
    assert loud <= set(kept) and aware.stats.shrunk > 0, "with it, only frames of the pauses are dropped"
    assert_all_accounted(aware, aware_frames, list(seqs), max_shrunk=10)
    assert aware.stats.lost == 0 and aware.stats.target_delay_s <= 0.04


def test_store_is_capped_dropping_oldest() -> None:
    jb = JitterBuffer(capacity=20)
    for k in range(100):
        jb.push(k, 160 * k, payload(k), 0.0)
    assert jb.stored == 20 and jb.stats.overflow == 80


def test_nothing_received_gives_silence() -> None:
    jb = JitterBuffer()
    assert all(jb.pop(i * PTIME).kind is FrameKind.SILENCE for i in range(10))


ops = st.one_of(
    st.tuples(
        st.just("push"),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.floats(0, 0.5),
        st.sampled_from([None, 1, 2]),
    ),
    st.tuples(st.just("push_next"), st.integers(-3, 6), st.floats(0, 0.3)),
    st.tuples(st.just("pop")),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(ops, max_size=200), st.integers(1, 30))
def test_random_arrivals_never_break_the_invariants(script: list[tuple[object, ...]], capacity: int) -> None:
    jb = JitterBuffer(capacity=capacity)
    now = 0.0
    seq = 100
    for op in script:
        if op[0] == "push":
            _, s, ts, dt, ssrc = op
            assert isinstance(s, int) and isinstance(ts, int) and isinstance(dt, float)
            jb.push(s, ts, b"\x00" * 160, now + dt, ssrc=ssrc if isinstance(ssrc, int) else None)
        elif op[0] == "push_next":
            _, step, dt = op
            assert isinstance(step, int) and isinstance(dt, float)
            seq = (seq + step) & 0xFFFF
            jb.push(seq, seq * 160, b"\x01" * 160, now + dt)
        else:
            frame = jb.pop(now)
            assert frame.samples == 160
            assert frame.kind is not FrameKind.AUDIO or frame.seq is not None
            now += PTIME
        assert jb.stored <= capacity
        assert jb.min_delay_s <= jb.stats.target_delay_s <= jb.max_delay_s


def run_with_slack(
    arrival_delay: Callable[[int], float], n: int = 400
) -> tuple[JitterBuffer, list[float], list[Frame]]:
    """A consumer that pops every 20 ms and runs its clock sooner by whatever `take_slack()` reports (as
    `RtpEndpoint.audio` does); packet k leaves at k*20 ms and arrives after arrival_delay(k). Returns how
    long each played packet waited in the buffer."""
    jb = JitterBuffer()
    arrivals = sorted((k * PTIME + arrival_delay(k), k) for k in range(n))
    sooner = 0.0
    waits: list[float] = []
    frames: list[Frame] = []
    i = 0
    for tick in range(n + 20):
        now = tick * PTIME - sooner
        while i < len(arrivals) and arrivals[i][0] <= now:
            at, k = arrivals[i]
            jb.push(1000 + k, 5000 + 160 * k, payload(k), at)
            i += 1
        frame = jb.pop(now)
        frames.append(frame)
        if frame.kind is FrameKind.AUDIO and frame.seq is not None:
            waits.append(now - next(at for at, k in arrivals if 1000 + k == frame.seq))
        sooner += jb.take_slack()
    return jb, waits, frames


def concealed_midstream(frames: list[Frame]) -> bool:
    """A frame was concealed between the first and the last packet played (not the silence after the end)."""
    kinds = [f.kind for f in frames]
    first, last = kinds.index(FrameKind.AUDIO), len(kinds) - 1 - kinds[::-1].index(FrameKind.AUDIO)
    return any(k is not FrameKind.AUDIO for k in kinds[first : last + 1])


def test_the_playout_clock_takes_the_slack_and_loses_nothing() -> None:
    # Every packet arrives 7 ms after it left: it then idles in the buffer for the rest of the consumer's
    # 20 ms tick, plus the frames of initial delay. The clock comes forward until a packet waits ~4 ms.
    jb, waits, frames = run_with_slack(lambda k: 0.007)
    assert_all_accounted(jb, frames, list(range(1000, 1400)), max_shrunk=1)  # the initial delay's extra frame
    assert not concealed_midstream(frames) and jb.stats.lost == 0
    assert min(waits[:40]) > 0.030
    assert waits[-100:] == pytest.approx([jb.min_slack_s] * 100, abs=0.001)


def test_the_slack_keeps_a_margin_for_the_jitter_it_has_seen() -> None:
    rng = np.random.default_rng(3)
    delays = rng.uniform(0.0, 0.015, 400)  # up to 15 ms of jitter
    jb, waits, frames = run_with_slack(lambda k: float(delays[k]))
    assert_all_accounted(jb, frames, list(range(1000, 1400)), max_shrunk=1)
    assert not concealed_midstream(frames)
    spread = jb.stats.target_delay_s - PTIME
    assert spread > 0.010
    assert min(waits[-100:]) > 0.010  # even the latest packet still had most of the spread to spare
    assert np.mean(waits[-100:]) < np.mean(waits[:40])  # and yet the delay came down


def test_no_slack_is_taken_across_a_concealment() -> None:
    jb = JitterBuffer(slack_window=5)
    for k in range(8):
        jb.push(1000 + k, 5000 + 160 * k, payload(k), k * PTIME)
    now = 0.1
    for _ in range(4):
        jb.pop(now)
        now += PTIME
    jb.pop(now + 1.0)  # ... (the 5th pop plays too)
    assert jb.take_slack() > 0
    for _ in range(4):
        jb.pop(now)
    assert jb.pop(now).concealed  # nothing left: an underrun
    assert jb.take_slack() == 0.0


def late_consumer(pop_at_deadline: bool, n: int = 600) -> list[Frame]:
    """Packets arrive 5 ms after they leave; the consumer's event loop is 15 ms late on every tick for the
    first 300 ticks (a busy CPU), then on time. It runs its clock sooner by `take_slack()`, and pops either
    as of each tick's deadline (`RtpEndpoint.audio`) or as of the late moment it really ran."""
    jb = JitterBuffer()
    arrivals = [(k * PTIME + 0.005, k) for k in range(n)]
    sooner, i = 0.0, 0
    frames: list[Frame] = []
    for tick in range(n + 20):
        deadline = tick * PTIME - sooner
        ran_at = deadline + (0.015 if tick < 300 else 0.0)
        while i < len(arrivals) and arrivals[i][0] <= ran_at:
            at, k = arrivals[i]
            jb.push(1000 + k, 5000 + 160 * k, payload(k), at)
            i += 1
        frames.append(jb.pop(deadline if pop_at_deadline else ran_at))
        sooner += jb.take_slack()
    return frames


def test_a_late_event_loop_is_not_taken_for_slack() -> None:
    """Why `RtpEndpoint.audio` pops as of the deadline: popped as of the late moment, the packets seem to
    have waited 15 ms longer than they had to, the clock is pulled that much too soon, and once the loop is
    on time again the packets are not there yet: frames are concealed mid-stream."""
    assert concealed_midstream(late_consumer(pop_at_deadline=False))
    frames = late_consumer(pop_at_deadline=True)
    assert not concealed_midstream(frames)
