"""baresip 1.0.0 (Debian baresip-core) as a scripted softphone, driven over its ctrl_tcp module.

Findings for this version (modules in ``/usr/lib/baresip/modules``; ``module_path`` points there):

* Audio in: ``aufile`` is a *source* only (``audio_source aufile,<wav>``: 16-bit mono WAV at the
  ``ausrc_srate``). When the file ends baresip raises AUDIO_ERROR "end of file" and HANGS UP the call,
  so the runner pads the source with silence up to ``min_call_s``.
* Audio out: there is no file player in 1.0.0; ``audio_player alsa,null`` plays into ALSA's null PCM
  (no sound card needed). What baresip hears and says is recorded by the ``sndfile`` audio filter:
  ``snd_path/dump-<time>-dec.wav`` (decoded from the peer) and ``dump-<time>-enc.wav`` (sent).
* ``ctrl_tcp_listen host:port``: netstring-framed JSON (``<len>:<json>,``). Commands are the menu
  module's: ``{"command": "dial", "params": "sip:...", "token": "t1"}``, ``hangup``, ``sndcode``
  (send one DTMF digit, RFC 4733 on PT 101), ``hold``, ``resume``, ``transfer``, ``accept``,
  ``listcalls``. Replies: ``{"response": true, "ok": bool, "data": str, "token": str}``. Events:
  ``{"event": true, "class": "call", "type": "CALL_ESTABLISHED", "param": ..., "id": ...}`` with types
  CALL_RINGING, CALL_PROGRESS, CALL_ESTABLISHED, CALL_CLOSED, CALL_DTMF_START/END, TRANSFER (a REFER
  arrived), TRANSFER_FAILED, CALL_RTPESTAB, AUDIO_ERROR, ...
* baresip listens for SIP on UDP+TCP ``sip_listen`` *and TLS on port + 1*; the ctrl port must not be
  that one, so the runner reserves two consecutive ports for SIP.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from tests.peers import require_binary
from tests.peers.ports import HOST, free_port, free_rtp_port
from tests.peers.speech import SAMPLE_RATE, pad, write_wav

__all__ = ["MODULE_PATH", "Baresip", "BaresipEvent", "BaresipResponse", "CtrlTcpClient"]

MODULE_PATH = Path("/usr/lib/baresip/modules")
MODULES = ("g711", "aufile", "alsa", "sndfile", "account", "menu", "ctrl_tcp")


@dataclass(frozen=True)
class BaresipEvent:
    type: str
    klass: str
    param: str
    raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class BaresipResponse:
    ok: bool
    data: str
    token: str | None


class CtrlTcpClient:
    """Netstring JSON over TCP: ``command()`` awaits the reply with the same token; events are queued
    and taken with ``wait_event(type)``."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._events: asyncio.Queue[BaresipEvent] = asyncio.Queue(maxsize=1000)
        self.history: list[BaresipEvent] = []
        self._pending: dict[str, asyncio.Future[BaresipResponse]] = {}
        self._counter = 0
        self._task = asyncio.create_task(self._read_loop())

    @classmethod
    async def connect(cls, host: str, port: int, within: float = 5.0) -> CtrlTcpClient:
        """Connect, retrying every 50 ms until baresip's ctrl_tcp listens or ``within`` seconds pass
        (baresip announces nothing when it is ready)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            try:
                reader, writer = await asyncio.open_connection(host, port)
                return cls(reader, writer)
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def _read_loop(self) -> None:
        try:
            while True:
                length = int((await self._reader.readuntil(b":"))[:-1])
                payload = await self._reader.readexactly(length + 1)  # the trailing ","
                self._dispatch(json.loads(payload[:-1]))
        except (asyncio.IncompleteReadError, ConnectionError):
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("baresip closed ctrl_tcp"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("response"):
            token = message.get("token")
            fut = self._pending.pop(str(token), None)
            if fut is not None and not fut.done():
                fut.set_result(BaresipResponse(bool(message.get("ok")), str(message.get("data", "")), token))
        elif message.get("event"):
            event = BaresipEvent(
                str(message.get("type", "")), str(message.get("class", "")), str(message.get("param", "")), message
            )
            self.history.append(event)
            if self._events.full():
                self._events.get_nowait()  # bounded: drop the oldest
            self._events.put_nowait(event)

    async def command(self, command: str, params: str = "", within: float = 5.0) -> BaresipResponse:
        """Run a menu command; raises TimeoutError when no reply comes ``within`` seconds."""
        self._counter += 1
        token = f"t{self._counter}"
        fut: asyncio.Future[BaresipResponse] = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._writer.write(b"%d:%s," % (len(body), body))
        await self._writer.drain()
        return await asyncio.wait_for(fut, within)

    async def wait_event(
        self, type_: str, within: float = 10.0, where: Callable[[BaresipEvent], bool] | None = None
    ) -> BaresipEvent:
        """The next event of ``type_`` (others are skipped, but kept in ``history``); TimeoutError after
        ``within`` seconds."""
        async with asyncio.timeout(within):
            while True:
                event = await self._events.get()
                if event.type == type_ and (where is None or where(event)):
                    return event

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


class Baresip:
    """One baresip process with its own config dir under ``workdir``.

    Usage::

        async with Baresip(workdir=tmp_path, source_pcm=speech) as phone:
            await phone.ctrl.command("dial", "sip:+15550100@127.0.0.1:5080")
            await phone.ctrl.wait_event("CALL_ESTABLISHED")
            await phone.ctrl.command("sndcode", "5")
            await phone.ctrl.command("hangup")
            await phone.ctrl.wait_event("CALL_CLOSED")
        phone.recordings("dec")  # what it heard
    """

    def __init__(
        self,
        *,
        workdir: str | os.PathLike[str],
        user: str = "alice",
        source_pcm: NDArray[np.int16] | None = None,
        min_call_s: float = 20.0,
        answermode: str = "manual",
        extra_config: str = "",
    ) -> None:
        self.binary = require_binary("baresip")
        self.dir = Path(workdir) / f"baresip-{user}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = free_port(span=2)  # UDP/TCP on port, TLS on port + 1
        self.ctrl_port = free_port()
        self.rtp_port = free_rtp_port(span=20)
        self.user = user
        self.record_dir = self.dir / "recordings"
        self.record_dir.mkdir(exist_ok=True)
        self.source_wav = self.dir / "source.wav"
        pcm = np.zeros(0, np.int16) if source_pcm is None else np.asarray(source_pcm, np.int16)
        missing = max(0.0, min_call_s - len(pcm) / SAMPLE_RATE)
        write_wav(self.source_wav, pad(pcm, 0.0, missing), SAMPLE_RATE)
        self.log_path = self.dir / "baresip.log"
        self._write_config(answermode, extra_config)
        self.process: subprocess.Popen[bytes] | None = None
        self._ctrl: CtrlTcpClient | None = None

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{HOST}:{self.sip_port}"

    @property
    def ctrl(self) -> CtrlTcpClient:
        if self._ctrl is None:
            raise RuntimeError("baresip not started")
        return self._ctrl

    def _write_config(self, answermode: str, extra: str) -> None:
        lines = [
            "poll_method epoll",
            f"sip_listen {HOST}:{self.sip_port}",
            "call_local_timeout 120",
            "audio_player alsa,null",
            "audio_alert alsa,null",
            f"audio_source aufile,{self.source_wav}",
            f"ausrc_srate {SAMPLE_RATE}",
            f"auplay_srate {SAMPLE_RATE}",
            "ausrc_channels 1",
            "auplay_channels 1",
            f"rtp_ports {self.rtp_port}-{self.rtp_port + 19}",
            f"module_path {MODULE_PATH}",
            *(f"module {name}.so" for name in MODULES),
            f"ctrl_tcp_listen {HOST}:{self.ctrl_port}",
            f"snd_path {self.record_dir}",
            extra,
        ]
        (self.dir / "config").write_text("\n".join(lines) + "\n")
        account = f"<sip:{self.user}@{HOST}>;regint=0;audio_codecs=PCMU/8000/1,PCMA/8000/1;answermode={answermode}"
        (self.dir / "accounts").write_text(account + "\n")
        (self.dir / "contacts").write_text("")

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "wb") as log:
            return subprocess.Popen(
                [self.binary, "-f", str(self.dir), "-v"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )

    async def start(self) -> Self:
        self.process = self._spawn()
        try:
            self._ctrl = await CtrlTcpClient.connect(HOST, self.ctrl_port)
        except OSError as exc:
            await self.close()
            raise RuntimeError(f"baresip ctrl_tcp did not come up:\n{self.log()[-3000:]}") from exc
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def recordings(self, kind: str = "dec") -> list[Path]:
        """sndfile's WAV dumps: ``dec`` = audio received from the peer, ``enc`` = audio sent."""
        return sorted(self.record_dir.glob(f"dump-*-{kind}.wav"))

    async def close(self) -> None:
        if self._ctrl is not None:
            await self._ctrl.close()
            self._ctrl = None
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)  # SIGTERM: sndfile closes its WAVs properly
            try:
                await asyncio.to_thread(process.wait, 3)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await asyncio.to_thread(process.wait, 3)

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
