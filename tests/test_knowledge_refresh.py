"""Refresh, auto-refresh on an injected clock, restart resume, and the snapshot a published version keeps:
refreshing or deleting the draft's sources never changes what a published version retrieves."""

from __future__ import annotations

import pytest

from control_api.agent_store import DatabaseAgentSource
from control_api.knowledge import repository as repo
from control_api.knowledge.service import KnowledgeService
from control_api.knowledge.worker import IngestionWorker
from control_api.services import Services
from pipeline.knowledge.embedder import Embedder
from runtime.knowledge import KnowledgeSnapshot
from tests import test_knowledge_support as support
from tests.conftest import Tenant
from tests.test_knowledge_support import MovableClock, PageServer, add_source, get_source, indexed, preview

# The shared knowledge fixtures, visible to this module's tests.
clock, embedder, knowledge, pages = support.clock, support.embedder, support.knowledge, support.pages


async def _refresh(tenant: Tenant, knowledge: KnowledgeService, agent_id: str, source_id: str) -> dict[str, object]:
    response = await tenant.post(f"/agents/{agent_id}/knowledge/sources/{source_id}/refresh")
    assert response.status_code == 202, response.text
    await knowledge.worker.drain()
    return await get_source(tenant, agent_id, source_id)


async def test_refresh_reindexes_only_changed_content(
    tenant: Tenant, knowledge: KnowledgeService, pages: PageServer, clock: MovableClock
) -> None:
    agent = await tenant.create_agent()
    url = pages.html("/hours-a", "Hours", "The store opens at 9am every day.")
    first = await indexed(tenant, knowledge, agent["id"], kind="url", label="Hours", url=url)
    clock.advance(hours=1)
    pages.html("/hours-a", "Hours", "The store opens at 9am every day.")  # new markup, same words
    same = await _refresh(tenant, knowledge, agent["id"], first["id"])
    assert same["generation"] == 1 and same["contentHash"] == first["contentHash"]
    assert same["lastCheckedAt"] > first["lastCheckedAt"] and same["lastChangedAt"] == first["lastChangedAt"]
    clock.advance(hours=1)
    pages.html("/hours-a", "Hours", "The store now opens at 11am every day.")
    changed = await _refresh(tenant, knowledge, agent["id"], first["id"])
    assert changed["generation"] == 2 and changed["contentHash"] != first["contentHash"]
    assert changed["lastChangedAt"] == changed["lastCheckedAt"] > same["lastCheckedAt"]
    assert "11am" in (await preview(tenant, agent["id"], "When does the store open?"))["chunks"][0]["text"]


async def test_failed_refresh_keeps_serving_the_indexed_content(
    tenant: Tenant, knowledge: KnowledgeService, pages: PageServer
) -> None:
    agent = await tenant.create_agent()
    url = pages.html("/flaky", "Flaky", "Curbside pickup is available at every store.")
    first = await indexed(tenant, knowledge, agent["id"], kind="url", label="Flaky", url=url)
    pages.pages["/flaky"] = (500, "text/plain", b"oops")
    after = await _refresh(tenant, knowledge, agent["id"], first["id"])
    assert after["status"] == "indexed" and "HTTP 500" in after["error"] and after["generation"] == 1
    assert "Curbside" in (await preview(tenant, agent["id"], "curbside pickup"))["chunks"][0]["text"]


async def test_only_url_sources_can_be_refreshed(tenant: Tenant, knowledge: KnowledgeService) -> None:
    agent = await tenant.create_agent()
    source = await indexed(tenant, knowledge, agent["id"], kind="text", label="T", text="Plain words here.")
    response = await tenant.post(f"/agents/{agent['id']}/knowledge/sources/{source['id']}/refresh")
    assert response.status_code == 422 and response.json()["code"] == "source_not_refreshable"
    patch = await tenant.patch(f"/agents/{agent['id']}/knowledge/sources/{source['id']}", json={"autoRefresh": True})
    assert patch.status_code == 400 and patch.json()["errors"][0]["field"] == "autoRefresh"


