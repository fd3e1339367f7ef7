"""Conversation records of phone calls (channel `voice`): started when answered, ended with an outcome,
and refused calls recorded too, so an operator sees the calls their agent missed and why."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from control_api.clock import Clock
from control_api.conversations import repository as conversations
from control_api.db.tables import conversations as conversations_table
from runtime.agent_config import CompiledAgent
from runtime.routing import RouteDecision
from telephony.sip.ua_types import CallInfo


@dataclass
class CallRecords:
    engine: AsyncEngine
    clock: Clock

    async def started(self, route: RouteDecision, agent: CompiledAgent, info: CallInfo) -> str:
        async with self.engine.begin() as conn:
            return await conversations.create(
                conn, org_id=route.org_id, agent=agent, channel="voice", now=self.clock.now(),
                end_user=info.caller or None,
            )  # fmt: skip

    async def ended(self, org_id: str, conversation_id: str, outcome: str) -> None:
        async with self.engine.begin() as conn:
            await conversations.finish(conn, org_id, conversation_id, outcome, self.clock.now())

    async def recorded(self, org_id: str, conversation_id: str, recording_path: str) -> None:
        """The call's recording is complete at `recording_path` (relative to the data directory)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                conversations_table.update()
                .where(conversations_table.c.org_id == org_id, conversations_table.c.id == conversation_id)
                .values(recording_path=recording_path)
            )

    async def refused(self, route: RouteDecision, agent: CompiledAgent, info: CallInfo, reason: str) -> str:
        """A call that was not taken: recorded ended at once with outcome `refused` and the reason."""
        async with self.engine.begin() as conn:
            now = self.clock.now()
            conversation_id = await conversations.create(
                conn, org_id=route.org_id, agent=agent, channel="voice", now=now, end_user=info.caller or None
            )
            await conversations.finish(conn, route.org_id, conversation_id, "refused", now)
            await conn.execute(
                conversations_table.update()
                .where(conversations_table.c.org_id == route.org_id, conversations_table.c.id == conversation_id)
                .values(summary=f"Call from {info.caller or 'an anonymous caller'} refused: {reason}.")
            )
        return conversation_id
