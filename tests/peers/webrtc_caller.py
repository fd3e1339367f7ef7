"""A WebRTC caller made with aiortc (a real WebRTC stack, as a browser would be on the other end): it offers
audio and an `events` data channel, speaks a PCM buffer in real time, and keeps what it hears and the
messages it is sent."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from numpy.typing import NDArray

RATE = 16000
FRAME = 320


class SpeechTrack(MediaStreamTrack):
    """`pcm` (16 kHz mono) in 20 ms frames on a real-time clock, then silence."""

    kind = "audio"

    def __init__(self, pcm: NDArray[np.int16]) -> None:
        super().__init__()
        self.pcm = pcm
        self.n = 0
        self.start: float | None = None
        self.started_at: float | None = None  # perf_counter when the first frame went out (frame n: + n * 20 ms)
        self.finished_at: float | None = None  # perf_counter when the last frame of speech went out

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start, self.started_at = time.monotonic(), time.perf_counter()
        await asyncio.sleep(max(0.0, self.start + self.n * 0.02 - time.monotonic()))
        chunk = self.pcm[self.n * FRAME : (self.n + 1) * FRAME]
        if len(chunk) < FRAME:
            if self.finished_at is None:
                self.finished_at = time.perf_counter()
            chunk = np.concatenate((chunk, np.zeros(FRAME - len(chunk), np.int16)))
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = RATE, self.n * FRAME, fractions.Fraction(1, RATE)
        self.n += 1
        return frame


class WebRtcCaller:
    def __init__(self, speech: NDArray[np.int16]) -> None:
        self.pc = RTCPeerConnection()
        self.speech = SpeechTrack(speech)
        self.pc.addTrack(self.speech)
        self.channel = self.pc.createDataChannel("events")
        self.messages: list[dict[str, Any]] = []
        self.heard: list[tuple[float, NDArray[np.int16]]] = []  # (perf_counter, 16 kHz mono chunk)
        self.changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._notices: set[asyncio.Task[None]] = set()
        self.channel.on("message", self._message)
        self.pc.on("track", self._track)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer_sdp, type="answer"))

    def hang_up(self) -> None:
        self.channel.send(json.dumps({"type": "hangup"}))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.pc.close()

    def heard_pcm(self) -> NDArray[np.int16]:
        return np.concatenate([pcm for _, pcm in self.heard]) if self.heard else np.zeros(0, np.int16)

    def loud_since(self, since: float, dbfs: float = -35.0) -> float | None:
        """When the first chunk louder than `dbfs` arrived after `since` (perf_counter), if one has."""
        for at, pcm in self.heard:
            rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) / 32768 if len(pcm) else 0.0
            if at >= since and 20 * np.log10(max(rms, 1e-9)) > dbfs:
                return at
        return None

    async def until(self, predicate: Any, within: float) -> None:
        async with asyncio.timeout(within), self.changed:
            await self.changed.wait_for(predicate)

    def _message(self, message: object) -> None:
        self.messages.append(json.loads(str(message)))
        notice = asyncio.get_running_loop().create_task(self._notify())
        self._notices.add(notice)
        notice.add_done_callback(self._notices.discard)

    def _track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._reader = asyncio.create_task(self._read(track))

    async def _read(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        try:
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                for out in resampler.resample(frame):
                    self.heard.append((time.perf_counter(), out.to_ndarray().reshape(-1).astype(np.int16)))
                await self._notify()
        except MediaStreamError:
            return

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()
