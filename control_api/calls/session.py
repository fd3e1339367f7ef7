"""One answered call around whatever answers it: the conversation record and the metering of connected time.

The handler (the echo test mode today, the voice pipeline next) gets the admitted call - caller, route and the
published `CompiledAgent` pinned for the whole call - and the leg, and may return how the call ended
(`transferred`, `ended_by_agent`); otherwise the outcome is `completed`, or `abandoned` when the caller left
within the first second. Connected seconds are billed through the metering API once, with the conversation
id as the event id, whatever way the call ends.

When the agent has `recordCalls` on (and the session was given a data directory), the call is recorded from
answer to end into `<data_dir>/recordings/<org_id>/<conversation_id>.wav` (`telephony.recording`); the path
goes on the conversation once the file is complete. A recording that cannot be made is logged, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from control_api.billing.metering import Meter
from control_api.calls.records import CallRecords
from control_api.conversations.recordings import relative_path
from runtime.agent_config import CompiledAgent
from runtime.routing import RouteDecision
from telephony.call import SipCallLeg
from telephony.echo import echo_call, tone
from telephony.recording import CallRecorder
from telephony.sip.ua_types import CallInfo

log = logging.getLogger(__name__)

# The special information tone (ITU-T E.180 / Telcordia SR-2275): the network's "this call cannot be
# completed" in three rising tones, understood by people and by dialers alike.
SIT_TONES = ((913.8, 0.274), (1370.6, 0.274), (1776.7, 0.380))


@dataclass(frozen=True)
class AdmittedCall:
    info: CallInfo
    route: RouteDecision
    agent: CompiledAgent


# (the admitted call, its leg, its conversation id) -> the outcome, or None for the default
CallHandler = Callable[[AdmittedCall, SipCallLeg, str], Awaitable[str | None]]


async def echo_handler(call: AdmittedCall, leg: SipCallLeg, conversation_id: str) -> str | None:
    """The echo test mode (telephony/echo.py), until the voice pipeline answers calls."""
    await echo_call(leg)
    return None


async def play_refusal_notice(leg: SipCallLeg) -> None:
    """The special information tone, then hang up once it has been heard."""
    notice = np.concatenate([tone(hz, seconds) for hz, seconds in SIT_TONES])
    leg.write(notice)
    await asyncio.sleep(len(notice) / 8000 + 0.2)  # real time: the caller has to hear it
    await leg.hangup()


class CallSession:
    def __init__(
        self,
        call: AdmittedCall,
        meter: Meter,
        records: CallRecords,
        handler: CallHandler,
        *,
        data_dir: Path | None = None,
    ) -> None:
        self.call, self.meter, self.records, self.handler = call, meter, records, handler
        self.data_dir = data_dir  # where recordings go; None records nothing
        self.conversation_id: str | None = None

    async def run(self, leg: SipCallLeg) -> None:
        call = self.call
        loop = asyncio.get_running_loop()
        self.conversation_id = await self.records.started(call.route, call.agent, call.info)
        recorder = self._start_recording(leg, self.conversation_id)
        answered = loop.time()
        outcome: str | None = None
        try:
            outcome = await self.handler(call, leg, self.conversation_id)
        finally:
            seconds = max(0.0, loop.time() - answered)
            outcome = outcome or ("completed" if seconds >= 1.0 else "abandoned")
            recording = self._stop_recording(leg, recorder)
            await asyncio.shield(self._close(seconds, outcome, recording))

    def _start_recording(self, leg: SipCallLeg, conversation_id: str) -> CallRecorder | None:
        call = self.call
        if not call.agent.record_calls:
            return None
        if self.data_dir is None:
            log.warning("call %s: agent %s records calls but no data directory was given; not recorded",
                        call.info.call_id, call.agent.agent_id)  # fmt: skip
            return None
        try:
            recorder = CallRecorder(self.data_dir / relative_path(call.route.org_id, conversation_id), leg.sample_rate)
        except OSError:
            log.exception("call %s: cannot start the recording", call.info.call_id)
            return None
        leg.start_recording(recorder)
        return recorder

    def _stop_recording(self, leg: SipCallLeg, recorder: CallRecorder | None) -> str | None:
        """Detach and close the recorder; the recording's relative path if there is a file to serve."""
        if recorder is None:
            return None
        leg.stop_recording()
        recorder.close()
        if recorder.error is not None:
            log.warning("call %s: the recording stopped early after %.1f s: %s",
                        self.call.info.call_id, recorder.seconds, recorder.error)  # fmt: skip
        assert self.conversation_id is not None
        return relative_path(self.call.route.org_id, self.conversation_id) if recorder.path.is_file() else None

    async def _close(self, seconds: float, outcome: str, recording: str | None = None) -> None:
        call, conversation_id = self.call, self.conversation_id
        assert conversation_id is not None
        if recording is not None:
            try:
                await self.records.recorded(call.route.org_id, conversation_id, recording)
            except Exception:
                log.exception("call %s: could not note its recording", call.info.call_id)
        try:
            await self.meter.record_usage(
                call.route.org_id, call.agent.agent_id, "voice", round(seconds, 3), f"voice:{conversation_id}",
                self.records.clock.now(), toll_free=call.route.number_type == "toll_free",
            )  # fmt: skip
        except Exception:
            log.exception("call %s: metering %.1f s failed", call.info.call_id, seconds)
        await self.records.ended(call.route.org_id, conversation_id, outcome)
