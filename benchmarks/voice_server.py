"""The SIP edge answering with the voice agent, alone in its own process, for benchmarks/voice_latency.py.

Builds `Services` on a fresh SQLite database in ``--data-dir`` (the assembled LLM is linked in from
``--models-from``, so nothing is joined again), creates an organization with a key, funds it, and through
the real API (httpx.ASGITransport) creates and publishes two agents and imports a number for each:

* ``latency``: a one-line greeting; the persona asks for one short sentence per answer;
* ``bargein``: a greeting of several long sentences, so there is always agent speech to talk over;
* ``knowledge`` (not with ``--fake``): ``latency``'s greeting and persona, with the `flowyte demo` pizzeria's
  knowledge (hours, menu, delivery) embedded before it is published, so each question is searched and the
  passages' nearest sentences go into the model's prompt.

Calls are admitted as in ``flowyte serve`` (`CallAdmission` -> `VoiceAgent`, models preloaded, the LLM
loaded before the first call). With ``--fake`` the same pipeline runs with instant stand-ins instead of the
models: `ScriptedSTTService` (delay 0), `ScriptedLLM` (ttft 0), `ScriptedTTSService` (ttfb 0), so what is
left of a turn's latency is the runtime's own overhead plus the VAD and turn-end waits.

Prints one JSON line on stdout once it listens - ``{"sip_port", "numbers": {"latency", "bargein", ...},
"database", "pid"}`` - and serves until SIGTERM or SIGINT; on SIGUSR1 it prints one more line, of what holds
its memory (`MemoryReport`).

    .venv/bin/python benchmarks/voice_server.py --data-dir /tmp/x [--models-from .flowyte] [--fake]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import linecache
import logging
import os
import random
import secrets
import signal
import sys
import tracemalloc
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from control_api.agent_store import DatabaseAgentSource
from control_api.auth.keys import create_key
from control_api.auth.scopes import ALL_SCOPES
from control_api.billing import ledger
from control_api.calls.admission import CallAdmission
from control_api.calls.native_memory import freeze_startup_objects, heap_usage, limit_arenas, release_after_call
from control_api.calls.records import CallRecords
from control_api.calls.session import AdmittedCall, CallHandler
from control_api.calls.voice import SpeechModels, TurnWriter, VoiceAgent
from control_api.chat.turns import brain_deps
from control_api.db.engine import create_engine, migrate
from control_api.demo import KNOWLEDGE
from control_api.http.app import create_app
from control_api.llm import LazyLLM
from control_api.numbers.inbound import DatabaseNumberRouter
from control_api.numbers.inventory import ensure_seeded
from control_api.services import Services
from control_api.settings import Settings, sqlite_url
from pipeline.llm.local_llama import LlamaEngine
from pipeline.llm.local_provider import LocalLlamaProvider
from pipeline.llm.model_assets import QWEN_CODER_05B_Q4KM, link_assembled, runtime_model_path
from pipeline.llm.scripted import ScriptedLLM
from pipeline.voice.fakes import ScriptedSTTService, ScriptedTTSService
from runtime.brain import AgentBrain
from runtime.voice.call import VoiceCall, VoiceSettings
from telephony.call import SipCallLeg
from telephony.edge import EdgeConfig, SipEdge

HOST = "127.0.0.1"
LATENCY_GREETING = "Thanks for calling Tony's Pizza."
LONG_GREETING = (
    "Thanks for calling Tony's Pizza on Main Street, the home of the wood fired crust since nineteen eighty two. "
    "Before we begin, here is a little about us: every pizza is made to order with fresh dough that rises for "
    "two whole days, tomatoes from the valley, and mozzarella from a small dairy just outside of town. "
    "We deliver to every neighborhood within five miles, and pickup orders are ready in about twenty minutes. "
    "On weekends we also bake calzones, garlic knots and a sweet cinnamon dessert pizza that our regulars love. "
    "Now, tell me how I can help you today."
)
PERSONA = "You answer the phone for Tony's Pizza. Keep every answer to one short sentence."
FAKE_QUESTION = "What time do you open on Saturday?"
FAKE_ANSWER = "We open at eleven."


async def provision(services: Services, *, knowledge: bool) -> dict[str, str]:
    """An org, a key and credits; the agents published and a number imported for each (via the API)."""
    async with services.engine.begin() as conn:
        await ensure_seeded(conn)
        record, secret = await create_key(
            conn, org_name=f"bench-{secrets.token_hex(4)}", scopes=ALL_SCOPES, label="bench", clock=services.clock
        )
        await ledger.post(
            conn, org_id=record.org_id, key=f"bench-credit:{secrets.token_hex(8)}", kind="credit",
            amount_credits=10_000_000, description="benchmark credit", now=services.clock.now(),
        )  # fmt: skip
    numbers: dict[str, str] = {}
    transport = httpx.ASGITransport(app=create_app(services))
    headers = {"Authorization": f"Bearer {secret}"}
    agents = [("latency", LATENCY_GREETING), ("bargein", LONG_GREETING)]
    agents += [("knowledge", LATENCY_GREETING)] if knowledge else []
    stop = asyncio.Event()
    ingestion = asyncio.create_task(services.knowledge.run(stop)) if knowledge and services.knowledge else None
    async with httpx.AsyncClient(transport=transport, base_url="http://bench/api/v1", headers=headers) as http:
        for name, greeting in agents:
            body: dict[str, Any] = {
                "name": f"Bench {name}",
                "greeting": greeting,
                "persona": {"role": PERSONA},
                "callControl": {"idleReminderSeconds": 300, "maxCallSeconds": 3600},
            }
            created = await http.post("/agents", json=body)
            created.raise_for_status()
            agent_id = created.json()["data"]["id"]
            if name == "knowledge":
                source = {"kind": "text", "label": "Hours, menu and delivery", "text": KNOWLEDGE}
                (await http.post(f"/agents/{agent_id}/knowledge/sources", json=source)).raise_for_status()
                assert services.knowledge is not None
                await services.knowledge.worker.drain()  # embedded before publishing, so the version has it
            (await http.post(f"/agents/{agent_id}/publish")).raise_for_status()
            e164 = f"+1305{random.randrange(2_000_000, 5_000_000)}"
            (await http.post("/numbers/import", json={"e164": e164, "agentId": agent_id})).raise_for_status()
            numbers[name] = e164
    if ingestion is not None:
        stop.set()
        await ingestion
    return numbers


def fake_voice_agent(services: Services) -> CallHandler:
    """`VoiceAgent` with instant stand-ins for Whisper and Piper (the LLM is the `ScriptedLLM` in services)."""

    async def answer(call: AdmittedCall, leg: SipCallLeg, conversation_id: str) -> str | None:
        brain = AgentBrain(
            call.agent, brain_deps(services), channel="voice", conversation_id=conversation_id,
            org_id=call.route.org_id, caller_id=call.info.caller or None,
        )  # fmt: skip
        writer = TurnWriter(services, call.route.org_id, conversation_id, brain)
        stt = ScriptedSTTService([FAKE_QUESTION] * 10_000, delay_s=0.0)
        tts = ScriptedTTSService(sample_rate=leg.sample_rate, ttfb_s=0.0)
        settings = VoiceSettings(idle_s=300, max_call_s=3600)
        try:
            result = await VoiceCall(leg, leg, brain, stt=stt, tts=tts, listener=writer, settings=settings).run()
        finally:
            if isinstance(services.llm, ScriptedLLM):
                services.llm.calls.clear()  # the fake records every request for tests; nobody reads them here
            await release_after_call()  # as `VoiceAgent` does: its memory figures are the runtime's
        return result.outcome

    return answer


@cache
def _sqlite_library() -> Any | None:
    """The SQLite library Python's sqlite3 module is linked to (one per process), for its memory counter."""
    try:
        library = ctypes.CDLL("libsqlite3.so.0")
    except OSError:
        return None
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return library


