"""The knowledge building blocks on their own: chunking, extraction, embeddings, the address guard, and
the compiled agent's knowledge snapshot."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_api.knowledge.fetch import FetchError, fetch
from control_api.net_guard import BlockedAddress, guarded_client, vetted_address
from pipeline.knowledge.chunking import MAX_CHARS, chunk_faq, chunk_text, join_passages, split_sentences
from pipeline.knowledge.embedder import DIMENSION, Embedder, from_bytes, to_bytes
from pipeline.knowledge.extractors import EmptyDocument, UnsupportedDocument, detect_format, extract
from runtime.agent_config import CompiledAgent
from runtime.knowledge import KnowledgeSnapshot, KnowledgeSourceRef
from tests import test_knowledge_support as support
from tests.test_knowledge_support import PageServer, make_docx, make_pdf

# The shared knowledge fixtures, visible to this module's tests.
embedder, pages = support.embedder, support.pages


def test_chunks_respect_the_size_and_overlap_by_a_sentence() -> None:
    sentences = [f"Sentence number {i} talks about topic {i}." for i in range(80)]
    chunks = chunk_text(" ".join(sentences))
    assert len(chunks) > 1 and all(len(c.text) <= MAX_CHARS for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    for before, after in itertools.pairwise(chunks):
        assert after.text.startswith(before.text.rsplit(". ", 1)[-1].rstrip("."))


@given(st.text(min_size=0, max_size=3000))
def test_chunking_never_loses_words_or_exceeds_the_limit(text: str) -> None:
    chunks = chunk_text(text)
    assert all(0 < len(c.text) <= MAX_CHARS for c in chunks)
    joined = " ".join(c.text for c in chunks)
    for word in text.split():
        assert word[:MAX_CHARS] in joined


@given(st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=120))
def test_joined_passages_give_each_sentence_of_the_text_once(lengths: list[int]) -> None:
    """`join_passages` undoes chunking's one-sentence overlap: the source's sentences, in order, none twice."""
    sentences = [f"Item {i} " + "word " * n + "ends here." for i, n in enumerate(lengths)]
    passages = [c.text for c in chunk_text(" ".join(sentences))]
    assert split_sentences(join_passages(passages)) == sentences


def test_faq_chunks_keep_the_question_with_each_part_of_the_answer() -> None:
    chunks = chunk_faq([("Why?", "Because. " * 300), ("Short?", "Yes.")])
    assert len(chunks) > 2 and all(c.text.startswith("Q: Why?\nA: ") for c in chunks[:-1])
    assert chunks[-1].text == "Q: Short?\nA: Yes."


@pytest.mark.parametrize(("data", "content_type", "filename", "fmt"), [
    (make_pdf("x"), None, "x.bin", "pdf"),
    (make_docx("x"), "application/octet-stream", None, "docx"),
    (b"<!DOCTYPE html><html><body>x</body></html>", None, None, "html"),
    (b"# Title\n\nbody", None, "README.md", "markdown"),
    (b"plain words", "text/plain; charset=utf-8", None, "text"),
    (b"plain words", None, None, "text"),
])
def test_formats_are_detected_from_bytes_type_and_name(
    data: bytes, content_type: str | None, filename: str | None, fmt: str
) -> None:
    assert detect_format(data, content_type, filename) == fmt


def test_unsupported_and_empty_documents_are_refused() -> None:
    with pytest.raises(UnsupportedDocument):
        extract(b"\x89PNG\r\n\x1a\n\x00\x00", "image/png", "logo.png")
    with pytest.raises(UnsupportedDocument):
        extract(b"\x00\x01binary", None, "data.txt")
    with pytest.raises(EmptyDocument):
        extract(make_pdf(), "application/pdf", "blank.pdf")
    with pytest.raises(EmptyDocument):
        extract(b"   \n  ", "text/plain", "blank.txt")


def test_html_drops_scripts_styles_and_navigation() -> None:
    page = (b"<html><head><title>Shop</title><style>p{}</style></head><body><nav>Home | Cart</nav>"
            b"<p>Open daily.</p><script>track()</script><footer>(c) 2025</footer></body></html>")
    document = extract(page, "text/html")
    assert document.title == "Shop" and document.text == "Open daily."


def test_embeddings_are_unit_vectors_that_rank_by_meaning(embedder: Embedder) -> None:
    vectors = embedder.encode([
        "How do I reset my password?",
        "To reset your password, use the 'Forgot password' link on the login page.",
        "The cafeteria serves lunch from noon.",
    ])
    assert vectors.shape == (3, DIMENSION) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    related, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert related > 0.6 and unrelated < 0.2
    assert np.array_equal(from_bytes(to_bytes(vectors[1])), vectors[1])
    assert embedder.encode([]).shape == (0, DIMENSION)


@pytest.mark.parametrize("host", ["127.0.0.1", "10.0.0.8", "172.16.5.4", "192.168.1.1", "169.254.169.254", "::1",
                                  "::ffff:127.0.0.1", "fe80::1", "100.64.0.1", "0.0.0.0", "localhost",
                                  "metadata.google.internal"])
async def test_guard_refuses_private_loopback_link_local_and_metadata(host: str) -> None:
    with pytest.raises(BlockedAddress):
        await vetted_address(host, 80, frozenset())


async def test_guard_allows_public_addresses_and_allow_listed_hosts() -> None:
    assert await vetted_address("93.184.216.34", 443, frozenset()) == "93.184.216.34"
    assert await vetted_address("127.0.0.1", 80, frozenset({"127.0.0.1"})) == "127.0.0.1"


async def test_guarded_client_refuses_loopback_unless_allow_listed(pages: PageServer) -> None:
    url = pages.html("/guard", "Guard", "Only for trusted hosts.")
    async with guarded_client(frozenset()) as client:
        with pytest.raises(BlockedAddress):
            await client.get(url)
    with pytest.raises(FetchError, match="refused"):
        await fetch(url, frozenset())
    page = await fetch(url, frozenset({"127.0.0.1"}))
    assert b"Only for trusted hosts." in page.data and page.content_type is not None


async def test_fetch_enforces_the_size_cap(pages: PageServer) -> None:
    pages.pages["/huge"] = (200, "text/plain", b"x" * 5000)
    with pytest.raises(FetchError, match="larger"):
        await fetch(pages.url("/huge"), frozenset({"127.0.0.1"}), max_bytes=1000)


def _agent_config(knowledge: list[dict[str, object]] | None) -> dict[str, object]:
    config: dict[str, object] = {
        "schemaVersion": 1, "agentId": "agt_x", "name": "A", "persona": {"role": None, "goals": [], "neverDo": []},
        "primaryLanguage": "en", "languages": ["en"], "defaultVoiceId": None, "voiceMap": {}, "greeting": None,
        "handoffConfig": {"warm": False, "transferDestination": None, "transferRules": []},
        "callControl": {"maxCallSeconds": 600, "idleReminderSeconds": 10, "idleReminderCount": 2,
                        "onNoResponseAction": "end"},
        "businessHours": None, "afterHours": {"allowHumanTransfer": False, "number": None},
        "skills": [], "guardrails": [], "callerVerification": [],
    }
    if knowledge is not None:
        config["knowledge"] = knowledge
    return config


def test_compiled_agent_round_trips_its_knowledge_and_old_configs_load_empty() -> None:
    ref = KnowledgeSourceRef("ks_1", "Help", "url", 3, "ab" * 32)
    with_knowledge = CompiledAgent.from_config(_agent_config([ref.to_config()]))
    assert with_knowledge.knowledge == KnowledgeSnapshot((ref,))
    assert CompiledAgent.from_config(with_knowledge.to_config()) == with_knowledge
    old = _agent_config(None)
    legacy = CompiledAgent.from_config(old)
    assert legacy.knowledge == KnowledgeSnapshot() and not legacy.knowledge
    assert legacy.to_config() == old  # the stored hash of a version made before knowledge still holds
    assert CompiledAgent.from_config(legacy.to_config()) == legacy
