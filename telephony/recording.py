"""Call recording: both directions of a call, time-aligned, in one stereo 16-bit WAV written as the call goes.

Left channel: the caller, the audio we received as the call's consumer read it (``SipCallLeg.audio``).
Right channel: the agent, the audio that really left on the wire (the endpoint's pacer), so what was
cleared on barge-in or dropped from a full buffer is not in the recording, just as the caller never heard it.

Both sides hand in 20 ms frames with the index of the pacing tick they belong to (``RtpEndpoint.epoch``
is tick 0). Frames land in a small window of ticks starting at the first tick not yet written: a tick
nobody reported is silence on that channel, a frame for a tick already written is dropped (``late_frames``).
When a frame arrives beyond the window, the oldest ticks are written out, keeping ``lag_ticks`` of slack
for the other side to catch up. Memory is the window (1 s, 32 KB at 8 kHz) whatever the call's length.

The header: the standard library's WAV writer patches the RIFF and data sizes after every write, so the file
on disk is a valid WAV at any moment (a crash loses at most the window); ``close()`` writes the rest and
finalizes it.

A recording must never take a call down: a write that fails (disk full, directory removed) stops the
recording, ``error`` says why, and ``caller_frame`` / ``agent_frame`` keep returning quietly.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["CallRecorder", "RecordingTap"]

CALLER, AGENT = 0, 1  # channel index: left, right
FRAME_MS = 20


class RecordingTap(Protocol):
    """Where a call leg reports its audio while it is being recorded."""

    def caller_frame(self, pcm: NDArray[np.int16], tick: int) -> None: ...
    def agent_frame(self, pcm: NDArray[np.int16], tick: int) -> None: ...


class CallRecorder:
    """Opens (creating its directory) and starts the WAV at once; ``close()`` when the call ends."""

    def __init__(
        self, path: Path | str, sample_rate: int = 8000, *, window_ticks: int = 50, lag_ticks: int = 25
    ) -> None:
        if not 0 < lag_ticks < window_ticks:
            raise ValueError("lag_ticks must be positive and smaller than window_ticks")
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.frame_samples = sample_rate * FRAME_MS // 1000
        self._lag = lag_ticks
        self._window = np.zeros((window_ticks, self.frame_samples, 2), dtype=np.int16)
        self._base: int | None = None  # the tick of _window[0]; set by the first frame
        self._used = 0  # ticks of the window holding something (the last reported offset + 1)
        self.frames_written = 0  # 20 ms stereo frames in the file
        self.late_frames = 0
        self.error: OSError | None = None
        self.closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - lives until close()
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(sample_rate)

    @property
    def seconds(self) -> float:
        return self.frames_written * FRAME_MS / 1000

    def caller_frame(self, pcm: NDArray[np.int16], tick: int) -> None:
        self._put(CALLER, pcm, tick)

    def agent_frame(self, pcm: NDArray[np.int16], tick: int) -> None:
        self._put(AGENT, pcm, tick)

    def close(self) -> None:
        """Write what the window still holds and finalize the header. Idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.error is None:
            self._write(self._window[: self._used])
        try:
            self._wav.close()
        except OSError as error:
            self.error = self.error or error

    def __enter__(self) -> CallRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------------------
    def _put(self, channel: int, pcm: NDArray[np.int16], tick: int) -> None:
        if self.closed or self.error is not None:
            return
        if self._base is None:
            self._base = tick
        offset = tick - self._base
        if offset < 0:
            self.late_frames += 1
            return
        if offset >= len(self._window):
            self._advance(offset - len(self._window) + self._lag + 1)
            offset = tick - self._base
        samples = np.asarray(pcm, dtype=np.int16).ravel()[: self.frame_samples]
        slot = self._window[offset, :, channel]
        slot[: len(samples)] = samples
        slot[len(samples) :] = 0
        self._used = max(self._used, offset + 1)

    def _advance(self, ticks: int) -> None:
        """Write the oldest `ticks` ticks of the window (silence past its end) and slide it forward."""
        assert self._base is not None
        size = len(self._window)
        if ticks >= size:
            self._write(self._window)
            self._window[:] = 0
            silence = ticks - size
            while silence > 0 and self.error is None:
                chunk = min(silence, size)
                self._write(self._window[:chunk])
                silence -= chunk
        else:
            self._write(self._window[:ticks])
            self._window[: size - ticks] = self._window[ticks:].copy()
            self._window[size - ticks :] = 0
        self._base += ticks
        self._used = max(0, self._used - ticks)

    def _write(self, block: NDArray[np.int16]) -> None:
        if self.error is not None or len(block) == 0:
            return
        try:
            self._wav.writeframes(block.astype("<i2", copy=False).tobytes())
        except OSError as error:
            self.error = error
            return
        self.frames_written += len(block)