class MemoryReport:
    """What holds memory beside the RSS the benchmark reads: the LLM engine's saved KV states (bounded by its
    config), glibc's heap (in use vs freed but kept), SQLite's page caches, Python's allocated blocks and,
    with ``trace``, the Python allocations that grew most since the first report (tracemalloc, by line; it
    slows every allocation down: a run for finding a leak, not for latency). One JSON line on stdout per SIGUSR1."""

    def __init__(self, engine: LlamaEngine | None, *, trace: bool) -> None:
        self.engine = engine
        self.first: tracemalloc.Snapshot | None = None
        if trace:
            tracemalloc.start(8)

    def __call__(self) -> dict[str, Any]:
        entries, saved_bytes = self.engine.saved_states() if self.engine is not None else (0, 0)
        sqlite = _sqlite_library()
        report: dict[str, Any] = {
            "llm_saved_states": entries,
            "llm_saved_bytes": saved_bytes,
            "heap": heap_usage(),
            "sqlite_bytes": int(sqlite.sqlite3_memory_used()) if sqlite is not None else None,
            "python_blocks": sys.getallocatedblocks(),
        }
        if tracemalloc.is_tracing():
            ours = [tracemalloc.Filter(False, str(module.__file__)) for module in (tracemalloc, linecache)]
            snapshot = tracemalloc.take_snapshot().filter_traces(ours)
            self.first = self.first or snapshot
            report["python_traced_bytes"] = sum(trace.size for trace in snapshot.traces)  # the report's own left out
            grown = sorted(snapshot.compare_to(self.first, "traceback"), key=lambda stat: -stat.size_diff)[:8]
            report["python_grown"] = [
                {"bytes": stat.size_diff, "count": stat.count_diff, "at": stat.traceback.format(most_recent_first=True)}
                for stat in grown
            ]
        return report


