"""Knowledge gaps: the runtime records unanswered questions; the API lists them deduplicated, collecting
until there is enough volume, then ranked; operators curate their status."""

from __future__ import annotations

from control_api.knowledge.gaps import RANKING_FLOOR, question_key, rank_score
from control_api.knowledge.service import KnowledgeService
from tests import test_knowledge_support as support
from tests.conftest import Tenant, TenantFactory
from tests.test_knowledge_support import MovableClock

# The shared knowledge fixtures, visible to this module's tests.
clock, embedder, knowledge = support.clock, support.embedder, support.knowledge


def test_question_key_ignores_case_punctuation_and_spacing() -> None:
    assert question_key("  What are your HOURS?? ") == question_key("what are your hours") == "what are your hours"


def test_rank_score_halves_every_week() -> None:
    from datetime import datetime, timedelta

    now = datetime(2025, 1, 15)
    assert rank_score(8, now, now) == 8
    assert rank_score(8, now - timedelta(days=7), now) == 4


async def test_gaps_collect_then_rank(tenant: Tenant, knowledge: KnowledgeService, clock: MovableClock) -> None:
    agent = await tenant.create_agent()
    gaps_path = f"/agents/{agent['id']}/knowledge-gaps"
    await knowledge.record_gap(tenant.org_id, agent["id"], "Do you take Amex?", 0.12, "conv_1")
    await knowledge.record_gap(tenant.org_id, agent["id"], "do you take AMEX", 0.3, "conv_2")
    await knowledge.record_gap(tenant.org_id, agent["id"], "Is there a kids menu?", None)
    collecting = (await tenant.get(gaps_path)).json()["data"]
    assert collecting["dataState"] == "collecting" and collecting["ranked"] is False
    assert [(g["question"], g["occurrences"]) for g in collecting["gaps"]] == [
        ("Do you take Amex?", 2), ("Is there a kids menu?", 1)
    ]
    assert "gapId" not in collecting["gaps"][0] and collecting["gaps"][0]["topScore"] == 0.3

    clock.advance(days=14)
    for _ in range(RANKING_FLOOR - 3):
        await knowledge.record_gap(tenant.org_id, agent["id"], "Is there a kids menu?", 0.05)
    ready = (await tenant.get(gaps_path)).json()["data"]
    assert ready["dataState"] == "ready" and ready["ranked"] is True
    kids, amex = ready["gaps"]
    assert kids["question"] == "Is there a kids menu?" and kids["classification"] == "no_coverage"
    assert amex["classification"] == "partial_coverage" and kids["rankScore"] > amex["rankScore"]

    patched = await tenant.patch(f"{gaps_path}/{amex['gapId']}", json={"status": "in_progress"})
    assert patched.status_code == 200 and patched.json()["data"]["status"] == "in_progress"
    covered = await tenant.patch(f"{gaps_path}/{amex['gapId']}", json={"status": "covered"})
    assert covered.status_code == 400 and covered.json()["errors"][0]["field"] == "status"
    open_only = (await tenant.get(gaps_path, params={"status": "open"})).json()["data"]["gaps"]
    assert [g["gapId"] for g in open_only] == [kids["gapId"]]
    assert (await tenant.patch(f"{gaps_path}/gap_unknown", json={"status": "dismissed"})).status_code == 404


async def test_gaps_are_per_organization(tenants: TenantFactory, knowledge: KnowledgeService) -> None:
    owner, stranger = await tenants(), await tenants()
    agent = await owner.create_agent()
    await knowledge.record_gap(owner.org_id, agent["id"], "What is the wifi password?", 0.1)
    await knowledge.record_gap(stranger.org_id, agent["id"], "Recorded under the wrong org", 0.1)  # dropped
    assert (await stranger.get(f"/agents/{agent['id']}/knowledge-gaps")).status_code == 404
    gaps = (await owner.get(f"/agents/{agent['id']}/knowledge-gaps")).json()["data"]["gaps"]
    assert [g["question"] for g in gaps] == ["What is the wifi password?"]
    analyst = await tenants(scopes=("knowledge:read",), org_name=owner.org_name)
    denied = await analyst.get(f"/agents/{agent['id']}/knowledge-gaps")
    assert denied.status_code == 403 and denied.json()["scope"] == "analytics:read"
