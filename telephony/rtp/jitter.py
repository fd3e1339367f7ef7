"""Adaptive, bounded jitter buffer for one RTP stream (sans-I/O: arrival and playout times are passed in).

The caller pushes every received packet with ``push(seq, timestamp, payload, arrival_s)`` and pulls exactly one
frame per playout tick (every ``ptime``, paced from deadlines) with ``pop(now_s)``. Playout follows the sequence
number: each ``pop`` plays the packet numbered ``next_seq``, so the output cadence is constant whatever arrives.

What a pop returns (``Frame.kind``):

* ``AUDIO``   - the expected packet was there.
* ``REPEAT``  - it was missing: the last good payload again, to be played at ``Frame.gain`` (-6 dB). Only for the
  first ``repeat_limit`` consecutive missing frames (packet loss concealment).
* ``SILENCE`` - missing for longer, or nothing to play yet: comfort silence (``payload`` is empty).

How the delay adapts. The target delay is the 95th percentile of the recent relative transit times
(arrival - timestamp / clock rate, minus the smallest of the window) plus one frame, clamped to
``[min_delay_s, max_delay_s]``. The buffer grows by waiting: when nothing at or after ``next_seq`` has arrived
(an underrun) the pop conceals *without* advancing, so the packets that turn up later play one frame later. A
missing packet with newer ones already buffered is counted lost and skipped. The buffer shrinks by dropping
the oldest queued frame (at most one every ``shrink_every`` pops) while more than one frame above target, and
at once down to target when above ``max_delay_s``. Given ``is_quiet`` (a payload predicate), the one-at-a-time
shrink drops only quiet frames: it waits for the caller's next pause rather than cut 20 ms out of a word (a
recognizer or a listener would lose that piece). A stream starts at ``initial_delay_s``, one frame above the
least target, so a steady one has nothing to shed (from 60 ms it shed a frame or two in its first second,
where a caller who speaks at once lost them: the SIPp speech test failed on that, 2 of 2 full CI runs).

The playout clock's phase. Each played packet waited some time between its arrival and its pop; the
least of those waits over ``slack_window`` pops in a row without concealment is time every packet spent
idle in the buffer: the packets arrive at some phase of the consumer's 20 ms clock. ``take_slack()``
reports that much (beyond a margin of at least ``min_slack_s``, or the measured jitter spread when larger)
so the consumer can run its clock that much sooner; the delay comes down without dropping a frame. A
listener that is a machine (the voice pipeline's VAD) hears the caller's pause up to a frame sooner.

A consumer that starts late. Packets arrive from the moment the call is answered; the consumer (the voice
pipeline) may start reading a few hundred milliseconds later, and the shrink rule would then drop that
backlog, the caller's first words. ``catch_up(now_s)``, called before the first ``pop``, hands over at once
every frame queued beyond the target delay, in order, so a consumer that is a machine takes them in a burst
and the playout runs at the target delay from then on.

Bounds and hygiene: at most ``capacity`` packets are stored (the oldest is dropped), late packets (before
``next_seq``) and duplicates are dropped and counted, and the stream restarts from the next packet after a
silence longer than ``resync_after_s`` or an SSRC change (stragglers from the old SSRC are dropped), or after
a sequence/timestamp jump beyond ``max_jump`` frames once the next packet confirms it (RFC 3550 A.1 probation).
Sequence arithmetic goes through ``telephony.rtp.seq``.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from telephony.rtp.seq import seq_add, seq_diff, ts_diff


class FrameKind(enum.Enum):
    AUDIO = "audio"
    REPEAT = "repeat"  # concealment: last frame attenuated
    SILENCE = "silence"  # concealment after the repeat, or nothing buffered yet


@dataclass(frozen=True, slots=True)
class Frame:
    kind: FrameKind
    payload: bytes
    samples: int  # always samples_per_frame: the cadence never changes
    seq: int | None = None  # the RTP sequence number played (AUDIO), or the one concealed
    gain: float = 1.0

    @property
    def concealed(self) -> bool:
        return self.kind is not FrameKind.AUDIO

    def pcm(self, decode: Callable[[bytes], NDArray[np.int16]]) -> NDArray[np.int16]:
        """Decoded audio for this tick: the payload (scaled by ``gain``) or ``samples`` zeros."""
        if self.kind is FrameKind.SILENCE or not self.payload:
            return np.zeros(self.samples, dtype=np.int16)
        audio = decode(self.payload)
        if self.gain != 1.0:
            audio = np.rint(audio.astype(np.float32) * self.gain).astype(np.int16)
        return audio


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    played: int = 0
    late: int = 0
    lost: int = 0
    concealed: int = 0
    duplicates: int = 0
    overflow: int = 0  # dropped because the store was full
    shrunk: int = 0  # dropped to bring the delay down
    resyncs: int = 0
    current_delay_s: float = 0.0
    target_delay_s: float = 0.0
    jitter_s: float = 0.0  # RFC 3550 interarrival jitter estimate


@dataclass(slots=True)
class _Packet:
    seq: int
    timestamp: int
    payload: bytes
    arrival_s: float


class _Resync(enum.Enum):
    NOW = "now"  # SSRC change or a long silence: restart from this packet
    JUMP = "jump"  # sequence/timestamp discontinuity: restart if the next packet confirms it
    STALE = "stale"  # from the previous SSRC: drop


class JitterBuffer:
    def __init__(
        self,
        *,
        clock_rate: int = 8000,
        ptime_s: float = 0.020,
        min_delay_s: float = 0.020,
        max_delay_s: float = 0.200,
        initial_delay_s: float = 0.040,  # a steady stream's target plus one frame: it starts where it stays
        capacity: int = 50,
        repeat_limit: int = 1,
        repeat_gain: float = 0.5,
        resync_after_s: float = 1.0,
        max_jump: int = 500,
        window: int = 128,
        shrink_every: int = 4,
        slack_window: int = 50,
        min_slack_s: float = 0.004,
        is_quiet: Callable[[bytes], bool] | None = None,
    ) -> None:
        if not 0 < min_delay_s <= max_delay_s:
            raise ValueError("need 0 < min_delay_s <= max_delay_s")
        self.clock_rate = clock_rate
        self.ptime_s = ptime_s
        self.samples_per_frame = round(clock_rate * ptime_s)
        self.min_delay_s, self.max_delay_s = min_delay_s, max_delay_s
        self.initial_delay_s = min(max(initial_delay_s, min_delay_s), max_delay_s)
        self.capacity = capacity
        self.repeat_limit, self.repeat_gain = repeat_limit, repeat_gain
        self.resync_after_s, self.max_jump = resync_after_s, max_jump
        self.shrink_every = shrink_every
        self.slack_window, self.min_slack_s = slack_window, min_slack_s
        self.is_quiet = is_quiet
        self._waits: list[float] = []  # how long each packet played since the last concealment had waited
        self.stats = JitterStats(target_delay_s=self.initial_delay_s)
        self._transits: deque[float] = deque(maxlen=window)
        self._store: dict[int, _Packet] = {}
        self._played: deque[int] = deque(maxlen=64)  # recently played seqs, to tell duplicates from late packets
        self._restart()
        self._ssrc: int | None = None
        self._previous_ssrc: int | None = None
        self._probation: _Packet | None = None
        self._last_arrival: float | None = None
        self._last_transit: float | None = None
        self._pushes_since_update = 0

    def _restart(self) -> None:
        self._store.clear()
        self._played.clear()
        self._next_seq: int | None = None
        self._highest: int | None = None
        self._start_at: float | None = None  # playout starts at first arrival + target delay
        self._last_payload = b""
        self._missing_run = 0
        self._waited = 0  # underrun pops that concealed without advancing
        self._since_shrink = 0
        self._last_played_ts: tuple[int, int] | None = None

    # ----------------------------------------------------------------------------------------------- input
    def push(self, seq: int, timestamp: int, payload: bytes, arrival_s: float, ssrc: int | None = None) -> None:
        st = self.stats
        seq &= 0xFFFF
        timestamp &= 0xFFFFFFFF
        st.received += 1
        check = self._resync_check(seq, timestamp, arrival_s, ssrc)
        if check is _Resync.STALE:  # a straggler from the SSRC we already switched away from
            st.late += 1
            return
        if check is _Resync.JUMP:
            # RFC 3550 A.1 probation: a jump is believed only when the next packet follows it in sequence, so one
            # stray packet cannot restart the stream.
            held = self._probation
            if held is None or seq != seq_add(held.seq, 1):
                self._probation = _Packet(seq, timestamp, bytes(payload), arrival_s)
                return
            self._probation = None
            self._resync(ssrc)
            self._accept(held.seq, held.timestamp, held.payload, held.arrival_s)
        elif check is _Resync.NOW:
            self._resync(ssrc)
        self._probation = None
        if ssrc is not None:
            self._ssrc = ssrc
        self._accept(seq, timestamp, payload, arrival_s)

    def _resync(self, ssrc: int | None) -> None:
        if ssrc is not None and self._ssrc is not None and ssrc != self._ssrc:
            self._previous_ssrc = self._ssrc
        self._restart()
        self._transits.clear()
        self._last_transit = None
        self.stats.resyncs += 1

    def _accept(self, seq: int, timestamp: int, payload: bytes, arrival_s: float) -> None:
        st = self.stats
        self._last_arrival = arrival_s
        if self._next_seq is None:  # first packet of a (re)started stream
            self._next_seq = seq
            self._highest = seq
            self._start_at = arrival_s + st.target_delay_s - self.ptime_s
        elif seq_diff(seq, self._next_seq) < 0:
            if seq in self._played:
                st.duplicates += 1
            else:
                st.late += 1
            return
        if seq in self._store:
            st.duplicates += 1
            return
        self._observe_transit(timestamp, arrival_s)
        self._store[seq] = _Packet(seq, timestamp, bytes(payload), arrival_s)
        assert self._highest is not None
        if seq_diff(seq, self._highest) > 0:
            self._highest = seq
        while len(self._store) > self.capacity:
            self._drop_oldest()
            st.overflow += 1
        self._update_delay()

    def _resync_check(self, seq: int, timestamp: int, arrival_s: float, ssrc: int | None) -> _Resync | None:
        if self._next_seq is None:
            return None
        if ssrc is not None and self._ssrc is not None and ssrc != self._ssrc:
            return _Resync.STALE if ssrc == self._previous_ssrc else _Resync.NOW
        if self._last_arrival is not None and arrival_s - self._last_arrival > self.resync_after_s:
            return _Resync.NOW
        if abs(seq_diff(seq, self._next_seq)) > self.max_jump:
            return _Resync.JUMP
        ref = self._newest_timestamp()
        if ref is not None:
            seq_gap = seq_diff(seq, ref[0])
            ts_gap = ts_diff(timestamp, ref[1])
            if abs(ts_gap - seq_gap * self.samples_per_frame) > self.max_jump * self.samples_per_frame:
                return _Resync.JUMP
        return None

    def _newest_timestamp(self) -> tuple[int, int] | None:
        if self._highest is not None and self._highest in self._store:
            p = self._store[self._highest]
            return p.seq, p.timestamp
        return self._last_played_ts

    def _observe_transit(self, timestamp: int, arrival_s: float) -> None:
        # Transit relative to the RTP clock; only differences matter, so timestamp wraps are unwrapped by ts_diff
        # against the first timestamp of the window.
        if not self._transits:
            self._ts_origin = timestamp
            self._arrival_origin = arrival_s
        media_s = ts_diff(timestamp, self._ts_origin) / self.clock_rate
        transit = (arrival_s - self._arrival_origin) - media_s
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            self.stats.jitter_s += (d - self.stats.jitter_s) / 16
        self._last_transit = transit
        self._transits.append(transit)

    def _update_delay(self) -> None:
        # The percentile is recomputed every 8th packet (160 ms at 20 ms ptime): plenty for adaptation, and
        # it keeps push() cheap. Sudden spikes are handled at once by the underrun rule in pop().
        self._pushes_since_update += 1
        if len(self._transits) < 2 or (self._pushes_since_update < 8 and len(self._transits) > 8):
            return
        self._pushes_since_update = 0
        t = np.fromiter(self._transits, dtype=np.float64, count=len(self._transits))
        k = int(0.95 * (len(t) - 1))  # the 95th percentile (lower), by selection: ~10x cheaper than np.quantile
        spread = float(np.partition(t, k)[k] - t.min())
        target = spread + self.ptime_s
        self.stats.target_delay_s = min(max(target, self.min_delay_s), self.max_delay_s)

    def _drop_oldest(self) -> None:
        assert self._next_seq is not None
        base = self._next_seq
        oldest = min(self._store, key=lambda s: seq_diff(s, base))
        del self._store[oldest]

    # ---------------------------------------------------------------------------------------------- output
    def _depth(self) -> int:
        """Frames from next_seq to the newest packet, inclusive (0 when nothing is buffered)."""
        if self._next_seq is None or self._highest is None or not self._store:
            return 0
        return max(seq_diff(self._highest, self._next_seq) + 1, 0)

    def pop(self, now_s: float) -> Frame:
        st = self.stats
        n = self.samples_per_frame
        if self._next_seq is None or self._start_at is None or now_s < self._start_at:
            st.current_delay_s = self._depth() * self.ptime_s
            return Frame(FrameKind.SILENCE, b"", n)
        target_frames = max(1, round(st.target_delay_s / self.ptime_s))
        max_frames = max(1, round(self.max_delay_s / self.ptime_s))
        depth = self._depth()
        # Shrink: everything above max at once, otherwise one frame at a time while well above target.
        if depth > max_frames:
            self._skip(depth - target_frames)
        elif depth > target_frames + 1:
            self._since_shrink += 1
            if self._since_shrink >= self.shrink_every and self._droppable():
                self._skip(1)
                self._since_shrink = 0
        else:
            self._since_shrink = 0
        seq = self._next_seq
        if seq in self._store:
            return self._play(seq, now_s)
        if self._store:  # newer packets are here: this one is lost (or hopelessly late)
            if self._waited:
                # The frames concealed while waiting stand in for the missing packets: skip over them at once
                # rather than concealing them again, so a loss during an underrun does not add delay.
                oldest = min(seq_diff(s, seq) for s in self._store)
                skip = min(oldest, self._waited)
                self._waited = 0
                st.lost += skip
                self._next_seq = seq_add(seq, skip)
                if self._next_seq in self._store:
                    return self._play(self._next_seq, now_s)
                seq = self._next_seq
            self._next_seq = seq_add(seq, 1)
            st.lost += 1
        else:  # underrun - wait for it, which raises the delay by one frame
            self._waited += 1
        self._missing_run += 1
        self._waits.clear()  # the clock was not early: no slack to take
        st.concealed += 1
        st.current_delay_s = self._depth() * self.ptime_s
        if self._missing_run <= self.repeat_limit and self._last_payload:
            return Frame(FrameKind.REPEAT, self._last_payload, n, seq, self.repeat_gain)
        return Frame(FrameKind.SILENCE, b"", n, seq)

    def catch_up(self, now_s: float) -> list[Frame]:
        """The frames queued beyond the target delay (see the module's "A consumer that starts late"), played
        now; a missing one among them is concealed as a pop would. Meant for the consumer's first read."""
        if self._next_seq is None:
            return []
        target_frames = max(1, round(self.stats.target_delay_s / self.ptime_s))
        out: list[Frame] = []
        while self._depth() > target_frames:
            seq = self._next_seq
            if seq in self._store:
                out.append(self._play(seq, now_s))
            else:  # newer packets are here (the depth says so): this one is lost
                self._next_seq = seq_add(seq, 1)
                self.stats.lost += 1
                self.stats.concealed += 1
                out.append(Frame(FrameKind.SILENCE, b"", self.samples_per_frame, seq))
        self._start_at = min(self._start_at if self._start_at is not None else now_s, now_s)
        self._waits.clear()  # the backlog waited for the consumer, not for the clock's phase: no slack in it
        return out

    def _droppable(self) -> bool:
        """Whether the shrink may drop the next frame: always without `is_quiet`, else when it is quiet (or
        missing: skipping it loses nothing)."""
        assert self._next_seq is not None
        packet = self._store.get(self._next_seq)
        return self.is_quiet is None or packet is None or self.is_quiet(packet.payload)

    def take_slack(self) -> float:
        """Seconds by which the consumer may run its playout clock sooner, once ``slack_window`` pops in a row
        played packets that had all waited longer than the margin; 0 otherwise. Taken once: the window restarts."""
        if len(self._waits) < self.slack_window:
            return 0.0
        margin = max(self.min_slack_s, self.stats.target_delay_s - self.ptime_s)
        slack = min(self._waits) - margin
        self._waits.clear()
        return min(slack, self.ptime_s) if slack > 0.001 else 0.0

    def _play(self, seq: int, now_s: float) -> Frame:
        packet = self._store.pop(seq)
        self._waits.append(now_s - packet.arrival_s)
        self._played.append(seq)
        self._last_played_ts = (seq, packet.timestamp)
        self._next_seq = seq_add(seq, 1)
        self._last_payload = packet.payload
        self._missing_run = 0
        self._waited = 0
        self.stats.played += 1
        self.stats.current_delay_s = self._depth() * self.ptime_s + self.ptime_s
        return Frame(FrameKind.AUDIO, packet.payload, self.samples_per_frame, seq)

    def _skip(self, count: int) -> None:
        assert self._next_seq is not None
        for _ in range(count):
            if self._store.pop(self._next_seq, None) is not None:
                self.stats.shrunk += 1
                self._played.append(self._next_seq)
            else:
                self.stats.lost += 1
            self._next_seq = seq_add(self._next_seq, 1)

    @property
    def stored(self) -> int:
        return len(self._store)

    _ts_origin: int = 0
    _arrival_origin: float = 0.0
