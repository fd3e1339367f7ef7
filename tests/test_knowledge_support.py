"""Shared pieces of the knowledge tests: the running worker, a movable clock, a loopback web server whose
pages a test can change, and real PDF/DOCX files built in memory. (Holds no tests of its own.)"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from control_api.clock import SystemClock
from control_api.knowledge.service import KnowledgeService
from control_api.services import Services
from pipeline.knowledge.embedder import Embedder
from tests.conftest import Tenant


class MovableClock(SystemClock):
    """Wall time that a test moves forward; the monotonic clock (rate limiting) is the real one."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return super().now() + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


class PageServer:
    """A real HTTP server on 127.0.0.1 serving `pages[path] = (status, content_type, body)`."""

    def __init__(self) -> None:
        self.pages: dict[str, tuple[int, str, bytes]] = {}
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits[self.path] = server.hits.get(self.path, 0) + 1
                status, content_type, body = server.pages.get(self.path, (404, "text/plain", b"not found"))
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", body.decode())
                    body = b""
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def html(self, path: str, title: str, *paragraphs: str) -> str:
        body = "".join(f"<p>{p}</p>" for p in paragraphs)
        page = f"<html><head><title>{title}</title><script>var t = {len(self.pages)};</script></head>"
        self.pages[path] = (200, "text/html; charset=utf-8", f"{page}<body>{body}</body></html>".encode())
        return self.url(path)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="session")
def pages() -> Iterator[PageServer]:
    server = PageServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


@pytest.fixture
def clock(services: Services) -> MovableClock:
    movable = MovableClock()
    services.clock = movable
    return movable


@pytest.fixture
async def knowledge(services: Services, embedder: Embedder, clock: MovableClock) -> AsyncIterator[KnowledgeService]:
    """The app's knowledge service with its worker running (loopback allowed for the page server)."""
    service = KnowledgeService(services.engine, clock, embedder=embedder, allow_hosts={"127.0.0.1"})
    services.knowledge = service
    stop = asyncio.Event()
    task = asyncio.create_task(service.worker.run(stop))
    yield service
    stop.set()
    await task


async def add_source(tenant: Tenant, agent_id: str, **body: Any) -> dict[str, Any]:
    response = await tenant.post(f"/agents/{agent_id}/knowledge/sources", json=body)
    assert response.status_code == 201, response.text
    source: dict[str, Any] = response.json()["data"]
    assert source["status"] == "pending"
    return source


async def get_source(tenant: Tenant, agent_id: str, source_id: str) -> dict[str, Any]:
    response = await tenant.get(f"/agents/{agent_id}/knowledge/sources/{source_id}")
    assert response.status_code == 200, response.text
    source: dict[str, Any] = response.json()["data"]
    return source


async def indexed(
    tenant: Tenant, knowledge: KnowledgeService, agent_id: str, **body: Any
) -> dict[str, Any]:
    source = await add_source(tenant, agent_id, **body)
    await knowledge.worker.drain()
    got = await get_source(tenant, agent_id, source["id"])
    assert got["status"] == "indexed", got
    return got


async def preview(tenant: Tenant, agent_id: str, query: str, **extra: Any) -> dict[str, Any]:
    response = await tenant.post(f"/agents/{agent_id}/knowledge/preview", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["data"]
    return result


async def upload(tenant: Tenant, filename: str, data: bytes, content_type: str) -> dict[str, Any]:
    response = await tenant.post("/uploads", files={"file": (filename, data, content_type)})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()["data"]
    return body


def make_pdf(*lines: str) -> bytes:
    """A minimal, valid one-page PDF whose content stream draws `lines` in Helvetica."""
    text_ops = "".join(
        f"BT /F1 12 Tf 72 {720 - 16 * i} Td ({line.replace('(', '[').replace(')', ']')}) Tj ET\n"
        for i, line in enumerate(lines)
    ).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(text_ops) + text_ops + b"endstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def make_docx(*paragraphs: str) -> bytes:
    import docx

    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()
