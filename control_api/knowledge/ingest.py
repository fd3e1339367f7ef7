"""Ingesting one source: its content as text, then passages, embeddings, and a new generation.

    text  -> the text as given           faq  -> the questions and answers, one passage each
    url   -> fetched, then extracted     file -> the upload's bytes, extracted (the upload is then consumed)

The content hash is over the extracted text, so a page whose markup changed but whose words did not
counts as unchanged. A source already indexed whose hash is unchanged only gets `lastCheckedAt`; only a
changed (or first) content is chunked, embedded off the event loop, and written as a new generation.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from control_api.clock import Clock
from control_api.knowledge import repository as repo
from control_api.knowledge import uploads as uploads_repo
from control_api.knowledge.fetch import FetchError, fetch
from pipeline.knowledge.chunking import Chunk, chunk_faq, chunk_text, faq_text
from pipeline.knowledge.embedder import Embedder, to_bytes
from pipeline.knowledge.extractors import EmptyDocument, ExtractionError, extract


class IngestionFailed(Exception):
    """The source cannot be indexed; the message is shown as the source's `error`."""


@dataclass(frozen=True)
class Content:
    text: str
    chunks: list[Chunk]

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def _faq_items(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(i["question"]), str(i["answer"])) for i in spec.get("items", [])]


def _document(data: bytes, content_type: str | None, filename: str | None) -> Content:
    document = extract(data, content_type, filename)
    text = document.text if not document.title else f"{document.title}\n\n{document.text}"
    return Content(text, chunk_text(text))


async def load_content(
    engine: AsyncEngine, row: sa.Row[Any], allow_hosts: frozenset[str]
) -> tuple[Content, str | None]:
    """The source's content now, and the id of an upload it consumed (to delete once indexed)."""
    spec: dict[str, Any] = dict(row.spec)
    try:
        if row.kind == "text":
            text = str(spec["text"])
            return Content(text, chunk_text(text)), None
        if row.kind == "faq":
            items = _faq_items(spec)
            return Content(faq_text(items), chunk_faq(items)), None
        if row.kind == "url":
            page = await fetch(str(spec["url"]), allow_hosts)
            return await asyncio.to_thread(_document, page.data, page.content_type, page.url.rsplit("/", 1)[-1]), None
        if row.kind == "file":
            async with engine.connect() as conn:
                data = await uploads_repo.data(conn, spec["fileId"])
            if data is None:
                raise IngestionFailed("the uploaded file is gone; upload it again and add a new source")
            content = await asyncio.to_thread(_document, data, spec.get("contentType"), spec.get("filename"))
            return content, str(spec["fileId"])
    except (FetchError, ExtractionError) as error:
        raise IngestionFailed(str(error)) from None
    raise IngestionFailed(f"unknown source kind {row.kind}")


async def ingest(
    engine: AsyncEngine, clock: Clock, embedder: Embedder, row: sa.Row[Any], allow_hosts: frozenset[str]
) -> str:
    """Index the source if its content is new; returns "indexed" or "unchanged". Raises IngestionFailed."""
    content, consumed_upload = await load_content(engine, row, allow_hosts)
    if not content.chunks:
        raise IngestionFailed(str(EmptyDocument("the document contains no text")))
    digest = content.hash
    if row.generation is not None and row.content_hash == digest:
        now = clock.now()
        async with engine.begin() as conn:
            await repo.update(conn, row.id, last_checked_at=now, error=None, updated_at=now)
        return "unchanged"
    vectors = await asyncio.to_thread(embedder.encode, [c.text for c in content.chunks])
    passages = [(c.position, c.text, to_bytes(v)) for c, v in zip(content.chunks, vectors, strict=True)]
    async with engine.begin() as conn:
        if await repo.get_by_id(conn, row.id) is None:  # deleted while we worked
            return "unchanged"
        await repo.write_generation(
            conn, row, content=content.text, content_hash=digest, passages=passages, now=clock.now()
        )
        if consumed_upload is not None:
            await uploads_repo.delete(conn, consumed_upload)
    return "indexed"


async def mark_failed(engine: AsyncEngine, clock: Clock, row: sa.Row[Any], message: str) -> None:
    """A source never indexed goes to `error`; an indexed one keeps serving and records the failure."""
    now = clock.now()
    values: dict[str, Any] = {"error": message[:1000], "updated_at": now, "last_checked_at": now}
    if row.generation is None:
        values["status"] = "error"
    async with engine.begin() as conn:
        await repo.update(conn, row.id, **values)
        if row.kind == "file" and row.generation is None:
            await uploads_repo.delete(conn, str(row.spec.get("fileId")))
