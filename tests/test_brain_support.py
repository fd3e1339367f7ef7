"""Shared pieces of the brain tests: agent configs, a movable clock, a real loopback HTTP server (uvicorn +
starlette on 127.0.0.1) that a test scripts per path, fake knowledge search and gap recorder that
implement the real Protocols, and helpers to run a turn. (Holds no tests of its own.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route as StarletteRoute

from control_api.net_guard import guarded_client
from pipeline.knowledge.chunking import split_sentences
from pipeline.llm.scripted import ScriptedLLM, ScriptedTurn
from runtime.agent_config import CompiledAgent
from runtime.brain import AgentBrain, BrainDeps
from runtime.events import ConversationEvent
from runtime.knowledge import KnowledgeSnapshot, KnowledgeText, RetrievedChunk

# A Wednesday, 10:00 in Denver (16:00 UTC): inside OPEN_HOURS.
WEDNESDAY_10AM_DENVER = datetime(2025, 6, 11, 16, 0, tzinfo=UTC)
# A Sunday, 10:00 in Denver: closed.
SUNDAY_10AM_DENVER = datetime(2025, 6, 15, 16, 0, tzinfo=UTC)

WEEKDAY_HOURS = [{"open": "09:00", "close": "17:00"}]
OPEN_HOURS = {
    "timezone": "America/Denver",
    "weekly": {d: WEEKDAY_HOURS for d in ("monday", "tuesday", "wednesday", "thursday", "friday")},
    "holidays": [{"date": "2025-12-25", "name": "Christmas"}],
}


class Clock:
    """The brain's wall clock, moved by the test."""

    def __init__(self, start: datetime = WEDNESDAY_10AM_DENVER) -> None:
        self.at = start

    def now(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


def skill(
    id: str, name: str, skill_type: str, config: dict[str, Any] | None = None, *,
    schema: dict[str, Any] | None = None, **flags: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": id, "name": name, "description": f"{name}.", "skillType": skill_type,
        "executionConfig": config or {},
        "parametersSchema": schema or {"type": "object", "properties": {}, "required": []},
        "enabled": True, "requiresVerifiedIdentity": False, "verificationLevel": "basic",
        "allowedFields": None, "requiresConfirmation": False, "stakes": "low",
    }
    spec.update(flags)
    return spec


def string_schema(*names: str, required: bool = True) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {n: {"type": "string", "description": n} for n in names},
        "required": list(names) if required else [],
    }


GEO_SCHEMA = {
    "type": "object",
    "properties": {"address": {"type": "string"}, "latitude": {"type": "number"}, "longitude": {"type": "number"}},
    "required": [],
}
REASON_SCHEMA = {"type": "object", "properties": {"reason": {"type": "string"}}, "required": []}


def method(name: str = "dob_postcode", verifier: str | None = "sk_verify", **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "method": name, "requiredFields": ["date_of_birth", "postcode"], "verifierSkillId": verifier,
        "tokenTtlSeconds": 600, "maxAttempts": 3, "stepUpFor": [],
    }
    spec.update(over)
    return spec


def policy(policy_type: str, config: dict[str, Any] | None = None, *, skill_id: str | None = None,
           skill_type: str | None = None, enabled: bool = True) -> dict[str, Any]:
    return {"policyType": policy_type, "isEnabled": enabled, "appliesToSkillType": skill_type,
            "appliesToSkillId": skill_id, "config": config or {}}


def agent(**over: Any) -> CompiledAgent:
    config: dict[str, Any] = {
        "schemaVersion": 1,
        "agentId": "agt_tony",
        "name": "Tony's Pizza",
        "persona": {"role": "Friendly order taker for a pizzeria.",
                    "goals": ["Take pizza orders", "Answer menu questions"], "neverDo": ["Promise discounts"]},
        "primaryLanguage": "en",
        "languages": ["en", "es"],
        "defaultVoiceId": None,
        "voiceMap": {},
        "greeting": "Hi, this is Tony's Pizza! How can I help?",
        "handoffConfig": {
            "warm": True,
            "transferDestination": "+14155550100",
            "transferRules": [
                {"label": "Billing", "when": "caller asks about an invoice, charge, or refund",
                 "destination": "+14155550111"},
                {"label": "Spanish line", "when": "caller prefers Spanish", "destination": "+14155550122"},
            ],
        },
        "callControl": {"maxCallSeconds": 600, "idleReminderSeconds": 10, "idleReminderCount": 2,
                        "onNoResponseAction": "end"},
        "businessHours": None,
        "afterHours": {"allowHumanTransfer": False, "number": None},
        "skills": [],
        "guardrails": [],
        "callerVerification": [],
    }
    config.update(over)
    return CompiledAgent.from_config(config)


KNOWLEDGE = KnowledgeSnapshot.from_config(
    [{"sourceId": "ks_menu", "label": "Menu", "kind": "text", "generation": 1, "contentHash": "abc"}]
)


