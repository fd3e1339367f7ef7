"""Knowledge sources through the API: every kind ingested end to end by the real worker, status
transitions and errors, uploads and their limits, preview ranking, validation, and tenant isolation."""

from __future__ import annotations

import pytest

from control_api.agent_store import DatabaseAgentSource
from control_api.demo import KNOWLEDGE as DEMO_KNOWLEDGE
from control_api.knowledge.service import KnowledgeService
from control_api.services import Services
from pipeline.knowledge.chunking import split_sentences
from runtime.brain.retrieval import PROMPT_KNOWLEDGE_CHARS, VOICE_KNOWLEDGE_CHARS
from runtime.knowledge import DEFAULT_MIN_SCORE
from tests import test_knowledge_support as support
from tests.conftest import Tenant, TenantFactory
from tests.test_knowledge_support import (
    MovableClock,
    PageServer,
    add_source,
    get_source,
    indexed,
    make_docx,
    make_pdf,
    preview,
    upload,
)

# The shared knowledge fixtures, visible to this module's tests.
clock, embedder, knowledge, pages = support.clock, support.embedder, support.knowledge, support.pages

FAQ = [
    {"question": "How do I reset my password?", "answer": "Click 'Forgot password' on the sign-in page and "
     "follow the link we email you."},
    {"question": "Do you deliver on weekends?", "answer": "Yes, we deliver on Saturdays between 9am and 1pm."},
    {"question": "Where can I park?", "answer": "Free parking is available behind the building."},
]


async def test_text_source_goes_pending_then_indexed(tenant: Tenant, knowledge: KnowledgeService) -> None:
    agent = await tenant.create_agent()
    text = "Our clinic is open Monday to Friday from 8am to 6pm.\n\nWe are closed on public holidays."
    created = await add_source(tenant, agent["id"], kind="text", label="Hours", text=text)
    assert created["chunkCount"] == 0 and created["generation"] is None
    await knowledge.worker.drain()
    source = await get_source(tenant, agent["id"], created["id"])
    assert source["status"] == "indexed" and source["error"] is None
    assert source["chunkCount"] >= 1 and source["generation"] == 1
    assert source["content"] == text and len(source["contentHash"]) == 64
    listed = (await tenant.get(f"/agents/{agent['id']}/knowledge/sources")).json()
    assert [s["id"] for s in listed["data"]] == [created["id"]]
    assert "content" not in listed["data"][0] and listed["pagination"]["hasMore"] is False


async def test_faq_source_indexes_one_passage_per_question(tenant: Tenant, knowledge: KnowledgeService) -> None:
    agent = await tenant.create_agent()
    source = await indexed(tenant, knowledge, agent["id"], kind="faq", label="FAQ", items=FAQ)
    assert source["chunkCount"] == 3 and source["items"] == FAQ
    result = await preview(tenant, agent["id"], "I forgot my password, what do I do?")
    assert result["chunks"][0]["text"].startswith("Q: How do I reset my password?")
    assert result["chunks"][0]["sourceId"] == source["id"] and result["chunks"][0]["sourceLabel"] == "FAQ"


async def test_preview_ranks_the_relevant_passage_clearly_first(tenant: Tenant, knowledge: KnowledgeService) -> None:
    agent = await tenant.create_agent()
    await indexed(tenant, knowledge, agent["id"], kind="faq", label="FAQ", items=FAQ)
    await indexed(
        tenant, knowledge, agent["id"], kind="text", label="About",
        text="Acme was founded in 1972 by two brothers who loved bicycles.",
    )
    result = await preview(tenant, agent["id"], "Can I get a delivery on Saturday?", topK=4)
    scores = [c["score"] for c in result["chunks"]]
    assert "Saturdays" in result["chunks"][0]["text"]
    assert scores == sorted(scores, reverse=True) and result["topScore"] == scores[0]
    unrelated = next(c for c in result["chunks"] if "bicycles" in c["text"])
    assert scores[0] > 0.5 and scores[0] - unrelated["score"] > 0.3
    only_about = next(s for s in (await tenant.get(f"/agents/{agent['id']}/knowledge/sources")).json()["data"]
                      if s["label"] == "About")
    scoped = await preview(tenant, agent["id"], "delivery on Saturday", sourceIds=[only_about["id"]])
    assert {c["sourceId"] for c in scoped["chunks"]} == {only_about["id"]}
    bad = await tenant.post(f"/agents/{agent['id']}/knowledge/preview", json={"query": "x", "sourceIds": ["ks_nope"]})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "sourceIds[0]"


