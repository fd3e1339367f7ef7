"""Goertzel DTMF detector: all keys at realistic levels and in noise, timing rules, twist, and no talk-off."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from telephony.codecs.g711 import ulaw_decode, ulaw_encode
from telephony.codecs.resample import StreamingResampler
from telephony.inband_dtmf import HIGH_FREQS, KEYS, LOW_FREQS, DtmfDetector, DtmfEvent

RATE = 8000
ALL_KEYS = "".join(KEYS)


def silence(ms: float) -> np.ndarray:
    return np.zeros(int(RATE * ms / 1000))


def key_tone(key: str, ms: float, level_dbfs: float = -10.0, twist_db: float = 0.0, detune: float = 1.0) -> np.ndarray:
    """Dual tone; ``twist_db`` > 0 makes the high tone that much stronger than the low one."""
    low = next(i for i, row in enumerate(KEYS) if key in row)
    high = KEYS[low].index(key)
    t = np.arange(int(RATE * ms / 1000)) / RATE
    amp = 32767 * 10 ** (level_dbfs / 20)
    return amp * np.sin(2 * np.pi * LOW_FREQS[low] * detune * t + 0.3) + amp * 10 ** (twist_db / 20) * np.sin(
        2 * np.pi * HIGH_FREQS[high] * detune * t + 1.1
    )


def to_pcm(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def detect(x: np.ndarray, frame: int = 160, through_ulaw: bool = True) -> list[DtmfEvent]:
    pcm = to_pcm(x)
    if through_ulaw:  # what actually arrives from a G.711 call
        pcm = ulaw_decode(ulaw_encode(pcm))
    detector = DtmfDetector()
    events: list[DtmfEvent] = []
    for i in range(0, len(pcm), frame):
        events += detector.process(pcm[i : i + frame])
    return events + detector.flush()


@pytest.mark.parametrize("key", list(ALL_KEYS))
def test_every_key_is_detected_once_with_its_duration(key: str) -> None:
    events = detect(np.concatenate([silence(60), key_tone(key, 80, -12), silence(100)]))
    assert [e.digit for e in events] == [key]
    assert events[0].duration_s == pytest.approx(0.080, abs=0.010)
    assert events[0].start_s == pytest.approx(0.060, abs=0.010)


@pytest.mark.parametrize("key", list(ALL_KEYS))
def test_every_key_in_noise_at_15db_snr(key: str) -> None:
    rng = np.random.default_rng(ord(key))
    tone = key_tone(key, 100, -20)
    noise_rms = np.sqrt(np.mean(tone**2)) / 10 ** (15 / 20)
    x = np.concatenate([silence(100), tone, silence(100)])
    x = x + rng.normal(0, noise_rms, len(x))
    events = detect(x)
    assert [e.digit for e in events] == [key]
    assert events[0].duration_s == pytest.approx(0.100, abs=0.015)


@pytest.mark.parametrize("level", [-3.0, -10.0, -25.0, -33.0])
def test_levels(level: float) -> None:
    assert [e.digit for e in detect(np.concatenate([key_tone("7", 60, level), silence(60)]))] == ["7"]


def test_too_quiet_is_ignored() -> None:
    assert detect(np.concatenate([key_tone("7", 100, -50), silence(60)])) == []


@pytest.mark.parametrize("twist", [-7.0, 3.0])
def test_twist_within_limits_accepted(twist: float) -> None:
    assert [e.digit for e in detect(np.concatenate([key_tone("9", 80, -12, twist), silence(60)]))] == ["9"]


@pytest.mark.parametrize("twist", [-11.0, 7.0])
def test_twist_beyond_limits_rejected(twist: float) -> None:
    assert detect(np.concatenate([key_tone("9", 80, -12, twist), silence(60)])) == []


@pytest.mark.parametrize("offset", range(0, 102, 13))
def test_presses_shorter_than_minimum_rejected_and_40ms_accepted(offset: int) -> None:
    lead = np.concatenate([silence(50), np.zeros(offset)])
    assert detect(np.concatenate([lead, key_tone("0", 20, -10), silence(80)])) == []
    assert detect(np.concatenate([lead, key_tone("0", 25, -10), silence(80)])) == []
    assert [e.digit for e in detect(np.concatenate([lead, key_tone("0", 40, -10), silence(80)]))] == ["0"]


def test_detuned_by_1_5_percent_still_detected() -> None:
    for detune in (0.985, 1.015):
        assert [e.digit for e in detect(np.concatenate([key_tone("D", 80, -10, detune=detune), silence(60)]))] == ["D"]


def test_sequence_with_gaps() -> None:
    x = np.concatenate([silence(40)] + [np.concatenate([key_tone(k, 70, -12), silence(60)]) for k in "123#"])
    events = detect(x, frame=137)  # odd frame size: state must carry across any split
    assert [e.digit for e in events] == list("123#")
    starts = [e.start_s for e in events]
    assert starts == pytest.approx([0.04 + 0.13 * i for i in range(4)], abs=0.01)


def test_repeated_key_needs_a_gap_and_gets_one_event_per_press() -> None:
    x = np.concatenate(
        [key_tone("5", 60), silence(40), key_tone("5", 60), silence(60), key_tone("5", 200), silence(50)]
    )
    assert [e.digit for e in detect(x)] == ["5", "5", "5"]


def test_frame_size_does_not_matter() -> None:
    x = np.concatenate([silence(33), key_tone("B", 90), silence(70), key_tone("*", 45), silence(70)])
    expected = detect(x, frame=len(x))
    assert [e.digit for e in expected] == ["B", "*"]
    for frame in (1, 7, 80, 160, 333):
        assert detect(x, frame=frame) == expected


# ------------------------------------------------------------------------------------------- talk-off
def voiced(
    seconds: float,
    formants: tuple[float, float, float],
    rng: np.random.Generator,
    f0_range: tuple[float, float] = (90.0, 250.0),
) -> np.ndarray:
    """Harmonic-rich voiced sound: gliding pitch, every harmonic up to 3.8 kHz shaped by three formants."""
    n = int(RATE * seconds)
    t = np.arange(n) / RATE
    lo, hi = f0_range
    f0 = lo + (hi - lo) * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    k = np.arange(1, int(3800 / lo) + 1)[:, None]
    fk = k * f0[None, :]
    env = sum(
        np.exp(-0.5 * ((fk - f) / bw) ** 2) * g
        for f, bw, g in zip(formants, (90, 110, 150), (1.0, 0.6, 0.3), strict=True)
    )
    env = env * (fk < 3800) / k**0.5
    y = (env * np.sin(k * phase[None, :] + rng.uniform(0, 6, (len(k), 1)))).sum(axis=0)
    syllables = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t) ** 2
    return y * syllables / np.max(np.abs(y)) * 12000


VOWELS = {
    "a": (730, 1090, 2440),
    "i": (270, 2290, 3010),
    "u": (300, 870, 2240),
    "e": (530, 1840, 2480),
    "o": (570, 840, 2410),
    "ae": (660, 1720, 2410),
    "er": (490, 1350, 1690),
}


def noise_burst(seconds: float, rng: np.random.Generator, band: tuple[float, float]) -> np.ndarray:
    n = int(RATE * seconds)
    spec = np.fft.rfft(rng.normal(0, 1, n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    spec[(f < band[0]) | (f > band[1])] = 0
    y = np.fft.irfft(spec, n)
    return y / np.max(np.abs(y)) * 9000 * np.hanning(n)


def chord(seconds: float, notes_hz: list[float]) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    y = sum(np.sin(2 * np.pi * f * h * t) / h for f in notes_hz for h in range(1, 7) if f * h < 3900)
    y = np.asarray(y) * np.exp(-t * 1.5)
    return y / np.max(np.abs(y)) * 15000


def speech_like(rng: np.random.Generator, seconds: float = 20.0) -> np.ndarray:
    parts = []
    total = 0.0
    while total < seconds:
        choice = rng.integers(0, 3)
        dur = float(rng.uniform(0.08, 0.4))
        if choice < 2:
            name = list(VOWELS)[rng.integers(0, len(VOWELS))]
            parts.append(voiced(dur, VOWELS[name], rng))
        else:
            parts.append(noise_burst(dur, rng, (2000, 4000) if rng.random() < 0.5 else (300, 3400)))
        parts.append(silence(float(rng.uniform(0, 60))))
        total += dur
    return np.concatenate(parts)


def test_no_detections_on_voiced_vowels_with_gliding_pitch() -> None:
    rng = np.random.default_rng(2024)
    for formants in VOWELS.values():
        for f0 in ((90.0, 140.0), (120.0, 200.0), (180.0, 250.0), (100.0, 250.0)):
            assert detect(voiced(1.0, formants, rng, f0)) == []


def test_no_detections_on_steady_pitch_vowels() -> None:
    # Held pitch is the hardest case: harmonics sit still, some close to DTMF frequencies.
    rng = np.random.default_rng(5)
    for formants in VOWELS.values():
        for f0 in np.arange(90.0, 251.0, 7.0):
            assert detect(voiced(0.3, formants, rng, (f0, f0))) == [], f"f0={f0} formants={formants}"


def test_no_detections_on_a_minute_of_speech_like_audio() -> None:
    assert detect(speech_like(np.random.default_rng(11), 60.0)) == []


def test_no_detections_on_music_like_chords() -> None:
    a4 = 440.0
    semis = range(-12, 24)
    notes = [a4 * 2 ** (s / 12) for s in semis]
    for i in range(0, len(notes) - 7, 2):
        for shape in ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 7), (0, 12)):
            assert detect(chord(0.5, [notes[i + s] for s in shape if i + s < len(notes)])) == []


def test_no_detections_on_synthesized_speech() -> None:
    text = "Hello, thank you for calling. Please tell me your account number and the reason for your call today."
    wav = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True, timeout=60).stdout
    rate = int.from_bytes(wav[24:28], "little")
    data_at = wav.index(b"data") + 8
    pcm = np.frombuffer(wav[data_at : data_at + (len(wav) - data_at) // 2 * 2], dtype=np.int16)
    speech = StreamingResampler(rate, RATE).process(pcm)
    assert detect(speech.astype(np.float64)) == []
