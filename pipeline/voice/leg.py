"""`AudioLeg`: the part of a call the voice pipeline needs, as a Protocol (STYLE rule 7).

The pipeline never imports telephony; `telephony.call.SipCallLeg` (and any WebRTC leg) satisfies this
structurally. Audio in is an async stream of int16 mono frames at `sample_rate`; audio out goes into a
bounded, paced buffer (`write`) that `clear_buffer()` empties on barge-in, and `played_ms` says how much
audio has really left for the caller - the playback position the conversation is truncated to. Digits
arrive as objects with `digit` and `duration_ms` (telephony's `Dtmf`); `wait_ended()` returns the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import numpy as np
from numpy.typing import NDArray


class Digit(Protocol):
    """One keyed digit (telephony's `Dtmf` has these fields, plus where it came from)."""

    @property
    def digit(self) -> str: ...
    @property
    def duration_ms(self) -> int: ...


class AudioLeg(Protocol):
    """The subset of `CallLeg` the voice pipeline uses."""

    @property
    def sample_rate(self) -> int: ...

    def audio(self) -> AsyncIterator[NDArray[np.int16]]: ...
    def dtmf(self) -> AsyncIterator[Digit]: ...
    def write(self, pcm: NDArray[np.int16]) -> None: ...
    def clear_buffer(self) -> int: ...
    def pause_output(self, paused: bool) -> None:
        """Hold playback where it is, keeping what is queued (a possible barge-in), or go on."""
        ...
    @property
    def played_ms(self) -> int: ...
    @property
    def buffered_ms(self) -> int: ...
    @property
    def ended(self) -> bool: ...
    async def wait_ended(self) -> str: ...