ABOUT_TONYS = (
    "Tony's Pizza opened in 1982 on Main Street. Every pizza is baked to order in a wood fired oven. "
    "On Saturdays we open at 11am and close at 11pm. Our dough rises for two whole days. "
    "Delivery covers five miles around the shop for a three dollar fee. Vegan cheese is available on any pizza."
)


async def test_a_focused_search_keeps_the_passages_sentences_nearest_the_question(
    tenant: Tenant, knowledge: KnowledgeService, services: Services
) -> None:
    """For a call: the sentences of the passages found that are most like the question, best first while they
    fit the budget, each kept in its passage's order; the passages themselves are unchanged."""
    agent = await tenant.create_agent()
    await indexed(tenant, knowledge, agent["id"], kind="text", label="About", text=ABOUT_TONYS)
    await indexed(tenant, knowledge, agent["id"], kind="faq", label="FAQ", items=FAQ)
    draft = await DatabaseAgentSource(services.engine).draft(tenant.org_id, agent["id"])
    assert draft is not None
    question = "What time do you open on Saturday?"
    whole = await knowledge.search(draft.knowledge, question, 3)
    assert [c.focus for c in whole] == ["", "", ""], "no focus unless asked"
    focused = await knowledge.search(draft.knowledge, question, 3, focus_chars=120)
    assert [c.text for c in focused] == [c.text for c in whole]
    assert all(f.score >= w.score for f, w in zip(focused, whole, strict=True))  # or its best sentence's
    kept = [c.focus for c in focused if c.focus]
    assert any("On Saturdays we open at 11am and close at 11pm." in f for f in kept), kept
    assert sum(len(f) + 1 for f in kept) <= 120 < len(ABOUT_TONYS)
    about = next(c for c in focused if c.source_label == "About")
    assert about.focus and all(sentence in ABOUT_TONYS for sentence in about.focus.split(". "))
    assert "bicycles" not in " ".join(kept) and "1982" not in about.focus


async def test_a_focused_passage_scores_as_its_best_sentence_so_a_passage_of_many_topics_still_counts(
    tenant: Tenant, knowledge: KnowledgeService, services: Services
) -> None:
    """The demo pizzeria's knowledge is one passage of hours, menu and delivery: as a whole it is not like a
    short question about one of them (under the evidence threshold, so a call's model never saw it), its
    sentence about that is. On a call, where only sentences go to the model, the passage counts."""
    agent = await tenant.create_agent()
    await indexed(tenant, knowledge, agent["id"], kind="text", label="Hours, menu and delivery", text=DEMO_KNOWLEDGE)
    draft = await DatabaseAgentSource(services.engine).draft(tenant.org_id, agent["id"])
    assert draft is not None
    for question, fact in (("How long does delivery take?", "about 40 minutes"),
                           ("When do you open on Saturday?", "Saturday and Sunday noon to 11 pm")):  # fmt: skip
        [whole] = await knowledge.search(draft.knowledge, question, 3)
        [focused] = await knowledge.search(draft.knowledge, question, 3, focus_chars=VOICE_KNOWLEDGE_CHARS)
        assert whole.score < DEFAULT_MIN_SCORE <= focused.score, (question, whole.score, focused.score)
        assert fact in focused.focus


