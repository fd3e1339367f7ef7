"""Builds and wires everything: settings -> migrated engine -> Services -> app -> servers.

`run_server(settings)` is the whole of `flowyte serve`. It owns the process's shutdown signals and runs
each server as a task that stops when a shutdown is requested:

    SIGINT/SIGTERM once  -> Shutdown.requested: every server stops accepting and drains its work
    SIGINT/SIGTERM again -> Shutdown.forced:    every server stops now
    any server ending    -> Shutdown.requested: the others follow, so the process never half-runs

The servers are the HTTP API (uvicorn on uvloop + httptools) and the SIP/RTP edge (telephony/edge.py,
unless `--sip-port off`), beside the knowledge ingestion worker and the housekeeping jobs; all in one
task group watching the same `Shutdown`.

The key commands of the CLI (`flowyte keys ...`) also live here: each opens the engine, migrates, does one
transaction and disposes the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Generator, Iterator
from typing import TYPE_CHECKING, TypeVar

import uvicorn
import uvloop
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from control_api.agent_store import DatabaseAgentSource
from control_api.auth.keys import KeyRecord, create_key, list_keys, revoke_key
from control_api.billing.subscriptions import renew_subscriptions
from control_api.calls.admission import CallAdmission
from control_api.calls.records import CallRecords
from control_api.calls.session import CallHandler, echo_handler
from control_api.clock import Clock, SystemClock
from control_api.db.engine import create_engine, migrate
from control_api.jobs import Job, run_periodically
from control_api.numbers.inbound import DatabaseNumberRouter
from control_api.numbers.inventory import ensure_seeded
from control_api.numbers.rental import charge_number_rentals
from control_api.services import Services
from control_api.settings import Settings
from control_api.voice_edge import edge_config, serve_sip
from telephony.edge import SipEdge

if TYPE_CHECKING:
    from fastapi import FastAPI

    from control_api.calls.voice import SpeechModels

T = TypeVar("T")

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACEFUL_SHUTDOWN_TIMEOUT_S = 10
LISTEN_BACKLOG = 2048


def announce(message: str) -> None:
    print(f"flowyte: {message}", file=sys.stderr, flush=True)


async def open_engine(settings: Settings) -> AsyncEngine:
    """An engine on the configured database with the schema migrated to the newest version."""
    engine = create_engine(settings.resolved().database_url)
    try:
        await migrate(engine)
    except BaseException:
        await engine.dispose()
        raise
    return engine


# -- flowyte serve -------------------------------------------------------------------------------------


class Shutdown:
    """The process-wide stop request every server watches."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()

    def request(self) -> None:
        self.requested.set()

    def on_signal(self) -> None:
        """A first signal asks for a graceful stop; a second one forces it."""
        if self.requested.is_set():
            self.forced.set()
        self.requested.set()


