"""Call admission and the call session on both databases: routing, the pinned published version, refusals
with records, metering of connected seconds - through the real SIP edge, called by SIPp."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from control_api.agent_store import DatabaseAgentSource
from control_api.calls.admission import CallAdmission
from control_api.calls.records import CallRecords
from control_api.calls.session import AdmittedCall, play_refusal_notice
from control_api.db.tables import conversations, usage_items
from control_api.numbers.inbound import DatabaseNumberRouter
from control_api.services import Services
from telephony.call import SipCallLeg
from telephony.edge import Admit, EdgeConfig, Refuse, SipEdge
from telephony.sip.ua_types import CallInfo, Peer
from tests.conftest import Tenant
from tests.peers.sipp import Sipp
from tests.peers.speech import pad, speech_pcm, write_rtp_pcap
from tests.test_chat_support import fund, published_agent
from tests.test_numbers_support import unstocked_number

HOST = "127.0.0.1"


def call_info(dialed: str) -> CallInfo:
    return CallInfo("c-1@test", dialed, "+14155550123", "Ada", Peer("UDP", HOST, 5070))


class Answered:
    """The handler the admission hands calls to: notes which pinned version answered, holds the line."""

    def __init__(self) -> None:
        self.calls: list[AdmittedCall] = []

    async def __call__(self, call: AdmittedCall, leg: SipCallLeg, conversation_id: str) -> str | None:
        self.calls.append(call)
        await leg.wait_ended()
        return None


def admission(services: Services, answered: Answered) -> CallAdmission:
    assert services.meter is not None
    return CallAdmission(
        DatabaseNumberRouter(services.engine),
        DatabaseAgentSource(services.engine),
        services.meter,
        CallRecords(services.engine, services.clock),
        answered,
    )


async def voice_records(services: Services, org_id: str) -> list[Any]:
    async with services.engine.connect() as conn:
        query = sa.select(conversations).where(conversations.c.org_id == org_id, conversations.c.channel == "voice")
        return list((await conn.execute(query.order_by(conversations.c.started_at))).all())


async def test_unknown_and_unpublished_numbers_are_refused_with_records(services: Services, tenant: Tenant) -> None:
    admit = admission(services, Answered())
    assert await admit(call_info(unstocked_number("212"))) == Refuse(404, "Number Not In Service")
    agent = await tenant.create_agent()
    e164 = unstocked_number("212")
    assert (await tenant.post("/numbers/import", json={"e164": e164, "agentId": agent["id"]})).status_code == 201
    assert await admit(call_info(e164)) == Refuse(480, "Agent Not Published")
    (record,) = await voice_records(services, tenant.org_id)
    assert (record.outcome, record.status, record.end_user) == ("refused", "ended", "+14155550123")
    assert record.summary == "Call from +14155550123 refused: agent never published."


async def test_an_organization_that_cannot_pay_hears_a_notice(services: Services, tenant: Tenant) -> None:
    agent = await published_agent(tenant)
    e164 = unstocked_number("212")
    await tenant.post("/numbers/import", json={"e164": e164, "agentId": agent["id"]})
    decision = await admission(services, Answered())(call_info(e164))
    assert decision == Admit(play_refusal_notice)
    (record,) = await voice_records(services, tenant.org_id)
    assert record.outcome == "refused" and "insufficient funds" in record.summary


async def test_calls_run_the_version_published_when_they_start_and_are_billed_once(
    services: Services, tenant: Tenant, sipp: Callable[..., Sipp], tmp_path: Path
) -> None:
    await fund(services, tenant, 1_000)
    agent = await published_agent(tenant)
    e164 = unstocked_number("212")
    await tenant.post("/numbers/import", json={"e164": e164, "agentId": agent["id"]})
    answered = Answered()
    speech = pad(speech_pcm("Hello there."), 0.0, 0.2)
    pcap = tmp_path / "hello.pcap"
    duration = write_rtp_pcap(pcap, speech, codec="PCMU")
    base = random.Random().randrange(30000, 50000, 2)
    config = EdgeConfig(bind_host=HOST, sip_port=0, rtp_ports=(base, base + 20))
    async with SipEdge(config, admission(services, answered)) as edge:

        async def one_call() -> None:
            uac = sipp(
                "uac_speech", remote=(HOST, edge.port), service=e164, caller="+14155550123",
                keys={"pcap": pcap}, variables={"audio_ms": int(duration * 1000) + 1200}, timeout=20,
            )  # fmt: skip
            result = await uac.start().wait_async(25)
            assert result.ok, result.describe()

        await one_call()
        await tenant.patch(f"/agents/{agent['id']}", json={"greeting": "Version two here."})
        assert (await tenant.post(f"/agents/{agent['id']}/publish")).status_code in (200, 201)
        await one_call()
        async with asyncio.timeout(5):
            await edge.wait_idle()  # both sessions closed their records and metered
    assert [c.agent.version_number for c in answered.calls] == [1, 2], "each call pinned what was live at its start"
    first, second = await voice_records(services, tenant.org_id)
    assert (first.outcome, first.agent_version_number) == ("completed", 1)
    assert second.agent_version_number == 2
    async with services.engine.connect() as conn:
        items = (await conn.execute(sa.select(usage_items).where(usage_items.c.org_id == tenant.org_id))).all()
    voice = [i for i in items if i.channel == "voice"]
    assert len(voice) == 2, "one usage item per call"
    assert all(1 <= float(i.quantity) <= 10 for i in voice), [i.quantity for i in voice]


async def test_insufficient_funds_call_hears_the_notice_then_our_bye(
    services: Services, tenant: Tenant, sipp: Callable[..., Sipp]
) -> None:
    agent = await published_agent(tenant)
    e164 = unstocked_number("212")
    await tenant.post("/numbers/import", json={"e164": e164, "agentId": agent["id"]})
    base = random.Random().randrange(30000, 50000, 2)
    config = EdgeConfig(bind_host=HOST, sip_port=0, rtp_ports=(base, base + 20))
    async with SipEdge(config, admission(services, Answered())) as edge:
        result = await sipp("uac_remote_bye", remote=(HOST, edge.port), service=e164, timeout=15).start().wait_async(20)
    assert result.ok, result.describe()
    assert len(result.received("BYE")) == 1


async def test_sipp_calling_an_unpublished_agent_gets_480_with_the_reason(
    services: Services, tenant: Tenant, sipp: Callable[..., Sipp], tmp_path: Path
) -> None:
    agent = await tenant.create_agent()
    e164 = unstocked_number("212")
    assert (await tenant.post("/numbers/import", json={"e164": e164, "agentId": agent["id"]})).status_code == 201
    pcap = tmp_path / "hello.pcap"
    write_rtp_pcap(pcap, speech_pcm("Hello?"), codec="PCMU")
    base = random.Random().randrange(30000, 50000, 2)
    config = EdgeConfig(bind_host=HOST, sip_port=0, rtp_ports=(base, base + 20))
    async with SipEdge(config, admission(services, Answered())) as edge:
        uac = sipp("uac_speech", remote=(HOST, edge.port), service=e164, caller="+14155550123", keys={"pcap": pcap},
                   timeout=10)  # fmt: skip
        result = await uac.start().wait_async(15)
    [refusal] = result.received(480)
    assert refusal.start_line == "SIP/2.0 480 Agent Not Published", result.describe()
    (record,) = await voice_records(services, tenant.org_id)
    assert (record.outcome, record.end_user) == ("refused", "+14155550123")
