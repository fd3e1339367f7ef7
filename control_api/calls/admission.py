"""Who answers an inbound call, with which frozen agent version, and who pays: the edge's router.

For each INVITE the edge admitted at the SIP level, in order:

    the dialed number routes nowhere         404 with a reason phrase (not in service / not assigned /
                                             agent deleted), no conversation: there is no agent to own it
    the agent was never published            480 "Agent Not Published", and a conversation record
                                             (outcome `refused`) so the operator sees the missed call
    the organization cannot pay for a call   answered, a short notice plays (the special information
                                             tone), then it hangs up; recorded as `refused`. With
                                             `play_notice=False` it is refused with 480 instead
    otherwise                                answered by `CallSession` with the published version read
                                             now: a publish or rollback reaches the next call at once,
                                             never a call in progress (the CompiledAgent is immutable)

`data_dir` is where answered calls of agents with `recordCalls` on are recorded (`<data_dir>/recordings/`);
without it no call is recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from control_api.agent_store import DatabaseAgentSource
from control_api.billing.metering import Meter
from control_api.calls.records import CallRecords
from control_api.calls.session import AdmittedCall, CallHandler, CallSession, play_refusal_notice
from control_api.numbers.inbound import DatabaseNumberRouter
from runtime.routing import NoRoute
from telephony.edge import Admit, Refuse
from telephony.sip.ua_types import CallInfo

log = logging.getLogger(__name__)

NO_ROUTE_REASONS = {
    "unknown": "Number Not In Service",
    "unassigned": "Number Not Assigned To An Agent",
    "agent_deleted": "Agent Deleted",
}


class CallAdmission:
    def __init__(
        self,
        numbers: DatabaseNumberRouter,
        agents: DatabaseAgentSource,
        meter: Meter,
        records: CallRecords,
        handler: CallHandler,
        *,
        play_notice: bool = True,
        data_dir: Path | None = None,
    ) -> None:
        self.numbers, self.agents, self.meter, self.records = numbers, agents, meter, records
        self.handler = handler
        self.play_notice = play_notice
        self.data_dir = data_dir

    async def __call__(self, info: CallInfo) -> Admit | Refuse:
        route = await self.numbers.route_inbound(info.dialed)
        if isinstance(route, NoRoute):
            log.info("call %s to %s refused: %s", info.call_id, info.dialed, route.reason)
            return Refuse(404, NO_ROUTE_REASONS[route.reason])
        agent = await self.agents.published(route.org_id, route.agent_id)
        if agent is None:
            draft = await self.agents.draft(route.org_id, route.agent_id)
            if draft is not None:
                await self.records.refused(route, draft, info, "agent never published")
            log.info("call %s to %s refused: agent %s never published", info.call_id, info.dialed, route.agent_id)
            return Refuse(480, "Agent Not Published")
        serve = await self.meter.can_serve(route.org_id, "voice", toll_free=route.number_type == "toll_free")
        if not serve.allowed:
            await self.records.refused(route, agent, info, "insufficient funds")
            log.info("call %s to %s refused: organization %s cannot pay", info.call_id, info.dialed, route.org_id)
            if not self.play_notice:
                return Refuse(480, "Insufficient Funds")
            return Admit(play_refusal_notice)
        session = CallSession(
            AdmittedCall(info, route, agent), self.meter, self.records, self.handler, data_dir=self.data_dir
        )
        return Admit(session.run)