@contextlib.contextmanager
def shutdown_on_signals(shutdown: Shutdown) -> Iterator[None]:
    """Route SIGINT/SIGTERM to `shutdown` while inside (only the main thread can receive signals)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    for sig in SHUTDOWN_SIGNALS:
        loop.add_signal_handler(sig, shutdown.on_signal)
    try:
        yield
    finally:
        for sig in SHUTDOWN_SIGNALS:
            loop.remove_signal_handler(sig)


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling, which would re-raise SIGTERM after a graceful stop and so
    kill the process with a signal; `run_server` owns the signals and relays them (see `_relay_shutdown`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket; connections queue in the kernel until the server accepts them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise OSError(f"cannot listen on {host}:{port}: {reason}") from error


def http_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if sock.family == socket.AF_INET6 else f"http://{host}:{port}"


def uvicorn_config(app: FastAPI, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,  # every API request is already written to the audit log
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_TIMEOUT_S,
    )


async def _relay_shutdown(shutdown: Shutdown, server: uvicorn.Server) -> None:
    await shutdown.requested.wait()
    server.should_exit = True
    await shutdown.forced.wait()
    server.force_exit = True


async def _serve_api(server: uvicorn.Server, sock: socket.socket, shutdown: Shutdown) -> None:
    try:
        async with asyncio.TaskGroup() as group:
            relay = group.create_task(_relay_shutdown(shutdown, server))
            try:
                await server.serve(sockets=[sock])
            finally:
                relay.cancel()
    finally:
        sock.close()
        shutdown.request()


async def run_server(settings: Settings, shutdown: Shutdown | None = None) -> None:
    """Migrate, then serve until SIGINT/SIGTERM (or `shutdown.request()`); returns after a clean stop."""
    settings = settings.resolved()
    shutdown = shutdown or Shutdown()
    with shutdown_on_signals(shutdown):
        engine = await open_engine(settings)
        try:
            if shutdown.requested.is_set():
                return
            # Imported here so the key commands never load the HTTP stack.
            from control_api.http.app import create_app

            services = Services(settings=settings, engine=engine)
            async with engine.begin() as conn:
                await ensure_seeded(conn)  # the sandbox carrier's number inventory
            api = _UvicornServer(uvicorn_config(create_app(services), settings))
            sock = listen(settings.host, settings.http_port)
            try:
                models = await start_voice(services)
                edge = await start_sip_edge(services, models)
            except BaseException:
                sock.close()
                raise
            announce(f"API listening on {http_url(sock)}")
            # One task per server: the API, the SIP/RTP edge, and the background workers.
            async with asyncio.TaskGroup() as group:
                group.create_task(_serve_api(api, sock, shutdown))
                if edge is not None:
                    group.create_task(serve_sip(edge, shutdown.requested))
                # Number rentals and plan renewals: idempotent per month, so at every start and then daily.
                group.create_task(run_periodically(housekeeping_jobs(services), shutdown.requested))
                # Knowledge ingestion and its auto-refresh tick; a restart resumes sources left pending.
                assert services.knowledge is not None
                group.create_task(services.knowledge.run(shutdown.requested))
        finally:
            if services.talk is not None:
                await services.talk.close()
            await engine.dispose()


async def start_voice(services: Services) -> SpeechModels | None:
    """The voice stack, unless calls are answered by the echo test: the speech models (loaded now when phone
    calls come in, else on the first browser session) and the in-browser voice sessions (`services.talk`)."""
    settings = services.settings
    if settings.call_mode != "agent":
        return None
    # Imported here: the voice stack (pipecat, aiortc, the speech models) loads only when it is used.
    from loguru import logger as pipecat_logger

    from control_api.calls.native_memory import freeze_startup_objects, limit_arenas
    from control_api.calls.voice import SpeechModels
    from control_api.talk.rooms import TalkRooms, speech_voice
    from telephony import webrtc

    pipecat_logger.remove()  # pipecat logs every frame at DEBUG through loguru; keep its warnings only
    pipecat_logger.add(sys.stderr, level=os.environ.get("FLOWYTE_PIPECAT_LOG_LEVEL", "WARNING"))
    limit_arenas()  # before the models start their threads: see native_memory
    models = SpeechModels(settings.resolved().data_dir)
    if settings.sip_port is not None:
        await models.preload()  # the first caller should not wait for the models to load
    webrtc.use_host_addresses(settings.webrtc_host_addresses)
    config = webrtc.WebRtcConfig(settings.webrtc_ice_servers, settings.webrtc_host_addresses)
    services.talk = TalkRooms(services, speech_voice(models), config)
    # What lives as long as the process (the voice stack's modules, loaded models) out of the collector's
    # way, so the collection after each call is quick (native_memory).
    freeze_startup_objects()
    return models


async def start_sip_edge(services: Services, models: SpeechModels | None) -> SipEdge | None:
    """Bind the SIP port (UDP and TCP) unless it is off; OSError when it is taken. Calls are answered by the
    voice agent with `models`, or by the echo test mode without them."""
    settings = services.settings
    if settings.sip_port is None:
        return None
    config = edge_config(settings)
    assert services.meter is not None
    handler: CallHandler = echo_handler
    if models is not None:
        from control_api.calls.voice import VoiceAgent

        handler = VoiceAgent(services, models)
    admission = CallAdmission(
        DatabaseNumberRouter(services.engine),
        DatabaseAgentSource(services.engine),
        services.meter,
        CallRecords(services.engine, services.clock),
        handler,
        data_dir=settings.resolved().data_dir,  # where agents with recordCalls keep their calls' WAVs
    )
    edge = SipEdge(config, admission)
    try:
        await edge.start()
    except OSError as error:
        reason = error.strerror or str(error)
        raise OSError(f"cannot listen for SIP on {settings.host}:{settings.sip_port}: {reason}") from error
    low, high = config.rtp_ports
    announce(
        f"SIP listening on {settings.host}:{edge.port} (udp+tcp), RTP {low}-{high}, media {config.advertised}, "
        f"calls answered by the {'voice agent' if settings.call_mode == 'agent' else 'echo test mode'}"
    )
    return edge


def housekeeping_jobs(services: Services) -> list[Job]:
    return [
        Job("number rentals", lambda: charge_number_rentals(services)),
        Job("subscription renewals", lambda: renew_subscriptions(services)),
    ]


def serve(settings: Settings) -> None:
    """Run `run_server` on a uvloop event loop (the loop `uvicorn_config` names)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_server(settings))


# -- flowyte keys ----------------------------------------------------------------------------------------


async def _in_transaction(settings: Settings, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    engine = await open_engine(settings)
    try:
        async with engine.begin() as conn:
            return await work(conn)
    finally:
        await engine.dispose()


async def create_api_key(
    settings: Settings,
    *,
    org_name: str,
    scopes: tuple[str, ...],
    label: str,
    clock: Clock | None = None,
) -> tuple[KeyRecord, str]:
    clock = clock or SystemClock()
    return await _in_transaction(
        settings, lambda conn: create_key(conn, org_name=org_name, scopes=scopes, label=label, clock=clock)
    )


async def list_api_keys(settings: Settings) -> list[KeyRecord]:
    return await _in_transaction(settings, list_keys)


async def revoke_api_key(settings: Settings, key_id: str, clock: Clock | None = None) -> bool:
    clock = clock or SystemClock()
    return await _in_transaction(settings, lambda conn: revoke_key(conn, key_id, clock))
