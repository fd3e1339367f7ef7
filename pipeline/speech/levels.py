"""Loudness of audio in short windows: what the STT's silence floor and its speech measure both read, and
where a synthesized reply's sound begins."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def window_rms(audio: NDArray[np.int16] | NDArray[np.float32], size: int) -> NDArray[np.float64]:
    """RMS of each whole `size`-sample window of mono audio, full scale 1.0 (int16 is scaled by 1/32768);
    a partial last window is left out."""
    windows = len(audio) // size
    frames = np.asarray(audio[: windows * size], dtype=np.float64).reshape(windows, size)
    if np.asarray(audio).dtype == np.int16:
        frames /= 32768.0
    rms: NDArray[np.float64] = np.sqrt(np.mean(frames * frames, axis=1)) if windows else np.zeros(0)
    return rms


def leading_silence(audio: NDArray[np.int16], rate: int, *, floor_dbfs: float = -60.0, keep_s: float = 0.01) -> int:
    """How many samples of near-silence (5 ms windows under `floor_dbfs`) open `audio`, less `keep_s` of
    lead-in kept before the sound, so that cutting them neither clicks nor clips the first phoneme."""
    size = max(1, rate // 200)
    loud = np.flatnonzero(window_rms(audio, size) >= 10 ** (floor_dbfs / 20))
    onset = int(loud[0]) * size if len(loud) else len(audio) - len(audio) % size
    return max(0, onset - int(keep_s * rate))