@dataclass
class FakeKnowledge:
    """A KnowledgeSearch returning the chunks set by the test, whatever the query."""

    chunks: list[RetrievedChunk] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    focus_asked: list[int] = field(default_factory=list)  # each search's focus_chars
    fail: bool = False
    whole: bool = False  # contents() gives the chunks' texts (knowledge that small), else None (too big)
    delay_s: float = 0.0  # how long each search takes
    searched_at: list[float] = field(default_factory=list)  # time.monotonic() as each search returned

    async def contents(self, snapshot: KnowledgeSnapshot, max_chars: int) -> list[KnowledgeText] | None:
        if self.fail:
            raise RuntimeError("index offline")
        if not self.whole or sum(len(c.text) for c in self.chunks) > max_chars:
            return None
        return [KnowledgeText(c.source_id, c.source_label, c.text) for c in self.chunks]

    async def search(
        self, snapshot: KnowledgeSnapshot, query: str, top_k: int, *, focus_chars: int = 0
    ) -> list[RetrievedChunk]:
        self.queries.append(query)
        self.focus_asked.append(focus_chars)
        await asyncio.sleep(self.delay_s)
        self.searched_at.append(time.monotonic())
        if self.fail:
            raise RuntimeError("index offline")
        if not focus_chars:
            return self.chunks[:top_k]
        # Not ranked by meaning, as the real index does: each chunk's first sentence is its focus.
        return [replace(c, focus=split_sentences(c.text)[0]) for c in self.chunks[:top_k]]


@dataclass
class GapLog:
    gaps: list[tuple[str, str, str, float | None, str | None]] = field(default_factory=list)

    async def record_gap(self, org_id: str, agent_id: str, question: str, top_score: float | None,
                         conversation_id: str | None = None) -> None:
        self.gaps.append((org_id, agent_id, question, top_score, conversation_id))


def chunk(text: str, score: float) -> RetrievedChunk:
    return RetrievedChunk("ks_menu", "Menu", text, score)


# --- the loopback server -----------------------------------------------------------------------------


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    text: str | None = None
    delay_s: float = 0.0  # held until the server closes or this passes


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    json: Any


class Loopback:
    """A real HTTP server on 127.0.0.1: `routes[path]` is a Reply, or a function of the request to one."""

    def __init__(self) -> None:
        self.routes: dict[str, Reply | Callable[[Seen], Reply]] = {}
        self.seen: list[Seen] = []
        self.arrived = asyncio.Event()
        self._release = asyncio.Event()
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    async def _endpoint(self, request: Request) -> Response:
        raw = await request.body()
        query: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            query.setdefault(key, []).append(value)
        seen = Seen(request.method, request.url.path, query, dict(request.headers),
                    json.loads(raw) if raw else None)
        self.seen.append(seen)
        self.arrived.set()
        route = self.routes.get(request.url.path)
        if route is None:
            return JSONResponse({"error": "no such path"}, 404)
        reply = route(seen) if callable(route) else route
        if reply.delay_s:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(reply.delay_s):
                    await self._release.wait()
        if reply.text is not None:
            return PlainTextResponse(reply.text, reply.status)
        return JSONResponse(reply.body, reply.status)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Loopback]:
        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        app = Starlette(routes=[StarletteRoute("/{path:path}", self._endpoint, methods=methods)])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)  # connections queue here until uvicorn accepts: no need to wait for start-up
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield self
        finally:
            self._release.set()
            server.should_exit = True
            await task
            sock.close()


def loopback_client() -> httpx.AsyncClient:
    """The guarded client, with the loopback server allow-listed (as FLOWYTE_FETCH_ALLOW_HOSTS would)."""
    return guarded_client(frozenset({"127.0.0.1"}))


def deps(llm: ScriptedLLM, clock: Clock | None = None, **over: Any) -> BrainDeps:
    clock = clock or Clock()
    return BrainDeps(llm=llm, http_client=loopback_client, now=clock.now, **over)


def scripted(*turns: ScriptedTurn, **kwargs: Any) -> ScriptedLLM:
    kwargs.setdefault("ttft_s", 0.0)
    return ScriptedLLM(list(turns), **kwargs)


def brain(agent_: CompiledAgent, deps_: BrainDeps, channel: str = "chat") -> AgentBrain:
    assert channel in ("chat", "voice")
    return AgentBrain(agent_, deps_, channel="chat" if channel == "chat" else "voice", conversation_id="cnv_1",
                      org_id="org_1", caller_id="+14155559999")


async def turn(b: AgentBrain, text: str) -> list[ConversationEvent]:
    return [event async for event in b.respond(text)]


def of_type(events: list[ConversationEvent], kind: str) -> list[ConversationEvent]:
    return [e for e in events if e.type == kind]


def message(events: list[ConversationEvent]) -> str:
    last = events[-1]
    assert last.type == "agent_message", [e.type for e in events]
    text: str = last.data["text"]
    return text


def seen_by_model(llm: ScriptedLLM, call: int = -1) -> str:
    """Everything the model was sent in one call, as one string."""
    return "\n".join(m.content for m in llm.calls[call].messages)
