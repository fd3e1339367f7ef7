"""Talk tokens for the in-browser voice tester: minted over the API (`POST /agents/{id}/talk-token`), then
redeemed once, within 5 minutes, for their own room only; each broken rule gets its own clear error."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from control_api.services import Services
from control_api.talk import tokens
from control_api.talk.tokens import InvalidTalkToken, TalkGrant, TalkTokenExpired, TalkTokenUsed
from tests.conftest import Tenant, TenantFactory


def parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).replace(tzinfo=None)


async def mint(tenant: Tenant, agent_id: str, **body: object) -> dict[str, str]:
    response = await tenant.post(f"/agents/{agent_id}/talk-token", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, str] = response.json()["data"]
    return data


async def redeem(services: Services, room: str, token: str, *, after_s: float = 0.0) -> TalkGrant:
    async with services.engine.begin() as conn:
        return await tokens.redeem(conn, room=room, token=token, now=services.clock.now() + timedelta(seconds=after_s))


async def test_a_draft_token_opens_its_room_once(services: Services, tenant: Tenant) -> None:
    agent = await tenant.create_agent(name="Tony's Pizza")
    before = services.clock.now()
    minted = await mint(tenant, agent["id"], draftMode=True)
    assert set(minted) == {"url", "token", "room", "expiresAt"}
    assert minted["token"].startswith("tt_") and minted["room"].startswith("room_")
    assert minted["url"].endswith(f"/api/v1/talk/{minted['room']}")
    assert timedelta(seconds=299) <= parse(minted["expiresAt"]) - before <= timedelta(seconds=301), "5 minutes"
    grant = await redeem(services, minted["room"], minted["token"])
    assert grant == TalkGrant(minted["room"], tenant.org_id, agent["id"], draft=True)
    with pytest.raises(TalkTokenUsed) as used:
        await redeem(services, minted["room"], minted["token"])
    assert used.value.status == 409 and "already been used" in used.value.detail


async def test_the_published_mode_needs_a_published_version(services: Services, tenant: Tenant) -> None:
    agent = await tenant.create_agent(name="Tony's Pizza")
    for body in ({}, {"draftMode": False}):  # published is the default
        refused = await tenant.post(f"/agents/{agent['id']}/talk-token", json=body)
        assert refused.status_code == 409 and refused.json()["code"] == "no_published_version", refused.text
    assert (await tenant.post(f"/agents/{agent['id']}/publish")).status_code == 201
    minted = await mint(tenant, agent["id"])
    assert (await redeem(services, minted["room"], minted["token"])).draft is False
    missing = await tenant.post("/agents/agt_doesnotexist000000000/talk-token", json={"draftMode": True})
    assert missing.status_code == 404


async def test_an_expired_token_is_gone(services: Services, tenant: Tenant) -> None:
    agent = await tenant.create_agent(name="Tony's Pizza")
    minted = await mint(tenant, agent["id"], draftMode=True)
    with pytest.raises(TalkTokenExpired) as expired:
        await redeem(services, minted["room"], minted["token"], after_s=tokens.TTL_SECONDS + 1)
    assert expired.value.status == 410 and "expired" in expired.value.detail


async def test_a_token_opens_only_its_own_room_and_another_organizations_opens_nothing(
    services: Services, tenant: Tenant, tenants: TenantFactory
) -> None:
    ours = await mint(tenant, (await tenant.create_agent(name="Ours"))["id"], draftMode=True)
    other = await tenants()
    theirs = await mint(other, (await other.create_agent(name="Theirs"))["id"], draftMode=True)
    for room, token in ((ours["room"], theirs["token"]), (ours["room"], "tt_forged"), (theirs["room"], ours["token"])):
        with pytest.raises(InvalidTalkToken) as refused:
            await redeem(services, room, token)
        assert refused.value.status == 401 and refused.value.code == "invalid_talk_token"
    foreign = await other.post(f"/agents/{(await tenant.create_agent(name='Mine'))['id']}/talk-token", json={})
    assert foreign.status_code == 404, "another organization's agent"
    assert (await redeem(services, ours["room"], ours["token"])).org_id == tenant.org_id, "still unused"
