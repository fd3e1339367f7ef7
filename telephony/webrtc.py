"""A browser's WebRTC peer connection as a call leg; the only module that imports aiortc.

`answer(offer_sdp, config)` accepts a browser's offer (audio, and a data channel for events) and returns
the `WebRtcLeg` with the SDP answer, ICE candidates included (aiortc gathers them all before answering,
no trickle). The leg looks to the voice pipeline like a phone leg (`pipeline.voice.leg.AudioLeg`), at
16 kHz mono both ways:

    browser mic -> Opus 48 kHz -> aiortc decoder -> resample to 16 kHz mono -> 20 ms frames -> `audio()`
    `write()` -> bounded buffer of 20 ms frames -> paced track (one frame per 20 ms deadline, silence when
    empty or held) -> aiortc's Opus encoder (48 kHz) -> browser

`played_ms` counts the agent's frames that actually left, the playback position a barge-in truncates the
history to. There is no keypad (`dtmf()` yields nothing) and no transfer: a browser session cannot be
handed to a phone line, so `transfer()` fails with 501 and the agent says so. The call ends when the
browser hangs up (a `{"type": "hangup"}` message on the data channel), the peer connection fails or
closes, or `hangup()` is called.

Where ICE gathers: everywhere but loopback by default (aioice's rule). `WebRtcConfig.host_addresses`
replaces that list for the whole process (aioice has no per-connection option), e.g. `("127.0.0.1",)` for
tests in a network namespace that has only `lo`. `ice_servers` are STUN/TURN URLs for real deployments.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from numpy.typing import NDArray

from telephony.call import TransferOutcome

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
FRAME_MS = 20
FRAME = SAMPLE_RATE * FRAME_MS // 1000
MAX_BUFFER_FRAMES = 3000  # 60 s of agent audio queued at most; the oldest goes first
MAX_INBOUND_FRAMES = 250  # 5 s of caller audio waiting for the pipeline at most
MAX_HELD_EVENTS = 100  # events for the browser before its data channel is open


@dataclass(frozen=True)
class WebRtcConfig:
    ice_servers: tuple[str, ...] = ()  # "stun:stun.example.org:3478", "turn:user:secret@turn.example.org"
    host_addresses: tuple[str, ...] | None = None  # None: aioice's own choice (every address but loopback)

    def rtc_configuration(self) -> RTCConfiguration:
        servers = []
        for url in self.ice_servers:
            scheme, _, rest = url.partition(":")
            credentials, at, host = rest.rpartition("@")
            if at and scheme.startswith("turn"):
                username, _, password = credentials.partition(":")
                servers.append(RTCIceServer(urls=f"{scheme}:{host}", username=username, credential=password))
            else:
                servers.append(RTCIceServer(urls=url))
        return RTCConfiguration(iceServers=servers)


def use_host_addresses(addresses: Sequence[str] | None) -> None:
    """Gather host candidates on exactly these addresses (process-wide), or on aioice's default again."""
    if addresses is None:
        aioice.ice.get_host_addresses = _AIOICE_HOST_ADDRESSES
        return
    chosen = list(addresses)
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [a for a in chosen if (":" in a and use_ipv6)
                                                                or (":" not in a and use_ipv4)]  # fmt: skip


_AIOICE_HOST_ADDRESSES = aioice.ice.get_host_addresses


