"""linphonec (Debian linphone-cli, liblinphone 5.1.65) as a scripted softphone, driven through stdin.

Findings for this version:

* No sound card is needed: ``soundcard use files`` switches to file I/O, then ``play <wav>`` is what it
  sends and ``record <wav>`` records what it receives (both before or during a call).
* liblinphone does not start its SIP transports until its SQLite database opens, and it puts that under
  ``$HOME/.local/share/linphone/``: with that directory missing every ``call`` fails with "No listening
  point". The runner points HOME at its own directory and creates it.
* The rc file (``-c``) sets ``[sip] sip_port`` (``sip_tcp_port=0``/``sip_tls_port=0`` disable TCP and TLS;
  -1 would mean random), ``bind_address=127.0.0.1``, ``use_ipv6=0`` with ``ipv6_migration_done=1``
  (otherwise the migration deletes ``use_ipv6``), ``[rtp] bind_address`` so the SDP says 127.0.0.1, and
  every codec but PCMU/PCMA disabled in ``[audio_codec_N]`` sections.
* Commands: ``call <uri>``, ``pause`` (hold: a re-INVITE with a=sendonly), ``resume`` (re-INVITE
  a=sendrecv), ``terminate``, ``calls``, ``quit``. Call progress is printed as lines such as
  ``Call 1 to sip:... ringing.``, ``Call 1 with sip:... connected.``, ``Call 1 with sip:... is now
  paused.``, ``Media streams established with sip:... for call 1 (audio).``, ``Call 1 with sip:... ended
  (No error).`` (sometimes after a ``linphonec> `` prompt on the same line).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np
from numpy.typing import NDArray

from tests.peers import require_binary
from tests.peers.ports import HOST, free_port, free_rtp_port
from tests.peers.speech import SAMPLE_RATE, pad, write_wav

__all__ = ["Linphonec"]

_DISABLED_CODECS = [
    ("opus", 48000, 2),
    ("speex", 16000, 1),
    ("speex", 8000, 1),
    ("speex", 32000, 1),
    ("G729", 8000, 1),
    ("G722", 8000, 1),
    ("GSM", 8000, 1),
    ("L16", 44100, 2),
    ("L16", 44100, 1),
]


class Linphonec:
    """One linphonec process. Usage::

    async with Linphonec(workdir=tmp_path, play_pcm=speech) as phone:
        await phone.call("sip:+15550100@127.0.0.1:5080")
        await phone.hold()
        await phone.resume()
        await phone.terminate()
    """

    def __init__(
        self, *, workdir: str | os.PathLike[str], user: str = "bob", play_pcm: NDArray[np.int16] | None = None
    ) -> None:
        self.binary = require_binary("linphonec")
        self.dir = Path(workdir) / f"linphonec-{user}"
        (self.dir / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.user = user
        self.sip_port = free_port()
        self.rtp_port = free_rtp_port()
        self.rc = self.dir / "linphonerc"
        self.play_wav = self.dir / "play.wav"
        self.record_wav = self.dir / "record.wav"
        pcm = np.zeros(SAMPLE_RATE, np.int16) if play_pcm is None else np.asarray(play_pcm, np.int16)
        write_wav(self.play_wav, pad(pcm, 0.2, 0.5), SAMPLE_RATE)
        self.rc.write_text(self._rc_text())
        self.output: list[str] = []
        self._cursor = 0
        self._new_line = asyncio.Event()
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    def _rc_text(self) -> str:
        sections = [
            "[sip]",
            f"sip_port={self.sip_port}",
            "sip_tcp_port=0",
            "sip_tls_port=0",
            "default_proxy=-1",
            "ipv6_migration_done=1",
            "use_ipv6=0",
            f"bind_address={HOST}",
            f"contact=sip:{self.user}@{HOST}:{self.sip_port}",
            "guess_hostname=0",
            "register_only_when_network_is_up=0",
            "",
            "[rtp]",
            f"audio_rtp_port={self.rtp_port}",
            f"bind_address={HOST}",
            "",
            "[net]",
            "firewall_policy=0",
            "",
            "[sound]",
            "echocancellation=0",
            "",
            "[video]",
            "capture=0",
            "display=0",
            "automatically_initiate=0",
            "automatically_accept=0",
            "",
        ]
        codecs = [("PCMU", 8000, 1, 1), ("PCMA", 8000, 1, 1), *((m, r, c, 0) for m, r, c in _DISABLED_CODECS)]
        for i, (mime, rate, channels, enabled) in enumerate(codecs):
            sections += [f"[audio_codec_{i}]", f"mime={mime}", f"rate={rate}", f"channels={channels}"]
            sections += [f"enabled={enabled}", ""]
        return "\n".join(sections)

    async def start(self) -> Self:
        env = {**os.environ, "HOME": str(self.dir), "XDG_CONFIG_HOME": str(self.dir / ".config")}
        env.pop("XDG_DATA_HOME", None)
        self.process = await asyncio.create_subprocess_exec(
            self.binary,
            "-c",
            str(self.rc),
            "-d",
            "0",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.dir,
            env=env,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read())
        await self.send("soundcard use files")
        await self.expect(r"Using wav files instead of soundcard")
        await self.send(f"play {self.play_wav}")
        await self.send(f"record {self.record_wav}")
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for raw in self.process.stdout:
            self.output.append(raw.decode(errors="replace").rstrip("\n").removeprefix("linphonec> "))
            self._new_line.set()
        self._new_line.set()

    async def send(self, line: str) -> None:
        if self.process is None or self.process.stdin is None:
            raise RuntimeError("linphonec not started")
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()

    async def expect(self, pattern: str, within: float = 10.0) -> re.Match[str]:
        """Wait for an output line (after the last one matched) to match ``pattern``; TimeoutError with
        the output tail otherwise."""
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(within):
                while True:
                    while self._cursor < len(self.output):
                        line = self.output[self._cursor]
                        self._cursor += 1
                        if match := regex.search(line):
                            return match
                    if self.process is not None and self.process.returncode is not None:
                        raise RuntimeError(f"linphonec exited waiting for {pattern!r}:\n{self.tail()}")
                    self._new_line.clear()
                    await self._new_line.wait()
        except TimeoutError:
            raise TimeoutError(f"linphonec printed no {pattern!r} in {within} s:\n{self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output[-lines:])

    async def call(self, uri: str, within: float = 10.0) -> None:
        """Dial and wait until the call is connected."""
        await self.send(f"call {uri}")
        await self.expect(r"Call \d+ (with|to) .* (connected|error|declined|ended)", within)
        if not re.search(r"connected", self.output[self._cursor - 1]):
            raise RuntimeError(f"call to {uri} failed:\n{self.tail()}")

    async def hold(self, within: float = 10.0) -> None:
        """``pause``: re-INVITE with a=sendonly; waits for the answer."""
        await self.send("pause")
        await self.expect(r"Call \d+ with .* is now paused", within)

    async def resume(self, within: float = 10.0) -> None:
        """``resume``: re-INVITE with a=sendrecv; waits until media runs again."""
        await self.send("resume")
        await self.expect(r"Media streams established with .* for call \d+", within)

    async def terminate(self, within: float = 10.0) -> None:
        """BYE; waits for the call to end."""
        await self.send("terminate")
        await self.expect(r"Call \d+ with .* ended", within)

    async def close(self) -> None:
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