async def test_auto_refresh_is_due_by_the_clock_and_reindexes_on_change(
    tenant: Tenant, knowledge: KnowledgeService, pages: PageServer, clock: MovableClock
) -> None:
    agent = await tenant.create_agent()
    url = pages.html("/menu", "Menu", "Today's soup is tomato.")
    source = await indexed(tenant, knowledge, agent["id"], kind="url", label="Menu", url=url)
    path = f"/agents/{agent['id']}/knowledge/sources/{source['id']}"
    too_often = await tenant.patch(path, json={"autoRefresh": True, "refreshIntervalHours": 12})
    assert too_often.status_code == 400 and too_often.json()["errors"][0]["field"] == "refreshIntervalHours"
    enabled = (await tenant.patch(path, json={"autoRefresh": True})).json()["data"]
    assert enabled["autoRefresh"] is True and enabled["refreshIntervalHours"] == 168
    enabled = (await tenant.patch(path, json={"refreshIntervalHours": 24})).json()["data"]
    assert enabled["nextRefreshAt"] > source["lastCheckedAt"]
    hits = pages.hits["/menu"]

    clock.advance(hours=23)
    assert await knowledge.worker.tick() == 0
    await knowledge.worker.drain()
    assert pages.hits["/menu"] == hits  # not due yet: nothing fetched

    clock.advance(hours=1, seconds=1)
    assert await knowledge.worker.tick() == 1  # due: unchanged content, only checked
    await knowledge.worker.drain()
    checked = await get_source(tenant, agent["id"], source["id"])
    assert pages.hits["/menu"] == hits + 1 and checked["generation"] == 1
    assert checked["lastCheckedAt"] > source["lastCheckedAt"] and checked["nextRefreshAt"] > enabled["nextRefreshAt"]
    assert await knowledge.worker.tick() == 0  # the next one is a day away again

    pages.html("/menu", "Menu", "Today's soup is pumpkin.")
    clock.advance(hours=24, seconds=1)
    assert await knowledge.worker.tick() == 1
    await knowledge.worker.drain()
    changed = await get_source(tenant, agent["id"], source["id"])
    assert changed["generation"] == 2 and "pumpkin" in changed["content"]

    off = (await tenant.patch(path, json={"autoRefresh": False})).json()["data"]
    assert off["autoRefresh"] is False and off["nextRefreshAt"] is None
    clock.advance(hours=100)
    assert await knowledge.worker.tick() == 0


async def test_published_version_keeps_the_knowledge_it_was_published_with(
    tenant: Tenant, services: Services, knowledge: KnowledgeService, pages: PageServer, clock: MovableClock,
    embedder: Embedder,
) -> None:
    agent = await tenant.create_agent()
    url = pages.html("/opening", "Opening", "The showroom opens at 9am on weekdays.")
    hours = await indexed(tenant, knowledge, agent["id"], kind="url", label="Opening", url=url)
    parking = await indexed(tenant, knowledge, agent["id"], kind="text", label="Parking",
                            text="Parking is free in the garage on Elm Street.")
    v1 = (await tenant.post(f"/agents/{agent['id']}/publish")).json()["data"]
    assert [s["sourceId"] for s in v1["config"]["knowledge"]] == [hours["id"], parking["id"]]
    assert v1["config"]["knowledge"][0] == {
        "sourceId": hours["id"], "label": "Opening", "kind": "url", "generation": 1,
        "contentHash": hours["contentHash"],
    }
    assert (await tenant.get(f"/agents/{agent['id']}")).json()["data"]["hasUnpublishedChanges"] is False

    pages.html("/opening", "Opening", "The showroom opens at 11am on weekdays.")
    await tenant.post(f"/agents/{agent['id']}/knowledge/sources/{hours['id']}/refresh")
    await knowledge.worker.drain()
    await tenant.delete(f"/agents/{agent['id']}/knowledge/sources/{parking['id']}")
    assert (await tenant.get(f"/agents/{agent['id']}")).json()["data"]["hasUnpublishedChanges"] is True

    # Past the grace period the tick collects garbage, but nothing a version names.
    clock.advance(hours=2)
    await knowledge.worker.tick()
    fresh = KnowledgeService(services.engine, clock, embedder=embedder)  # a cold cache: reads the database
    live = await DatabaseAgentSource(services.engine).published(tenant.org_id, agent["id"])
    assert live is not None and live.version_id == v1["id"]
    assert [(s.source_id, s.generation) for s in live.knowledge.sources] == [(hours["id"], 1), (parking["id"], 1)]
    opening = await fresh.search(live.knowledge, "What time does the showroom open?", 1)
    assert "9am" in opening[0].text and opening[0].source_label == "Opening"
    garage = await fresh.search(live.knowledge, "Where can I park?", 1)
    assert "Elm Street" in garage[0].text
    draft = await DatabaseAgentSource(services.engine).draft(tenant.org_id, agent["id"])
    assert draft is not None and [(s.source_id, s.generation) for s in draft.knowledge.sources] == [(hours["id"], 2)]
    assert "11am" in (await fresh.search(draft.knowledge, "What time does the showroom open?", 1))[0].text

    async with services.engine.connect() as conn:
        kept = await repo.generation_passages(conn, [(hours["id"], 1), (parking["id"], 1)])
    assert all(kept.values())


