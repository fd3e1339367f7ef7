"""In-band DTMF detection (Goertzel) over decoded 8 kHz int16 PCM, for peers that do not send RFC 4733 events.

``DtmfDetector.process(pcm)`` takes frames of any length, carries its state across calls, and returns one
``DtmfEvent(digit, start_s, duration_s)`` per key press when the key is released (``flush()`` ends a press still
held at the end of the stream). Times are seconds of audio since the detector was created (sans-I/O).

Block size. Blocks are ``N = 102`` samples (12.75 ms, 78 Hz bins) taken every ``hop = 51`` samples. 205-sample
blocks (39 Hz bins) separate the tones better but last 25.6 ms, too coarse to tell a 40 ms key press (must be
accepted) from a 20 ms blip (must be rejected); 102 samples is the block spandsp uses, and the 50% overlap
gives 6.4 ms timing. A press is declared after ``min_blocks = 4`` consecutive agreeing blocks (needs about
32 ms of tone fully covering them, so 40 ms always passes and 20 ms never does) and ends after
``end_blocks = 2`` blocks without it, which is also the shortest inter-digit gap (about 25 ms).

The bin powers are exactly Goertzel's |X(f)|^2 at the eight DTMF frequencies (and the four second harmonics
of the high group), computed for all blocks at once as one ``(blocks x N) @ (N x 12)`` product against
precomputed cosine/sine tables, instead of the per-sample Goertzel recursion, which would be a Python loop.

A block holds a digit when (all thresholds are parameters):

* each tone is above ``min_level_dbfs`` (default -40 dBFS per tone);
* the strongest low tone and the strongest high tone each beat the others of their group by ``dominance_db``;
* twist: the low tone at most ``forward_twist_db`` = 8 dB above the high one, the high tone at most
  ``reverse_twist_db`` = 4 dB above the low one;
* the two tones carry at least ``min_tone_fraction`` = 70% of the block's energy (speech and music spread
  theirs over many harmonics);
* the second harmonic of the high tone is ``harmonic_db`` = 15 dB below it. (The low group's second harmonics,
  1394-1882 Hz, lie within one 78 Hz bin of the high tones, so at this block size they are not tested; the
  energy-fraction rule covers them.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

SAMPLE_RATE = 8000
LOW_FREQS = (697.0, 770.0, 852.0, 941.0)
HIGH_FREQS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")  # KEYS[low][high]
_FULL_SCALE_POWER = 32767.0**2 / 2  # mean power of a full-scale sine


@dataclass(frozen=True, slots=True)
class DtmfEvent:
    digit: str
    start_s: float
    duration_s: float


class DtmfDetector:
    def __init__(
        self,
        *,
        block: int = 102,
        hop: int = 51,
        min_blocks: int = 4,
        end_blocks: int = 2,
        min_level_dbfs: float = -40.0,
        dominance_db: float = 8.0,
        forward_twist_db: float = 8.0,
        reverse_twist_db: float = 4.0,
        min_tone_fraction: float = 0.7,
        harmonic_db: float = 15.0,
    ) -> None:
        self.block, self.hop = block, hop
        self.min_blocks, self.end_blocks = min_blocks, end_blocks
        self._min_tone_energy = 10 ** (min_level_dbfs / 10) * _FULL_SCALE_POWER * block
        self._dominance = 10 ** (dominance_db / 10)
        self._forward = 10 ** (forward_twist_db / 10)
        self._reverse = 10 ** (reverse_twist_db / 10)
        self._fraction = min_tone_fraction
        self._harmonic = 10 ** (-harmonic_db / 10)
        freqs = np.array(LOW_FREQS + HIGH_FREQS + tuple(2 * f for f in HIGH_FREQS))
        phase = 2 * np.pi * np.outer(np.arange(block), freqs) / SAMPLE_RATE
        self._basis = np.concatenate((np.cos(phase), np.sin(phase)), axis=1)  # (N, 24)
        self._pending: NDArray[np.float64] = np.zeros(0)
        self._pending_start = 0  # sample index of _pending[0]
        self._candidate = -1
        self._run = 0
        self._run_start = 0
        self._active = -1
        self._active_start = 0
        self._last_hit_end = 0
        self._misses = 0

    # ------------------------------------------------------------------------------------------ analysis
    def classify(self, blocks: NDArray[np.float64]) -> NDArray[np.int64]:
        """Key index 0..15 (low * 4 + high) for each row of ``blocks`` (blocks x N), or -1."""
        proj = blocks @ self._basis
        proj *= proj
        half = proj.shape[1] // 2
        # 2|X|^2 / N: the signal energy a pure tone at that frequency would carry
        energy = (proj[:, :half] + proj[:, half:]) * (2.0 / self.block)
        low, high = energy[:, 0:4], energy[:, 4:8]
        el, eh = low.max(axis=1), high.max(axis=1)
        total = np.einsum("ij,ij->i", blocks, blocks)
        # Cheap rules first; speech and silence rarely get past them, so the rest usually never runs.
        ok = (el >= self._min_tone_energy) & (eh >= self._min_tone_energy) & (el + eh >= self._fraction * total)
        ok &= (el <= self._forward * eh) & (eh <= self._reverse * el)
        if not ok.any():
            return np.full(len(blocks), -1, dtype=np.int64)
        li, hi = low.argmax(axis=1), high.argmax(axis=1)
        low_rest = np.partition(low, 2, axis=1)[:, 2]  # second strongest in the group
        high_rest = np.partition(high, 2, axis=1)[:, 2]
        harmonic = energy[:, 8:12][np.arange(len(blocks)), hi]
        ok &= (el >= self._dominance * low_rest) & (eh >= self._dominance * high_rest)
        ok &= harmonic <= self._harmonic * eh
        result: NDArray[np.int64] = np.where(ok, li * 4 + hi, -1).astype(np.int64)
        return result

    # ------------------------------------------------------------------------------------------- stream
    def process(self, pcm: NDArray[np.int16]) -> list[DtmfEvent]:
        buf = np.concatenate((self._pending, np.asarray(pcm, dtype=np.float64).reshape(-1)))
        if len(buf) < self.block:
            self._pending = buf
            return []
        count = (len(buf) - self.block) // self.hop + 1
        step = buf.strides[0]
        windows = np.lib.stride_tricks.as_strided(buf, (count, self.block), (self.hop * step, step), writeable=False)
        keys = self.classify(windows)
        events: list[DtmfEvent] = []
        for j, key in enumerate(keys.tolist()):  # one step per 51-sample block, not per sample
            self._step(key, self._pending_start + j * self.hop, events)
        consumed = count * self.hop
        self._pending = buf[consumed:]
        self._pending_start += consumed
        return events

    def _step(self, key: int, start: int, events: list[DtmfEvent]) -> None:
        end = start + self.block
        if self._active >= 0:
            if key == self._active:
                self._misses = 0
                self._last_hit_end = end
                return
            self._misses += 1
            if self._misses < self.end_blocks:
                return
            events.append(self._event())
            self._active = -1
            self._candidate, self._run = -1, 0
            return  # a new press starts counting on the next block: the gap is at least end_blocks long
        if key == self._candidate and key >= 0:
            self._run += 1
        else:
            self._candidate, self._run, self._run_start = key, (1 if key >= 0 else 0), start
        if self._candidate >= 0 and self._run >= self.min_blocks:
            self._active, self._active_start, self._last_hit_end = self._candidate, self._run_start, end
            self._misses = 0

    def _event(self) -> DtmfEvent:
        low, high = divmod(self._active, 4)
        return DtmfEvent(
            KEYS[low][high],
            self._active_start / SAMPLE_RATE,
            (self._last_hit_end - self._active_start) / SAMPLE_RATE,
        )

    def flush(self) -> list[DtmfEvent]:
        """End a key still held at the end of the audio."""
        if self._active < 0:
            return []
        event = self._event()
        self._active, self._candidate, self._run = -1, -1, 0
        return [event]
