"""Streaming resampler: tones keep frequency and level, frame splits do not matter, aliases are suppressed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.codecs.resample import StreamingResampler


def tone(freq: float, rate: int, seconds: float, amp: float = 10000.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.rint(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def in_frames(r: StreamingResampler, x: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([r.process(x[i : i + size]) for i in range(0, len(x), size)])


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.asarray(x, dtype=np.float64) ** 2)) + 1e-12))


def peak_freq(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def test_1khz_tone_survives_8_to_16_to_8() -> None:
    x = tone(1000, 8000, 1.0)
    up, down = StreamingResampler(8000, 16000), StreamingResampler(16000, 8000)
    y16 = in_frames(up, x, 160)
    y = in_frames(down, y16, 320)
    assert len(y16) == 16000 and len(y) == 8000
    settled = y[800:]
    assert abs(peak_freq(settled, 8000) - 1000) <= 2
    assert abs(rms_db(settled) - rms_db(x[800:])) <= 1.0
    assert abs(peak_freq(y16[1600:], 16000) - 1000) <= 2
    assert abs(rms_db(y16[1600:]) - rms_db(x[800:])) <= 1.0


@pytest.mark.parametrize(("rin", "rout"), [(8000, 16000), (16000, 8000), (22050, 8000), (48000, 16000), (16000, 48000)])
def test_frame_by_frame_equals_whole_signal(rin: int, rout: int) -> None:
    rng = np.random.default_rng(1)
    x = np.rint(rng.normal(0, 3000, rin)).astype(np.int16)
    whole = StreamingResampler(rin, rout).process_float(x)
    r = StreamingResampler(rin, rout)
    framed = np.concatenate([r.process_float(x[i : i + rin // 50]) for i in range(0, rin, rin // 50)])
    assert len(whole) == len(framed) == rout
    assert np.allclose(whole, framed, atol=1e-6)


@pytest.mark.parametrize(
    ("rin", "rout", "freq"), [(8000, 16000, 440), (22050, 8000, 1000), (48000, 16000, 1000), (16000, 48000, 3000)]
)
def test_tone_keeps_frequency_and_level(rin: int, rout: int, freq: float) -> None:
    x = tone(freq, rin, 1.0)
    y = in_frames(StreamingResampler(rin, rout), x, rin // 50)[rout // 10 :]
    assert abs(peak_freq(y, rout) - freq) <= 2
    assert abs(rms_db(y) - rms_db(x)) <= 1.0


@pytest.mark.parametrize("freq", [4500, 5000, 6000, 7000, 7900])
def test_aliasing_attenuated_40db_for_16_to_8(freq: float) -> None:
    x = tone(freq, 16000, 1.0)
    y = in_frames(StreamingResampler(16000, 8000), x, 320)[800:]
    assert rms_db(y) <= rms_db(x) - 40


def test_no_click_at_frame_boundaries() -> None:
    # A continuous 1 kHz tone has a bounded sample-to-sample step; a discontinuity at a frame edge would exceed it.
    y = in_frames(StreamingResampler(8000, 16000), tone(1000, 8000, 0.5), 160)[400:]
    steps = np.abs(np.diff(y.astype(np.int64)))
    assert steps.max() <= 10000 * 2 * np.pi * 1000 / 16000 * 1.05


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=12),
    st.sampled_from([(8000, 16000), (16000, 8000), (22050, 8000), (48000, 16000)]),
)
def test_any_split_matches_whole(sizes: list[int], rates: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(sizes))
    x = np.rint(rng.normal(0, 5000, sum(sizes))).clip(-32768, 32767).astype(np.int16)
    whole = StreamingResampler(*rates).process_float(x)
    r = StreamingResampler(*rates)
    parts, start = [], 0
    for size in sizes:
        expected = r.output_length(size)
        out = r.process_float(x[start : start + size])
        assert len(out) == expected
        parts.append(out)
        start += size
    assert np.allclose(whole, np.concatenate(parts), atol=1e-6)
