"""RFC 4733 telephone events: payload, receiver state machine, sender.

Payload (§2.3)::

    |     event     |E|R| volume    |          duration             |

The receiver collapses the packets of one key press into ONE ``DtmfDigit``. Packets of one event
share an RTP timestamp (§2.5.1.2); the first has the marker bit, updates carry a growing duration,
and the end is sent three times with the E bit (§2.5.1.4). Each packet is classified against the
event in progress:

    NEW         timestamp after the current one (or none yet, or the same timestamp with another
                event code), E clear: a start, or an update whose start was lost
    NEW_END     timestamp after the current one, E set: an event whose other packets were lost
    SAME        same timestamp, E clear: an update
    SAME_END    same timestamp, E set: an end (first or a repeat)
    STALE       timestamp before the current one: a late packet of an earlier event
    TIMEOUT     ``tick(now)`` with no packet for ``timeout`` seconds: the end packets were lost

    state     input      effect              next      (§ of RFC 4733)
    IDLE      NEW        start               ACTIVE    2.5.1.2
    IDLE      NEW_END    start, finish       ENDED     2.5.1.4 (start lost)
    IDLE      TIMEOUT    -                   IDLE
    ACTIVE    SAME       update duration     ACTIVE    2.5.1.3
    ACTIVE    SAME_END   finish              ENDED     2.5.1.4
    ACTIVE    NEW        finish old, start   ACTIVE    2.5.1.5 (a new event replaces it)
    ACTIVE    NEW_END    finish old, start,  ENDED
                         finish new
    ACTIVE    STALE      -                   ACTIVE
    ACTIVE    TIMEOUT    finish (timeout)    ENDED     2.5.2.3 (end packets lost)
    ENDED     SAME       -                   ENDED     late update of a finished event
    ENDED     SAME_END   -                   ENDED     repeated end packet
    ENDED     NEW        start               ACTIVE
    ENDED     NEW_END    start, finish       ENDED
    ENDED     STALE      -                   ENDED
    ENDED     TIMEOUT    -                   ENDED

Any other pair is a bug and raises ``RtpError``. Time is passed in as ``now`` (seconds).
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass

from telephony.errors import RtpError
from telephony.rtp.packet import RtpPacket
from telephony.rtp.seq import seq_add, ts_diff

__all__ = [
    "DtmfDigit",
    "DtmfReceiver",
    "EndReason",
    "ScheduledPacket",
    "TelephoneEvent",
    "digit_to_event",
    "dtmf_packets",
    "event_to_digit",
]

_EVENT = struct.Struct("!BBH")
_DIGITS = "0123456789*#ABCD"


def event_to_digit(event: int) -> str | None:
    """Events 0–15 (§3.2) as the characters 0-9, *, #, A-D; other events (flash, tones) → None."""
    return _DIGITS[event] if 0 <= event < len(_DIGITS) else None


def digit_to_event(digit: str) -> int:
    index = _DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if index < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return index


@dataclass
class TelephoneEvent:
    event: int
    end: bool = False
    volume: int = 10  # 0..63, -dBm0
    duration: int = 0  # timestamp units
    reserved: bool = False

    @classmethod
    def parse(cls, data: bytes) -> TelephoneEvent:
        if len(data) < _EVENT.size:
            raise RtpError(f"telephone-event payload too short: {len(data)} bytes")
        event, flags, duration = _EVENT.unpack_from(data)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration, bool(flags & 0x40))

    def __bytes__(self) -> bytes:
        if not 0 <= self.volume <= 63:
            raise RtpError(f"volume out of range: {self.volume}")
        flags = (0x80 if self.end else 0) | (0x40 if self.reserved else 0) | self.volume
        return _EVENT.pack(self.event, flags, self.duration)

    @property
    def digit(self) -> str | None:
        return event_to_digit(self.event)