async def test_generations_no_version_names_are_collected_after_a_grace_period(
    tenant: Tenant, services: Services, knowledge: KnowledgeService, pages: PageServer, clock: MovableClock
) -> None:
    agent = await tenant.create_agent()
    url = pages.html("/gc", "GC", "Version one of the page.")
    page = await indexed(tenant, knowledge, agent["id"], kind="url", label="Page", url=url)
    text = await indexed(tenant, knowledge, agent["id"], kind="text", label="Text", text="Soon deleted.")
    pages.html("/gc", "GC", "Version two of the page.")
    await tenant.post(f"/agents/{agent['id']}/knowledge/sources/{page['id']}/refresh")
    await knowledge.worker.drain()
    await tenant.delete(f"/agents/{agent['id']}/knowledge/sources/{text['id']}")
    keys = [(page["id"], 1), (page["id"], 2), (text["id"], 1)]
    await knowledge.worker.tick()  # within the grace period: a publish may still be naming them
    async with services.engine.connect() as conn:
        assert all((await repo.generation_passages(conn, keys)).values())
    clock.advance(hours=2)
    await knowledge.worker.tick()
    async with services.engine.connect() as conn:
        left = await repo.generation_passages(conn, keys)
    assert left[(page["id"], 1)] == [] and left[(text["id"], 1)] == [] and left[(page["id"], 2)] != []


async def test_agents_without_knowledge_compile_as_before(tenant: Tenant, knowledge: KnowledgeService) -> None:
    agent = await tenant.create_agent()
    version = (await tenant.post(f"/agents/{agent['id']}/publish")).json()["data"]
    assert "knowledge" not in version["config"]
    assert (await tenant.get(f"/agents/{agent['id']}")).json()["data"]["hasUnpublishedChanges"] is False
    pending = await add_source(tenant, agent["id"], kind="text", label="Soon", text="Indexed soon.")
    await knowledge.worker.drain()
    assert (await get_source(tenant, agent["id"], pending["id"]))["status"] == "indexed"
    assert (await tenant.get(f"/agents/{agent['id']}")).json()["data"]["hasUnpublishedChanges"] is True


async def test_a_restarted_worker_resumes_pending_sources(
    tenant: Tenant, services: Services, embedder: Embedder, clock: MovableClock
) -> None:
    agent = await tenant.create_agent()
    async with services.engine.begin() as conn:  # what an API request left behind before a crash
        await repo.insert(
            conn, source_id="ks_resume_" + agent["id"][-8:], org_id=tenant.org_id, agent_id=agent["id"],
            kind="text", label="Left behind", spec={"text": "Resumed after a restart."}, auto_refresh=False,
            refresh_interval_hours=168, now=clock.now(),
        )
    worker = IngestionWorker(services.engine, clock, embedder, frozenset())
    assert await worker.rescan() >= 1
    import asyncio

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await worker.drain()
    stop.set()
    await task
    source = await get_source(tenant, agent["id"], "ks_resume_" + agent["id"][-8:])
    assert source["status"] == "indexed" and source["chunkCount"] == 1


@pytest.mark.parametrize("stored", [None, []])
def test_snapshot_from_an_older_config_is_empty(stored: list[object] | None) -> None:
    assert KnowledgeSnapshot.from_config(stored) == KnowledgeSnapshot()  # type: ignore[arg-type]