async def test_small_knowledge_comes_back_whole_and_large_knowledge_not_at_all(
    tenant: Tenant, knowledge: KnowledgeService, services: Services
) -> None:
    """`contents`: what a call's prompt holds when it is small; a source of many passages comes back as its
    text, each sentence once (a passage repeats the last sentence of the one before it)."""
    agent = await tenant.create_agent()
    await indexed(tenant, knowledge, agent["id"], kind="text", label="Hours, menu and delivery", text=DEMO_KNOWLEDGE)
    await indexed(tenant, knowledge, agent["id"], kind="faq", label="FAQ", items=FAQ)
    draft = await DatabaseAgentSource(services.engine).draft(tenant.org_id, agent["id"])
    assert draft is not None
    whole = await knowledge.contents(draft.knowledge, PROMPT_KNOWLEDGE_CHARS)
    assert whole is not None and [k.source_label for k in whole] == ["Hours, menu and delivery", "FAQ"]
    assert " ".join(whole[0].text.split()) == " ".join(DEMO_KNOWLEDGE.split())
    assert all(q in whole[1].text and a in whole[1].text for q, a in ((i["question"], i["answer"]) for i in FAQ))
    assert await knowledge.contents(draft.knowledge, len(whole[0].text) + len(whole[1].text) - 1) is None
    sentences = [f"Sentence number {i} is about topic {i}." for i in range(60)]  # ~2,300 characters
    big = await tenant.create_agent()
    await indexed(tenant, knowledge, big["id"], kind="text", label="Long", text=" ".join(sentences))
    long_draft = await DatabaseAgentSource(services.engine).draft(tenant.org_id, big["id"])
    assert long_draft is not None
    [long] = await knowledge.contents(long_draft.knowledge, 10_000) or []
    assert long.text.split("\n")[1:] and split_sentences(long.text) == sentences, "several passages, no repeats"
    assert await knowledge.contents(long_draft.knowledge, PROMPT_KNOWLEDGE_CHARS) is None


async def test_preview_without_knowledge_is_empty(tenant: Tenant, knowledge: KnowledgeService) -> None:
    agent = await tenant.create_agent()
    assert await preview(tenant, agent["id"], "anything") == {"query": "anything", "chunks": [], "topScore": None}


async def test_url_source_is_fetched_from_a_real_server(
    tenant: Tenant, knowledge: KnowledgeService, pages: PageServer
) -> None:
    agent = await tenant.create_agent()
    url = pages.html("/help", "Acme Help Center", "Returns are accepted within 30 days of purchase.",
                     "Refunds go back to the original card within 5 business days.")
    source = await indexed(tenant, knowledge, agent["id"], kind="url", label="Help", url=url)
    assert source["url"] == url and source["autoRefresh"] is False and source["lastCheckedAt"] is not None
    assert "Acme Help Center" in source["content"] and "var t" not in source["content"]
    result = await preview(tenant, agent["id"], "How long do refunds take?")
    assert "5 business days" in result["chunks"][0]["text"]


async def test_url_that_answers_404_ends_in_error(
    tenant: Tenant, knowledge: KnowledgeService, pages: PageServer
) -> None:
    agent = await tenant.create_agent()
    source = await add_source(tenant, agent["id"], kind="url", label="Gone", url=pages.url("/missing"))
    await knowledge.worker.drain()
    got = await get_source(tenant, agent["id"], source["id"])
    assert got["status"] == "error" and "HTTP 404" in got["error"] and got["chunkCount"] == 0


async def test_redirect_to_a_private_address_is_refused(
    tenant: Tenant, knowledge: KnowledgeService, pages: PageServer
) -> None:
    agent = await tenant.create_agent()
    pages.pages["/hop"] = (302, "text/plain", b"http://10.0.0.1/admin")
    source = await add_source(tenant, agent["id"], kind="url", label="Hop", url=pages.url("/hop"))
    await knowledge.worker.drain()
    got = await get_source(tenant, agent["id"], source["id"])
    assert got["status"] == "error" and "private" in got["error"]


@pytest.mark.parametrize("url", ["http://10.1.2.3/faq", "http://169.254.169.254/latest/meta-data/",
                                 "http://localhost:8080/", "http://[::1]/", "ftp://example.com/faq"])