class EndReason(enum.Enum):
    END = "end"  # an E-bit packet arrived
    TIMEOUT = "timeout"  # end packets lost
    REPLACED = "replaced"  # a new event started before this one ended


@dataclass(frozen=True)
class DtmfDigit:
    event: int
    digit: str | None
    timestamp: int
    duration: int  # timestamp units
    duration_ms: float
    volume: int
    reason: EndReason


class _State(enum.Enum):
    IDLE = "idle"
    ACTIVE = "active"
    ENDED = "ended"


class _Input(enum.Enum):
    NEW = "new"
    NEW_END = "new_end"
    SAME = "same"
    SAME_END = "same_end"
    STALE = "stale"
    TIMEOUT = "timeout"


class _Effect(enum.Enum):
    NONE = "none"
    START = "start"
    START_FINISH = "start_finish"
    UPDATE = "update"
    FINISH = "finish"
    REPLACE = "replace"
    REPLACE_FINISH = "replace_finish"
    TIMEOUT = "timeout"


_S, _I, _E = _State, _Input, _Effect
_TRANSITIONS: dict[tuple[_State, _Input], tuple[_Effect, _State]] = {
    (_S.IDLE, _I.NEW): (_E.START, _S.ACTIVE),
    (_S.IDLE, _I.NEW_END): (_E.START_FINISH, _S.ENDED),
    (_S.IDLE, _I.TIMEOUT): (_E.NONE, _S.IDLE),
    (_S.ACTIVE, _I.SAME): (_E.UPDATE, _S.ACTIVE),
    (_S.ACTIVE, _I.SAME_END): (_E.FINISH, _S.ENDED),
    (_S.ACTIVE, _I.NEW): (_E.REPLACE, _S.ACTIVE),
    (_S.ACTIVE, _I.NEW_END): (_E.REPLACE_FINISH, _S.ENDED),
    (_S.ACTIVE, _I.STALE): (_E.NONE, _S.ACTIVE),
    (_S.ACTIVE, _I.TIMEOUT): (_E.TIMEOUT, _S.ENDED),
    (_S.ENDED, _I.SAME): (_E.NONE, _S.ENDED),
    (_S.ENDED, _I.SAME_END): (_E.NONE, _S.ENDED),
    (_S.ENDED, _I.NEW): (_E.START, _S.ACTIVE),
    (_S.ENDED, _I.NEW_END): (_E.START_FINISH, _S.ENDED),
    (_S.ENDED, _I.STALE): (_E.NONE, _S.ENDED),
    (_S.ENDED, _I.TIMEOUT): (_E.NONE, _S.ENDED),
}


