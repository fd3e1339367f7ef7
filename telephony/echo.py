"""Echo test mode: what a routed call does until an agent pipeline answers it.

The caller hears a prompt tone (two short 440 Hz beeps), then their own voice back, frame for frame,
and every digit they key is answered with a short 1 kHz blip, so the whole edge - signalling, RTP both
ways, the jitter buffer, paced sending and DTMF - can be tried with any softphone and nothing else. The
call ends when the caller hangs up or after `max_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from telephony.call import CallLeg, Dtmf

RATE = 8000


def tone(hz: float, seconds: float, amplitude: float = 6000.0) -> NDArray[np.int16]:
    t = np.arange(int(RATE * seconds)) / RATE
    ramp = np.minimum(1.0, np.minimum(t, seconds - t) / 0.01)  # 10 ms fades: no clicks
    return (amplitude * ramp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def prompt_tone() -> NDArray[np.int16]:
    gap = np.zeros(int(RATE * 0.15), dtype=np.int16)
    return np.concatenate((tone(440.0, 0.25), gap, tone(440.0, 0.25), gap))


async def echo_call(
    leg: CallLeg, *, max_seconds: float = 600.0, on_digit: Callable[[Dtmf], None] | None = None
) -> None:
    """Run the echo test on `leg` until it ends; `on_digit` sees each digit (the logs, a test)."""
    leg.write(prompt_tone())

    async def loop_audio() -> None:
        async for frame in leg.audio():
            leg.write(frame)

    async def blip_digits() -> None:
        async for digit in leg.dtmf():
            if on_digit is not None:
                on_digit(digit)
            leg.write(tone(1000.0, 0.08))

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(loop_audio()), group.create_task(blip_digits())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(leg.wait_ended(), max_seconds)
        for task in tasks:
            task.cancel()