class _AgentTrack(MediaStreamTrack):
    """The agent's audio: 20 ms frames from a bounded buffer, paced by deadlines (start + n * 20 ms)."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.frames: deque[NDArray[np.int16]] = deque()
        self.carry = np.zeros(0, np.int16)
        self.paused = False
        self.sent = 0  # agent frames that left (silence not counted)
        self._start: float | None = None
        self._n = 0
        self._silence = np.zeros(FRAME, np.int16)

    def push(self, pcm: NDArray[np.int16]) -> None:
        audio = np.concatenate((self.carry, pcm.astype(np.int16, copy=False)))
        whole = len(audio) // FRAME * FRAME
        self.carry = audio[whole:]
        for i in range(0, whole, FRAME):
            if len(self.frames) >= MAX_BUFFER_FRAMES:
                self.frames.popleft()
            self.frames.append(audio[i : i + FRAME])

    def clear(self) -> int:
        dropped = len(self.frames)
        self.frames.clear()
        self.carry = np.zeros(0, np.int16)
        return dropped

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        self._n += 1
        deadline = self._start + self._n * FRAME_MS / 1000
        if deadline > now:
            await asyncio.sleep(deadline - now)
        elif now - deadline > 0.2:  # far behind (a stalled loop): start the clock again instead of bursting
            self._start, self._n = now, 1
        pcm = self._silence
        if self.frames and not self.paused:
            pcm = self.frames.popleft()
            self.sent += 1
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._n * FRAME
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        return frame


class WebRtcLeg:
    """One browser session (`AudioLeg` for the pipeline, `CallActions` for the call)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, pc: RTCPeerConnection) -> None:
        self.pc = pc
        self.track = _AgentTrack()
        self.channel: RTCDataChannel | None = None
        self._inbound: asyncio.Queue[NDArray[np.int16] | None] = asyncio.Queue()
        self._ended = asyncio.Event()
        self._reason = ""
        self._reader: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()  # ICE and DTLS are up: media flows
        self._held: deque[str] = deque(maxlen=MAX_HELD_EVENTS)  # events waiting for the data channel

    # --- AudioLeg ------------------------------------------------------------------------------------
    async def audio(self) -> AsyncIterator[NDArray[np.int16]]:
        while (frame := await self._inbound.get()) is not None:
            yield frame

    async def dtmf(self) -> AsyncIterator[Any]:
        await self._ended.wait()  # no keypad in a browser session
        return
        yield  # an async generator that yields nothing

    def write(self, pcm: NDArray[np.int16]) -> None:
        if not self._ended.is_set():
            self.track.push(pcm)

    def clear_buffer(self) -> int:
        self.track.paused = False
        return self.track.clear()

    def pause_output(self, paused: bool) -> None:
        self.track.paused = paused

    @property
    def played_ms(self) -> int:
        return self.track.sent * FRAME_MS

    @property
    def buffered_ms(self) -> int:
        return len(self.track.frames) * FRAME_MS

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> str:
        await self._ended.wait()
        return self._reason

    # --- CallActions ---------------------------------------------------------------------------------
    async def hangup(self) -> None:
        self.end("local hangup")
        await self.pc.close()

    async def transfer(self, target: str, within: float = 30.0) -> TransferOutcome:
        return TransferOutcome(False, 501, "a browser session cannot be transferred to a phone line")

    # --- events to the browser -----------------------------------------------------------------------
    def send_event(self, event: dict[str, Any]) -> None:
        """One JSON message on the data channel; held (the last MAX_HELD_EVENTS) until the channel is open."""
        self._held.append(json.dumps(event, separators=(",", ":")))
        self._flush()

    def _flush(self) -> None:
        if self.channel is None or self.channel.readyState != "open":
            return
        while self._held:
            self.channel.send(self._held.popleft())

    # --- wiring ---------------------------------------------------------------------------------------
    def end(self, reason: str) -> None:
        if self._ended.is_set():
            return
        self._reason = reason
        self._ended.set()
        self.track.stop()
        self._inbound.put_nowait(None)
        if self._reader is not None:
            self._reader.cancel()

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.create_task(self._read(track), name="webrtc-audio-in")

    async def _read(self, track: MediaStreamTrack) -> None:
        """The browser's audio as 20 ms frames of 16 kHz mono; the oldest dropped if the pipeline lags."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        carry = np.zeros(0, np.int16)
        with contextlib.suppress(Exception):  # MediaStreamError when the browser goes; ends the call below
            while not self._ended.is_set():
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                for out in resampler.resample(frame):
                    carry = np.concatenate((carry, out.to_ndarray().reshape(-1).astype(np.int16)))
                whole = len(carry) // FRAME * FRAME
                for i in range(0, whole, FRAME):
                    if self._inbound.qsize() >= MAX_INBOUND_FRAMES:
                        with contextlib.suppress(asyncio.QueueEmpty):
                            self._inbound.get_nowait()
                    self._inbound.put_nowait(carry[i : i + FRAME])
                carry = carry[whole:]
        self.end("the browser's audio ended")

    def _on_channel(self, channel: RTCDataChannel) -> None:
        self.channel = channel
        channel.on("open", self._flush)
        self._flush()

        @channel.on("message")
        def _message(message: object) -> None:
            with contextlib.suppress(ValueError, TypeError):
                if json.loads(str(message)).get("type") == "hangup":
                    self.end("remote hangup")

    async def _state_changed(self) -> None:
        state = self.pc.connectionState
        if state == "connected":
            self.connected.set()
        elif state in ("failed", "closed"):
            self.end(f"connection {state}")


async def answer(offer_sdp: str, config: WebRtcConfig) -> tuple[WebRtcLeg, str]:
    """Accept a browser's offer; the leg, and the SDP answer with all our ICE candidates in it."""
    pc = RTCPeerConnection(configuration=config.rtc_configuration())
    leg = WebRtcLeg(pc)
    pc.on("track", leg._on_track)
    pc.on("datachannel", leg._on_channel)
    pc.on("connectionstatechange", leg._state_changed)
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        pc.addTrack(leg.track)  # takes the offer's audio transceiver: the agent speaks on the browser's m-line
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception:
        await pc.close()
        raise
    return leg, pc.localDescription.sdp
