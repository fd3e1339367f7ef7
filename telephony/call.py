"""The `CallLeg`: one call as the runtime sees it, whatever carried it (SIP/RTP here, WebRTC later).

Audio in is an async stream of 20 ms int16 frames at `sample_rate`; audio out is a bounded buffer
(`write`, `clear_buffer` for barge-in) whose `played_ms` says what has really left on the wire, so the
conversation can keep only what the caller heard (STYLE rule 7). Digits come from every source the
call has - RFC 4733 events, SIP INFO, or the in-band detector when no telephone-event was agreed - as
one stream of `Dtmf`. `hangup()` ends the call from our side; `transfer(target)` REFERs the caller and
returns how it went. `SipCallLeg` implements it over an `RtpEndpoint` and the edge's signalling.

`SipCallLeg.start_recording(recorder)` records the call from then on (`telephony.recording`): the frames
`audio()` yields as the caller's side, the frames the endpoint's pacer really sent as the agent's, each with
its pacing tick; `stop_recording()` detaches it (the owner closes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from telephony.inband_dtmf import DtmfDetector
from telephony.recording import RecordingTap
from telephony.rtp.endpoint import EndpointStats, RtpEndpoint
from telephony.sip.ua_types import CallInfo

log = logging.getLogger(__name__)

DtmfSource = Literal["rfc4733", "info", "inband"]
FRAME_MS = 20


@dataclass(frozen=True, slots=True)
class Dtmf:
    digit: str
    duration_ms: int
    source: DtmfSource


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    """`ok` when the transfer target answered (NOTIFY sipfrag 2xx); `status` is the last status seen
    (the REFER's own failure, the sipfrag's, or 408 when nothing final came in time)."""

    ok: bool
    status: int
    reason: str


class CallLeg(Protocol):
    call_id: str
    caller: str
    caller_name: str | None
    dialed: str
    sample_rate: int

    def audio(self) -> AsyncIterator[NDArray[np.int16]]: ...
    def dtmf(self) -> AsyncIterator[Dtmf]: ...
    def write(self, pcm: NDArray[np.int16]) -> None: ...
    def clear_buffer(self) -> int: ...
    def pause_output(self, paused: bool) -> None: ...
    @property
    def played_ms(self) -> int: ...
    @property
    def buffered_ms(self) -> int: ...
    @property
    def ended(self) -> bool: ...
    async def wait_ended(self) -> str: ...
    async def hangup(self) -> None: ...
    async def transfer(self, target: str, within: float = 30.0) -> TransferOutcome: ...
    def media_stats(self) -> EndpointStats: ...


class Signalling(Protocol):
    """What a SIP leg asks of the edge (implemented by `SipEdge`)."""

    def hangup_call(self, call_id: str) -> None: ...
    def refer_call(self, call_id: str, target: str) -> None: ...


class SipCallLeg:
    sample_rate = 8000

    def __init__(self, info: CallInfo, endpoint: RtpEndpoint, signalling: Signalling, *, inband_dtmf: bool) -> None:
        self.info = info
        self.call_id, self.caller, self.caller_name, self.dialed = (
            info.call_id,
            info.caller,
            info.caller_name,
            info.dialed,
        )
        self.endpoint = endpoint
        self._signalling = signalling
        self._digits: asyncio.Queue[Dtmf] = asyncio.Queue(maxsize=64)
        self._inband = DtmfDetector() if inband_dtmf else None
        self._ended = asyncio.Event()
        self._end_reason = ""
        self._confirmed = asyncio.Event()
        self._transfer: asyncio.Queue[tuple[int, bool]] | None = None
        self.media_updates = 0  # offers answered after the first (hold, resume, moved media)
        self.held = False  # the caller put us on hold (we send nothing until resumed)
        self._recorder: RecordingTap | None = None
        self._pump = asyncio.create_task(self._pump_rfc4733(), name=f"dtmf-{info.call_id[:16]}")

    # --- audio ---------------------------------------------------------------------------------
    async def audio(self) -> AsyncIterator[NDArray[np.int16]]:
        """Received audio, 20 ms per frame, until the call ends (noticed within one frame)."""
        async for frame in self.endpoint.audio():
            if self._ended.is_set():
                return
            if self._inband is not None:
                for event in self._inband.process(frame):
                    self._put(Dtmf(event.digit, int(event.duration_s * 1000), "inband"))
            if self._recorder is not None:
                self._record(frame)
            yield frame

    def write(self, pcm: NDArray[np.int16]) -> None:
        if not self._ended.is_set():
            self.endpoint.send_audio(pcm)

    def clear_buffer(self) -> int:
        self.endpoint.sender.paused = False
        return self.endpoint.clear_buffer()

    def pause_output(self, paused: bool) -> None:
        """Hold the agent's audio where it is (the caller may be barging in) or let it go on."""
        self.endpoint.sender.paused = paused

    @property
    def played_ms(self) -> int:
        return self.endpoint.sender.audio_frames_sent * FRAME_MS

    @property
    def buffered_ms(self) -> int:
        return self.endpoint.buffered_frames * FRAME_MS

    def media_stats(self) -> EndpointStats:
        return self.endpoint.snapshot()

    # --- recording -----------------------------------------------------------------------------
    def start_recording(self, recorder: RecordingTap) -> None:
        """Record both directions from now on: received frames as `audio()` yields them, sent ones as they leave."""
        self._recorder = recorder
        self.endpoint.tap = recorder

    def _record(self, frame: NDArray[np.int16]) -> None:
        assert self._recorder is not None
        try:
            self._recorder.caller_frame(frame, self.endpoint.playout_tick)
        except Exception:  # a broken recorder must not take the call down
            log.exception("call %s: the recorder failed; recording stopped", self.call_id)
            self.stop_recording()

    def stop_recording(self) -> RecordingTap | None:
        """Detach the recorder (closing it is its owner's business); returns it, or None if none was attached."""
        recorder, self._recorder = self._recorder, None
        self.endpoint.tap = None
        return recorder

    # --- digits --------------------------------------------------------------------------------
    async def dtmf(self) -> AsyncIterator[Dtmf]:
        while not self._ended.is_set():
            getter = asyncio.ensure_future(self._digits.get())
            ended = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait({getter, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ended.cancel()
                if not getter.done():
                    getter.cancel()
            if getter.done() and not getter.cancelled():
                yield getter.result()

    def _put(self, digit: Dtmf) -> None:
        if self._digits.full():
            self._digits.get_nowait()  # bounded: a flood of digits drops the oldest
        self._digits.put_nowait(digit)

    async def _pump_rfc4733(self) -> None:
        async for digit in self.endpoint.digits():
            if digit.digit is not None:
                self._put(Dtmf(digit.digit, int(digit.duration_ms), "rfc4733"))

    # --- signalling events (from the edge) -----------------------------------------------------
    def on_info_digit(self, digit: str, duration_ms: int) -> None:
        self._put(Dtmf(digit, duration_ms, "info"))

    def on_media_update(self, sending: bool) -> None:
        self.media_updates += 1
        self.held = not sending

    def on_confirmed(self) -> None:
        self._confirmed.set()

    def on_transfer(self, status: int, final: bool) -> None:
        if self._transfer is not None:
            self._transfer.put_nowait((status, final))

    def on_ended(self, reason: str) -> None:
        if not self._ended.is_set():
            self._end_reason = reason
            self._ended.set()

    # --- control -------------------------------------------------------------------------------
    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ended(self) -> str:
        await self._ended.wait()
        return self._end_reason

    async def wait_confirmed(self) -> None:
        await self._confirmed.wait()

    async def hangup(self) -> None:
        if self._ended.is_set():
            return
        self._signalling.hangup_call(self.call_id)
        self.on_ended("local hangup")

    async def transfer(self, target: str, within: float = 30.0) -> TransferOutcome:
        """REFER the caller to `target` and wait for the outcome (RFC 3515 NOTIFY sipfrag)."""
        if self._ended.is_set():
            return TransferOutcome(False, 481, "call already ended")
        self._transfer = asyncio.Queue()
        self._signalling.refer_call(self.call_id, target)
        last = 0
        try:
            async with asyncio.timeout(within):
                while True:
                    status, final = await self._transfer.get()
                    last = status
                    if final:
                        ok = 200 <= status < 300
                        return TransferOutcome(ok, status, "transferred" if ok else "transfer failed")
        except TimeoutError:
            return TransferOutcome(False, last or 408, "no final answer in time")
        finally:
            self._transfer = None

    async def close(self) -> None:
        self.on_ended(self._end_reason or "closed")
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        await self.endpoint.close()