async def test_private_or_non_http_urls_are_refused_up_front(
    tenant: Tenant, knowledge: KnowledgeService, url: str
) -> None:
    agent = await tenant.create_agent()
    body = {"kind": "url", "label": "x", "url": url}
    response = await tenant.post(f"/agents/{agent['id']}/knowledge/sources", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == "url"


FILES = [
    ("policy.pdf", "application/pdf", lambda: make_pdf("Our warranty covers parts for two years.",
                                                       "Labour is covered for ninety days.")),
    ("policy.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
     lambda: make_docx("Our warranty covers parts for two years.", "Labour is covered for ninety days.")),
    ("policy.html", "text/html", lambda: b"<html><body><h1>Warranty</h1><p>Our warranty covers parts for two "
                                        b"years.</p><p>Labour is covered for ninety days.</p></body></html>"),
    ("policy.md", "text/markdown", lambda: b"# Warranty\n\nOur **warranty** covers parts for two years.\n\n"
                                          b"- Labour is covered for ninety days.\n"),
    ("policy.txt", "text/plain",
     lambda: b"Our warranty covers parts for two years.\nLabour is covered for ninety days."),
]


@pytest.mark.parametrize(("filename", "content_type", "build"), FILES, ids=[f[0] for f in FILES])
async def test_uploaded_files_of_each_format_are_indexed(
    tenant: Tenant, knowledge: KnowledgeService, filename: str, content_type: str, build: object
) -> None:
    agent = await tenant.create_agent()
    data = build()  # type: ignore[operator]
    file = await upload(tenant, filename, data, content_type)
    assert file["filename"] == filename and file["size"] == len(data) and file["expiresAt"]
    source = await indexed(tenant, knowledge, agent["id"], kind="file", label="Warranty", fileId=file["fileId"])
    assert source["filename"] == filename and source["contentType"] == content_type
    assert "two years" in source["content"] and "**" not in source["content"]
    result = await preview(tenant, agent["id"], "How long is the warranty on parts?")
    assert "two years" in result["chunks"][0]["text"]
    # The upload was consumed by the source: it cannot be attached a second time.
    again = await tenant.post(f"/agents/{agent['id']}/knowledge/sources",
                              json={"kind": "file", "label": "Again", "fileId": file["fileId"]})
    assert again.status_code == 404 and again.json()["code"] == "file_expired"


@pytest.mark.parametrize(("filename", "content_type", "data", "message"), [
    ("logo.png", "image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "unsupported file type"),
    ("archive.zip", "application/zip", b"PK\x03\x04" + b"\x00" * 40, "unsupported file type"),
    ("blank.html", "text/html", b"<html><head><title></title></head><body> </body></html>", "no text"),
    ("fake.pdf", "application/pdf", b"this is not a pdf", "not a valid PDF"),
])
async def test_unusable_files_end_in_error(
    tenant: Tenant, knowledge: KnowledgeService, filename: str, content_type: str, data: bytes, message: str
) -> None:
    agent = await tenant.create_agent()
    file = await upload(tenant, filename, data, content_type)
    source = await add_source(tenant, agent["id"], kind="file", label="Bad", fileId=file["fileId"])
    await knowledge.worker.drain()
    got = await get_source(tenant, agent["id"], source["id"])
    assert got["status"] == "error" and message in got["error"] and got["generation"] is None


async def test_uploads_allow_25_mb_and_refuse_more_with_file_too_large(tenant: Tenant) -> None:
    ok_size = 3 * 1024 * 1024  # above the 1 MiB default body limit of every other endpoint
    accepted = await tenant.post("/uploads", files={"file": ("big.txt", b"a" * ok_size, "text/plain")})
    assert accepted.status_code == 201 and accepted.json()["data"]["size"] == ok_size
    just_over = await tenant.post("/uploads", files={"file": ("big.txt", b"a" * (25 * 1024 * 1024 + 1), "text/plain")})
    assert just_over.status_code == 413 and just_over.json()["code"] == "file_too_large"
    way_over = await tenant.post("/uploads", files={"file": ("big.txt", b"a" * (27 * 1024 * 1024), "text/plain")})
    assert way_over.status_code == 413 and way_over.json()["code"] == "file_too_large"
    elsewhere = await tenant.post("/agents", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                                  headers={"Content-Type": "application/json"})
    assert elsewhere.status_code == 413 and elsewhere.json()["code"] == "payload_too_large"
    empty = await tenant.post("/uploads", files={"file": ("empty.txt", b"", "text/plain")})
    assert empty.status_code == 400 and empty.json()["errors"][0]["field"] == "file"
    missing = await tenant.post("/uploads", data={"other": "x"})
    assert missing.status_code == 400 and missing.json()["errors"][0]["field"] == "file"


async def test_expired_or_unknown_file_ids_answer_file_expired(
    tenant: Tenant, knowledge: KnowledgeService, clock: MovableClock
) -> None:
    agent = await tenant.create_agent()
    file = await upload(tenant, "notes.txt", b"Gift cards never expire.", "text/plain")
    clock.advance(hours=25)
    for file_id in (file["fileId"], "file_doesnotexist"):
        response = await tenant.post(f"/agents/{agent['id']}/knowledge/sources",
                                     json={"kind": "file", "label": "Notes", "fileId": file_id})
        assert response.status_code == 404, response.text
        assert response.json()["code"] == "file_expired"
    await knowledge.worker.tick()  # garbage-collects the expired upload
    # Accepts the snake_case spelling the guide uses, too.
    fresh = await upload(tenant, "notes.txt", b"Gift cards never expire.", "text/plain")
    await indexed(tenant, knowledge, agent["id"], kind="file", label="Notes", file_id=fresh["fileId"])


@pytest.mark.parametrize(("body", "field"), [
    ({"kind": "text", "label": "x"}, "text"),
    ({"kind": "text", "label": "x", "text": "hi", "url": "https://example.com"}, "url"),
    ({"kind": "faq", "label": "x", "items": [{"question": "q?"}]}, "items[0].answer"),
    ({"kind": "pdf", "label": "x", "text": "hi"}, "kind"),
    ({"kind": "url", "label": "x"}, "url"),
    ({"kind": "text", "text": "hi"}, "label"),
    ({"kind": "text", "label": "x", "text": "hi", "autoRefresh": True}, "autoRefresh"),
    ({"kind": "url", "label": "x", "url": "https://example.com", "refreshIntervalHours": 12}, "refreshIntervalHours"),
])
async def test_validation_errors_name_the_field(tenant: Tenant, body: dict[str, object], field: str) -> None:
    agent = await tenant.create_agent()
    response = await tenant.post(f"/agents/{agent['id']}/knowledge/sources", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["field"] == field


async def test_delete_hides_the_source_from_the_draft(tenant: Tenant, knowledge: KnowledgeService) -> None:
    agent = await tenant.create_agent()
    source = await indexed(tenant, knowledge, agent["id"], kind="text", label="Hours", text="We open at 9am.")
    deleted = await tenant.delete(f"/agents/{agent['id']}/knowledge/sources/{source['id']}")
    assert deleted.status_code == 200 and deleted.json()["data"] == {"id": source["id"], "deleted": True}
    assert (await tenant.get(f"/agents/{agent['id']}/knowledge/sources/{source['id']}")).status_code == 404
    assert (await tenant.get(f"/agents/{agent['id']}/knowledge/sources")).json()["data"] == []
    assert (await preview(tenant, agent["id"], "When do you open?"))["chunks"] == []


async def test_another_organization_sees_nothing(tenants: TenantFactory, knowledge: KnowledgeService) -> None:
    owner, stranger = await tenants(), await tenants()
    agent = await owner.create_agent()
    source = await indexed(owner, knowledge, agent["id"], kind="text", label="Secret", text="The vault code is 1234.")
    path = f"/agents/{agent['id']}/knowledge/sources/{source['id']}"
    for method, url, body in (
        ("GET", path, None), ("DELETE", path, None), ("PATCH", path, {"label": "pwned"}),
        ("POST", path + "/refresh", None), ("GET", f"/agents/{agent['id']}/knowledge/sources", None),
        ("POST", f"/agents/{agent['id']}/knowledge/preview", {"query": "vault code"}),
        ("POST", f"/agents/{agent['id']}/knowledge/sources", {"kind": "text", "label": "x", "text": "y"}),
    ):
        response = await stranger.request(method, url, json=body)
        assert response.status_code == 404, (method, url, response.text)
    own_agent = await stranger.create_agent()
    file = await upload(owner, "a.txt", b"owner's file", "text/plain")
    response = await stranger.post(f"/agents/{own_agent['id']}/knowledge/sources",
                                   json={"kind": "file", "label": "x", "fileId": file["fileId"]})
    assert response.status_code == 404 and response.json()["code"] == "file_expired"
    assert (await get_source(owner, agent["id"], source["id"]))["label"] == "Secret"