async def serve(args: argparse.Namespace) -> None:
    data_dir: Path = args.data_dir
    settings = Settings(data_dir=data_dir, database_url=sqlite_url(data_dir))
    engine = create_engine(settings.database_url)
    await migrate(engine)
    llama: LlamaEngine | None = None  # the local LLM engine, for `MemoryReport`
    llm = ScriptedLLM([FAKE_ANSWER] * 100_000, ttft_s=0.0) if args.fake else None
    if not args.fake:
        link_assembled(Path(args.models_from), data_dir)
    services = Services(settings=settings, engine=engine, llm=llm)
    numbers = await provision(services, knowledge=not args.fake)
    handler: CallHandler
    limit_arenas()  # as `flowyte serve` does, before the models start their threads
    if args.fake:
        freeze_startup_objects()
        handler = fake_voice_agent(services)
    else:
        models = SpeechModels(data_dir)
        await models.preload()
        if isinstance(services.llm, LazyLLM):
            provider = await services.llm.provider()  # load the model now, not on the first caller's turn
            llama = provider.engine if isinstance(provider, LocalLlamaProvider) else None
        freeze_startup_objects()  # as `flowyte serve` does once the models are loaded
        handler = VoiceAgent(services, models, VoiceSettings(idle_s=300))
    assert services.meter is not None
    admission = CallAdmission(
        DatabaseNumberRouter(engine), DatabaseAgentSource(engine), services.meter, CallRecords(engine, services.clock),
        handler,
    )  # fmt: skip
    base = random.Random().randrange(30000, 50000, 2)
    config = EdgeConfig(bind_host=HOST, sip_port=0, rtp_ports=(base, base + 200), max_calls=64)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    report = MemoryReport(llama, trace=args.trace_python)
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(json.dumps(report()), flush=True))
    try:
        async with SipEdge(config, admission) as edge:
            ready = {"sip_port": edge.port, "numbers": numbers, "database": str(data_dir / "flowyte.db")}
            print(json.dumps({**ready, "pid": os.getpid()}), flush=True)
            await stop.wait()
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="a fresh directory: the SQLite database goes here")
    parser.add_argument("--models-from", default=str(Path(__file__).resolve().parent.parent / ".flowyte"))
    parser.add_argument("--fake", action="store_true", help="instant scripted STT, LLM and TTS")
    parser.add_argument("--trace-python", action="store_true", help="tracemalloc, for the memory report")
    args = parser.parse_args()
    args.data_dir = Path(args.data_dir).resolve()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.fake and not runtime_model_path(Path(args.models_from), QWEN_CODER_05B_Q4KM).exists():
        parser.error(f"no assembled and requantized model under {args.models_from} (run ./dev first)")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