class DtmfReceiver:
    """Collapses RFC 4733 packets into one ``DtmfDigit`` per key press. Sans-I/O."""

    def __init__(self, clock_rate: int = 8000, timeout: float = 0.3) -> None:
        self.clock_rate = clock_rate
        self.timeout = timeout
        self.state = _State.IDLE
        self._timestamp = 0
        self._event = TelephoneEvent(0)
        self._last_packet_at = 0.0

    def receive_packet(self, packet: RtpPacket, now: float) -> list[DtmfDigit]:
        return self.receive(packet.timestamp, packet.payload, now)

    def receive(self, timestamp: int, payload: bytes, now: float) -> list[DtmfDigit]:
        """Feed one telephone-event payload; returns the digits it completes (0, 1 or 2)."""
        ev = TelephoneEvent.parse(payload)
        same = timestamp == self._timestamp and ev.event == self._event.event
        if self.state is _State.IDLE or ts_diff(timestamp, self._timestamp) > 0 or (
            timestamp == self._timestamp and not same
        ):
            inp = _Input.NEW_END if ev.end else _Input.NEW
        elif same:
            inp = _Input.SAME_END if ev.end else _Input.SAME
        else:
            inp = _Input.STALE
        return self._step(inp, timestamp, ev, now)

    def tick(self, now: float) -> list[DtmfDigit]:
        """Advance time; finishes an event whose end packets were lost."""
        if self.state is _State.ACTIVE and now - self._last_packet_at >= self.timeout:
            return self._step(_Input.TIMEOUT, self._timestamp, self._event, now)
        return []

    def _step(self, inp: _Input, timestamp: int, ev: TelephoneEvent, now: float) -> list[DtmfDigit]:
        try:
            effect, next_state = _TRANSITIONS[(self.state, inp)]
        except KeyError:
            raise RtpError(f"DTMF receiver: {inp.value} in state {self.state.value}") from None
        out: list[DtmfDigit] = []
        if effect in (_Effect.REPLACE, _Effect.REPLACE_FINISH):
            out.append(self._digit(EndReason.REPLACED))
        if effect in (_Effect.START, _Effect.START_FINISH, _Effect.REPLACE, _Effect.REPLACE_FINISH):
            self._timestamp = timestamp
            self._event = ev
        if effect is _Effect.UPDATE and ev.duration >= self._event.duration:
            self._event = ev
        if effect in (_Effect.FINISH, _Effect.START_FINISH, _Effect.REPLACE_FINISH):
            if ev.duration >= self._event.duration:
                self._event = ev
            out.append(self._digit(EndReason.END))
        if effect is _Effect.TIMEOUT:
            out.append(self._digit(EndReason.TIMEOUT))
        if inp is not _Input.TIMEOUT and inp is not _Input.STALE:
            self._last_packet_at = now
        self.state = next_state
        return out

    def _digit(self, reason: EndReason) -> DtmfDigit:
        ev = self._event
        return DtmfDigit(
            event=ev.event,
            digit=ev.digit,
            timestamp=self._timestamp,
            duration=ev.duration,
            duration_ms=1000.0 * ev.duration / self.clock_rate,
            volume=ev.volume,
            reason=reason,
        )


@dataclass(frozen=True)
class ScheduledPacket:
    offset: float  # seconds after the first packet at which to send it
    packet: RtpPacket


def dtmf_packets(
    digit: str,
    *,
    payload_type: int,
    ssrc: int,
    first_sequence: int,
    timestamp: int,
    duration_ms: int = 100,
    ptime_ms: int = 20,
    update_ms: int = 50,
    volume: int = 10,
    clock_rate: int = 8000,
) -> list[ScheduledPacket]:
    """The packets of one key press (RFC 4733 §2.5.1): a start with the marker bit, an update every
    ``update_ms`` (rounded up to whole ``ptime_ms`` frames) and three end packets one ptime apart,
    all with the same RTP ``timestamp``. The duration is rounded up to whole frames."""
    event = digit_to_event(digit)
    if ptime_ms <= 0 or update_ms <= 0 or duration_ms <= 0:
        raise ValueError("ptime, update interval and duration must be positive")
    step = math.ceil(update_ms / ptime_ms) * ptime_ms
    total_ms = math.ceil(duration_ms / ptime_ms) * ptime_ms
    samples_per_ms = clock_rate // 1000
    if total_ms * samples_per_ms > 0xFFFF:
        raise ValueError("duration does not fit the 16-bit duration field")
    plan: list[tuple[int, int, bool]] = []  # (offset ms, duration ms, end)
    at = 0
    while at < total_ms:
        plan.append((at, at + ptime_ms, False))
        at += step
    plan += [(total_ms + i * ptime_ms, total_ms, True) for i in range(3)]
    out = []
    for i, (offset, dur, end) in enumerate(plan):
        payload = bytes(TelephoneEvent(event, end, volume, dur * samples_per_ms))
        packet = RtpPacket(
            payload_type=payload_type,
            sequence_number=seq_add(first_sequence, i),
            timestamp=timestamp,
            ssrc=ssrc,
            marker=i == 0,
            payload=payload,
        )
        out.append(ScheduledPacket(offset / 1000, packet))
    return out
